"""tfm's own special token ids, and the check that ids lie in [0, vocab_size).

:data:`PAD_ID`, :data:`BOS_ID`, :data:`EOS_ID`, :data:`UNK_ID`: the ids tfm's tokenizers
(:mod:`tfm.data.tokenizers`) reserve, and the defaults of the decoding entry points; an imported
tokenizer brings its own (``Tokenizer.bos_id`` / ``eos_id``).

Token ids must lie in [0, vocab_size): a check for every place tfm sees ids eagerly.

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
