"""The training state: a pytree of arrays and nothing else.

``TrainState`` holds the step counter, the parameters and the optimiser state. The model and
the optimiser (functions) are not in it: the step functions close over them
(:mod:`tfm.training.steps`), which keeps the state a plain pytree that jit, pmap, shardings and
orbax all handle without special cases, and keeps a checkpoint independent of the code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from tfm.config import ModelConfig
from tfm.models import dummy_inputs


@struct.dataclass
class TrainState:
    """step: int32 scalar, updates done so far. params: the model's parameter tree (unboxed
    arrays). opt_state: the optax state for ``params``."""

    step: jax.Array
    params: Any
    opt_state: Any


def boxed_init_fn(
    model: nn.Module, model_cfg: ModelConfig, tx: optax.GradientTransformation
) -> Callable[[jax.Array], TrainState]:
    """``rng -> TrainState`` whose parameter and optimiser-state leaves are still boxed in
    ``nn.LogicallyPartitioned`` (so ``nn.get_partition_spec`` reads their logical axis names).

    Optax's init maps over the boxes, so Adam's moments carry the same logical names as the
    parameters they belong to. Call :func:`unbox` on the result before training.
    """
    inputs = dummy_inputs(model_cfg, batch_size=1, length=min(model_cfg.max_len, 8))

    def init(rng: jax.Array) -> TrainState:
        params = model.init(rng, *inputs)["params"]
        with jax.numpy_dtype_promotion("standard"):  # optax is not strict-promotion clean
            opt_state = tx.init(params)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)

    return init


def unbox(state: TrainState) -> TrainState:
    """Removes the logical-partitioning boxes (after the shardings have been read)."""
    return nn.meta.unbox(state)

