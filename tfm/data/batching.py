"""Batches: assembling planned rows into arrays, LM windows, and the resumable iterators.

Everything here is NumPy; batches are dicts of host-local int32 arrays in the format of the
shared contract (see :mod:`tfm.data.pipeline`). Padding travels as data: every batch carries
segment ids (0 = padding, 1, 2, ... = the example of a packed row; an unpacked row is 1 on its
real tokens), positions and float32 ``weights`` (0 on padding); the ids written into padded
positions (the tokenizer's pad id 0) mean nothing to the model or the loss.

Batches are assembled from tokenized examples (:mod:`tfm.data.examples`) by a plan of their rows
(:mod:`tfm.data.plans`): padded, packed or bucketed rows, each host its own rows of every
global batch.

Resumable iteration: the training order is a pure function of (seed, epoch, chunk, batch):
:class:`ChunkedIterator` and :class:`WindowIterator` have ``get_state() -> dict`` (JSON-able)
and ``set_state(dict)``, after which the next batch is the one an uninterrupted run would give.
"""

from __future__ import annotations

import abc
import concurrent.futures
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from tfm.data.examples import Encoded
from tfm.data.plans import PlannedBatch, Row, host_rows
from tfm.data.tokenizers import BOS_ID, PAD_ID

Batch = dict[str, np.ndarray]


# ================================================================================ assembly
def _pack_rows(
    seqs: list[np.ndarray], rows: Sequence[Row], length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenates each row's sequences: (ids, segment_ids, positions), each (R, length)."""
    ids = np.zeros((len(rows), length), np.int32)
    seg = np.zeros((len(rows), length), np.int32)
    pos = np.zeros((len(rows), length), np.int32)
    for r, row in enumerate(rows):
        t = 0
        for k, i in enumerate(row):
            s = seqs[i]
            n = len(s)
            if t + n > length:
                raise ValueError(f"row {r} overflows its length {length}")
            ids[r, t:t + n] = s
            seg[r, t:t + n] = k + 1
            pos[r, t:t + n] = np.arange(n)
            t += n
    return ids, seg, pos


def _shift_right(targets: np.ndarray, segment_ids: np.ndarray, bos_id: int = BOS_ID) -> np.ndarray:
    """decoder_inputs = [bos] + targets[:-1], restarting with bos at each segment (padding: 0)."""
    out = np.zeros_like(targets)
    out[:, 1:] = targets[:, :-1]
    starts = np.ones_like(segment_ids, dtype=bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    out = np.where(starts, bos_id, out)
    return np.where(segment_ids > 0, out, PAD_ID).astype(np.int32)


def _weights(segment_ids: np.ndarray) -> np.ndarray:
    """float32 loss weights: 1 on real tokens (segment id > 0), 0 on padding."""
    return (segment_ids > 0).astype(np.float32)


def assemble_translation(
    enc: Encoded, rows: Sequence[Row], src_len: int, tgt_len: int, bos_id: int = BOS_ID
) -> Batch:
    """inputs (R,S), decoder_inputs (R,T), targets (R,T), their segment ids and positions, and
    weights (R,T). Packed or not, the format is the same: an unpacked row is a packed row of one
    example (segment id 1 on its tokens). ``bos_id``: the decoder's start token (the
    tokenizer's; Marian starts from its pad id)."""
    x, xs, xp = _pack_rows(enc.seqs["inputs"], rows, src_len)
    y, ys, yp = _pack_rows(enc.seqs["targets"], rows, tgt_len)
    return {"inputs": x, "decoder_inputs": _shift_right(y, ys, bos_id), "targets": y,
            "inputs_segment_ids": xs, "inputs_positions": xp,
            "targets_segment_ids": ys, "targets_positions": yp, "weights": _weights(ys)}


def assemble_lm(enc: Encoded, rows: Sequence[Row], length: int) -> Batch:
    """inputs (R,T), targets (R,T), segment_ids, positions, weights (R,T) (as translation)."""
    x, seg, pos = _pack_rows(enc.seqs["inputs"], rows, length)
    y, _, _ = _pack_rows(enc.seqs["targets"], rows, length)  # same lengths: same segments
    return {"inputs": x, "targets": y, "segment_ids": seg, "positions": pos, "weights": _weights(seg)}


def assemble_classification(enc: Encoded, rows: Sequence[Row], length: int) -> Batch:
    """inputs (R,S), segment_ids, positions (R,S), label (R,), weights (R,) (1 per example)."""
    x, seg, pos = _pack_rows(enc.seqs["inputs"], rows, length)
    labels = np.array([enc.labels[row[0]] for row in rows], np.int32).reshape(len(rows))
    batch = {"inputs": x, "segment_ids": seg, "positions": pos, "label": labels,
             "weights": np.ones(labels.shape, np.float32)}
    if "token_types" in enc.seqs:  # sentence pairs (BERT's segment A/B)
        batch["token_types"] = _pack_rows(enc.seqs["token_types"], rows, length)[0]
    return batch


def add_eval_weights(batch: Batch, num_real_rows: int) -> Batch:
    """Zeroes the ``weights`` of the rows from ``num_real_rows`` on (padding examples)."""
    w = batch["weights"].copy()
    w[num_real_rows:] = 0.0
    batch["weights"] = w
    return batch


def pad_rows(batch: Batch, rows: int) -> Batch:
    """Appends all-zero rows up to ``rows`` (the padding examples of a last eval batch)."""
    out = {}
    for k, v in batch.items():
        pad = np.zeros((rows - v.shape[0],) + v.shape[1:], v.dtype)
        out[k] = np.concatenate([v, pad])
    return out


# ================================================================================ iterators
class BatchIterator(abc.ABC):
    """Infinite, deterministic, resumable iterator of host-local batches.

    ``stats`` holds running counts for the logs (examples seen, truncated, dropped).
    """

    stats: dict[str, int]

    def __iter__(self) -> "BatchIterator":
        return self

    @abc.abstractmethod
    def __next__(self) -> Batch: ...

    @abc.abstractmethod
    def get_state(self) -> dict[str, Any]:
        """JSON-able position: the next batch after ``set_state`` of it is the next one here."""

    @abc.abstractmethod
    def set_state(self, state: dict[str, Any]) -> None: ...

    def _check_state(self, state: dict[str, Any], **expected) -> None:
        for key, value in expected.items():
            if state.get(key) != value:
                raise ValueError(
                    f"{type(self).__name__}.set_state: the saved data state has {key}="
                    f"{state.get(key)!r} but this pipeline has {value!r} (was the data config "
                    "changed between the runs?)"
                )


class WindowIterator(BatchIterator):
    """nanoGPT-style LM batches: B random windows of T+1 tokens of one token stream.

    Batch ``step`` draws its window starts from ``np.random.default_rng([seed, step])`` alone,
    so the stream is resumable from the step number.
    """

    kind = "windows"

    def __init__(self, tokens: np.ndarray, context: int, batch_size: int, seed: int,
                 process_index: int = 0, process_count: int = 1):
        tokens = np.asarray(tokens, np.int32)
        if len(tokens) < context + 1:
            raise ValueError(
                f"the training text has {len(tokens)} tokens, fewer than max_len + 1 = "
                f"{context + 1}: use a longer text or a smaller max_len"
            )
        if batch_size % process_count:
            raise ValueError(f"batch_size={batch_size} is not divisible by {process_count} hosts")
        self.tokens, self.context, self.batch_size, self.seed = tokens, context, batch_size, seed
        self.process_index, self.process_count = process_index, process_count
        self.step = 0
        self.stats = {"tokens": int(len(tokens))}

    def window_starts(self, step: int) -> np.ndarray:
        """(B,) global window starts of batch ``step``."""
        rng = np.random.default_rng([self.seed, step])
        return rng.integers(0, len(self.tokens) - self.context, size=self.batch_size)

    def __next__(self) -> Batch:
        starts = self.window_starts(self.step)
        per = self.batch_size // self.process_count
        starts = starts[self.process_index * per:(self.process_index + 1) * per]
        idx = starts[:, None] + np.arange(self.context + 1)[None, :]  # (B, T+1)
        windows = self.tokens[idx]
        self.step += 1
        return _window_batch(windows[:, :-1], windows[:, 1:], np.full(len(windows), self.context))

    def get_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "seed": self.seed, "step": self.step}

    def set_state(self, state: dict[str, Any]) -> None:
        self._check_state(state, kind=self.kind, seed=self.seed)
        self.step = int(state["step"])


class ChunkedIterator(BatchIterator):
    """Epochs over an example source, chunk by chunk, batch by batch.

    Epoch ``e`` visits the source in an order fixed by (seed, e): a random-access source is
    permuted whole and cut into chunks of ``chunk_size``; a sequential one is cut into blocks of
    ``chunk_size`` consecutive examples, visited in a permuted order and permuted inside. Each
    chunk is tokenized (``encode``), planned (``plan``) into global batches, and the host's rows
    of each are assembled (``assemble``). The position is (epoch, chunk, batch).

    With ``prefetch`` the next chunk is read and tokenized in a background thread while the
    current one is being consumed (the result is the same: chunks are pure functions of
    (seed, epoch, chunk)).

    Args:
      source: a :class:`tfm.data.sources.ExampleSource`.
      encode: raw examples -> :class:`Encoded`.
      plan: Encoded -> list of :class:`PlannedBatch`.
      assemble: (Encoded, host rows, PlannedBatch) -> batch.
    """

    kind = "chunks"

    def __init__(self, source, encode: Callable[[list[Any]], Encoded],
                 plan: Callable[[Encoded], list[PlannedBatch]],
                 assemble: Callable[[Encoded, Sequence[Row], PlannedBatch], Batch],
                 *, chunk_size: int, seed: int, process_index: int = 0, process_count: int = 1,
                 prefetch: bool = True):
        if source.num_examples == 0:
            raise ValueError("the training split has no examples")
        self.source, self.encode, self.plan, self.assemble = source, encode, plan, assemble
        self.chunk_size, self.seed = chunk_size, seed
        self.process_index, self.process_count = process_index, process_count
        self.num_chunks = math.ceil(source.num_examples / chunk_size)
        self.epoch, self.chunk, self.batch = 0, 0, 0
        self.stats = {"examples": 0, "truncated": 0, "dropped": 0, "chunks": 0}
        self._cache_key: tuple[int, int] | None = None
        self._cache: tuple[Encoded, list[PlannedBatch]] | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(1) if prefetch else None
        self._pending: tuple[tuple[int, int], concurrent.futures.Future] | None = None

    # --------------------------------------------------------------- order
    def _order(self, epoch: int) -> np.ndarray:
        """Random access: a permutation of the examples; sequential: of the blocks."""
        n = self.source.num_examples if self.source.random_access else self.num_chunks
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def chunk_examples(self, epoch: int, chunk: int) -> list[Any]:
        """The raw examples of chunk ``chunk`` of epoch ``epoch``, in training order."""
        order = self._order(epoch)
        if self.source.random_access:
            return self.source.take(order[chunk * self.chunk_size:(chunk + 1) * self.chunk_size])
        block = int(order[chunk])
        examples = self.source.read(block * self.chunk_size, (block + 1) * self.chunk_size)
        perm = np.random.default_rng([self.seed, epoch, chunk]).permutation(len(examples))
        return [examples[i] for i in perm]

    def _prepare(self, epoch: int, chunk: int) -> tuple[Encoded, list[PlannedBatch]]:
        enc = self.encode(self.chunk_examples(epoch, chunk))
        return enc, (self.plan(enc) if len(enc) else [])

    def _following(self, epoch: int, chunk: int) -> tuple[int, int]:
        return (epoch, chunk + 1) if chunk + 1 < self.num_chunks else (epoch + 1, 0)

    def _load(self, epoch: int, chunk: int) -> tuple[Encoded, list[PlannedBatch]]:
        if self._cache_key != (epoch, chunk):
            if self._pending is not None and self._pending[0] == (epoch, chunk):
                enc, plan = self._pending[1].result()
            else:
                enc, plan = self._prepare(epoch, chunk)
            self._pending = None
            self._cache_key, self._cache = (epoch, chunk), (enc, plan)
            if self._pool is not None:
                key = self._following(epoch, chunk)
                self._pending = (key, self._pool.submit(self._prepare, *key))
            self.stats["examples"] += len(enc) + enc.dropped
            self.stats["truncated"] += enc.truncated
            self.stats["dropped"] += enc.dropped
            self.stats["chunks"] += 1
            if enc.truncated or enc.dropped:
                logging.info(
                    "training data (epoch %d, chunk %d): %d examples, %d truncated and %d "
                    "dropped as longer than the maximum length", epoch, chunk,
                    len(enc) + enc.dropped, enc.truncated, enc.dropped)
        return self._cache

    # --------------------------------------------------------------- iteration
    def __next__(self) -> Batch:
        empty_chunks = 0
        while True:
            enc, plan = self._load(self.epoch, self.chunk)
            if self.batch < len(plan):
                break
            empty_chunks = empty_chunks + 1 if not plan else 0
            if empty_chunks > self.num_chunks:
                raise ValueError(
                    "no training batch can be formed: every example was dropped as longer than "
                    "the maximum length (raise max_len/max_target_len or use overlong='truncate')")
            self.batch = 0
            self.chunk += 1
            if self.chunk == self.num_chunks:
                self.chunk, self.epoch = 0, self.epoch + 1
        planned = plan[self.batch]
        self.batch += 1
        rows = host_rows(planned.rows, self.process_index, self.process_count)
        return self.assemble(enc, rows, planned)

    def get_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "seed": self.seed, "chunk_size": self.chunk_size,
                "epoch": self.epoch, "chunk": self.chunk, "batch": self.batch}

    def set_state(self, state: dict[str, Any]) -> None:
        self._check_state(state, kind=self.kind, seed=self.seed, chunk_size=self.chunk_size)
        self.epoch, self.chunk, self.batch = int(state["epoch"]), int(state["chunk"]), int(state["batch"])


def eval_batches(
    enc: Encoded, batch_rows: int, assemble: Callable[[Encoded, Sequence[Row]], Batch],
    process_index: int = 0, process_count: int = 1,
) -> Iterator[Batch]:
    """Examples in order, ``batch_rows`` (global) per batch; the last padded with weight-0 rows."""
    n = len(enc)
    per = batch_rows // process_count
    for start in range(0, n, batch_rows):
        lo = start + process_index * per
        rows = [[i] for i in range(lo, min(lo + per, n))]
        batch = assemble(enc, rows)
        real = len(rows)
        yield add_eval_weights(pad_rows(batch, per), real)


def eval_windows(
    tokens: np.ndarray, context: int, batch_rows: int, max_windows: int = 0,
    process_index: int = 0, process_count: int = 1,
) -> Iterator[Batch]:
    """Non-overlapping LM windows covering the stream once (every token after the first is a
    target exactly once); the last window and the last batch are padded with weight 0."""
    tokens = np.asarray(tokens, np.int32)
    n_windows = num_windows(len(tokens), context, max_windows)
    per = batch_rows // process_count
    for start in range(0, n_windows, batch_rows):
        inputs = np.zeros((per, context), np.int32)
        targets = np.zeros((per, context), np.int32)
        lengths = np.zeros(per, np.int64)  # real targets of each row (0 on padding rows)
        lo = start + process_index * per
        for r, w in enumerate(range(lo, min(lo + per, n_windows))):
            y = tokens[w * context + 1:(w + 1) * context + 1]
            # the last window: inputs beyond the last target are padding
            inputs[r, :len(y)] = tokens[w * context:w * context + len(y)]
            targets[r, :len(y)] = y
            lengths[r] = len(y)
        yield _window_batch(inputs, targets, lengths)


def _window_batch(inputs: np.ndarray, targets: np.ndarray, lengths: np.ndarray) -> Batch:
    """An LM batch of windows whose first ``lengths[r]`` tokens are real: the format of
    :func:`assemble_lm` (one segment per row)."""
    real = np.arange(inputs.shape[1])[None, :] < np.asarray(lengths)[:, None]  # (R, T)
    seg = real.astype(np.int32)
    pos = np.where(real, np.arange(inputs.shape[1])[None, :], 0).astype(np.int32)
    return {"inputs": inputs, "targets": targets, "segment_ids": seg, "positions": pos,
            "weights": _weights(seg)}


def num_windows(num_tokens: int, context: int, max_windows: int = 0) -> int:
    n = math.ceil(max(num_tokens - 1, 0) / context)
    return min(n, max_windows) if max_windows else n
