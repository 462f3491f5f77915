"""Checkpoints: orbax CheckpointManager under WORKDIR/checkpoints.

Each step directory holds two items:

* ``state``: the TrainState (step, params, optimiser state) in its canonical layout
  (:meth:`tfm.training.parallel.Parallel.canonical`), written collectively by all processes;
* ``meta``: a small JSON document -- the step, the data iterator's state and the dropout key --
  so that a resumed run reads the same batches and draws the same dropout masks as a run that
  never stopped.

Saves are asynchronous (training continues while a background thread writes) and a step
directory appears under its final name only once complete, so a run killed mid-save leaves
the previous checkpoint as the newest. Only the newest ``keep`` are kept.

Restore takes the newest step. Its saved tree (structure and shapes, from orbax's metadata) is
first compared with the state this run builds: a checkpoint that is readable but holds a
different state -- a changed optimiser, clipping, model -- is *healthy*, never called damaged:
:class:`IncompatibleCheckpointError` lists the differences and nothing is moved. With
``without_optimizer=True`` only the step and the parameters are restored (a fresh optimiser
state, ``TrainConfig.reset_optimizer``), so only they have to fit.

The fallback is :func:`tfm.run_files.restore.restore_newest` (inference uses the same one, read-only).
A step that cannot be read (a truncated or missing file) is moved aside to
``WORKDIR/checkpoints_damaged/<step>`` (``<step>.1``, ``<step>.2``... when that name is taken:
nothing moved aside is ever overwritten or deleted) with a logged warning, and the previous
one is tried; if every checkpoint is damaged, :class:`CheckpointError` is raised -- also on
every later attempt, while ``checkpoints/`` is empty and ``checkpoints_damaged/`` is not. A
workdir that has checkpoints, damaged or not, is never silently started over.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from tfm.run_files.restore import (
    CheckpointError, IncompatibleCheckpointError, NotTheCheckpoints, move_aside, read_state_items, restore_newest, short_error,
    unreadable_steps,
)
from tfm.run_files.layout import damaged_dir
from tfm.training.health import path_name
from tfm.run_files.layout import META_ITEM as META
from tfm.run_files.layout import STATE_ITEM as STATE

log = logging.getLogger(__name__)


class CheckpointWriteError(CheckpointError):
    """A checkpoint cannot be written (read-only or full file system, ...). Earlier checkpoints
    are untouched; the message is one line naming the cause and the path."""


class Checkpointer:
    """Saves and restores (state, meta) pairs; see the module docstring.

    Args:
      directory: WORKDIR/checkpoints.
      keep: keep the newest this many checkpoints.
      async_save: write in a background thread.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self._failed: CheckpointWriteError | None = None
        self._last_saved: int | None = None
        self._set_aside_unreadable()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={STATE: ocp.StandardCheckpointHandler(), META: ocp.JsonCheckpointHandler()},
        )

    # ------------------------------------------------------------------ queries
    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    # ------------------------------------------------------------------ save
    def save(self, step: int, state: Any, meta: dict[str, Any]) -> bool:
        """Starts saving ``state`` (canonical layout) and ``meta`` (JSON-able) as ``step``.

        Returns False when that step is already saved. Returns as soon as the arrays are
        copied off the devices when saving asynchronously; :meth:`wait` blocks until written.
        """
        if self._failed is not None:
            raise self._failed
        if step in self.manager.all_steps():
            return False
        # Checked first: orbax's background threads wait (for ten minutes) for a step directory
        # it failed to create, and keep the process from exiting.
        self._check_writable(step, state)
        self._last_saved = step
        try:
            return self.manager.save(
                step,
                args=ocp.args.Composite(
                    **{STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(meta)}
                ),
                force=True,
            )
        except Exception as e:  # noqa: BLE001 - reported as one line naming cause and path
            raise self._write_failed(step, e) from None

    def wait(self) -> None:
        """Blocks until every started save is on disk.

        Raises:
          CheckpointWriteError: a save failed (the checkpoints before it are intact).
        """
        if self._failed is not None:
            raise self._failed
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise self._write_failed(self._last_saved, e) from None

    def close(self) -> None:
        """Waits for the saves in flight (unless one has failed) and releases orbax."""
        try:
            if self._failed is None:
                self.wait()
        finally:
            with contextlib.suppress(Exception):
                self.manager.close()

    def _check_writable(self, step: int, state: Any) -> None:
        """A probe file and the free space (against the state's size) of the checkpoint
        directory; CheckpointWriteError naming the cause and the path."""
        need = sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(state))
        probe = os.path.join(self.directory, f".tfm_write_probe.{socket.gethostname()}.{os.getpid()}")
        try:  # never through a symlink, never blocking on a FIFO
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
            os.remove(probe)
            fs = os.statvfs(self.directory)
        except OSError as e:
            raise self._write_failed(step, e) from None
        free = fs.f_bavail * fs.f_frsize
        need = need * 1.1 + (1 << 20)  # the arrays, plus room for metadata and file-system blocks
        if free < need:
            raise self._write_failed(step, OSError(
                errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: {free / 2**20:.1f} MiB free, the "
                f"checkpoint needs about "
                f"{need / 2**20:.1f} MiB", self.directory))

    def _write_failed(self, step: int | None, error: BaseException) -> CheckpointWriteError:
        cause = error
        while cause.__cause__ is not None or cause.__context__ is not None:  # the root cause
            if isinstance(cause, OSError):
                break
            cause = cause.__cause__ or cause.__context__
        code = re.search(r"os_error_code='?(\d+)", str(error))  # TensorStore's errors
        if isinstance(cause, OSError) and cause.strerror:
            where = cause.filename or self.directory
            reason = f"{cause.strerror} ({where})"
        elif code:
            path = re.search(r'"(/[^"]+)"', str(error))
            reason = f"{os.strerror(int(code.group(1)))} ({path.group(1) if path else self.directory})"
        else:
            reason = short_error(error)
        which = f"step {step}" if step is not None else "a checkpoint"
        newest = [s for s in self.manager.all_steps() if step is None or s < step]
        kept = (f"the newest complete checkpoint, step {max(newest)}, is intact" if newest
                else "no checkpoint was completed")
        self._failed = CheckpointWriteError(
            f"cannot write {which} to {self.directory}: {reason}; {kept}")
        return self._failed

    # ------------------------------------------------------------------ restore
    def restore_latest(
        self, abstract_state: Any, *, without_optimizer: bool = False
    ) -> tuple[int, Any, dict[str, Any]] | None:
        """Restores the newest readable checkpoint.

        Args:
          abstract_state: ShapeDtypeStructs with shardings (the canonical layout).
          without_optimizer: restore only ``step`` and ``params``; the returned state's
            ``opt_state`` is None (the caller builds a fresh one).
        Returns:
          (step, state, meta), or None when there are no checkpoints at all.
        Raises:
          IncompatibleCheckpointError: the newest checkpoint is readable but does not fit.
          CheckpointError: checkpoints exist (or were moved aside as damaged) but none can be read.
        """
        target = abstract_state.replace(opt_state=None) if without_optimizer else abstract_state

        def attempt(step: int) -> tuple[Any, dict[str, Any]]:
            saved = self.manager.item_metadata(step)[STATE]  # unreadable metadata: damaged
            saved = getattr(saved, "tree", saved)
            if saved is None:
                raise ValueError("the state item has no metadata")
            try:
                differences = tree_differences(saved, target)
            except Exception as e:  # a readable checkpoint: a failure here is not its damage
                raise NotTheCheckpoints() from e
            if differences:
                raise IncompatibleCheckpointError(self.directory, step, differences)
            state, meta = self._restore(step, target, partial=without_optimizer)
            if not isinstance(meta, dict) or int(meta.get("step", -1)) != step:
                raise ValueError(f"meta of step {step} is incomplete: {meta!r}")
            return state, meta

        restored = restore_newest(self.directory, self.all_steps(), attempt, on_damaged=self._move_aside)
        if restored is None:
            return None
        step, (state, meta) = restored
        return step, state, meta

    def _restore(self, step: int, target: Any, *, partial: bool) -> tuple[Any, Any]:
        if not partial:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    **{STATE: ocp.args.StandardRestore(target), META: ocp.args.JsonRestore()}
                ),
            )
            return restored[STATE], restored[META]
        # only step + params: a partial restore straight from the step's state item
        part = read_state_items(self.directory, step, {"step": target.step, "params": target.params})
        meta = self.manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]
        return target.replace(step=part["step"], params=part["params"]), meta

    def _set_aside_unreadable(self) -> None:
        """Steps holding a FIFO, a device or a symlink (orbax writes none) are damaged; they are
        moved aside before orbax lists the steps, which reads their metadata and could block."""
        for step, why in sorted(unreadable_steps(self.directory).items()):
            log.warning("checkpoint at step %d cannot be restored (%s); moving it to %s", step, why,
                        damaged_dir(self.directory))
            if jax.process_index() == 0:
                move_aside(self.directory, step)
            if jax.process_count() > 1:
                multihost_utils.sync_global_devices(f"tfm_checkpoint_set_aside_{step}")

    def _move_aside(self, step: int) -> None:
        """Moves a damaged step out of the manager's directory (process 0; see
        :func:`tfm.run_files.restore.move_aside`), so that a later save of the same step number does not
        collide with it."""
        if jax.process_index() == 0:
            move_aside(self.directory, step)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"tfm_checkpoint_move_aside_{step}")
        self.manager.reload()


# ---------------------------------------------------------------------- pure helpers
def _leaves_by_path(tree: Any) -> dict[str, tuple[int, ...] | None]:
    """``{"opt_state/0/mu/...": shape}`` for every leaf; dict keys, attribute names and list
    indices all become path components, so a saved tree (dicts and lists) and a live one
    (dataclasses and named tuples) of the same state give the same paths."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        shape = getattr(leaf, "shape", None)
        out[path_name(path)] = tuple(shape) if shape is not None else None
    return out


def tree_differences(saved: Any, target: Any) -> list[str]:
    """How the leaves of ``target`` differ from a checkpoint's saved tree (paths, shapes).

    Only ``target``'s top-level parts count (a partial target checks only what it holds);
    empty list = they fit.
    """
    want = _leaves_by_path(target)
    have = _leaves_by_path(saved)
    parts = {p.split("/", 1)[0] for p in want}
    have = {p: s for p, s in have.items() if p.split("/", 1)[0] in parts}
    out = [f"{p}: in the checkpoint, not in this run's state" for p in sorted(set(have) - set(want))]
    out += [f"{p}: in this run's state, not in the checkpoint" for p in sorted(set(want) - set(have))]
    out += [f"{p}: shape {have[p]} in the checkpoint, {want[p]} now"
            for p in sorted(set(want) & set(have))
            if have[p] is not None and want[p] is not None and have[p] != want[p]]
    return out
