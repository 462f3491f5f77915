"""Language-model decoding: :func:`lm_generate` (greedy or sampling) and :func:`lm_beam_search`
-- each a jit-compiled search over :func:`~tfm.decoding.adapters.lm_decoder` and the host-side
wrapper that checks its inputs."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from tfm import arguments
from tfm.models import DecoderLM
from tfm.token_ids import check_token_ids
from tfm.decoding.adapters import lm_decoder
from tfm.decoding.checks import check_cache_len, check_mask, check_vocab_limit
from tfm.decoding.outputs import ALPHA, BEAM_SIZE, Beams, Decoded, PyTree
from tfm.decoding.search import greedy_search, limit_vocab, sample

def _lm_cache_len(model: DecoderLM, prompts: jax.Array, max_new_tokens: int) -> int:
    arguments.integer("max_new_tokens", max_new_tokens, 1)
    cache_len = prompts.shape[1] - 1 + max_new_tokens
    check_cache_len(
        model, cache_len, f"prompt length {prompts.shape[1]} - 1 + max_new_tokens {max_new_tokens}"
    )
    return cache_len


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "greedy", "eos_id", "vocab_limit"))
def _lm_generate(
    model, params, prompts, prompt_mask, rng, temperature, top_k, top_p, *, max_new_tokens, greedy, eos_id,
    vocab_limit,
):
    cache_len = _lm_cache_len(model, prompts, max_new_tokens)
    step_fn, start = lm_decoder(model, params, prompts, cache_len, prompt_mask)
    step_fn = limit_vocab(step_fn, vocab_limit)
    if greedy:
        return greedy_search(step_fn, start.state, start.first_tokens, max_len=max_new_tokens, eos_id=eos_id)
    return sample(
        step_fn,
        start.state,
        start.first_tokens,
        rng,
        max_len=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_id=eos_id,
    )


def lm_generate(
    model: DecoderLM,
    params: PyTree,
    prompts: jax.Array,
    *,
    max_new_tokens: int,
    prompt_mask: jax.Array | None = None,
    rng: jax.Array | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: int,
    vocab_limit: int | None = None,
) -> Decoded:
    """Continues left-padded prompts (B, P) by up to ``max_new_tokens`` tokens (compiled).

    ``prompt_mask`` (B, P) bool marks the real prompt tokens (False on the left padding, True
    in the last column); None = no padding. Greedy when ``temperature == 0`` or no ``rng`` is
    given; otherwise samples from :func:`filter_logits`. Needs ``P - 1 + max_new_tokens <=
    cfg.max_len``. Only ids below ``vocab_limit`` (the tokenizer's vocabulary size, when the
    embedding table is padded past it; None = every id) are ever generated. A row ends at
    ``eos_id`` (the tokenizer's; -1 = never). Returns :class:`Decoded` with (B, max_new_tokens)
    tokens.
    """
    check_token_ids(prompts, model.cfg.vocab_size, "lm_generate prompts")  # on the host input
    prompts = jnp.asarray(prompts, jnp.int32)
    prompt_mask = check_mask(prompt_mask, prompts, "prompt_mask", last_column=True)
    _lm_cache_len(model, prompts, max_new_tokens)  # fail before tracing
    temperature, top_k, top_p = arguments.sampling(temperature, top_k, top_p)
    greedy = rng is None or temperature == 0.0
    rng = jax.random.key(0) if rng is None else rng
    return _lm_generate(
        model,
        params,
        prompts,
        prompt_mask,
        rng,
        jnp.float32(max(temperature, 1e-6)),
        jnp.int32(top_k),
        jnp.float32(top_p),
        max_new_tokens=max_new_tokens,
        greedy=greedy,
        eos_id=eos_id,
        vocab_limit=check_vocab_limit(vocab_limit),
    )


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "beam_size", "eos_id", "vocab_limit"))
def _lm_beam_search(model, params, prompts, prompt_mask, alpha, *, max_new_tokens, beam_size, eos_id, vocab_limit):
    cache_len = _lm_cache_len(model, prompts, max_new_tokens)
    step_fn, start = lm_decoder(model, params, prompts, cache_len, prompt_mask)
    step_fn = limit_vocab(step_fn, vocab_limit)
    return start.beam_search(step_fn, beam_size=beam_size, alpha=alpha, max_len=max_new_tokens, eos_id=eos_id)


def lm_beam_search(
    model: DecoderLM,
    params: PyTree,
    prompts: jax.Array,
    *,
    max_new_tokens: int,
    prompt_mask: jax.Array | None = None,
    beam_size: int = BEAM_SIZE,
    alpha: float = ALPHA,
    eos_id: int,
    vocab_limit: int | None = None,
) -> Beams:
    """Beam search continuing left-padded prompts (B, P) (``prompt_mask`` and ``vocab_limit``
    as in :func:`lm_generate`): (B, K, max_new_tokens) hypotheses."""
    check_token_ids(prompts, model.cfg.vocab_size, "lm_beam_search prompts")
    beam_size, alpha = arguments.integer("beam_size", beam_size, 1), arguments.length_alpha(alpha)
    prompts = jnp.asarray(prompts, jnp.int32)
    prompt_mask = check_mask(prompt_mask, prompts, "prompt_mask", last_column=True)
    _lm_cache_len(model, prompts, max_new_tokens)  # fail before tracing
    return _lm_beam_search(
        model,
        params,
        prompts,
        prompt_mask,
        jnp.float32(alpha),
        max_new_tokens=max_new_tokens,
        beam_size=beam_size,
        eos_id=eos_id,
        vocab_limit=check_vocab_limit(vocab_limit),
    )
