"""The training loop: ``run(config, workdir)``, the I/O around the pure steps. What a run builds
before its first step is :mod:`tfm.training.setup`'s; the strategy compiles and runs the steps
(:mod:`tfm.training.parallel`); here the state is restored or initialised and the steps run
(:class:`_Run`), calling the modules named below.

One run, in order:

1. The config becomes validated dataclasses (:class:`RunConfig`); on a CPU-only host the CPU
   is split into one device per core (:mod:`tfm.training.devices`); process 0 takes the
   workdir's lock (:mod:`tfm.training.workdir_guard`: a second run on it is refused naming the
   holder); ``Setup.build`` chooses the parallel strategy and checks it against the batch
   sizes -- before any data is read or anything compiled.
2. The workdir's saved run (``WORKDIR/config.json``, read once) of a *different model* is
   refused (:class:`WorkdirMismatchError`); it is never overwritten.
3. The data pipeline builds (or reloads from ``WORKDIR/tokenizer``, once its recorded
   provenance matches this run's data) the tokenizer; the model's ``vocab_size`` is taken from
   it when the config leaves it 0. The strategy traces the init and compiles the steps.
4. ``_Run._restore_or_init``: the newest checkpoint is restored (TrainState, data position,
   dropout key; :mod:`tfm.training.resume`): one that does not fit a changed setting is refused
   naming it (``train.reset_optimizer`` restores all but the optimiser state); a damaged newest
   checkpoint falls back to the previous one (:mod:`tfm.training.checkpointer`). Otherwise the
   state is initialised from ``TrainConfig.seed``. Then the resolved config is written to
   ``WORKDIR/config.json``.
5. ``_Run.advance``: steps run asynchronously, at most ``max_steps_in_flight`` ahead of the
   devices (:mod:`tfm.training.inflight`); ``_due`` names the steps that flush, evaluate, save.
   ``_Run.flush``, every ``log_every_steps``: the last steps' metrics are pulled to the host in
   one transfer, checked (a NaN/Inf loss or gradient norm raises :class:`NonFiniteLossError`
   naming the step -- checkpoints are only written after this check, so the newest checkpoint
   is always a good one), and written: progress bar (step, loss, tokens/s, learning rate),
   TensorBoard and ``metrics.jsonl`` (process 0 only), with the MFU estimate when the device's
   peak FLOP/s is known (:mod:`tfm.training.progress`).
6. ``_Run.evaluate``, every ``eval_every_steps`` and at the end (``eval_at_end``): validation
   loss, accuracy, perplexity; for translation also greedy/beam decoding of
   ``eval_decode_examples`` sentences -> BLEU and exact match, per group where the data has
   groups (numbers: by magnitude, and ``below_1000/...``; ``Pipeline.decode_sets``;
   :mod:`tfm.training.eval`).
7. ``_Run.save``, every ``checkpoint_every_steps`` and at the end: an asynchronous checkpoint
   of finite parameters only (:mod:`tfm.training.health`); a failed write (read-only or full
   disk) stops the run with :class:`~tfm.training.checkpointer.CheckpointWriteError` naming
   cause and path.
8. SIGTERM or SIGINT: the current step is checkpointed and ``run`` returns normally (the
   launcher then exits 0); several processes agree on the stop at the next flush, so that all
   of them save the same step. During set-up (steps 1-3: downloads, tokenizer training) a
   signal stops the run at once: there is nothing to save yet (:mod:`tfm.training.signals`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from tfm.config import Arch
from tfm.training import devices as devices_lib
from tfm.training import eval as eval_lib
from tfm.training import flops as flops_lib
from tfm.training import health
from tfm.training import memory
from tfm.training import progress
from tfm.training import resume as resume_lib
from tfm.training import workdir_guard as workdir_lib
from tfm.training.checkpointer import CheckpointError, Checkpointer
from tfm.training.config import RunConfig, TrainConfig
from tfm.training.health import NonFiniteLossError
from tfm.training.inflight import InFlight
from tfm.training.init_from import with_imported_params
from tfm.training.setup import Setup, as_run_config
from tfm.training.signals import SetupInterrupted, StopSignals
from tfm.training.workdir_guard import WorkdirLockedError, WorkdirMismatchError
from tfm.training.writer import MetricWriter
from tfm.run_files.layout import checkpoint_dir

__all__ = ["NonFiniteLossError", "WorkdirLockedError", "WorkdirMismatchError", "run"]

log = logging.getLogger(__name__)

Hook = Callable[[int], None]


# ====================================================================== the run
def run(
    config: RunConfig | ml_collections.ConfigDict | dict,
    workdir: str,
    *,
    hooks: Sequence[Hook] = (),
) -> dict[str, Any]:
    """Trains (or resumes) the run ``config`` describes in ``workdir``.

    Args:
      config: a RunConfig or the ConfigDict of a config file.
      workdir: where everything the run needs lives (checkpoints, config, tokenizer, metrics).
      hooks: called as ``hook(step)`` on every process after each step is dispatched (tests,
        profiling); they must not block for long.
    Returns:
      ``{"step", "preempted", "train": last logged train metrics, "eval": last eval metrics}``.
    Raises:
      WorkdirMismatchError, WorkdirLockedError, NonFiniteLossError, CheckpointError (and its
      CheckpointWriteError), ValueError (bad config).
    """
    # Signals are handled from the start, so that one arriving during set-up stops cleanly too.
    with StopSignals() as stop, contextlib.ExitStack() as cleanup:
        config, workdir = as_run_config(config), os.path.abspath(workdir)
        devices_lib.configure_for_run(config.train, config.data)  # before JAX's backends start
        if jax.process_index() == 0:  # one run per workdir (released last, after the saves)
            workdir_lib.prepare(workdir)
            cleanup.push(_closing(workdir_lib.WorkdirLock(workdir).acquire().release))
        try:
            with stop.interruptible():
                setup = Setup.build(config, workdir)
        except SetupInterrupted:
            log.warning("%s received during set-up: stopping before the first step; nothing to save",
                        stop.signal_name)
            return {"step": _newest_step(checkpoint_dir(workdir)), "preempted": True,
                    "train": {}, "eval": {}}
        checkpointer = Checkpointer(
            checkpoint_dir(setup.workdir), keep=setup.config.train.keep_checkpoints,
            async_save=setup.config.train.async_checkpointing,
        )
        cleanup.push(_closing(checkpointer.close))  # waits for saves in flight, also on errors
        try:
            return _Run(setup, checkpointer, cleanup, stop).train(hooks)
        except (jax.errors.JaxRuntimeError, MemoryError) as e:  # XLA's RESOURCE_EXHAUSTED, NumPy's
            error = memory.out_of_memory(e, setup.config.data)
            if error is None:
                raise
            raise error from None


class _Run:
    """A run from its restored (or fresh) state to its last step: the state between steps and
    what is done with it -- one step (:meth:`advance`), :meth:`flush`, :meth:`evaluate`,
    :meth:`save` -- at the steps :func:`_due` names (see the module docstring)."""

    def __init__(self, setup: Setup, checkpointer: Checkpointer, cleanup: contextlib.ExitStack,
                 stop: StopSignals):
        self.setup, self.checkpointer, self.stop = setup, checkpointer, stop
        train, is_chief = setup.config.train, jax.process_index() == 0
        resumed = self._restore_or_init()
        self.writer = MetricWriter(setup.workdir, enabled=is_chief,
                                   purge_step=self.step + 1 if resumed else None)
        cleanup.push(_closing(self.writer.close))
        self.bar = progress.progress_bar(train, self.step, enabled=is_chief)
        cleanup.push(_closing(self.bar.close))
        self.peak = train.peak_flops_per_device or flops_lib.peak_flops(jax.devices()[0].device_kind)
        self.result: dict[str, Any] = {"step": self.step, "preempted": False, "train": {}, "eval": {}}
        self.pending: list[tuple[int, Any]] = []  # (step, metrics on the devices) since the last flush
        self.in_flight = InFlight(setup.policy.max_steps_in_flight)
        self.window = progress.Window(time.time())

    def _restore_or_init(self) -> bool:
        """Sets the step, state and dropout key from the newest checkpoint, or a fresh state
        (from ``train.init_from``'s parameters where it is set); then writes the resolved
        config. Returns whether a checkpoint was restored."""
        setup, parallel = self.setup, self.setup.parallel
        restored = resume_lib.restore(self.checkpointer, setup)
        if jax.process_index() == 0:
            workdir_lib.write_config(setup.workdir, setup.config)
        if restored is not None:
            self.step, canonical_state, meta = restored
            self.state = parallel.from_canonical(canonical_state)
            setup.pipe.train_iter.set_state(meta["data"])
            self.dropout_rng = jax.random.wrap_key_data(np.asarray(meta["rng"], np.uint32))
            log.info("restored step %d from %s", self.step, self.checkpointer.directory)
            return True
        self.step, self.state, self.dropout_rng = 0, parallel.init_state(), setup.dropout_rng
        init_from = setup.config.train.init_from
        if init_from:
            self.state = with_imported_params(parallel, self.state, init_from, setup.config.model)
            log.info("initialised a new run in %s from the parameters of %s", setup.workdir, init_from)
        else:
            log.info("initialised a new run in %s", setup.workdir)
        return False

    def train(self, hooks: Sequence[Hook]) -> dict[str, Any]:
        """Runs the steps up to ``train.num_steps``, or to a stop signal; returns ``run``'s result."""
        cfg, stop = self.setup.config.train, self.stop
        if stop.agreed():  # a collective: every process calls it
            log.warning("%s received before the first step; nothing new to save",
                        stop.signal_name or "a signal on another process")
            self.result["preempted"] = True
        while self.step < cfg.num_steps and not self.result["preempted"]:
            self.advance()
            for hook in hooks:
                hook(self.step)
            due = _due(self.step, cfg)
            # One process checks its own flag every step; several agree at the flush steps.
            stopping = stop.requested if jax.process_count() == 1 else False
            if due.flush or stopping:
                stopping = stop.agreed()
                self.flush()  # NaN/Inf raises here, before any checkpoint of this step is written
            if stopping:
                self.save()
                self.checkpointer.wait()
                self.result["preempted"] = True
                log.warning("stopped by %s at step %d; checkpoint saved",
                            stop.signal_name or "a signal on another process", self.step)
                break
            if due.evaluate:
                self.evaluate()
            if due.checkpoint:
                self.save()
            if due.evaluate or due.checkpoint:
                self.window.reset(time.time())
        self.result["step"] = self.step
        self.checkpointer.wait()
        return self.result

    def advance(self) -> None:
        """Dispatches one step on the next batch (the devices may still be running earlier ones)."""
        batch = next(self.setup.pipe.train_iter)
        self.window.flops += flops_lib.batch_train_flops(self.setup.config.model, batch) * jax.process_count()
        self.state, metrics = self.setup.parallel.step(self.state, batch, self.dropout_rng)
        self.step += 1
        self.pending.append((self.step, metrics))
        self.in_flight.push(metrics)
        self.bar.update(1)

    def flush(self) -> None:
        """Pulls, checks and writes the metrics of the steps since the last flush."""
        try:
            self.result["train"] = progress.flush(self.pending, self.setup.parallel, self.window,
                                                  self.peak, self.writer, self.bar)
        except NonFiniteLossError as e:
            raise NonFiniteLossError(f"{e} {_newest_good(self.checkpointer)}") from None
        self.pending = []

    def evaluate(self) -> None:
        """Validation metrics of the current state (and decoding metrics for translation)."""
        setup, step = self.setup, self.step
        config, parallel, pipe = setup.config, setup.parallel, setup.pipe
        train = config.train
        metrics = eval_lib.evaluate(parallel, self.state, pipe,
                                    max_in_flight=setup.policy.max_steps_in_flight)
        if config.model.arch is Arch.ENCODER_DECODER and train.eval_decode_examples > 0:
            for split in pipe.decode_sets:  # "validation", then e.g. numbers' "below_1000"
                decoded, examples = eval_lib.translation_metrics(
                    setup.model, parallel.canonical(self.state).params, pipe,
                    num_examples=train.eval_decode_examples, beam_size=train.eval_beam_size,
                    batch_size=config.data.eval_batch_size, max_len=config.data.max_target_len,
                    split=split,
                )
                prefix = "" if split == "validation" else f"{split}/"
                metrics.update({prefix + k: v for k, v in decoded.items()})
                self.writer.write_text(step, prefix + "translations", examples)
        self.writer.write(step, "eval", metrics)
        self.result["eval"] = metrics
        if jax.process_index() == 0:
            log.info("eval step %d: %s", step, progress.fmt(metrics))

    def save(self) -> None:
        """An asynchronous checkpoint of the current step: state, data position, dropout key --
        refused when a parameter is not finite."""
        canonical = self.setup.parallel.canonical(self.state)
        bad = health.nonfinite_leaves(canonical.params)  # what is saved, not only the loss
        if bad:
            raise NonFiniteLossError(
                f"non-finite parameters after step {self.step}: "
                f"{health.describe(bad, len(jax.tree.leaves(canonical.params)))}; not saved, "
                f"stopping. {_newest_good(self.checkpointer)}")
        meta = {
            "step": self.step,
            "data": self.setup.pipe.train_iter.get_state(),
            "rng": np.asarray(jax.random.key_data(self.dropout_rng)).tolist(),
        }
        self.checkpointer.save(self.step, canonical, meta)


class _Due(NamedTuple):
    """What happens after a step besides the next one."""

    evaluate: bool
    checkpoint: bool
    flush: bool  # pull, check and write the pending metrics


def _due(step: int, train: TrainConfig) -> _Due:
    """After ``step``: evaluate every ``eval_every_steps`` and at the last step
    (``eval_at_end``); save every ``checkpoint_every_steps`` and at the last step; flush every
    ``log_every_steps`` and before every evaluation and save (so that a NaN/Inf stops the run
    before it is saved)."""
    last = step == train.num_steps
    evaluate_now = (last and train.eval_at_end) or bool(
        train.eval_every_steps and step % train.eval_every_steps == 0)
    checkpoint_now = last or step % train.checkpoint_every_steps == 0
    return _Due(evaluate_now, checkpoint_now,
                evaluate_now or checkpoint_now or step % train.log_every_steps == 0)


# ====================================================================== helpers
def _closing(close: Callable[[], None]):
    """An ExitStack exit callback running ``close``: when the run is already failing, an error
    of ``close`` (a full disk failing the last metrics flush too) is logged, not raised over the
    error that says what went wrong."""

    def exit_callback(exc_type, exc, tb) -> bool:
        try:
            close()
        except Exception as e:  # noqa: BLE001
            if exc is None:
                raise
            log.warning("while stopping after %s: %s: %s", type(exc).__name__, type(e).__name__, e)
        return False

    return exit_callback


def _newest_step(directory: str) -> int:
    steps = [int(s) for s in os.listdir(directory) if s.isdigit()] if os.path.isdir(directory) else []
    return max(steps, default=0)


def _newest_good(checkpointer: Checkpointer) -> str:
    """Which checkpoint a run stopped by NaN/Inf can resume from. A save that failed in the
    meantime is mentioned, not raised: the NaN/Inf error stays the one reported."""
    failed = ""
    try:
        checkpointer.wait()
    except CheckpointError as e:
        failed = f" (A checkpoint save also failed: {e})"
    steps = checkpointer.all_steps()
    if not steps:
        return f"No checkpoint has been saved in {checkpointer.directory}.{failed}"
    return f"The newest checkpoint is step {steps[-1]} in {checkpointer.directory}.{failed}"
