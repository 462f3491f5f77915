"""Is a training state fit to be saved? NaN/Inf in the parameters, found in one transfer.

The loop checks each step's loss and gradient norm, but those come from the parameters
*before* the step's update; a checkpoint holds them *after* it. So the parameters themselves
are checked before every save, and a non-finite tree is never written
(:func:`nonfinite_leaves`, :func:`describe`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from tfm.files import TfmError


class NonFiniteLossError(TfmError, FloatingPointError):
    """A training step produced a NaN or Inf loss (or gradient norm), or NaN/Inf parameters."""


@jax.jit
def _flags(tree: Any) -> list[tuple[jax.Array, jax.Array]]:
    """Per leaf: (has NaN, has Inf) -- two booleans, reduced on the devices."""
    return [(jnp.isnan(x).any(), jnp.isinf(x).any()) for x in jax.tree.leaves(tree)]


def nonfinite_leaves(tree: Any) -> list[tuple[str, str]]:
    """``[(path, "NaN" | "Inf" | "NaN and Inf")]`` for every floating leaf that is not finite."""
    paths_leaves = [(p, x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
                    if jnp.issubdtype(x.dtype, jnp.inexact)]
    if not paths_leaves:
        return []
    flags = jax.device_get(_flags([x for _, x in paths_leaves]))
    out = []
    for (path, _), (nan, inf) in zip(paths_leaves, flags):
        if nan or inf:
            kind = " and ".join(k for k, on in (("NaN", nan), ("Inf", inf)) if on)
            out.append((path_name(path), kind))
    return out


def describe(bad: list[tuple[str, str]], total: int, limit: int = 3) -> str:
    """"NaN in 12 of 30 parameter arrays (encoder/..., ...)"."""
    shown = ", ".join(f"{p} ({k})" for p, k in bad[:limit])
    more = f", ... {len(bad) - limit} more" if len(bad) > limit else ""
    kinds = sorted({k for _, kind in bad for k in kind.split(" and ")})
    return f"{' and '.join(kinds)} in {len(bad)} of {total} parameter arrays ({shown}{more})"


def path_name(path: Any) -> str:
    """A pytree key path as "encoder/layer_0/kernel": dict keys, attribute names and sequence
    indices alike (so a saved tree of dicts and lists and a live one of dataclasses and named
    tuples name the same leaf the same way)."""

    def name(key: Any) -> str:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                return str(getattr(key, attr))
        return str(key)

    return "/".join(name(k) for k in path)
