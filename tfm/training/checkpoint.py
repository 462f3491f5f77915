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

Restore takes the newest step. If it cannot be read (a truncated or missing file), the step is
moved aside to ``WORKDIR/checkpoints_damaged/<step>`` with a logged warning and the previous
one is tried; if every checkpoint is damaged, :class:`CheckpointError` is raised. A workdir
that has checkpoints is never silently started over.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)

STATE = "state"
META = "meta"


class CheckpointError(RuntimeError):
    """A workdir's checkpoints exist but none can be restored."""


class Checkpointer:
    """Saves and restores (state, meta) pairs; see the module docstring.

    Args:
      directory: WORKDIR/checkpoints.
      keep: keep the newest this many checkpoints.
      async_save: write in a background thread.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(os.fspath(directory))
        self.damaged_directory = os.path.join(os.path.dirname(self.directory), "checkpoints_damaged")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={STATE: ocp.StandardCheckpointHandler(), META: ocp.JsonCheckpointHandler()},
        )

    # ------------------------------------------------------------------ queries
    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    # ------------------------------------------------------------------ save
    def save(self, step: int, state: Any, meta: dict[str, Any]) -> bool:
        """Starts saving ``state`` (canonical layout) and ``meta`` (JSON-able) as ``step``.

        Returns False when that step is already saved. Returns as soon as the arrays are
        copied off the devices when saving asynchronously; :meth:`wait` blocks until written.
        """
        if step in self.manager.all_steps():
            return False
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                **{STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(meta)}
            ),
            force=True,
        )

    def wait(self) -> None:
        """Blocks until every started save is on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    # ------------------------------------------------------------------ restore
    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """Restores the newest readable checkpoint.

        Args:
          abstract_state: ShapeDtypeStructs with shardings (the canonical layout).
        Returns:
          (step, state, meta), or None when there are no checkpoints at all.
        Raises:
          CheckpointError: checkpoints exist but none can be read.
        """
        steps = self.all_steps()
        if not steps:
            return None
        failures = []
        for step in reversed(steps):
            try:
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        **{STATE: ocp.args.StandardRestore(abstract_state), META: ocp.args.JsonRestore()}
                    ),
                )
                state, meta = restored[STATE], restored[META]
                if not isinstance(meta, dict) or int(meta.get("step", -1)) != step:
                    raise ValueError(f"meta of step {step} is incomplete: {meta!r}")
                return step, state, meta
            except Exception as e:  # noqa: BLE001 - any failure to read means damaged
                failures.append(f"step {step}: {type(e).__name__}: {str(e)[:300]}")
                log.warning(
                    "checkpoint at step %d cannot be restored (%s: %s); moving it to %s and "
                    "trying the previous one", step, type(e).__name__, str(e)[:300],
                    self.damaged_directory,
                )
                self._move_aside(step)
        raise CheckpointError(
            f"every checkpoint in {self.directory} is damaged, refusing to start the run over "
            f"(the damaged steps were moved to {self.damaged_directory}):\n  " + "\n  ".join(failures)
        )

    def _move_aside(self, step: int) -> None:
        """Moves a damaged step out of the manager's directory (process 0), so that a later
        save of the same step number does not collide with it."""
        if jax.process_index() == 0:
            src = os.path.join(self.directory, str(step))
            os.makedirs(self.damaged_directory, exist_ok=True)
            dst = os.path.join(self.damaged_directory, str(step))
            if os.path.exists(dst):
                shutil.rmtree(dst)
            if os.path.exists(src):
                shutil.move(src, dst)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"tfm_checkpoint_move_aside_{step}")
        self.manager.reload()
