"""The benchmark configurations: a model, a batch shape, and the optimiser a real run would use.

* ``cpu_small`` -- nanoGPT's CPU Shakespeare model (karpathy/nanoGPT
  config/train_shakespeare_char.py with its "on a MacBook" overrides; configs/shakespeare_char.py
  here): 4 layers, 4 heads, d_model 128, d_ff 512, context 64, batch 12, character vocabulary
  (65), GELU, pre-LN, learned positions, tied output, no dropout, AdamW + clipping.
* ``cpu_base`` -- nanoGPT's default Shakespeare model at a CPU batch: 6 layers, 6 heads,
  d_model 384, d_ff 1536, context 256, batch 8, otherwise as cpu_small.
* ``gpu_gpt2_small`` -- GPT-2 small (124M; tfm.config preset ``gpt2_small``), context 1024,
  batch 16, bfloat16 compute with float32 parameters, cuDNN flash attention (attention_impl
  "auto" picks it on a GPU for bf16 without dropout; "auto" also lets the config be checked on
  CPU, where "cudnn" cannot even be traced), no dropout
  (nanoGPT's OpenWebText run), vocabulary padded 50257 -> 50304 as nanoGPT does (a multiple of
  64 keeps the output matmul on fast tensor-core tiles).
* ``gpu_transformer_base`` -- the paper's base model (preset ``transformer_base``: 6+6 layers,
  d_model 512, d_ff 2048, 8 heads, 37000 shared vocabulary, dropout 0.1, label smoothing 0.1,
  Adam(0.9, 0.98, 1e-9) with the rsqrt schedule) on 192 x 128 = 24,576 target tokens per batch
  (the paper: "approximately 25000 source tokens and 25000 target tokens"), bfloat16 compute.
* ``tiny`` -- a seconds-long smoke test of the script itself (tests/test_benchmarks.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import numpy as np
import optax

from tfm.config import Arch, ModelConfig, get_preset
from tfm.training.config import TrainConfig
from tfm.training.optimizer import make_schedule, make_tx

_NANOGPT_LM = dict(
    arch=Arch.DECODER_LM,
    vocab_size=65,  # tiny Shakespeare's characters
    dropout_rate=0.0,
    activation="gelu",
    norm="pre",
    positional="learned",
    scale_embeddings=False,
    tie_output=True,
    layer_norm_eps=1e-5,
)


# nanoGPT's optimiser: AdamW(0.9, 0.99, 1e-8), weight decay 0.1, clipping at 1, warm-up over 100
# steps to 1e-3 and cosine decay to 1e-4 at step 2000, no label smoothing.
_NANOGPT_TRAIN = TrainConfig(
    optimizer="adamw", schedule="warmup_cosine", learning_rate=1e-3, warmup_steps=100,
    num_steps=2000, end_learning_rate_ratio=0.1, b2=0.99, eps=1e-8, weight_decay=0.1,
    grad_clip_norm=1.0, label_smoothing=0.0,
)


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One benchmark: the model, the batch shape and the training hyper-parameters (a
    TrainConfig, turned into a schedule and optimiser by the training loop's own builder)."""

    name: str
    model: ModelConfig
    batch: int
    length: int  # T: decoder / LM length
    source_length: int | None = None  # S: encoder-decoder only
    train: TrainConfig = _NANOGPT_TRAIN

    def schedule(self) -> Callable[[jax.Array], jax.Array]:
        return make_schedule(self.train, self.model)

    def optimizer(self, schedule) -> optax.GradientTransformation:
        return make_tx(self.train, schedule)

    def synthetic_batch(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A batch in the contract's format: random token ids (any id is a real token) with the
        segment ids, positions and weights the data pipeline emits (no padding here), so the
        step runs the masks of real training."""
        v = self.model.vocab_size
        full = lambda length: {  # noqa: E731 - one real segment per row
            "segment_ids": np.ones((self.batch, length), np.int32),
            "positions": np.broadcast_to(np.arange(length, dtype=np.int32), (self.batch, length)).copy(),
        }
        weights = np.ones((self.batch, self.length), np.float32)
        if self.model.arch is Arch.ENCODER_DECODER:
            s = self.source_length or self.length
            src, tgt = full(s), full(self.length)
            return {
                "inputs": rng.integers(0, v, (self.batch, s), dtype=np.int32),
                "decoder_inputs": rng.integers(0, v, (self.batch, self.length), dtype=np.int32),
                "targets": rng.integers(0, v, (self.batch, self.length), dtype=np.int32),
                "inputs_segment_ids": src["segment_ids"], "inputs_positions": src["positions"],
                "targets_segment_ids": tgt["segment_ids"], "targets_positions": tgt["positions"],
                "weights": weights,
            }
        tokens = rng.integers(0, v, (self.batch, self.length + 1), dtype=np.int32)
        return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], **full(self.length), "weights": weights}


def _configs() -> dict[str, BenchConfig]:
    small = ModelConfig(d_model=128, num_heads=4, num_layers=4, d_ff=512, max_len=64, **_NANOGPT_LM)
    base = ModelConfig(d_model=384, num_heads=6, num_layers=6, d_ff=1536, max_len=256, **_NANOGPT_LM)
    gpt2 = get_preset("gpt2_small", vocab_size=50304, dropout_rate=0.0, dtype="bfloat16", attention_impl="auto")
    paper = get_preset("transformer_base", dtype="bfloat16", max_len=256, attention_impl="auto")
    tiny = ModelConfig(d_model=32, num_heads=2, num_layers=2, d_ff=64, max_len=16, **_NANOGPT_LM)
    return {
        "cpu_small": BenchConfig("cpu_small", small, batch=12, length=64),
        "cpu_base": BenchConfig("cpu_base", base, batch=8, length=256),
        "gpu_gpt2_small": BenchConfig("gpu_gpt2_small", gpt2, batch=16, length=1024),
        "gpu_transformer_base": BenchConfig(
            "gpu_transformer_base",
            paper,
            batch=192,
            length=128,
            source_length=128,
            # the paper: Adam(0.9, 0.98, 1e-9), rsqrt warm-up over 4000 steps, label smoothing 0.1
            train=TrainConfig(optimizer="adam", schedule="rsqrt", learning_rate=1.0, warmup_steps=4000,
                              b2=0.98, eps=1e-9, weight_decay=0.0, grad_clip_norm=0.0,
                              label_smoothing=0.1),
        ),
        "tiny": BenchConfig("tiny", tiny, batch=4, length=16),
    }


def _parse_value(field: dataclasses.Field, text: str):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return None if text.lower() == "none" else text


def get_bench_config(name: str, overrides: Sequence[str] = (), batch: int | None = None) -> BenchConfig:
    """The named configuration with ``FIELD=VALUE`` ModelConfig overrides applied (validated)."""
    bench = _configs()[name]
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    changes = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {sorted(fields)}")
        changes[key] = _parse_value(fields[key], value)
    model = bench.model.replace(**changes) if changes else bench.model
    return dataclasses.replace(bench, model=model, batch=batch or bench.batch)


__all__ = ["BenchConfig", "get_bench_config"]
