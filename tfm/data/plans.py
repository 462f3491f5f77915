"""Batch plans: which examples of a chunk go into which row of which global batch.

A *plan* turns a chunk of examples into global batches: each batch is a list of rows, each row
a list of example indices (one index unless packed) plus the row length. Three planners:

* :func:`plan_padded` -- B examples per batch, one per row, padded to the maximum length.
* :func:`plan_packed` -- greedy packing in order: an example joins the current row while it
  fits, else starts the next row (``segment_ids`` 1, 2, ... per example, 0 on padding;
  ``positions`` restart at 0 for each example), B rows per batch.
* :func:`plan_buckets` -- token-count batching for translation: each example goes to the
  smallest length bucket that holds it; a bucket of length L is emitted when it has
  ``rows_for(L)`` examples (about ``tokens_per_batch`` tokens).

The last incomplete batch of a padded or packed plan is completed with the chunk's first rows
again (so even a data set smaller than one batch yields full batches); incomplete buckets at a
chunk's end are left out (their examples come back in the next epoch's order).

Host sharding: every host plans the same global batches and host ``i`` of ``P`` assembles only
rows ``[i*R/P, (i+1)*R/P)`` (:func:`host_rows`), so P hosts together see exactly what one host
would.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

Row = list[int]


@dataclasses.dataclass(frozen=True)
class PlannedBatch:
    """A global batch: rows of example indices (into a chunk) padded to ``length``."""

    rows: list[Row]
    length: int | None = None  # bucket length; None = the task's maximum lengths


def _complete(rows: list[Row], batch_rows: int) -> list[PlannedBatch]:
    """Groups rows into batches; the last incomplete one is completed cyclically."""
    if not rows:
        return []
    need = math.ceil(len(rows) / batch_rows) * batch_rows
    rows = [rows[i % len(rows)] for i in range(need)]
    return [PlannedBatch(rows[i:i + batch_rows]) for i in range(0, need, batch_rows)]


def plan_padded(num_examples: int, batch_rows: int) -> list[PlannedBatch]:
    """One example per row, in order."""
    return _complete([[i] for i in range(num_examples)], batch_rows)


def plan_packed(lengths: np.ndarray, capacities: Sequence[int], batch_rows: int) -> list[PlannedBatch]:
    """Greedy packing in order.

    Args:
      lengths: (n, F) length of each example's F sequences (e.g. inputs and targets).
      capacities: (F,) row capacity of each sequence (every example must already fit alone).
      batch_rows: rows per batch.
    """
    lengths = np.asarray(lengths).reshape(len(lengths), -1)
    caps = np.asarray(capacities)
    rows: list[Row] = []
    row: Row = []
    used = np.zeros_like(caps)
    for i, ln in enumerate(lengths):
        if row and np.any(used + ln > caps):
            rows.append(row)
            row, used = [], np.zeros_like(caps)
        row.append(i)
        used = used + ln
    if row:
        rows.append(row)
    return _complete(rows, batch_rows)


def bucket_boundaries(max_length: int, min_length: int = 8) -> list[int]:
    """8, 12, 16, 24, 32, 48, 64, ... (powers of two and 1.5x between), ending at max_length."""
    out, b = [], min_length
    while b < max_length:
        out.append(b)
        b = b * 3 // 2 if (b & (b - 1)) == 0 else b * 4 // 3
    return out + [max_length]


def rows_for_tokens(tokens_per_batch: int, length: int, batch_multiple: int) -> int:
    """Rows of a token-count batch of padded length ``length`` (a multiple of batch_multiple)."""
    return max(batch_multiple, tokens_per_batch // length // batch_multiple * batch_multiple)


def plan_buckets(
    lengths: np.ndarray, boundaries: Sequence[int], tokens_per_batch: int, batch_multiple: int
) -> list[PlannedBatch]:
    """Token-count batches: each example to the smallest bucket >= its length (``lengths`` (n,)).

    Incomplete buckets at the end are left out, unless no bucket filled at all (a tiny data set):
    then the fullest one is completed cyclically.
    """
    bounds = np.asarray(boundaries)
    which = np.searchsorted(bounds, np.asarray(lengths))  # first boundary >= length
    pending: dict[int, Row] = {}
    batches: list[PlannedBatch] = []
    for i, b in enumerate(which):
        length = int(bounds[b])
        bucket = pending.setdefault(length, [])
        bucket.append(i)
        if len(bucket) == rows_for_tokens(tokens_per_batch, length, batch_multiple):
            batches.append(PlannedBatch([[j] for j in bucket], length))
            pending[length] = []
    if not batches and any(pending.values()):
        length, bucket = max(pending.items(), key=lambda kv: len(kv[1]))
        rows = rows_for_tokens(tokens_per_batch, length, batch_multiple)
        batches.append(PlannedBatch([[bucket[k % len(bucket)]] for k in range(rows)], length))
    return batches



def host_rows(rows: Sequence[Row], process_index: int, process_count: int) -> Sequence[Row]:
    """Rows ``[i*R/P, (i+1)*R/P)`` of a global batch for host i of P."""
    if len(rows) % process_count:
        raise ValueError(f"a global batch of {len(rows)} rows cannot be split over {process_count} hosts")
    per = len(rows) // process_count
    return rows[process_index * per:(process_index + 1) * per]
