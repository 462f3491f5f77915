"""Tokenized examples: what a task's raw examples become before they are planned into batches.

:class:`Encoded` holds per-example id sequences: translation ``inputs`` (source + eos) and
``targets`` (target + eos); language model ``inputs`` and ``targets`` (the sentence
``[bos] + ids + [eos]`` without its last / first token, so equally long); classification
``inputs`` (``[bos] + ids + [eos]``) and ``labels``. An example longer than its task's limit
is truncated or dropped (counted either way).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from tfm.data.tokenizers import BOS_ID, EOS_ID


@dataclasses.dataclass
class Encoded:
    """Tokenized examples of one task. ``seqs[name][i]`` is example i's int32 id sequence."""

    seqs: dict[str, list[np.ndarray]]
    labels: np.ndarray | None = None  # classification: (n,) int32
    truncated: int = 0  # examples cut to the maximum length
    dropped: int = 0  # examples left out as too long (already removed from seqs)

    def __len__(self) -> int:
        return len(next(iter(self.seqs.values())))

    def lengths(self, name: str) -> np.ndarray:
        return np.fromiter((len(s) for s in self.seqs[name]), dtype=np.int64, count=len(self))


def _fit(seq: np.ndarray, limit: int) -> tuple[np.ndarray, bool]:
    return (seq[:limit], True) if len(seq) > limit else (seq, False)


def encode_translation(
    tokenized_src: Sequence[np.ndarray], tokenized_tgt: Sequence[np.ndarray],
    max_len: int, max_target_len: int, *, drop: bool, eos_id: int = EOS_ID,
) -> Encoded:
    """Source ids -> ``inputs`` = src + [eos]; target ids -> ``targets`` = tgt + [eos].

    Overlong examples (inputs > max_len or targets > max_target_len) are dropped when ``drop``,
    else cut to the maximum length (losing their eos). ``eos_id`` is the tokenizer's own.
    """
    eos = np.array([eos_id], np.int32)
    inputs, targets, truncated, dropped = [], [], 0, 0
    for s, t in zip(tokenized_src, tokenized_tgt, strict=True):
        x, cut_x = _fit(np.concatenate([s, eos]), max_len)
        y, cut_y = _fit(np.concatenate([t, eos]), max_target_len)
        if cut_x or cut_y:
            if drop:
                dropped += 1
                continue
            truncated += 1
        inputs.append(x)
        targets.append(y)
    return Encoded({"inputs": inputs, "targets": targets}, None, truncated, dropped)


def encode_lm_sentences(
    tokenized: Sequence[np.ndarray], max_len: int, *, drop: bool, bos_id: int = BOS_ID, eos_id: int = EOS_ID
) -> Encoded:
    """Sentence ids -> seq = [bos] + ids + [eos]; ``inputs`` = seq[:-1], ``targets`` = seq[1:]
    (``bos_id`` / ``eos_id``: the tokenizer's own)."""
    inputs, targets, truncated, dropped = [], [], 0, 0
    for ids in tokenized:
        seq, cut = _fit(np.concatenate([[bos_id], ids, [eos_id]]).astype(np.int32), max_len + 1)
        if cut:
            if drop:
                dropped += 1
                continue
            truncated += 1
        inputs.append(seq[:-1])
        targets.append(seq[1:])
    return Encoded({"inputs": inputs, "targets": targets}, None, truncated, dropped)


def encode_classification(
    tokenized: Sequence[np.ndarray], labels: Sequence[int], max_len: int, *, drop: bool,
    bos_id: int = BOS_ID, eos_id: int = EOS_ID, second: Sequence[np.ndarray] | None = None,
) -> Encoded:
    """Sentence ids -> ``inputs`` = [bos] + ids + [eos] (bos doubles as a [CLS] token); with
    ``second`` (text pairs) [bos] + a + [eos] + b + [eos] and ``token_types`` 0 on the first
    part, 1 on the second (BERT's layout), the longer part shortened first when too long."""
    inputs, types, kept, truncated, dropped = [], [], [], 0, 0
    for i, (ids, label) in enumerate(zip(tokenized, labels, strict=True)):
        if second is None:
            x, cut = _fit(np.concatenate([[bos_id], ids, [eos_id]]).astype(np.int32), max_len)
        else:
            a, b = list(ids), list(second[i])
            cut = len(a) + len(b) + 3 > max_len
            while len(a) + len(b) + 3 > max_len and (a or b):
                (b if len(b) > len(a) else a).pop()
            x = np.asarray([bos_id, *a, eos_id, *b, eos_id], np.int32)[:max_len]
            types.append(np.asarray([0] * (len(a) + 2) + [1] * (len(b) + 1), np.int32)[:max_len])
        if cut:
            if drop:
                dropped += 1
                if types:
                    types.pop()
                continue
            truncated += 1
        inputs.append(x)
        kept.append(label)
    seqs = {"inputs": inputs} if second is None else {"inputs": inputs, "token_types": types}
    return Encoded(seqs, np.asarray(kept, np.int32), truncated, dropped)
