"""Greedy search and sampling over a step function (pure JAX, no Flax), and the helpers the
searches share: logit filtering (temperature, top-k, top-p), the length penalty, per-row limits."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from tfm.decoding.outputs import FILL_ID, Decoded, PyTree, StepFn

def length_penalty(length: jax.Array | int, alpha: float | jax.Array) -> jax.Array:
    """lp(|Y|) = ((5 + |Y|) / (5 + 1))^alpha (Wu et al. 2016, section 7), in float32."""
    length = jnp.asarray(length).astype(jnp.float32)
    return jnp.power((5.0 + length) / 6.0, jnp.asarray(alpha, jnp.float32))


def filter_logits(
    logits: jax.Array,
    temperature: float | jax.Array = 1.0,
    top_k: int | jax.Array = 0,
    top_p: float | jax.Array = 1.0,
) -> jax.Array:
    """Sampling logits: divided by ``temperature``, then everything outside the ``top_k`` most
    likely tokens and outside the smallest set whose probability reaches ``top_p`` (nucleus,
    Holtzman et al. 2020) set to -inf. ``top_k = 0`` and ``top_p = 1`` switch a filter off.
    All three may be traced values (one compiled function serves every setting).

    Args:
      logits: (B, V).
    Returns:
      (B, V) float32; the most likely token always survives.
    """
    logits = logits.astype(jnp.float32) / jnp.asarray(temperature, jnp.float32)
    vocab = logits.shape[-1]
    desc = -jnp.sort(-logits, axis=-1)  # (B, V), most likely first
    top_k = jnp.asarray(top_k, jnp.int32)
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
    kth = jnp.take_along_axis(desc, jnp.broadcast_to(k - 1, desc.shape[:-1])[..., None], axis=-1)
    desc = jnp.where(desc >= kth, desc, -jnp.inf)  # (B, V) top-k, still sorted
    probs = jax.nn.softmax(desc, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # probability of the more likely tokens
    top_p = jnp.asarray(top_p, jnp.float32)
    keep = ((before < top_p) | (top_p >= 1.0)) & jnp.isfinite(desc)  # the first token always
    threshold = jnp.min(jnp.where(keep, desc, jnp.inf), axis=-1, keepdims=True)  # (B, 1)
    return jnp.where(logits >= threshold, logits, -jnp.inf)


def limit_vocab(step_fn: StepFn, vocab_limit: int | None) -> StepFn:
    """``step_fn`` whose logits of ids >= ``vocab_limit`` are -inf, so no search ever chooses
    them: a model's embedding table is often padded (to a multiple of 64 or 128) past its
    tokenizer's vocabulary, whose ids end at ``vocab_limit``. None (or a limit >= the logits'
    width) leaves ``step_fn`` as it is."""
    if vocab_limit is None:
        return step_fn

    def limited(tokens, state):
        logits, state = step_fn(tokens, state)  # (B, V)
        if vocab_limit >= logits.shape[-1]:
            return logits, state
        return jnp.where(jnp.arange(logits.shape[-1]) < vocab_limit, logits, -jnp.inf), state

    return limited


def default_state_axes(state: PyTree) -> PyTree:
    """Batch axis of every leaf of a decoding state: 0, or None for scalars (e.g. a cache index)."""
    return jax.tree.map(lambda x: None if jnp.ndim(x) == 0 else 0, state)


def map_rows(fn: Callable[[jax.Array, int], jax.Array], state: PyTree, axes: PyTree) -> PyTree:
    """Applies ``fn(leaf, batch_axis)`` to every leaf whose batch axis is not None."""
    return jax.tree.map(
        lambda ax, x: x if ax is None else fn(x, ax), axes, state, is_leaf=lambda ax: ax is None
    )


def row_limits(batch: int, max_len: int, max_lengths: jax.Array | None) -> jax.Array:
    """(B,) int32 per-row output length limit, at most ``max_len``."""
    if max_lengths is None:
        return jnp.full((batch,), max_len, jnp.int32)
    return jnp.minimum(jnp.asarray(max_lengths, jnp.int32), max_len)


def _token_loop(
    step_fn: StepFn,
    state: PyTree,
    first_tokens: jax.Array,
    choose: Callable[[jax.Array, jax.Array], jax.Array],
    max_len: int,
    eos_id: int,
    max_lengths: jax.Array | None,
) -> Decoded:
    """One token per row per step; ``choose(logits (B, V), step) -> (B,)`` picks it."""
    batch = first_tokens.shape[0]
    limits = row_limits(batch, max_len, max_lengths)

    def cond(carry):
        i, _, _, _, done, _ = carry
        return (i < max_len) & ~jnp.all(done)

    def body(carry):
        i, last, out, lengths, done, state = carry
        logits, state = step_fn(last, state)  # (B, V)
        token = jnp.where(done, FILL_ID, choose(logits, i).astype(jnp.int32))  # (B,)
        out = jax.lax.dynamic_update_slice(out, token[:, None], (0, i))
        lengths = lengths + (~done).astype(jnp.int32)
        done = done | (token == eos_id) | (i + 1 >= limits)
        return i + 1, token, out, lengths, done, state

    carry = (
        jnp.zeros((), jnp.int32),
        first_tokens.astype(jnp.int32),
        jnp.zeros((batch, max_len), jnp.int32),
        jnp.zeros((batch,), jnp.int32),
        limits <= 0,
        state,
    )
    _, _, out, lengths, _, _ = jax.lax.while_loop(cond, body, carry)
    return Decoded(tokens=out, lengths=lengths)


def greedy_search(
    step_fn: StepFn,
    state: PyTree,
    first_tokens: jax.Array,
    *,
    max_len: int,
    eos_id: int,
    max_lengths: jax.Array | None = None,
) -> Decoded:
    """The most likely next token at every step.

    Args:
      step_fn: see :data:`StepFn`. state: its initial state for B rows.
      first_tokens: (B,) the token fed first (BOS, or the last prompt token).
      max_len: static length L of the output buffer.
      max_lengths: optional (B,) per-row limits (<= L) on the number of generated tokens.
    Returns:
      :class:`Decoded` with (B, L) tokens.
    """
    choose = lambda logits, i: jnp.argmax(logits, axis=-1)
    return _token_loop(step_fn, state, first_tokens, choose, max_len, eos_id, max_lengths)


def sample(
    step_fn: StepFn,
    state: PyTree,
    first_tokens: jax.Array,
    rng: jax.Array,
    *,
    max_len: int,
    temperature: float | jax.Array = 1.0,
    top_k: int | jax.Array = 0,
    top_p: float | jax.Array = 1.0,
    eos_id: int,
    max_lengths: jax.Array | None = None,
) -> Decoded:
    """Ancestral sampling from ``filter_logits(logits, temperature, top_k, top_p)``.

    Step i draws with ``jax.random.fold_in(rng, i)``, so a fixed ``rng`` reproduces the output.
    ``top_k = 1`` is greedy search. Arguments as :func:`greedy_search`.
    """

    def choose(logits, i):
        filtered = filter_logits(logits, temperature, top_k, top_p)
        return jax.random.categorical(jax.random.fold_in(rng, i), filtered, axis=-1)

    return _token_loop(step_fn, state, first_tokens, choose, max_len, eos_id, max_lengths)
