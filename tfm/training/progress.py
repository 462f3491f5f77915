"""What the loop reports between steps: the pending steps' metrics pulled in one transfer and
checked for NaN/Inf (:func:`flush`), throughput and MFU over the window since the last pull
(:class:`Window`), the progress bar.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from tfm.training.config import TrainConfig
from tfm.metrics import summarize
from tfm.training.health import NonFiniteLossError
from tfm.training.writer import MetricWriter


@dataclasses.dataclass
class Window:
    """Throughput bookkeeping between two metric pulls."""

    start: float
    flops: float = 0.0

    def reset(self, now: float) -> None:
        self.start, self.flops = now, 0.0


def flush(pending, parallel, window: Window, peak, writer: MetricWriter, bar) -> dict[str, float]:
    """Pulls the pending steps' metrics (one transfer), checks them, writes them."""
    if not pending:
        return {}
    host = parallel.to_host([m for _, m in pending])
    for (step, _), m in zip(pending, host):
        loss = float(m["loss_sum"]) / max(float(m["weight_sum"]), 1e-9)
        if not (math.isfinite(loss) and math.isfinite(float(m["grad_norm"]))):
            raise NonFiniteLossError(
                f"non-finite training loss {loss} (gradient norm {float(m['grad_norm'])}) at "
                f"step {step}; stopping."
            )
    now = time.time()
    elapsed = max(now - window.start, 1e-9)
    sums = {k: sum(float(m[k]) for m in host) for k in ("loss_sum", "nll_sum", "correct_sum", "weight_sum")}
    metrics = summarize(sums)
    metrics.pop("weight")
    metrics.update(
        grad_norm=float(np.mean([float(m["grad_norm"]) for m in host])),
        learning_rate=float(host[-1]["learning_rate"]),
        tokens_per_second=sums["weight_sum"] / elapsed,
        steps_per_second=len(host) / elapsed,
    )
    if peak:
        metrics["mfu"] = window.flops / elapsed / (peak * parallel.num_devices)
    writer.write(pending[-1][0], "train", metrics)
    bar.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s=f"{metrics['tokens_per_second']:.0f}",
                    lr=f"{metrics['learning_rate']:.2e}", refresh=False)
    window.reset(now)
    return metrics


def progress_bar(train: TrainConfig, start: int, *, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=train.num_steps, initial=start, disable=not (enabled and train.progress_bar),
                desc="train", unit="step", dynamic_ncols=True)


def fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
