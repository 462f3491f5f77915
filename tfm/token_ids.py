"""tfm's own special token ids, the check that ids lie in [0, vocab_size), and the one check
that a tokenizer's ids fit its model's embedding table.

:data:`PAD_ID`, :data:`BOS_ID`, :data:`EOS_ID`, :data:`UNK_ID`: the ids tfm's tokenizers
(:mod:`tfm.data.tokenizers`) reserve, and the defaults of the decoding entry points; an imported
tokenizer brings its own (``Tokenizer.bos_id`` / ``eos_id``).

Out of range, ``jnp.take`` gives a row of NaN (and a negative id counts from the end), so a
bad id silently turns into NaN logits and empty generations. :func:`check_token_ids` raises a
ValueError naming the first bad id, where it is and the valid range. Traced values (inside
``jax.jit``) cannot be inspected without a device round trip and are passed through.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def check_token_ids(ids: Any, vocab_size: int, what: str = "input", *, batched: bool = False) -> None:
    """Raises ValueError if any of ``ids`` (array-like of ints) is outside [0, vocab_size).

    ``batched``: ``ids`` must also be a (batch, length) array with length >= 1 (checked under
    jit too: shapes are static). The values of traced arrays (under jit) are not checked.
    """
    shape = tuple(getattr(ids, "shape", np.shape(ids)))
    if batched and (len(shape) != 2 or not shape[1]):
        raise ValueError(f"{what}: token ids must be a (batch, length) array with length >= 1, "
                         f"got shape {shape}")
    if isinstance(ids, jax.core.Tracer):
        return
    arr = np.asarray(ids)
    if arr.size == 0:
        return
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what}: token ids must be integers, got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= vocab_size)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        value = int(arr[where])
        raise ValueError(
            f"{what}: token id {value} at {where if arr.ndim > 1 else where[0]} is outside "
            f"[0, {vocab_size}) (the vocabulary); {int(bad.sum())} such id(s) in all"
        )


class VocabularyError(ValueError):
    """A tokenizer has ids the model has no embedding for."""


def check_vocabulary(tokenizer_vocab: int, model_vocab: int) -> None:
    """A tokenizer may have fewer ids than the model's embedding table (tables are often padded
    to a multiple of 64 or 128; decoding never chooses the ids past the tokenizer's), never more."""
    if tokenizer_vocab > model_vocab:
        raise VocabularyError(f"the tokenizer has {tokenizer_vocab} ids but the model only {model_vocab} "
                              "embeddings (ModelConfig.vocab_size)")
