"""What a workdir promises the runs that use it: one run at a time, and that what it holds
(tokenizer, data) is what this run would build.

* :class:`WorkdirLock`: ``WORKDIR/tfm.lock``, held by the run using the workdir; a second run is
  refused naming the holder (:class:`WorkdirLockedError`); a lock left by a killed run is stale
  and taken over.
* Provenance: ``WORKDIR/provenance.json`` records what the tokenizer and the training text come
  from (data set, text file path + size + SHA-256, tokenizer settings, ``train.init_from``'s
  absolute path, whose tokenizer a pretrained run uses). A resumed run on other
  data is refused naming the difference, and so is a tokenizer that is not the one the
  checkpoints were trained with (its files' SHA-256 is recorded too); a tokenizer left by a run
  that never reached a checkpoint is moved aside (never trusted blindly, never deleted) and
  rebuilt.
* :class:`WorkdirMismatchError`: the workdir holds something this run must not use or replace.
* :func:`setting_differences`: the settings that differ between a workdir's saved config and
  this run's ("train.optimizer: 'adam' in the workdir, 'adamw' now").
* The saved config: :func:`saved_run` reads ``config.json`` (once per start), refusing a
  workdir that has checkpoints but no config; :func:`check_saved_model` refuses a run whose
  model differs from the saved one (:func:`model_differences`); :func:`write_config` writes it
  (atomically).

The file names are :mod:`tfm.run_files.layout`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import socket
import time
from typing import Any

from tfm import files
from tfm.config import ModelConfig
from tfm.data.config import FLAT_NAMES
from tfm.files import TfmError
from tfm.training.config import EXECUTION_ONLY_MODEL_FIELDS, RunConfig
from tfm.run_files.layout import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    DAMAGED_CHECKPOINT_DIR,
    LOCK_FILE,
    PROVENANCE_FILE,
    SUPERSEDED_DIR,
    TOKENIZER_DIR,
    checkpoint_dir,
)

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 64 << 20  # config.json / provenance.json: larger ones are refused unread


class WorkdirMismatchError(TfmError, ValueError):
    """The workdir holds a run this config must not continue or overwrite."""


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def setting_differences(saved: Any, new: Any, sections: tuple[str, ...] = ("model", "data", "train"),
                        ignore: frozenset[str] = frozenset()) -> list[str]:
    """``"section.field: saved in the workdir, new now"`` for every differing field of two
    RunConfigs (``ignore``: dotted names left out)."""
    return [line for section in sections
            for line in _field_differences(section, getattr(saved, section), getattr(new, section),
                                           lambda name, x, y: name in ignore)]


def _field_differences(section: str, saved: Any, new: Any, skip: Any) -> list[str]:
    """``"section.field: saved in the workdir, new now"`` for the differing fields of two
    dataclasses, but those where ``skip(dotted_name, saved_value, new_value)``; a nested spec
    (``data.numbers``) field by field (``data.numbers.max``)."""
    out = []
    for f in dataclasses.fields(saved):
        name = f"{section}.{f.name}"
        x, y = getattr(saved, f.name), getattr(new, f.name)
        if dataclasses.is_dataclass(x) and type(x) is type(y):
            out.extend(_field_differences(name, x, y, skip))
        elif x != y and not skip(name, x, y):
            out.append(f"{name}: {_plain(x)!r} in the workdir, {_plain(y)!r} now")
    return out


class WorkdirLockedError(TfmError, RuntimeError):
    """Another run holds the workdir's lock."""


# ====================================================================== one run per workdir

class WorkdirLock:
    """An exclusive lock on ``WORKDIR/tfm.lock`` for the lifetime of a run (process 0 only).

    The lock is an ``fcntl.flock`` on the open file, so the kernel drops it when its holder
    dies however it dies (SIGKILL, OOM, power): a lock file whose flock can be taken is stale,
    whatever it says. The file records the holder (pid, host, start time) for the refusal
    message; it is left in place (emptied) on release, never deleted, so that two starting
    runs cannot lock two different files of the same name.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd: int | None = None

    def acquire(self) -> WorkdirLock:
        import errno
        import fcntl

        fd = files.open_lock(self.path)  # never through a symlink, never a FIFO (FileError)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)  # not held by another run: flock itself failed (ENOLCK, EINVAL, ...)
                raise OSError(e.errno, f"cannot lock {self.path}: {e.strerror}") from None
            holder = _read_holder(fd)
            os.close(fd)
            raise WorkdirLockedError(
                f"{os.path.dirname(self.path)} is in use by another run ({holder}; lock file "
                f"{self.path}); refusing to start a second run on it. Wait for it to finish or "
                "stop it, or use another --workdir."
            ) from None
        previous = _read_holder(fd)
        if previous != "holder unknown":
            log.warning("taking over a stale lock of %s in %s (that run is no longer running)",
                        previous, self.path)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            os.fsync(fd)
        except OSError as e:  # a full disk: say where
            os.close(fd)
            raise files.write_failed(self.path, e) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "null")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def prepare(workdir: str) -> None:
    """Creates the workdir, refusing a path that exists and is not a directory."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirMismatchError(f"--workdir {workdir} exists and is not a directory")
    os.makedirs(workdir, exist_ok=True)


# ====================================================================== provenance
INIT_FROM_KEY = "train.init_from"  # the imported model directory (its tokenizer), None: unset
TOKENIZER_KEY = "tokenizer files sha256"  # in provenance.json, beside the data fields

# The DataConfig fields that decide the tokenizer and the training text (dotted: a spec's field).
PROVENANCE_FIELDS = (
    "dataset", "text_file", "valid_fraction", "tokenizer", "vocab_size",
    "tokenizer_character_coverage", "tokenizer_max_examples", "tfds_data_dir",
    "numbers.max", "numbers.valid_size", "numbers.test_size", "numbers.split_seed",
)


def provenance(data: Any, init_from: str = "") -> dict[str, Any]:
    """What the workdir's tokenizer and data come from: the deciding DataConfig fields, for a
    local text or classification file its absolute path, size and SHA-256, and
    ``train.init_from``'s absolute path."""
    out = {f"data.{f}": _plain(functools.reduce(getattr, f.split("."), data)) for f in PROVENANCE_FIELDS}
    out[INIT_FROM_KEY] = os.path.abspath(os.path.expanduser(init_from)) if init_from else None
    for field in ("text_file", "classification_file", "classification_valid_file"):  # local data files
        if getattr(data, field, ""):
            path = os.path.abspath(getattr(data, field))
            out[f"data.{field}"] = path
            if os.path.isfile(path):
                out[f"data.{field} sha256"] = _sha256(path)
                out[f"data.{field} size"] = os.path.getsize(path)
    return out


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def has_checkpoints(workdir: str) -> bool:
    """Whether the workdir holds checkpoints, complete or damaged (moved aside)."""
    for path in (os.path.join(workdir, CHECKPOINT_DIR), os.path.join(workdir, DAMAGED_CHECKPOINT_DIR)):
        if os.path.isdir(path) and any(e.split(".")[0].isdigit() for e in os.listdir(path)):
            return True
    return False


def check_provenance(data: Any, workdir: str, *, is_chief: bool = True,
                     init_from: str = "") -> dict[str, Any]:
    """Compares the workdir's recorded provenance with this run's data and ``train.init_from``
    (see the module doc).

    * match: nothing to do;
    * mismatch, or a tokenizer without a record, in a workdir WITH checkpoints: a mismatch is
      refused naming the differing fields; a tokenizer without a record (a workdir of an older
      tfm) is accepted with a warning;
    * either in a workdir WITHOUT checkpoints: it is what a run that never reached a checkpoint
      left; the tokenizer and its record are moved to ``WORKDIR/superseded/<time>/`` (kept, not
      trusted) and this run builds its own.

    Returns this run's provenance, with the tokenizer fingerprint the workdir recorded under
    :data:`TOKENIZER_KEY` (None when there is none to keep), for
    :func:`check_and_record_tokenizer` once the tokenizer is in place: the record is read once.
    """
    now = provenance(data, init_from)
    record_path = os.path.join(workdir, PROVENANCE_FILE)
    tokenizer = os.path.join(workdir, TOKENIZER_DIR)
    recorded = None
    if os.path.lexists(record_path):
        try:
            recorded = _current_names(files.read_json(record_path, limit=MAX_RECORD_BYTES))
        except files.FileError as e:
            raise WorkdirMismatchError(f"{e}; refusing to trust the workdir's tokenizer. Use a new "
                                       "--workdir.") from None
    elif not os.path.lexists(tokenizer):
        return now  # nothing recorded, nothing to trust
    differences = []
    if recorded is not None:
        keys = (set(recorded) | set(now)) - {TOKENIZER_KEY}
        if INIT_FROM_KEY not in recorded and has_checkpoints(workdir):
            keys.discard(INIT_FROM_KEY)  # a record of an older tfm, which did not record it
        differences = [f"{k}: {recorded.get(k)!r} in the workdir, {now.get(k)!r} now"
                       for k in sorted(keys) if recorded.get(k) != now.get(k)]
    if recorded is not None and not differences:
        return {**now, TOKENIZER_KEY: recorded.get(TOKENIZER_KEY)}
    if has_checkpoints(workdir):
        if recorded is None:
            log.warning("%s has no %s (written by an older tfm); its tokenizer is used as it is",
                        workdir, PROVENANCE_FILE)
            return now
        raise WorkdirMismatchError(
            f"{workdir} holds a run on different data, refusing to resume it with this data:\n  "
            + "\n  ".join(differences)
            + f"\nUse the data (and train.init_from) recorded in {record_path}, or a new --workdir."
        )
    why = ("no record of what it was built from" if recorded is None
           else "built from other data: " + "; ".join(differences))
    if is_chief:
        aside = os.path.join(workdir, SUPERSEDED_DIR, time.strftime("%Y%m%d-%H%M%S"))
        n, base = 0, aside
        while os.path.exists(aside):
            n += 1
            aside = f"{base}.{n}"
        os.makedirs(aside)
        for name in (TOKENIZER_DIR, PROVENANCE_FILE):
            if os.path.exists(os.path.join(workdir, name)):
                os.rename(os.path.join(workdir, name), os.path.join(aside, name))
        log.warning("%s has no checkpoint, and its tokenizer was left by a run that never reached "
                    "one (%s); moved it to %s and building a new one", workdir, why, aside)
    return now


def _current_names(record: Any) -> Any:
    """A provenance record with the flat DataConfig names of an older tfm (``data.numbers_max``)
    under their current names (``data.numbers.max``, :data:`tfm.data.config.FLAT_NAMES`)."""
    if not isinstance(record, dict):
        return record
    renamed = {f"data.{old}": f"data.{new}" for old, new in FLAT_NAMES.items()}
    return {renamed.get(key, key): value for key, value in record.items()}


def tokenizer_fingerprint(workdir: str) -> str | None:
    """SHA-256 over the names and contents of ``WORKDIR/tokenizer``'s files (None: none there)."""
    directory = os.path.join(workdir, TOKENIZER_DIR)
    if not os.path.isdir(directory):
        return None
    h = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if not name.endswith(".tmp") and not os.path.isdir(path):
            h.update(name.encode() + b"\0")
            h.update(files.read_bytes(path))  # a FIFO or device there is refused, never read
    return h.hexdigest()


def check_and_record_tokenizer(workdir: str, record: dict[str, Any]) -> None:
    """After the pipeline has loaded or built the tokenizer (process 0): the tokenizer must be
    the one the workdir's checkpoints were trained with (``record[TOKENIZER_KEY]``, from
    :func:`check_provenance`; a deleted and rebuilt tokenizer may number the vocabulary
    differently); then ``record`` is written with the tokenizer's fingerprint."""
    fingerprint = tokenizer_fingerprint(workdir)
    recorded = record.get(TOKENIZER_KEY)
    if recorded and fingerprint != recorded and has_checkpoints(workdir):
        raise WorkdirMismatchError(
            f"{os.path.join(workdir, TOKENIZER_DIR)} is not the tokenizer this workdir's "
            f"checkpoints were trained with ({TOKENIZER_KEY}: {recorded[:12]}... recorded, "
            f"{(fingerprint or 'none')[:12]}... now): it was changed, or deleted and rebuilt. "
            "Restore it, or use a new --workdir.")
    record_provenance(workdir, {**record, TOKENIZER_KEY: fingerprint})


def record_provenance(workdir: str, record: dict[str, Any]) -> None:
    """Writes ``WORKDIR/provenance.json`` (atomically; process 0)."""
    write_json(os.path.join(workdir, PROVENANCE_FILE), record)


# ====================================================================== the saved config
def model_differences(saved: ModelConfig, new: ModelConfig) -> list[str]:
    """Fields that make ``new`` a different network from ``saved`` ("field: saved -> new").

    Execution-only fields (:data:`EXECUTION_ONLY_MODEL_FIELDS`) do not count, nor
    does a ``vocab_size`` of 0 (= take it from the tokenizer) in ``new``.
    """
    def skip(name: str, _, new_value: Any) -> bool:
        field = name.removeprefix("model.")
        return field in EXECUTION_ONLY_MODEL_FIELDS or (field == "vocab_size" and new_value == 0)

    return _field_differences("model", saved, new, skip)


def saved_run(workdir: str) -> RunConfig | None:
    """The workdir's saved RunConfig (``config.json``, read once per start; None for a fresh
    workdir), which the checks of this run are then given. An unreadable one, or checkpoints
    without one, are refused: the workdir cannot be checked against any config."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.lexists(path):
        if os.path.isdir(checkpoint_dir(workdir)) and os.listdir(checkpoint_dir(workdir)):
            raise WorkdirMismatchError(
                f"{workdir} has checkpoints but no {CONFIG_FILE}, so it cannot be checked "
                "against this config; refusing to touch it. Use a new --workdir."
            )
        return None
    try:
        return RunConfig.from_config_dict(files.read_json(path, limit=MAX_RECORD_BYTES))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise WorkdirMismatchError(
            f"{path} cannot be read ({type(e).__name__}: {_one_line(e)}), so the workdir cannot be checked "
            "against this config; refusing to touch it. Repair or remove that file, or use a new "
            "--workdir.") from None


def check_saved_model(saved: RunConfig | None, config: RunConfig, workdir: str) -> None:
    """Refuses ``config`` when the workdir's saved run (``saved``, from :func:`saved_run`;
    None for a fresh workdir) has a different model. A run checks twice: before any data is
    read, and once the model's sizes are resolved from the data."""
    diffs = model_differences(saved.model, config.model) if saved is not None else []
    if diffs:
        raise WorkdirMismatchError(
            f"{workdir} holds a run of a different model, refusing to overwrite it:\n  "
            + "\n  ".join(diffs)
            + f"\nUse a new --workdir, or the model settings saved in "
            f"{os.path.join(workdir, CONFIG_FILE)}."
        )


def write_config(workdir: str, config: RunConfig) -> None:
    """Writes the resolved ``WORKDIR/config.json`` (process 0), what inference reads."""
    write_json(os.path.join(workdir, CONFIG_FILE), config.to_dict())


def write_json(path: str, obj: Any) -> None:
    """``obj`` as indented JSON at ``path``, atomically, never through a symlink
    (:func:`tfm.files.write_json`)."""
    files.write_json(path, obj)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""
