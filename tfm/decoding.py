"""Autoregressive decoding: greedy, sampling and beam search over a key/value-cached decoder.

Everything here is compiled: each search is one ``lax.while_loop`` (no Python loop per token),
batched, and every row stops at its own end-of-sequence token.

Two layers, bottom to top:

1. **Searches over a step function** (pure JAX, no Flax): a *step function* maps the previous
   token of every row and a state pytree to next-token logits and the new state,

       step_fn(tokens (B,) int32, state) -> (logits (B, V) float32, state)

   :func:`greedy_search`, :func:`sample` and :func:`beam_search` only call it, so they can be
   tested against hand-built next-token distributions with no model at all.

2. **Model adapters** turn a cached model into such a step function:
   :func:`lm_decoder` (a :class:`~tfm.models.DecoderLM`: prefill a left-padded prompt, then one
   token per step) and :func:`encdec_decoder` (an :class:`~tfm.models.EncoderDecoder`: encode the
   source once, start from BOS; cross-attention keys/values are projected on the first step and
   cached). The jit-compiled entry points :func:`lm_generate`, :func:`lm_beam_search`,
   :func:`encdec_greedy` and :func:`encdec_beam_search` put the two together.

Padding is data, never a token id (any id, 0 included, is a real token): prompts and sources
carry their validity as a (B, P) / (B, S) bool mask, True on real tokens -- ``prompt_mask``
for language-model prompts, which are LEFT-padded (every row's last prompt token in the last
column), ``inputs_mask`` for encoder-decoder sources (padding anywhere, usually on the right).
A mask of None means every token is real. Encoder-decoder outputs start from ``bos_id`` and
rows end at ``eos_id`` (defaults 1 and 2, the ids of tfm's own tokenizers; pass the tokenizer's
own ids otherwise -- Marian starts from its pad id). After a row's end its output
holds :data:`FILL_ID` (0): filler, not a token -- read a row's tokens up to its ``lengths``.

Beam search (Vaswani et al. 2017, section 6.1: beam 4, length penalty alpha = 0.6, maximum
output length = input length + 50) scores a finished hypothesis Y by

    score(Y) = log P(Y | X) / lp(Y),   lp(Y) = (5 + |Y|)^alpha / (5 + 1)^alpha   (Wu et al. 2016)

where |Y| counts the generated tokens including EOS. Each step expands every live beam by every
token, keeps the 2K best candidates by log-probability and, as in fairseq: a candidate ending in
EOS becomes a finished hypothesis if it ranks among the best K; the K best candidates not ending
in EOS stay live; a row stops once it has K finished hypotheses and no live beam can beat the
worst of them any more (its log-probability over the length penalty at the row's maximum length
is an upper bound, as in tensor2tensor), or at its maximum length, where its K best candidates
are all finished as they are. Finished hypotheses are ranked by score. With
K = 1 and alpha = 0 this is exactly greedy search; with alpha > 0 the length penalty can let
the runner-up of an early EOS go on and win with a longer hypothesis (as in tensor2tensor).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tfm.attention import real_tokens
from tfm.models import DecoderLM, EncoderDecoder
from tfm.token_ids import check_token_ids

FILL_ID = 0  # written after a row's end; not a token (use Decoded.lengths / Beams.lengths)
BOS_ID = 1
EOS_ID = 2

PyTree = Any
StepFn = Callable[[jax.Array, PyTree], tuple[jax.Array, PyTree]]
"""``step_fn(tokens (B,) int32, state) -> (logits (B, V) float32, state)``."""


# ---------------------------------------------------------------------- outputs
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Decoded:
    """Output of greedy search and sampling.

    tokens: (B, L) int32 generated tokens (EOS included when produced), then FILL_ID filler.
    lengths: (B,) int32 number of generated tokens of each row (EOS included).
    """

    tokens: jax.Array
    lengths: jax.Array

    def to_lists(self) -> list[list[int]]:
        """Each row's generated ids (EOS included when produced), without the filler (host)."""
        tokens, lengths = np.asarray(self.tokens), np.asarray(self.lengths)
        return [tokens[b, : lengths[b]].tolist() for b in range(tokens.shape[0])]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Beams:
    """Output of beam search: the K best finished hypotheses of each row, best first.

    tokens: (B, K, L) int32 hypotheses (EOS included when produced), then FILL_ID filler.
    scores: (B, K) float32 log P(Y | X) / lp(|Y|); -inf for an empty slot.
    lengths: (B, K) int32 |Y|, EOS included.
    """

    tokens: jax.Array
    scores: jax.Array
    lengths: jax.Array

    def best(self) -> Decoded:
        """The best hypothesis of each row: (B, L) tokens and (B,) lengths."""
        return Decoded(tokens=self.tokens[:, 0], lengths=self.lengths[:, 0])


# ---------------------------------------------------------------------- pure helpers
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


def default_state_axes(state: PyTree) -> PyTree:
    """Batch axis of every leaf of a decoding state: 0, or None for scalars (e.g. a cache index)."""
    return jax.tree.map(lambda x: None if jnp.ndim(x) == 0 else 0, state)


def _map_rows(fn: Callable[[jax.Array, int], jax.Array], state: PyTree, axes: PyTree) -> PyTree:
    """Applies ``fn(leaf, batch_axis)`` to every leaf whose batch axis is not None."""
    return jax.tree.map(
        lambda ax, x: x if ax is None else fn(x, ax), axes, state, is_leaf=lambda ax: ax is None
    )


def _limits(batch: int, max_len: int, max_lengths: jax.Array | None) -> jax.Array:
    """(B,) int32 per-row output length limit, at most ``max_len``."""
    if max_lengths is None:
        return jnp.full((batch,), max_len, jnp.int32)
    return jnp.minimum(jnp.asarray(max_lengths, jnp.int32), max_len)


# ---------------------------------------------------------------------- greedy and sampling
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
    limits = _limits(batch, max_len, max_lengths)

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
    eos_id: int = EOS_ID,
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
    eos_id: int = EOS_ID,
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


# ---------------------------------------------------------------------- beam search
def beam_search(
    step_fn: StepFn,
    state: PyTree,
    first_tokens: jax.Array,
    *,
    beam_size: int = 4,
    alpha: float = 0.6,
    max_len: int,
    eos_id: int = EOS_ID,
    max_lengths: jax.Array | None = None,
    state_axes: PyTree | None = None,
) -> Beams:
    """Beam search with the length penalty of Wu et al. 2016 (see the module docstring).

    Args:
      step_fn: see :data:`StepFn`; it is called on B*K rows (row b*K + k is beam k of row b).
      state: initial state for B rows; every leaf is repeated K times along its batch axis, and
        reordered along it as beams are selected.
      first_tokens: (B,) the token fed first.
      beam_size: K. alpha: length-penalty exponent (0 = raw log-probabilities).
      max_len: static length L of the output buffer; max_lengths: optional (B,) limits <= L.
      state_axes: pytree like ``state`` giving each leaf's batch axis (None = not per row);
        default :func:`default_state_axes`.
    Returns:
      :class:`Beams` with (B, K, L) tokens, best hypothesis first.
    """
    batch, k = first_tokens.shape[0], beam_size
    limits = _limits(batch, max_len, max_lengths)
    axes = default_state_axes(state) if state_axes is None else state_axes
    state = _map_rows(lambda x, ax: jnp.repeat(x, k, axis=ax), state, axes)  # row b*K + k
    neg_inf = jnp.float32(-jnp.inf)
    rank = jnp.arange(2 * k)  # (2K,)

    def gather(x, idx):  # x (B, M, ...), idx (B, K') -> (B, K', ...)
        return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)

    def cond(carry):
        return (carry["i"] < max_len) & ~jnp.all(carry["done"])

    def body(c):
        i = c["i"]
        logits, state = step_fn(c["last"].reshape(batch * k), c["state"])  # (B*K, V)
        vocab = logits.shape[-1]
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(batch, k, vocab)
        cand = (c["live_logp"][:, :, None] + logp).reshape(batch, k * vocab)  # (B, K*V)
        top_logp, top_idx = jax.lax.top_k(cand, 2 * k)  # (B, 2K), best first
        src, token = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)  # (B, 2K)
        seqs = gather(c["live_seqs"], src)  # (B, 2K, L)
        seqs = jax.lax.dynamic_update_slice(seqs, token[:, :, None], (0, 0, i))
        ok = jnp.isfinite(top_logp)
        is_eos = token == eos_id
        at_limit = (i + 1 >= limits)[:, None]  # (B, 1)

        # Finished: EOS among the best K candidates (every best-K candidate at the limit).
        finish = ok & (rank < k) & (is_eos | at_limit) & ~c["done"][:, None]  # (B, 2K)
        length = i + 1
        scores = jnp.where(finish, top_logp / length_penalty(length, alpha), neg_inf)
        all_scores = jnp.concatenate([c["fin_scores"], scores], axis=1)  # (B, 3K)
        fin_scores, best = jax.lax.top_k(all_scores, k)  # (B, K)
        fin_seqs = gather(jnp.concatenate([c["fin_seqs"], seqs], axis=1), best)
        lengths = jnp.concatenate([c["fin_lengths"], jnp.full((batch, 2 * k), length, jnp.int32)], 1)
        fin_lengths = gather(lengths, best)

        # Live: the best K candidates that do not end in EOS.
        live_cand = jnp.where(is_eos | ~ok, neg_inf, top_logp)
        live_logp, keep = jax.lax.top_k(live_cand, k)  # (B, K)
        # A row is done when no live beam can still beat the worst of its K finished ones
        # (-inf while fewer than K have finished): log-probabilities only fall as a beam grows,
        # so the best a live beam can reach is its log-probability over the length penalty at
        # the row's limit. (Stopping at K finished let K short junk hypotheses end the search.)
        bound = live_logp[:, 0] / length_penalty(limits, alpha)
        done = (c["done"] | (fin_scores[:, -1] >= bound) | at_limit[:, 0]
                | ~jnp.isfinite(live_logp[:, 0]))
        rows = (jnp.arange(batch)[:, None] * k + gather(src, keep)).reshape(batch * k)
        return {
            "i": i + 1,
            "last": gather(token, keep),
            "live_logp": live_logp,
            "live_seqs": gather(seqs, keep),
            "fin_seqs": fin_seqs,
            "fin_scores": fin_scores,
            "fin_lengths": fin_lengths,
            "done": done,
            "state": _map_rows(lambda x, ax: jnp.take(x, rows, axis=ax), state, axes),
        }

    carry = {
        "i": jnp.zeros((), jnp.int32),
        "last": jnp.broadcast_to(first_tokens.astype(jnp.int32)[:, None], (batch, k)),
        # Only beam 0 is live at the start (the K copies are identical).
        "live_logp": jnp.where(jnp.arange(k) == 0, 0.0, neg_inf).astype(jnp.float32)[None].repeat(batch, 0),
        "live_seqs": jnp.full((batch, k, max_len), FILL_ID, jnp.int32),
        "fin_seqs": jnp.full((batch, k, max_len), FILL_ID, jnp.int32),
        "fin_scores": jnp.full((batch, k), neg_inf),
        "fin_lengths": jnp.zeros((batch, k), jnp.int32),
        "done": limits <= 0,
        "state": state,
    }
    out = jax.lax.while_loop(cond, body, carry)
    return Beams(tokens=out["fin_seqs"], scores=out["fin_scores"], lengths=out["fin_lengths"])


# ---------------------------------------------------------------------- model adapters
@dataclasses.dataclass(frozen=True)
class Start:
    """What a search needs to run a model: the step function's initial state, the first token
    of every row and the batch axis of every state leaf (static).

    The step function itself is built by the adapter (it closes over the params).
    """

    state: PyTree
    first_tokens: jax.Array
    state_axes: PyTree


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
    bos_id: int = BOS_ID,
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


# ---------------------------------------------------------------------- compiled entry points
def _check_cache_len(model: nn.Module, length: int, what: str) -> None:
    if length > model.cfg.max_len:
        raise ValueError(f"{what}: {length} tokens do not fit ModelConfig.max_len={model.cfg.max_len}")


def _check_mask(mask, tokens: jax.Array, name: str, last_column: bool = False) -> jax.Array | None:
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


def _lm_cache_len(model: DecoderLM, prompts: jax.Array, max_new_tokens: int) -> int:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}: must be >= 1")
    cache_len = prompts.shape[1] - 1 + max_new_tokens
    _check_cache_len(
        model, cache_len, f"prompt length {prompts.shape[1]} - 1 + max_new_tokens {max_new_tokens}"
    )
    return cache_len


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "greedy", "eos_id"))
def _lm_generate(
    model, params, prompts, prompt_mask, rng, temperature, top_k, top_p, *, max_new_tokens, greedy, eos_id
):
    cache_len = _lm_cache_len(model, prompts, max_new_tokens)
    step_fn, start = lm_decoder(model, params, prompts, cache_len, prompt_mask)
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
    eos_id: int = EOS_ID,
) -> Decoded:
    """Continues left-padded prompts (B, P) by up to ``max_new_tokens`` tokens (compiled).

    ``prompt_mask`` (B, P) bool marks the real prompt tokens (False on the left padding, True
    in the last column); None = no padding. Greedy when ``temperature == 0`` or no ``rng`` is
    given; otherwise samples from :func:`filter_logits`. Needs ``P - 1 + max_new_tokens <=
    cfg.max_len``. Returns :class:`Decoded` with (B, max_new_tokens) tokens.
    """
    check_token_ids(prompts, model.cfg.vocab_size, "lm_generate prompts")  # on the host input
    prompts = jnp.asarray(prompts, jnp.int32)
    prompt_mask = _check_mask(prompt_mask, prompts, "prompt_mask", last_column=True)
    _lm_cache_len(model, prompts, max_new_tokens)  # fail before tracing
    if not 0 <= temperature < math.inf or top_k < 0 or not 0.0 < top_p <= 1.0:  # NaN fails too
        raise ValueError(
            f"need a finite temperature >= 0, top_k >= 0 and 0 < top_p <= 1; got temperature={temperature}, "
            f"top_k={top_k}, top_p={top_p}"
        )
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
    )


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "beam_size", "eos_id"))
def _lm_beam_search(model, params, prompts, prompt_mask, alpha, *, max_new_tokens, beam_size, eos_id):
    cache_len = _lm_cache_len(model, prompts, max_new_tokens)
    step_fn, start = lm_decoder(model, params, prompts, cache_len, prompt_mask)
    return beam_search(
        step_fn,
        start.state,
        start.first_tokens,
        beam_size=beam_size,
        alpha=alpha,
        max_len=max_new_tokens,
        eos_id=eos_id,
        state_axes=start.state_axes,
    )


def lm_beam_search(
    model: DecoderLM,
    params: PyTree,
    prompts: jax.Array,
    *,
    max_new_tokens: int,
    prompt_mask: jax.Array | None = None,
    beam_size: int = 4,
    alpha: float = 0.6,
    eos_id: int = EOS_ID,
) -> Beams:
    """Beam search continuing left-padded prompts (B, P) (``prompt_mask`` as in
    :func:`lm_generate`): (B, K, max_new_tokens) hypotheses."""
    check_token_ids(prompts, model.cfg.vocab_size, "lm_beam_search prompts")
    prompts = jnp.asarray(prompts, jnp.int32)
    prompt_mask = _check_mask(prompt_mask, prompts, "prompt_mask", last_column=True)
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
    )


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


@functools.partial(jax.jit, static_argnames=("model", "extra_len", "max_len", "eos_id", "bos_id"))
def _encdec_greedy(model, params, inputs, inputs_mask, *, extra_len, max_len, eos_id, bos_id):
    buffer, limits = _encdec_lengths(model, inputs, inputs_mask, extra_len, max_len)
    step_fn, start = encdec_decoder(model, params, inputs, buffer, inputs_mask=inputs_mask, bos_id=bos_id)
    return greedy_search(
        step_fn, start.state, start.first_tokens, max_len=buffer, eos_id=eos_id, max_lengths=limits
    )


def encdec_greedy(
    model: EncoderDecoder,
    params: PyTree,
    inputs: jax.Array,
    *,
    inputs_mask: jax.Array | None = None,
    extra_len: int = 50,
    max_len: int | None = None,
    eos_id: int = EOS_ID,
    bos_id: int = BOS_ID,
) -> Decoded:
    """Greedy translation of sources (B, S) (compiled); decoding starts from ``bos_id``.

    ``inputs_mask`` (B, S) bool marks the real source tokens (None = no padding). Row b
    generates at most (its number of real source tokens + ``extra_len``) tokens; the output
    buffer is ``min(S + extra_len, max_len, cfg.max_len)`` long.
    """
    check_token_ids(inputs, model.cfg.vocab_size, "encdec_greedy inputs")
    inputs = jnp.asarray(inputs, jnp.int32)
    inputs_mask = _check_mask(inputs_mask, inputs, "inputs_mask")
    return _encdec_greedy(
        model, params, inputs, inputs_mask, extra_len=extra_len, max_len=max_len, eos_id=eos_id, bos_id=bos_id
    )


@functools.partial(jax.jit, static_argnames=("model", "beam_size", "extra_len", "max_len", "eos_id", "bos_id"))
def _encdec_beam_search(model, params, inputs, inputs_mask, alpha, *, beam_size, extra_len, max_len, eos_id, bos_id):
    buffer, limits = _encdec_lengths(model, inputs, inputs_mask, extra_len, max_len)
    step_fn, start = encdec_decoder(
        model, params, inputs, buffer, beam_size=beam_size, inputs_mask=inputs_mask, bos_id=bos_id
    )
    return beam_search(
        step_fn,
        start.state,
        start.first_tokens,
        beam_size=beam_size,
        alpha=alpha,
        max_len=buffer,
        eos_id=eos_id,
        max_lengths=limits,
        state_axes=start.state_axes,
    )


def encdec_beam_search(
    model: EncoderDecoder,
    params: PyTree,
    inputs: jax.Array,
    *,
    inputs_mask: jax.Array | None = None,
    beam_size: int = 4,
    alpha: float = 0.6,
    extra_len: int = 50,
    max_len: int | None = None,
    eos_id: int = EOS_ID,
    bos_id: int = BOS_ID,
) -> Beams:
    """Beam search translation of sources (B, S) (``inputs_mask`` as in :func:`encdec_greedy`)
    with the paper's settings by default (beam 4, alpha 0.6, at most input length + 50 output
    tokens), starting from ``bos_id``. Compiled."""
    check_token_ids(inputs, model.cfg.vocab_size, "encdec_beam_search inputs")  # on the host input
    inputs = jnp.asarray(inputs, jnp.int32)
    inputs_mask = _check_mask(inputs_mask, inputs, "inputs_mask")
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
    )
