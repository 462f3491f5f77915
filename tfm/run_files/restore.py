"""Restoring the newest intact checkpoint: the fallback training and inference share.

:func:`restore_newest` tries a checkpoint directory's steps newest first. A step that cannot be
read (a truncated or missing file, unreadable metadata) is *damaged*: a one-line warning names
it, and the step before it is tried. A step that is readable but holds a different state
(:class:`IncompatibleCheckpointError`) is healthy: it is never called damaged, and the error
is raised at once. When every step is damaged, :class:`CheckpointError` lists them -- never a
silent fresh start; nor while ``checkpoints/`` is empty and ``checkpoints_damaged/`` is not.

What happens to a damaged step is the caller's: the training run, which holds the workdir's lock,
moves it aside to ``checkpoints_damaged/<step>`` (``<step>.1``, ``<step>.2``... when that name is
taken: nothing moved aside is ever overwritten or deleted), so that a later save of the same
step cannot collide with it; inference opens the workdir read-only (a run may be training in
it) and leaves it where it is. Both read a step's parameters alone (without the optimiser
state) with :func:`read_state_items`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from tfm.files import TfmError
from tfm.run_files.layout import STATE_ITEM, damaged_dir

log = logging.getLogger(__name__)

T = TypeVar("T")


class CheckpointError(TfmError, RuntimeError):
    """A workdir's checkpoints exist but none can be restored."""


class IncompatibleCheckpointError(CheckpointError):
    """The newest checkpoint is readable but holds a differently shaped state than this run's
    (changed settings); ``differences`` lists them ("path: saved ... , now ...")."""

    def __init__(self, directory: str, step: int, differences: list[str]):
        self.directory, self.step, self.differences = directory, step, differences
        shown = differences[:12] + ([f"... and {len(differences) - 12} more"] if len(differences) > 12 else [])
        super().__init__(
            f"the checkpoint of step {step} in {directory} holds a different training state than "
            "this config builds (it is not damaged; nothing was moved):\n  " + "\n  ".join(shown)
        )


def short_error(error: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` cut to ``limit`` characters (orbax and TensorStore
    put whole specs in their messages)."""
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > limit:
        first = first[:limit] + "..."
    return f"{type(error).__name__}: {first}"


def _listdir(path: str) -> list[str]:
    return os.listdir(path) if os.path.isdir(path) else []


def read_state_items(directory: str, step: int, items: dict[str, Any]) -> dict[str, Any]:
    """Only ``items`` (abstract arrays, e.g. ``{"params": ...}``: some top-level entries of the
    saved TrainState) of ``directory/<step>``'s state item: a partial orbax restore, which never
    reads the rest (the optimiser state). Read-only."""
    import orbax.checkpoint as ocp

    with ocp.PyTreeCheckpointer() as reader:
        return reader.restore(
            os.path.join(directory, str(step), STATE_ITEM),
            args=ocp.args.PyTreeRestore(
                item=items, restore_args=ocp.checkpoint_utils.construct_restore_args(items),
                partial_restore=True,
            ),
        )


def move_aside(directory: str, step: int) -> str | None:
    """Moves ``directory/<step>`` to ``checkpoints_damaged/<step>`` (or ``<step>.N``, the first
    free name: nothing there is ever replaced). Returns where it went (None: it was gone)."""
    src = os.path.join(directory, str(step))
    if not os.path.exists(src):
        return None
    damaged = damaged_dir(directory)
    os.makedirs(damaged, exist_ok=True)
    dst = os.path.join(damaged, str(step))
    n = 0
    while os.path.exists(dst):
        n += 1
        dst = os.path.join(damaged, f"{step}.{n}")
    os.rename(src, dst)
    return dst


def check_step_files(directory: str, step: int) -> None:
    """ValueError (= damaged) when ``directory/<step>`` holds anything but regular files and
    directories: orbax never writes a symlink, a FIFO or a device, and reading one could block
    forever (a FIFO) or never end (``/dev/zero``). Checked before orbax opens anything."""
    import stat

    root = os.path.join(directory, str(step))
    if not os.path.lexists(root):
        return  # nothing there to block on: the attempt says what is missing
    if not stat.S_ISDIR(os.lstat(root).st_mode):
        raise ValueError(f"{root} is not a directory")
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                kind = "a symlink" if stat.S_ISLNK(mode) else "not a regular file"
                raise ValueError(f"{path} is {kind} (orbax writes none)")


def unreadable_steps(directory: str) -> dict[int, str]:
    """``{step: why}`` for the steps of ``directory`` that :func:`check_step_files` refuses.
    Orbax reads each step's metadata as soon as it lists the steps, so these are checked before
    a CheckpointManager is created (a ``_CHECKPOINT_METADATA`` that is a FIFO or a symlink to
    ``/dev/zero`` would block it forever)."""
    out = {}
    for name in _listdir(directory):
        if name.isdigit():
            try:
                check_step_files(directory, int(name))
            except (ValueError, OSError) as e:
                out[int(name)] = str(e)
    return out


class NotTheCheckpoints(Exception):
    """Raised (``from`` the original error) by a :func:`restore_newest` ``attempt`` around a
    failure that is not the checkpoint's (e.g. tfm's own comparison of a readable checkpoint
    with the model): the original error is re-raised and nothing is called damaged."""


def _ignore_closed_loop_callbacks() -> None:
    """After a failed orbax restore, TensorStore still completes the reads that were in flight,
    and their callbacks find orbax's event loop already closed: Python reports each as an
    unraisable ``RuntimeError: Event loop is closed``, dozens of tracebacks after tfm's own
    one-line error. They are harmless (the failed step has been reported and skipped), so from
    the first failed restore on exactly those are dropped; every other unraisable exception
    goes to the hook that was there before."""
    previous = sys.unraisablehook
    if getattr(previous, "tfm_closed_loop_filter", False):
        return

    def hook(unraisable):
        exc = unraisable.exc_value
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        previous(unraisable)

    hook.tfm_closed_loop_filter = True
    sys.unraisablehook = hook


def restore_newest(
    directory: str,
    steps: list[int],
    attempt: Callable[[int], T],
    *,
    on_damaged: Callable[[int], None] | None = None,
) -> tuple[int, T] | None:
    """``(step, attempt(step))`` for the newest step whose ``attempt`` succeeds.

    Args:
      directory: the checkpoint directory (``WORKDIR/checkpoints``), for messages and for the
        damaged steps beside it.
      steps: the steps to try (any order; tried newest first).
      attempt: reads one step; any exception but IncompatibleCheckpointError and
        NotTheCheckpoints means damaged. A step holding anything but regular files and
        directories (:func:`check_step_files`) is damaged before ``attempt`` runs.
      on_damaged: called with each damaged step after its warning (training: move it aside);
        None leaves it in place (read-only use).
    Returns:
      None when there are no steps at all (and no damaged ones moved aside earlier).
    Raises:
      IncompatibleCheckpointError: from ``attempt``: a healthy step of a different state.
      (the cause of a NotTheCheckpoints from ``attempt``, as it was)
      CheckpointError: every step is damaged, or there are none left but damaged ones.
    """
    damaged = damaged_dir(directory)
    if not steps:
        moved = sorted(_listdir(damaged))
        if moved:
            raise CheckpointError(
                f"{directory} holds no checkpoint but {damaged} holds damaged ones "
                f"({', '.join(moved)}); refusing to start the run over. Use a new --workdir, or "
                "move that directory away to start afresh here.")
        return None
    failures = []
    for step in sorted(steps, reverse=True):
        try:
            check_step_files(directory, step)
            return step, attempt(step)
        except IncompatibleCheckpointError:
            raise
        except NotTheCheckpoints as e:
            raise e.__cause__ from None
        except Exception as e:  # noqa: BLE001 - any failure to read means damaged
            _ignore_closed_loop_callbacks()
            message = short_error(e)
            failures.append(f"step {step}: {message}")
            if on_damaged is None:
                log.warning("checkpoint at step %d cannot be restored (%s); trying the previous "
                            "one (left in place: read-only)", step, message)
            else:
                log.warning("checkpoint at step %d cannot be restored (%s); moving it to %s and "
                            "trying the previous one", step, message, damaged)
                on_damaged(step)
    if on_damaged is None:
        head = f"no checkpoint in {directory} can be restored (nothing was moved)"
    else:
        head = (f"every checkpoint in {directory} is damaged, refusing to start the run over "
                f"(the damaged steps were moved to {damaged})")
    raise CheckpointError(head + ":\n  " + "\n  ".join(failures))


__all__ = ["CheckpointError", "IncompatibleCheckpointError", "NotTheCheckpoints", "check_step_files", "move_aside",
           "read_state_items",
           "restore_newest",
           "short_error"]
