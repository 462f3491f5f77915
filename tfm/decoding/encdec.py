"""Encoder-decoder decoding: :func:`encdec_greedy` and :func:`encdec_beam_search` -- each a
jit-compiled search over :func:`~tfm.decoding.adapters.encdec_decoder` and the host-side wrapper
that checks its inputs."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from tfm import arguments
from tfm.attention import real_tokens
from tfm.models import EncoderDecoder
from tfm.token_ids import check_token_ids
from tfm.decoding.adapters import encdec_decoder
from tfm.decoding.checks import check_mask, check_vocab_limit
from tfm.decoding.outputs import ALPHA, BEAM_SIZE, EXTRA_LEN, Beams, Decoded, PyTree
from tfm.decoding.search import greedy_search, limit_vocab

def _encdec_lengths(
    model: EncoderDecoder, inputs: jax.Array, inputs_mask: jax.Array | None, extra_len: int, max_len: int | None
):
    """Static output buffer length and (B,) per-row limits: input length (its real tokens) +
    extra_len (the paper's maximum output length, with extra_len = 50), capped by max_len and
    cfg.max_len."""
    buffer = inputs.shape[1] + extra_len
    if max_len is not None:
        buffer = min(buffer, max_len)
    buffer = min(buffer, model.cfg.max_len)
    if buffer < 1:
        raise ValueError(f"maximum output length {buffer} must be >= 1")
    limits = real_tokens(inputs, inputs_mask).sum(axis=1, dtype=jnp.int32) + extra_len  # (B,)
    return buffer, limits


@functools.partial(jax.jit, static_argnames=("model", "extra_len", "max_len", "eos_id", "bos_id", "vocab_limit"))
def _encdec_greedy(model, params, inputs, inputs_mask, *, extra_len, max_len, eos_id, bos_id, vocab_limit):
    buffer, limits = _encdec_lengths(model, inputs, inputs_mask, extra_len, max_len)
    step_fn, start = encdec_decoder(model, params, inputs, buffer, inputs_mask=inputs_mask, bos_id=bos_id)
    step_fn = limit_vocab(step_fn, vocab_limit)
    return greedy_search(
        step_fn, start.state, start.first_tokens, max_len=buffer, eos_id=eos_id, max_lengths=limits
    )


def encdec_greedy(
    model: EncoderDecoder,
    params: PyTree,
    inputs: jax.Array,
    *,
    inputs_mask: jax.Array | None = None,
    extra_len: int = EXTRA_LEN,
    max_len: int | None = None,
    eos_id: int,
    bos_id: int,
    vocab_limit: int | None = None,
) -> Decoded:
    """Greedy translation of sources (B, S) (compiled); decoding starts from ``bos_id`` and a
    row ends at ``eos_id`` (the tokenizer's own ids).

    ``inputs_mask`` (B, S) bool marks the real source tokens (None = no padding). Row b
    generates at most (its number of real source tokens + ``extra_len``) tokens; the output
    buffer is ``min(S + extra_len, max_len, cfg.max_len)`` long. Only ids below ``vocab_limit``
    (the tokenizer's vocabulary size; None = every id) are ever chosen.
    """
    check_token_ids(inputs, model.cfg.vocab_size, "encdec_greedy inputs")
    extra_len = arguments.integer("extra_len", extra_len, 0, arguments.INT32_MAX // 2)
    inputs = jnp.asarray(inputs, jnp.int32)
    inputs_mask = check_mask(inputs_mask, inputs, "inputs_mask")
    return _encdec_greedy(
        model, params, inputs, inputs_mask, extra_len=extra_len, max_len=max_len, eos_id=eos_id, bos_id=bos_id,
        vocab_limit=check_vocab_limit(vocab_limit),
    )


@functools.partial(
    jax.jit, static_argnames=("model", "beam_size", "extra_len", "max_len", "eos_id", "bos_id", "vocab_limit")
)
def _encdec_beam_search(
    model, params, inputs, inputs_mask, alpha, *, beam_size, extra_len, max_len, eos_id, bos_id, vocab_limit
):
    buffer, limits = _encdec_lengths(model, inputs, inputs_mask, extra_len, max_len)
    step_fn, start = encdec_decoder(
        model, params, inputs, buffer, beam_size=beam_size, inputs_mask=inputs_mask, bos_id=bos_id
    )
    step_fn = limit_vocab(step_fn, vocab_limit)
    return start.beam_search(
        step_fn, beam_size=beam_size, alpha=alpha, max_len=buffer, eos_id=eos_id, max_lengths=limits
    )


def encdec_beam_search(
    model: EncoderDecoder,
    params: PyTree,
    inputs: jax.Array,
    *,
    inputs_mask: jax.Array | None = None,
    beam_size: int = BEAM_SIZE,
    alpha: float = ALPHA,
    extra_len: int = EXTRA_LEN,
    max_len: int | None = None,
    eos_id: int,
    bos_id: int,
    vocab_limit: int | None = None,
) -> Beams:
    """Beam search translation of sources (B, S) (``inputs_mask`` as in :func:`encdec_greedy`)
    with the paper's settings by default (beam 4, alpha 0.6, at most input length + 50 output
    tokens), starting from ``bos_id``; ``vocab_limit`` as in :func:`encdec_greedy`. Compiled."""
    check_token_ids(inputs, model.cfg.vocab_size, "encdec_beam_search inputs")  # on the host input
    beam_size, alpha = arguments.integer("beam_size", beam_size, 1), arguments.length_alpha(alpha)
    extra_len = arguments.integer("extra_len", extra_len, 0, arguments.INT32_MAX // 2)
    inputs = jnp.asarray(inputs, jnp.int32)
    inputs_mask = check_mask(inputs_mask, inputs, "inputs_mask")
    return _encdec_beam_search(
        model,
        params,
        inputs,
        inputs_mask,
        jnp.float32(alpha),
        beam_size=beam_size,
        extra_len=extra_len,
        max_len=max_len,
        eos_id=eos_id,
        bos_id=bos_id,
        vocab_limit=check_vocab_limit(vocab_limit),
    )
