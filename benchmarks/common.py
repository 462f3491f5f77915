"""Shared helpers for the benchmarks: timing, peak FLOP/s, peak memory, FLOP counts, reporting.

Import this module only after ``XLA_FLAGS`` is final (it imports jax, and XLA reads the flags
when the first backend starts). The scripts parse their flags with the standard library first,
set the environment, and only then import jax and this module.

API (what a benchmark needs, and nothing it does not):

* :func:`build_train_step` -- tfm's real training step for a benchmark config, compiled by a
  ``tfm.training.parallel`` strategy as the loop does, with its state and a synthetic batch.
* :func:`time_compile` -- ``jit_fn.lower(*args).compile()`` timed on its own.
* :func:`time_steps` -- run a stateful step ``n_warmup + n_steps`` times, blocking after each
  step; per-step wall times (the median is the headline number).
* :func:`time_pipelined` -- the same steps without waiting for each one: at most 2 outstanding
  (``tfm.training.inflight.InFlight``, as the training loop does), one block at the end.
* :func:`matmul_peak` -- the float32 (or bfloat16) matmul FLOP/s JAX reaches on this machine,
  measured now (the CPU "peak" of MFU); :func:`device_peak` -- datasheet peak on accelerators.
* :func:`peak_memory_bytes` -- device ``peak_bytes_in_use`` on GPU/TPU, the process's RSS
  high-water mark on CPU.
* :func:`flop_breakdown` -- the model FLOPs per training token (PaLM appendix B), with the
  parameter counts it is made of.
* :func:`machine_info`, :func:`load_average`, :func:`print_table`, :func:`write_json`.

Timing statistics are medians: on a shared machine the mean is dragged by other processes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from tfm.config import Arch, ModelConfig
from tfm.training import flops as flops_lib
from tfm.training.inflight import InFlight

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------------- the step
@dataclasses.dataclass
class TrainStep:
    """What :func:`build_train_step` returns: ``step_fn(state, batch, rng)`` (jitted by the
    strategy, state donated unless asked not to), the initial state, the batch on the devices
    (``host_batch`` as NumPy), the dropout key and the strategy."""

    step_fn: Callable
    state: Any
    batch: Any
    host_batch: dict
    rng: jax.Array
    strategy: Any


def build_train_step(bench, strategy, *, donate: bool = True, seed: int = 0) -> TrainStep:
    """tfm's training step for ``bench`` (a ``bench_configs.BenchConfig``): the model, its
    optimiser and ``tfm.training.steps.make_train_step`` compiled by ``strategy`` (a
    ``tfm.training.parallel.Parallel``), as the training loop builds it."""
    import numpy as np

    from tfm.models import build_model
    from tfm.training import state as state_lib
    from tfm.training import steps as steps_lib

    cfg = bench.model
    model = build_model(cfg)
    schedule = bench.schedule()
    tx = bench.optimizer(schedule)
    boxed_init = state_lib.boxed_init_fn(model, cfg, tx)
    strategy.prepare(boxed_init, jax.random.key(seed))
    state = strategy.init_state()
    step_fn = steps_lib.make_train_step(
        model, cfg.arch, tx, schedule, label_smoothing=bench.train.label_smoothing,
        axis_name=strategy.axis_name, gather_params=strategy.gather_params(),
    )
    # donated: as in the training loop (strategy.jit_train_step donates the state)
    step_fn = strategy.jit_train_step(step_fn) if donate else jax.jit(step_fn)
    host_batch = bench.synthetic_batch(np.random.default_rng(seed))
    return TrainStep(step_fn, state, strategy.shard_batch(host_batch), host_batch,
                     jax.random.key(seed + 1), strategy)


# ---------------------------------------------------------------------- timing
def time_compile(jit_fn: Callable, *args) -> tuple[Callable, float]:
    """Lowers and compiles ``jit_fn`` for ``args``; returns (compiled, seconds)."""
    t0 = time.perf_counter()
    compiled = jit_fn.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def time_steps(
    step: Callable[[Any], tuple[Any, Any]], carry: Any, *, n_warmup: int, n_steps: int
) -> tuple[Any, list[float], list[float]]:
    """Runs ``carry, out = step(carry)`` repeatedly and times each call to completion.

    Each step is timed from dispatch until its outputs are ready (``jax.block_until_ready``),
    so the times are true per-step latencies. Returns (final carry, wall seconds per step,
    process CPU seconds per step). The CPU seconds add up every thread of this process; on a
    machine shared with other work they change much less than wall time does.
    """
    for _ in range(n_warmup):
        carry, out = step(carry)
        jax.block_until_ready(out)
    times, cpu_times = [], []
    for _ in range(n_steps):
        c0 = time.process_time()
        t0 = time.perf_counter()
        carry, out = step(carry)
        jax.block_until_ready((carry, out))
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    return carry, times, cpu_times


def time_pipelined(
    step: Callable[[Any], tuple[Any, Any]], carry: Any, *, n_steps: int, max_in_flight: int = 2
) -> tuple[Any, float]:
    """Seconds per step over ``n_steps`` dispatched without waiting for each one.

    At most ``max_in_flight`` steps are outstanding, as in the training loop: an unbounded queue
    of all-reducing steps hangs XLA:CPU with several devices (``tfm.training.inflight``)."""
    jax.block_until_ready(carry)
    in_flight = InFlight(max_in_flight)
    t0 = time.perf_counter()
    for _ in range(n_steps):
        carry, out = step(carry)
        in_flight.push(out)
    jax.block_until_ready((carry, out))
    return carry, (time.perf_counter() - t0) / n_steps


def summarize(times: Sequence[float]) -> dict[str, float]:
    """Median, min, max and interquartile range of a list of seconds."""
    qs = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "iqr_s": qs[2] - qs[0],
        "n": len(times),
    }


# ---------------------------------------------------------------------- peaks
def matmul_peak(n: int = 2048, dtype: Any = jnp.float32, repeats: int = 10) -> dict[str, float]:
    """FLOP/s of an (n, n) x (n, n) ``jnp.matmul`` compiled by XLA on the default device.

    Returns the best and the median of ``repeats`` timed calls (after one warm-up). The best
    is the peak used for MFU on CPU (interference from other processes only ever slows a call
    down); the median shows how steady the machine was. ``flops_per_cpu_s`` is FLOPs per
    process CPU-second (all threads), the per-core rate that :func:`time_steps`' CPU times
    compare with.
    """
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), dtype)
    b = jax.random.normal(key_b, (n, n), dtype)
    mm = jax.jit(jnp.matmul)
    mm(a, b).block_until_ready()
    times, cpu_times = [], []
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        mm(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    flop = 2.0 * n**3
    return {
        "flops_best": flop / min(times),
        "flops_median": flop / statistics.median(times),
        "flops_per_cpu_s": flop / statistics.median(cpu_times),
        "n": n,
    }


def device_peak(device: jax.Device | None = None) -> float | None:
    """Datasheet dense bf16 peak FLOP/s of an accelerator (None on CPU or when unknown)."""
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        return None
    return flops_lib.peak_flops(device.device_kind)


def peak_memory_bytes(device: jax.Device | None = None) -> dict[str, Any]:
    """Peak memory so far: the device allocator's peak on GPU/TPU, the process RSS
    high-water mark (``getrusage`` ru_maxrss, which Linux reports in KiB) on CPU."""
    device = device or jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            return {"bytes": int(stats["peak_bytes_in_use"]), "kind": f"{device.platform} peak_bytes_in_use"}
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return {"bytes": int(maxrss * scale), "kind": "process max RSS"}


# ---------------------------------------------------------------------- FLOPs
def flop_breakdown(cfg: ModelConfig, length: int, source_length: int | None = None) -> dict[str, float]:
    """Model FLOPs per training token, PaLM (Chowdhery et al. 2022) appendix B:

        flops/token = 6 N + 12 L T D      (decoder-only; training = 3 x forward)

    N counts the weights of the matrix multiplies each token goes through: per layer the
    attention projections (4 D^2; cross-attention adds 4 D^2) and the feed-forward (2 D F),
    plus the output projection (D V; the tied embedding counts here, as a matmul, while the
    embedding *lookups* and the position table count nothing). Biases and LayerNorm scales are
    left out (they are not matmuls). The attention term is 6 x (2 T D) per layer: scores
    Q K^T and the weighted sum of V, each 2 T D FLOPs per token over the full T x T square
    (the causal half is not subtracted, as in PaLM). Remat recomputation is not counted (MFU,
    not HFU). Encoder-decoder: the encoder's tokens and the decoder's are both counted, the
    total divided by the decoder (target) tokens. It equals :mod:`tfm.training.flops`.

    Returns: ``flops_per_token``, ``n_matmul_params`` (N), ``n_params`` (everything),
    ``n_embedding_params`` (token and position tables), ``attention_flops_per_token``.
    """
    from tfm.models import param_shapes  # local: the model import is not needed otherwise

    shapes = param_shapes(cfg)
    n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
    n_embedding = sum(
        math.prod(x.shape)
        for path, x in jax.tree_util.tree_leaves_with_path(shapes)
        if "embedding" in jax.tree_util.keystr(path)
    )
    d, f = cfg.d_model, cfg.d_ff
    per_layer = 4 * d * d + 2 * d * f  # W^Q, W^K, W^V, W^O and the two feed-forward matrices
    head = d * (cfg.num_classes if cfg.arch is Arch.ENCODER_CLASSIFIER else cfg.vocab_size)
    n_matmul = cfg.num_layers * per_layer + head
    if cfg.arch is Arch.ENCODER_DECODER:
        n_matmul += cfg.decoder_layers * (per_layer + 4 * d * d)  # + cross-attention
    # The count itself comes from tfm.training.flops (what the training loop logs), so the
    # benchmark and the loop agree; for a decoder-only model it is exactly 6 N + 12 L T D.
    flops_per_token = flops_lib.train_flops_per_row(cfg, length, source_length) / length
    attn_per_token = 12 * cfg.num_layers * length * d
    if cfg.arch is Arch.ENCODER_DECODER:
        s = length if source_length is None else source_length
        attn_per_token = 12 * d * (cfg.num_layers * s * s + cfg.decoder_layers * (length * length + length * s)) / length
    return {
        "flops_per_token": float(flops_per_token),
        "attention_flops_per_token": float(attn_per_token),
        "n_matmul_params": int(n_matmul),
        "n_params": int(n_params),
        "n_embedding_params": int(n_embedding),
    }


# ---------------------------------------------------------------------- reporting
def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores usable, devices, versions, flags."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    device = jax.devices()[0]
    import flax
    import jaxlib
    import optax

    return {
        "cpu": cpu,
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_average": load_average(),
    }


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """Prints (and returns) a Markdown table; ``columns`` are (key, header, format spec)."""
    header = "| " + " | ".join(h for _, h, _ in columns) + " |"
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    lines = [header, rule]
    for row in rows:
        cells = []
        for key, _, spec in columns:
            value = row.get(key)
            cells.append("-" if value is None else format(value, spec))
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    return text


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "value") and isinstance(getattr(x, "value"), str):  # str enums
        return x.value
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(name: str, payload: dict[str, Any], directory: pathlib.Path | None = None) -> pathlib.Path:
    """Writes ``payload`` to ``<directory>/<name>.json`` (default benchmarks/results/)."""
    directory = RESULTS_DIR if directory is None else pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(_jsonable(payload), indent=2, sort_keys=True) + "\n")
    return path
