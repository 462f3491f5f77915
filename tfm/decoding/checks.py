"""Checks of the host-side inputs of the compiled entry points: masks and cache lengths,
with errors naming the argument."""

from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tfm import arguments


def check_cache_len(model: nn.Module, length: int, what: str) -> None:
    if length > model.cfg.max_len:
        raise ValueError(f"{what}: {length} tokens do not fit ModelConfig.max_len={model.cfg.max_len}")


def check_mask(mask, tokens: jax.Array, name: str, last_column: bool = False) -> jax.Array | None:
    """The bool mask as a jax array, after checking its shape (and, for left-padded prompts,
    that every row's last token is real); None stays None (every token real)."""
    if mask is None:
        return None
    if np.shape(mask) != tokens.shape:
        raise ValueError(f"{name} has shape {np.shape(mask)}, but the tokens have shape {tokens.shape}")
    mask = jnp.asarray(mask, jnp.bool_)
    if last_column and not isinstance(mask, jax.core.Tracer) and not bool(jnp.all(mask[:, -1])):
        rows = [int(r) for r in jnp.nonzero(~mask[:, -1])[0]]
        raise ValueError(
            f"{name}: rows {rows[:8]} have padding in the last column; prompts must be LEFT-padded "
            "(every row's last prompt token in the last column) and not empty (give them a BOS)"
        )
    return mask


def check_vocab_limit(vocab_limit: int | None) -> int | None:
    """The number of ids a search may choose from (None: all of the model's)."""
    return None if vocab_limit is None else arguments.integer("vocab_limit", vocab_limit, 1)
