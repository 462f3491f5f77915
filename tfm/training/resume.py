"""Resuming a run: the newest checkpoint restored into this run's state, or a refusal that says
why -- never a healthy checkpoint declared damaged, never a silent fresh start.

* The checkpoint fits (same model, same optimiser structure): everything is restored. Settings
  that changed without changing the state's shape (learning rate, b2, eval cadence...) are
  listed in a warning.
* It does not fit and ``TrainConfig.reset_optimizer`` is off: :class:`WorkdirMismatchError`
  naming the changed settings (from ``WORKDIR/config.json``) and the way out.
* ``reset_optimizer`` is on: the step, parameters, data position and dropout key are restored
  and the optimiser state is fresh, its learning-rate schedule continuing at the restored step.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
import optax

from tfm.training.checkpointer import Checkpointer, IncompatibleCheckpointError
from tfm.training.workdir_guard import WorkdirMismatchError, setting_differences

if TYPE_CHECKING:
    from tfm.training.setup import Setup

log = logging.getLogger(__name__)


def restore(checkpointer: Checkpointer, setup: Setup) -> tuple[int, Any, dict[str, Any]] | None:
    """(step, canonical TrainState, meta) of the newest checkpoint of ``setup``'s run, or None
    without one. The restore target and a fresh optimiser state come from ``setup.parallel``
    (prepared with the run's init); the changed settings from ``setup.saved``.

    Raises:
      WorkdirMismatchError: the checkpoint is healthy but holds a state this config cannot
        continue (and ``reset_optimizer`` is off); nothing in the workdir was changed.
      CheckpointError: checkpoints exist but none can be read.
    """
    parallel, workdir, reset = setup.parallel, setup.workdir, setup.config.train.reset_optimizer
    changed = setting_differences(setup.saved, setup.config) if setup.saved is not None else []
    try:
        restored = checkpointer.restore_latest(parallel.canonical_abstract(), without_optimizer=reset)
    except IncompatibleCheckpointError as e:
        raise WorkdirMismatchError(_refusal(e, changed, workdir, reset)) from None
    if restored is None:
        if reset:
            log.info("train.reset_optimizer: nothing to restore, a new run starts anyway")
        return None
    step, state, meta = restored
    if changed:
        log.warning("resuming step %d of %s with changed settings:\n  %s", step, workdir,
                    "\n  ".join(changed))
    if reset:
        fresh = parallel.canonical(parallel.init_state()).opt_state
        state = state.replace(opt_state=schedule_at(fresh, step))
        log.warning("train.reset_optimizer: restored the parameters, data position and dropout "
                    "key of step %d; the optimiser state is fresh", step)
    return step, state, meta


def schedule_at(opt_state: Any, step: int) -> Any:
    """``opt_state`` with every schedule counter (optax ScaleByScheduleState) set to ``step``,
    so that a fresh optimiser continues the learning-rate schedule where the run is; Adam's own
    count (bias correction of its fresh moments) stays 0."""

    def at_step(node):
        if isinstance(node, optax.ScaleByScheduleState):
            count = node.count
            return node._replace(count=jax.device_put(np.asarray(step, count.dtype), count.sharding))
        return node

    return jax.tree.map(at_step, opt_state,
                        is_leaf=lambda n: isinstance(n, optax.ScaleByScheduleState))


def _refusal(error: IncompatibleCheckpointError, changed: list[str], workdir: str,
             reset: bool) -> str:
    lines = [f"{workdir}: the run's checkpoints (newest: step {error.step}) are healthy but do not "
             "fit the state this config builds; refusing to resume (nothing was moved or changed)."]
    if changed:
        lines.append("Settings changed since the workdir's config.json:\n  " + "\n  ".join(changed))
    lines.append("State differences:\n  " + "\n  ".join(error.differences[:8]
                 + ([f"... ({len(error.differences) - 8} more)"] if len(error.differences) > 8 else [])))
    only_optimizer = all(d.startswith("opt_state") for d in error.differences)
    if only_optimizer and not reset:
        lines.append("Resume with the saved settings, or add --config.train.reset_optimizer=true "
                     "to keep the parameters, data position and RNG with a fresh optimiser state.")
    else:
        lines.append("Resume with the saved settings, or use a new --workdir.")
    return "\n".join(lines)
