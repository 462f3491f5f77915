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
rows end at ``eos_id``. Both are the tokenizer's own ids and every search requires them (no
default: they differ between tokenizers -- tfm's own use :data:`BOS_ID` 1 and :data:`EOS_ID` 2,
GPT-2 ends at 50256, Marian starts from its pad id). After a row's end its output
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

Modules, bottom to top: :mod:`~tfm.decoding.outputs` (Decoded, Beams, the paper's search settings, tfm's own special ids),
:mod:`~tfm.decoding.search` (greedy, sampling and their helpers), :mod:`~tfm.decoding.beam`,
:mod:`~tfm.decoding.adapters` (model -> step function, KV caches), :mod:`~tfm.decoding.checks`
(host-side input checks), :mod:`~tfm.decoding.lm` and :mod:`~tfm.decoding.encdec` (the
compiled entry points). Everything public is importable as ``tfm.decoding.<name>``.
"""

from tfm.decoding.adapters import Start, encdec_cache, encdec_decoder, lm_cache, lm_decoder, prompt_positions
from tfm.decoding.beam import beam_search
from tfm.decoding.encdec import encdec_beam_search, encdec_greedy
from tfm.decoding.lm import lm_beam_search, lm_generate
from tfm.decoding.outputs import ALPHA, BEAM_SIZE, BOS_ID, EOS_ID, EXTRA_LEN, FILL_ID, Beams, Decoded, PyTree, StepFn
from tfm.decoding.search import default_state_axes, filter_logits, greedy_search, length_penalty, limit_vocab, sample

__all__ = [
    "ALPHA", "BEAM_SIZE", "BOS_ID", "EXTRA_LEN", "Beams", "Decoded", "EOS_ID", "FILL_ID", "PyTree", "Start", "StepFn", "beam_search",
    "default_state_axes", "encdec_beam_search", "encdec_cache", "encdec_decoder", "encdec_greedy",
    "filter_logits", "greedy_search", "length_penalty", "lm_beam_search", "lm_cache", "lm_decoder",
    "limit_vocab", "lm_generate", "prompt_positions", "sample",
]
