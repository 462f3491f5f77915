"""The optimiser a TrainConfig describes: its learning-rate schedule and optax transformation.

The one builder of both, used by the training loop and by the benchmarks (so that a benchmark
times the optimiser a real run uses); the pieces themselves are :mod:`tfm.optim`.
"""

from __future__ import annotations

from collections.abc import Callable

import optax

from tfm import optim
from tfm.config import ModelConfig
from tfm.training.config import Optimizer, Schedule, TrainConfig


def make_schedule(train: TrainConfig, model: ModelConfig) -> Callable:
    """The learning-rate schedule ``train`` names (rsqrt uses ``model.d_model``)."""
    if train.schedule is Schedule.RSQRT:
        return optim.rsqrt_schedule(model.d_model, train.warmup_steps, train.learning_rate)
    if train.schedule is Schedule.WARMUP_COSINE:
        return optim.warmup_cosine_schedule(
            train.learning_rate, train.warmup_steps, train.num_steps, train.end_learning_rate_ratio
        )
    if train.warmup_steps:
        return optim.warmup_cosine_schedule(
            train.learning_rate, train.warmup_steps, train.num_steps, end_ratio=1.0
        )
    lr = train.learning_rate
    return lambda count: lr


def make_tx(train: TrainConfig, schedule: Callable) -> optax.GradientTransformation:
    """The optimiser ``train`` names (Adam or AdamW, clipping) following ``schedule``."""
    return optim.make_optimizer(
        schedule,
        kind=train.optimizer.value,
        b1=train.b1,
        b2=train.b2,
        eps=train.eps,
        weight_decay=train.weight_decay if train.optimizer is Optimizer.ADAMW else 0.0,
        grad_clip_norm=train.grad_clip_norm,
    )
