"""The optimiser: learning-rate schedules, Adam(W), and the one builder of both from a TrainConfig.

The paper (section 5.3): Adam with beta1 = 0.9, beta2 = 0.98, eps = 1e-9, and

    lrate = d_model^-0.5 * min(step_num^-0.5, step_num * warmup_steps^-1.5),   warmup = 4000,

i.e. a linear warm-up for the first `warmup_steps` steps and an inverse-square-root decay after.
`step_num` counts from 1 (the first update uses step_num = 1); optax schedules receive the
number of updates done so far (0 for the first), so `rsqrt_schedule` adds the 1.

The modern alternative, AdamW with linear warm-up and cosine decay (GPT-2/nanoGPT style), is
`warmup_cosine_schedule` + `make_optimizer(kind="adamw")`. Gradients can be clipped by their
global norm before the update (not in the paper; nanoGPT uses 1.0).

:func:`make_schedule` and :func:`make_tx` build what a :class:`~tfm.training.config.TrainConfig`
names, for the training loop and for the benchmarks (so that a benchmark times the optimiser a
real run uses).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from tfm.config import ModelConfig
from tfm.training.config import Optimizer, TrainConfig
from tfm.training.config import Schedule as ScheduleKind

Schedule = Callable[[jax.Array], jax.Array]


def paper_learning_rate(step_num, d_model: int, warmup_steps: int, scale: float = 1.0):
    """The paper's formula, eq. (3), at 1-based step `step_num` (works on floats and arrays).

    `scale` multiplies the whole thing (1.0 in the paper; some implementations use 2.0).
    """
    step_num = jnp.maximum(jnp.asarray(step_num, jnp.float32), 1.0)
    return scale * d_model**-0.5 * jnp.minimum(step_num**-0.5, step_num * warmup_steps**-1.5)


def rsqrt_schedule(d_model: int, warmup_steps: int, scale: float = 1.0) -> Schedule:
    """The paper's schedule as an optax schedule of the update count (0 for the first update)."""
    if warmup_steps <= 0:
        raise ValueError(f"warmup_steps={warmup_steps}: must be positive for the rsqrt schedule")

    def schedule(count):
        return paper_learning_rate(count + 1, d_model, warmup_steps, scale)

    return schedule


def warmup_cosine_schedule(
    peak_value: float, warmup_steps: int, total_steps: int, end_ratio: float = 0.1
) -> Schedule:
    """Linear warm-up from 0 to `peak_value` over `warmup_steps`, then cosine decay to
    `peak_value * end_ratio` at `total_steps` (constant after)."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak_value,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=peak_value * end_ratio,
    )


def make_optimizer(
    schedule: Schedule,
    *,
    kind: str,
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float = 0.0,
    grad_clip_norm: float = 0.0,
) -> optax.GradientTransformation:
    """Adam (the paper) or AdamW, optionally preceded by global-norm clipping.

    Args:
      schedule: learning rate as a function of the update count.
      kind: "adam" or "adamw" (decoupled weight decay, applied to weight matrices and embedding
        tables only -- leaves named `kernel` or `*embedding` -- never to biases or LayerNorm
        scales, as in GPT-2/nanoGPT).
      b1, b2, eps: Adam's moments and epsilon (TrainConfig holds the defaults: the paper's 0.9,
        0.98, 1e-9).
      weight_decay: AdamW's decay coefficient.
      grad_clip_norm: clip the global gradient norm to this value; 0 disables clipping.
    """
    if kind == "adam":
        opt = optax.adam(schedule, b1=b1, b2=b2, eps=eps)
    elif kind == "adamw":
        opt = optax.adamw(
            schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=_decay_mask
        )
    else:
        raise ValueError(f"unknown optimizer kind {kind!r}; expected 'adam' or 'adamw'")
    if grad_clip_norm > 0:
        opt = optax.chain(optax.clip_by_global_norm(grad_clip_norm), opt)
    return opt


def _decay_mask(params):
    """True for the parameters weight decay applies to: kernels and embedding tables.

    Decided by the leaf's name, not its rank, so that the stacked (layers, F) biases of a
    scanned stack are still excluded."""

    def decays(path, _):
        # The last dict key is the parameter's name (a LogicallyPartitioned box adds a
        # trailing `.value` attribute, which is skipped).
        keys = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]
        name = keys[-1] if keys else ""
        return name == "kernel" or name.endswith("embedding")

    return jax.tree_util.tree_map_with_path(decays, params)


def make_schedule(train: TrainConfig, model: ModelConfig) -> Schedule:
    """The learning-rate schedule ``train`` names (rsqrt uses ``model.d_model``)."""
    if train.schedule is ScheduleKind.RSQRT:
        return rsqrt_schedule(model.d_model, train.warmup_steps, train.learning_rate)
    if train.schedule is ScheduleKind.WARMUP_COSINE:
        return warmup_cosine_schedule(
            train.learning_rate, train.warmup_steps, train.num_steps, train.end_learning_rate_ratio
        )
    if train.warmup_steps:
        return warmup_cosine_schedule(
            train.learning_rate, train.warmup_steps, train.num_steps, end_ratio=1.0
        )
    lr = train.learning_rate
    return lambda count: lr


def make_tx(train: TrainConfig, schedule: Schedule) -> optax.GradientTransformation:
    """The optimiser ``train`` names (Adam or AdamW, clipping) following ``schedule``."""
    return make_optimizer(
        schedule,
        kind=train.optimizer.value,
        b1=train.b1,
        b2=train.b2,
        eps=train.eps,
        weight_decay=train.weight_decay if train.optimizer is Optimizer.ADAMW else 0.0,
        grad_clip_norm=train.grad_clip_norm,
    )
