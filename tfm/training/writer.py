"""Metric writing: TensorBoard event files and ``metrics.jsonl`` in the workdir (process 0).

Every record is one line of ``WORKDIR/metrics.jsonl``: ``{"step": 200, "split": "train",
"loss": 3.1, ...}``, and the same scalars go to TensorBoard under ``WORKDIR/tensorboard`` as
``train/loss`` etc. A resumed run appends; steps after the restored checkpoint (logged by the
interrupted run before it died) are logged again, and the later record is the one that
counts -- :func:`read_metrics` keeps it, and TensorBoard drops the stale events itself
(``purge_step``).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from typing import Any

from tfm import files
from tfm.run_files.layout import METRICS_FILE, TENSORBOARD_DIR

log = logging.getLogger(__name__)


class MetricWriter:
    """Writes scalars; a no-op unless ``enabled`` (only process 0 writes).

    Args:
      workdir: the run's directory.
      enabled: False on every process but 0.
      purge_step: on resume, the restored step: TensorBoard forgets events after it.
    """

    def __init__(self, workdir: str, *, enabled: bool = True, purge_step: int | None = None):
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        # open for the writer's lifetime (closed by close()), appended to on resume
        path = os.path.join(workdir, METRICS_FILE)
        self._jsonl = files.open_append(path)  # never through a symlink, never a FIFO (FileError)
        if _ends_without_newline(self._jsonl.fileno()):  # a kill cut the last record: start on a new line
            self._jsonl.write("\n")
        try:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR), purge_step=purge_step)
        except ImportError:  # pragma: no cover - tensorboardX is a dependency
            self._tb = None

    def write(self, step: int, split: str, scalars: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: _jsonable(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), "split": split, **clean}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for key, value in clean.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{split}/{key}", value, int(step))

    def write_text(self, step: int, tag: str, text: str) -> None:
        if self.enabled and self._tb is not None:
            self._tb.add_text(tag, text, int(step))

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan" / "inf": JSON has no such numbers
    return value


def _ends_without_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return bool(size) and os.pread(fd, 1, size - 1) != b"\n"


def read_metrics(workdir: str, split: str = "train") -> dict[int, dict[str, Any]]:
    """``{step: record}`` of ``split`` from ``WORKDIR/metrics.jsonl``; a later record of the same
    step (after a resume) replaces the earlier one."""
    out: dict[int, dict[str, Any]] = {}
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.lexists(path):
        return out
    with io.TextIOWrapper(files.open_read(path), encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:  # cut by a kill in the middle of a write
                log.warning("%s line %d is not a complete record (skipped)", path, number)
                continue
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                log.warning("%s line %d is not a record of a step (skipped)", path, number)
                continue
            if record.get("split") == split:
                out[record["step"]] = record
    return out
