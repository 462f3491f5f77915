"""Model adapters: a cached :class:`~tfm.models.DecoderLM` or :class:`~tfm.models.EncoderDecoder`
turned into a step function, with its key/value cache (prefill of a left-padded prompt; the source
encoded once, cross-attention keys/values cached on the first step)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from tfm.attention import real_tokens
from tfm.models import DecoderLM, EncoderDecoder
from tfm.decoding.beam import beam_search
from tfm.decoding.outputs import Beams, PyTree, StepFn

@dataclasses.dataclass(frozen=True)
class Start:
    """What a search needs to run a model: the step function's initial state, the first token
    of every row and the batch axis of every state leaf (static).

    The step function itself is built by the adapter (it closes over the params).
    """

    state: PyTree
    first_tokens: jax.Array
    state_axes: PyTree

    def beam_search(self, step_fn: StepFn, **options) -> Beams:
        """:func:`tfm.decoding.beam_search` from this start (``options``: its keyword arguments)."""
        return beam_search(step_fn, self.state, self.first_tokens, state_axes=self.state_axes, **options)


def _cache_and_axes(init: Callable[[int], PyTree], batch: int) -> tuple[PyTree, PyTree]:
    """A zero cache for ``batch`` rows built from shapes only (``jax.eval_shape``: no forward
    pass runs), and the batch axis of each leaf (the axis whose size follows the batch)."""
    shapes = jax.eval_shape(functools.partial(init, batch))
    shapes_plus_one = jax.eval_shape(functools.partial(init, batch + 1))

    def axis(a, b):
        diff = [d for d, (m, n) in enumerate(zip(a.shape, b.shape)) if m != n]
        return diff[0] if diff else None

    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    return cache, jax.tree.map(axis, shapes, shapes_plus_one)


def lm_cache(model: DecoderLM, batch: int, length: int) -> tuple[PyTree, PyTree]:
    """A zero DecoderLM decoding cache for (batch, length) tokens, and each leaf's batch axis."""

    def init(b):
        tokens = jnp.ones((b, length), jnp.int32)
        return model.init(jax.random.key(0), tokens, decode=True)["cache"]

    return _cache_and_axes(init, batch)


def encdec_cache(model: EncoderDecoder, batch: int, source_len: int, length: int) -> tuple[PyTree, PyTree]:
    """A zero EncoderDecoder decoding cache (self-attention for ``length`` target tokens,
    cross-attention for ``source_len`` source tokens), and each leaf's batch axis."""
    cfg = model.cfg

    def init(b):
        encoded = jnp.zeros((b, source_len, cfg.d_model), jnp.dtype(cfg.dtype))
        targets = jnp.ones((b, length), jnp.int32)
        variables = model.init(jax.random.key(0), encoded, targets, decode=True, method=EncoderDecoder.decode)
        return variables["cache"]

    return _cache_and_axes(init, batch)


def prompt_positions(prompt_mask: jax.Array) -> jax.Array:
    """(B, P) positions of left-padded prompts from their (B, P) bool mask (True = real token):
    0, 1, ... from each row's first real token (padding before it gets 0; it is masked out)."""
    valid = jnp.asarray(prompt_mask).astype(jnp.int32)
    return jnp.maximum(jnp.cumsum(valid, axis=1) - 1, 0)


def lm_decoder(
    model: DecoderLM, params: PyTree, prompts: jax.Array, cache_len: int, prompt_mask: jax.Array | None = None
) -> tuple[StepFn, Start]:
    """Prefills a DecoderLM's cache with all but the last prompt token; steps one token at a time.

    Args:
      prompts: (B, P) int32, LEFT-padded (with any id) so that every row's last prompt token is
        in the last column.
      cache_len: tokens the cache holds: P - 1 prompt tokens + the tokens to be fed (so
        ``P - 1 + max_new_tokens`` to generate ``max_new_tokens``); at most ``cfg.max_len``.
      prompt_mask: (B, P) bool, True on real prompt tokens, False on the left padding (the last
        column must be True: give an empty prompt a BOS token); None = no padding.
    Returns:
      ``(step_fn, start)``; the first token fed is the last prompt token. The state is
      ``{'cache': ..., 'position': (B,) position of the token fed next}``.
    """
    batch, prompt_len = prompts.shape
    cache, cache_axes = lm_cache(model, batch, cache_len)
    real = real_tokens(prompts, prompt_mask)
    positions = prompt_positions(real)
    if prompt_len > 1:  # prefill: one forward pass over the prompt (its logits are not needed)
        _, variables = model.apply(
            {"params": params, "cache": cache},
            prompts[:, :-1],
            segment_ids=real[:, :-1].astype(jnp.int32),  # in decode mode: which tokens are real
            positions=positions[:, :-1],
            decode=True,
            mutable=["cache"],
        )
        cache = variables["cache"]

    def step_fn(tokens, state):
        logits, variables = model.apply(
            {"params": params, "cache": state["cache"]},
            tokens[:, None],
            positions=state["position"][:, None],
            decode=True,
            mutable=["cache"],
        )  # (B, 1, V)
        return logits[:, 0], {"cache": variables["cache"], "position": state["position"] + 1}

    state = {"cache": cache, "position": positions[:, -1]}
    axes = {"cache": cache_axes, "position": 0}
    return step_fn, Start(state=state, first_tokens=prompts[:, -1], state_axes=axes)


def encdec_decoder(
    model: EncoderDecoder,
    params: PyTree,
    inputs: jax.Array,
    cache_len: int,
    beam_size: int = 1,
    inputs_mask: jax.Array | None = None,
    *,
    bos_id: int,
) -> tuple[StepFn, Start]:
    """Encodes the source once; each step feeds one target token (BOS first).

    Args:
      inputs: (B, S) int32 source tokens (usually source ids + EOS, right-padded with any id).
      cache_len: target tokens the cache holds (= the maximum output length), <= cfg.max_len.
      beam_size: the step function serves B * beam_size rows (the encoder output is repeated;
        the search repeats the state).
      inputs_mask: (B, S) bool, True on real source tokens; None = no padding.
      bos_id: the decoder's start token (the tokenizer's; Marian starts from its pad id).
    Returns:
      ``(step_fn, start)``; the state is the Flax 'cache' collection. Cross-attention keys and
      values are projected from the encoder output on the first step and cached.
    """
    batch, source_len = inputs.shape
    segment_ids = real_tokens(inputs, inputs_mask).astype(jnp.int32)  # (B, S): 1 real, 0 padding
    encoded = model.apply(
        {"params": params}, inputs, segment_ids=segment_ids, method=EncoderDecoder.encode
    )  # (B, S, D)
    encoded = jnp.repeat(encoded, beam_size, axis=0)  # (B*K, S, D)
    source_segment_ids = jnp.repeat(segment_ids, beam_size, axis=0)  # (B*K, S)
    cache, axes = encdec_cache(model, batch, source_len, cache_len)

    def step_fn(tokens, cache):
        logits, variables = model.apply(
            {"params": params, "cache": cache},
            encoded,
            tokens[:, None],
            inputs_segment_ids=source_segment_ids,
            decode=True,
            method=EncoderDecoder.decode,
            mutable=["cache"],
        )  # (B*K, 1, V)
        return logits[:, 0], variables["cache"]

    first = jnp.full((batch,), bos_id, jnp.int32)
    return step_fn, Start(state=cache, first_tokens=first, state_axes=axes)
