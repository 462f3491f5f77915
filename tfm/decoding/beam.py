"""Beam search over a step function (pure JAX, no Flax): Vaswani et al. 2017 section 6.1 with the
length penalty of Wu et al. 2016; see :mod:`tfm.decoding` for the rules."""

from __future__ import annotations


import jax
import jax.numpy as jnp

from tfm.decoding.outputs import ALPHA, BEAM_SIZE, FILL_ID, Beams, PyTree, StepFn
from tfm.decoding.search import row_limits, map_rows, default_state_axes, length_penalty

def beam_search(
    step_fn: StepFn,
    state: PyTree,
    first_tokens: jax.Array,
    *,
    beam_size: int = BEAM_SIZE,
    alpha: float = ALPHA,
    max_len: int,
    eos_id: int,
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
    limits = row_limits(batch, max_len, max_lengths)
    axes = default_state_axes(state) if state_axes is None else state_axes
    state = map_rows(lambda x, ax: jnp.repeat(x, k, axis=ax), state, axes)  # row b*K + k
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
            "state": map_rows(lambda x, ax: jnp.take(x, rows, axis=ax), state, axes),
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
