"""What decoding returns: :class:`Decoded` (greedy, sampling) and :class:`Beams` (beam search),
the paper's search settings, tfm's own tokenizers' special ids, and the step-function type every
search calls."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from tfm.token_ids import BOS_ID, EOS_ID  # noqa: F401 - tfm's own tokenizers' ids (re-exported)

FILL_ID = 0  # written after a row's end; not a token (use Decoded.lengths / Beams.lengths)

# The paper's decoding (section 6.1), the one place of these defaults (decoding, tfm.inference,
# the CLI): beam 4, length penalty alpha 0.6, at most input length + 50 output tokens.
BEAM_SIZE = 4
ALPHA = 0.6
EXTRA_LEN = 50

PyTree = Any
StepFn = Callable[[jax.Array, PyTree], tuple[jax.Array, PyTree]]
"""``step_fn(tokens (B,) int32, state) -> (logits (B, V) float32, state)``."""


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
