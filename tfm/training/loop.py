"""The training loop: ``run(config, workdir)``, the I/O around the pure steps; what it calls
lives in the modules named below (workdir, resume, checkpoint, progress, eval, signals).

One run, in order:

1. The config becomes validated dataclasses (:class:`RunConfig`); on a CPU-only host the CPU
   is split into one device per core (:mod:`tfm.training.devices`); process 0 takes the
   workdir's lock (:mod:`tfm.training.workdir_guard`: a second run on it is refused naming the
   holder), and the parallel strategy is chosen and checked against the batch sizes -- before
   any data is read or anything compiled.
2. A workdir that already holds a run of a *different model* is refused
   (:class:`WorkdirMismatchError`); it is never overwritten.
3. The data pipeline builds (or reloads from ``WORKDIR/tokenizer``, once its recorded
   provenance matches this run's data) the tokenizer; the model's ``vocab_size`` is taken from
   it when the config leaves it 0.
4. The newest checkpoint is restored (TrainState, data position, dropout key;
   :mod:`tfm.training.resume`): one that does not fit a changed setting is refused naming it
   (``train.reset_optimizer`` restores all but the optimiser state); a damaged newest
   checkpoint falls back to the previous one (:mod:`tfm.training.checkpointer`). Otherwise the
   state is initialised from ``TrainConfig.seed``. Then the resolved config is written to
   ``WORKDIR/config.json``.
5. Steps run asynchronously, at most ``max_steps_in_flight`` ahead of the devices
   (:mod:`tfm.training.inflight`); every ``log_every_steps`` the metrics of the last steps are
   pulled to the host in one transfer, checked (a NaN/Inf loss or gradient norm raises
   :class:`NonFiniteLossError` naming the step -- checkpoints are only written after this check,
   so the newest checkpoint is always a good one), and written: progress bar (step, loss,
   tokens/s, learning rate), TensorBoard and ``metrics.jsonl`` (process 0 only), with the MFU
   estimate when the device's peak FLOP/s is known (:mod:`tfm.training.progress`).
6. Every ``eval_every_steps`` and at the end (``eval_at_end``): validation loss, accuracy, perplexity; for
   translation also greedy/beam decoding of ``eval_decode_examples`` sentences -> BLEU and
   exact match, per group where the data has groups (numbers: by magnitude, plus the set of
   every number below 1,000: ``below_1000/...``; see ``Pipeline.decode_sets``;
   :mod:`tfm.training.eval`).
7. Every ``checkpoint_every_steps`` and at the end, an asynchronous checkpoint -- of finite
   parameters only (:mod:`tfm.training.health`); a write that fails (read-only or full disk)
   stops the run with :class:`~tfm.training.checkpointer.CheckpointWriteError` naming cause
   and path.
8. SIGTERM or SIGINT: the current step is checkpointed and ``run`` returns normally (the
   launcher then exits 0). With several processes the stop is agreed at the next logging
   step, so that all of them save the same step. During set-up (steps 1-3: downloads,
   tokenizer training) a signal stops the run at once: there is nothing to save yet
   (:mod:`tfm.training.signals`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from tfm.backend import BackendPolicy
from tfm.config import Arch
from tfm.data import tokenizers as tokenizers_lib
from tfm.data.pipeline import Pipeline, build_pipeline
from tfm.models import build_model
from tfm.training import devices as devices_lib
from tfm.training import flops as flops_lib
from tfm.training import health
from tfm.training import memory
from tfm.training import parallel as parallel_lib
from tfm.training import progress
from tfm.training import resume as resume_lib
from tfm.training import state as state_lib
from tfm.training import workdir_guard as workdir_lib
from tfm.training.checkpointer import CheckpointError, Checkpointer
from tfm.training.config import RunConfig
from tfm.training.eval import evaluate, translation_metrics
from tfm.training.health import NonFiniteLossError
from tfm.training.inflight import InFlight
from tfm.training.init_from import resolve_init_from, with_imported_params
from tfm.training.optimizer import make_schedule, make_tx
from tfm.training.signals import SetupInterrupted, StopSignals
from tfm.training.workdir_guard import WorkdirLockedError, WorkdirMismatchError, check_workdir
from tfm.training.writer import MetricWriter
from tfm.run_files.layout import TOKENIZER_DIR, checkpoint_dir

__all__ = ["NonFiniteLossError", "WorkdirLockedError", "WorkdirMismatchError", "run"]

log = logging.getLogger(__name__)

Hook = Callable[[int], None]


# ====================================================================== config helpers
def as_run_config(config: RunConfig | ml_collections.ConfigDict | dict) -> RunConfig:
    return config if isinstance(config, RunConfig) else RunConfig.from_config_dict(config)


def resolve_model(config: RunConfig, pipe: Pipeline) -> RunConfig:
    """Fills in what the data decides: vocab_size (from the tokenizer), num_classes."""
    model = config.model
    vocab = pipe.vocab_size
    if model.vocab_size == 0:
        model = model.replace(vocab_size=vocab)
    elif model.vocab_size < vocab:
        raise ValueError(
            f"ModelConfig.vocab_size={model.vocab_size} is smaller than the tokenizer's "
            f"vocabulary ({vocab}); leave it 0 to take it from the tokenizer"
        )
    if pipe.num_classes is not None and model.num_classes != pipe.num_classes:
        raise ValueError(
            f"ModelConfig.num_classes={model.num_classes} but the data set has "
            f"{pipe.num_classes} classes"
        )
    return config.replace(model=model)


def resolve_classes(config: RunConfig) -> RunConfig:
    """A local classification file decides the classifier's classes (num_classes, class_names)."""
    from tfm.data import labeled_files
    from tfm.data.config import Dataset

    if config.data.dataset is not Dataset.CLASSIFICATION_FILE:
        return config
    names = labeled_files.label_names(config.data)
    return config.replace(model=config.model.replace(num_classes=len(names), class_names=names))


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


def _sync(name: str) -> None:
    """A barrier of all processes (multi-process only)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _agree(flag: bool) -> bool:
    """True on every process if it is True on any (a host collective; multi-process only)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.array([int(flag)], np.int32))
    return bool(np.asarray(flags).any())


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
                setup = _Setup.build(config, workdir)
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
            return _train(setup, checkpointer, cleanup, hooks, stop)
        except (jax.errors.JaxRuntimeError, MemoryError) as e:  # XLA's RESOURCE_EXHAUSTED, NumPy's
            error = memory.out_of_memory(e, setup.config.data)
            if error is None:
                raise
            raise error from None


@dataclasses.dataclass
class _Setup:
    """Everything built before the first step: resolved config, strategy, data, model, and the
    compiled (on first call) steps."""

    config: RunConfig
    workdir: str
    parallel: parallel_lib.Parallel
    pipe: Pipeline
    model: Any
    boxed_init: Callable
    init_rng: jax.Array
    dropout_rng: jax.Array
    train_step: Callable
    eval_step: Callable
    saved: RunConfig | None  # the workdir's config.json, if it has one
    policy: BackendPolicy  # the backend choices (kernels, attention, steps in flight)

    @classmethod
    def build(cls, config: RunConfig, workdir: str) -> _Setup:
        train = config.train
        # strategy and batch sizes first: a bad combination fails before any work
        parallel = parallel_lib.make_parallel(train)
        parallel_lib.check_batch_sizes(
            parallel, batch_size=config.data.batch_size, grad_accum_steps=train.grad_accum_steps,
            eval_batch_size=config.data.eval_batch_size,
        )
        memory.check_host_batch(config.data, config.model.arch, jax.process_count())  # before any batch
        config = resolve_init_from(config, workdir)
        config = resolve_classes(config)
        saved = check_workdir(config, workdir)
        if jax.process_index() == 0:
            os.makedirs(workdir, exist_ok=True)

        # data, vocabulary (checked against what the workdir's tokenizer was built from), config
        provenance = workdir_lib.check_provenance(config.data, workdir,
                                                  is_chief=jax.process_index() == 0,
                                                  init_from=config.train.init_from)
        _sync("tfm_provenance_checked")
        pretrained_tokenizer = None
        if config.train.init_from and not tokenizers_lib.exists(os.path.join(workdir, TOKENIZER_DIR)):
            from tfm import interop

            pretrained_tokenizer = interop.load_tokenizer(config.train.init_from)
        pipe = build_pipeline(
            config.data, config.model.arch, workdir=workdir,
            process_index=jax.process_index(), process_count=jax.process_count(),
            batch_multiple=parallel.num_devices, pretrained_tokenizer=pretrained_tokenizer,
        )
        if jax.process_index() == 0:
            workdir_lib.check_and_record_tokenizer(workdir, provenance)
        config = resolve_model(config, pipe)
        # the model's sizes now come from the data: the saved run's model again (read once, above);
        # config.json is written once the restore succeeded
        workdir_lib.check_saved_model(saved, config, workdir)
        model_cfg = config.model

        # model, optimiser, steps
        policy = BackendPolicy.resolve(model_cfg, train)
        model = build_model(model_cfg, policy)
        schedule = make_schedule(train, model_cfg)
        tx = make_tx(train, schedule)
        boxed_init = state_lib.boxed_init_fn(model, model_cfg, tx)
        init_rng, dropout_rng = jax.random.split(jax.random.key(train.seed))
        parallel.prepare(boxed_init, init_rng)  # the one trace of the init
        num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(parallel.abstract_state().params))
        log.info("model: %s, %s parameters; %s", model_cfg.arch.value, f"{num_params:,}",
                 parallel.describe())
        memory.check_device_batch(  # the vocabulary is known now; the init was only traced: nothing is on a device yet
            model_cfg, config.data, devices=parallel.num_devices, local_devices=jax.local_device_count(),
            grad_accum_steps=train.grad_accum_steps, params=num_params,
            sharded=parallel.strategy is parallel_lib.Strategy.SHARDED)
        train_step, eval_step = parallel.compile_steps(model, tx, schedule, train)
        return cls(config, workdir, parallel, pipe, model, boxed_init, init_rng, dropout_rng,
                   train_step, eval_step, saved, policy)


def _train(setup: _Setup, checkpointer: Checkpointer, cleanup: contextlib.ExitStack,
           hooks: Sequence[Hook], stop: StopSignals) -> dict[str, Any]:
    """Restores or initialises the state, then runs the steps (see the module docstring)."""
    config, parallel, pipe = setup.config, setup.parallel, setup.pipe
    train, model_cfg = config.train, config.model
    is_chief = jax.process_index() == 0

    restored = resume_lib.restore(checkpointer, parallel, setup.boxed_init, setup.init_rng, config,
                                  setup.saved, setup.workdir)
    if is_chief:
        workdir_lib.write_config(setup.workdir, config)
    if restored is not None:
        start_step, canonical_state, meta = restored
        state = parallel.from_canonical(canonical_state)
        pipe.train_iter.set_state(meta["data"])
        dropout_rng = jax.random.wrap_key_data(np.asarray(meta["rng"], np.uint32))
        log.info("restored step %d from %s", start_step, checkpointer.directory)
    else:
        start_step = 0
        state = parallel.init_state(setup.boxed_init, setup.init_rng)
        dropout_rng = setup.dropout_rng
        if train.init_from:
            state = with_imported_params(parallel, state, train.init_from, model_cfg)
            log.info("initialised a new run in %s from the parameters of %s", setup.workdir, train.init_from)
        else:
            log.info("initialised a new run in %s", setup.workdir)

    writer = MetricWriter(setup.workdir, enabled=is_chief,
                          purge_step=start_step + 1 if restored is not None else None)
    cleanup.push(_closing(writer.close))
    bar = progress.progress_bar(train, start_step, enabled=is_chief)
    cleanup.push(_closing(bar.close))
    peak = train.peak_flops_per_device or flops_lib.peak_flops(jax.devices()[0].device_kind)
    result: dict[str, Any] = {"step": start_step, "preempted": False, "train": {}, "eval": {}}

    def save(step: int) -> None:
        canonical = parallel.canonical(state)
        bad = health.nonfinite_leaves(canonical.params)  # what is saved, not only the loss
        if bad:
            raise NonFiniteLossError(
                f"non-finite parameters after step {step}: "
                f"{health.describe(bad, len(jax.tree.leaves(canonical.params)))}; not saved, "
                f"stopping. {_newest_good(checkpointer)}")
        meta = {
            "step": step,
            "data": pipe.train_iter.get_state(),
            "rng": np.asarray(jax.random.key_data(dropout_rng)).tolist(),
        }
        checkpointer.save(step, canonical, meta)

    def run_eval(step: int) -> None:
        metrics = evaluate(parallel, setup.eval_step, state, pipe,
                           max_in_flight=setup.policy.max_steps_in_flight)
        if model_cfg.arch is Arch.ENCODER_DECODER and train.eval_decode_examples > 0:
            for split in pipe.decode_sets:  # "validation", then e.g. numbers' "below_1000"
                decoded, examples = translation_metrics(
                    setup.model, parallel.canonical(state).params, pipe,
                    num_examples=train.eval_decode_examples, beam_size=train.eval_beam_size,
                    batch_size=config.data.eval_batch_size, max_len=config.data.max_target_len,
                    split=split,
                )
                prefix = "" if split == "validation" else f"{split}/"
                metrics.update({prefix + k: v for k, v in decoded.items()})
                writer.write_text(step, prefix + "translations", examples)
        writer.write(step, "eval", metrics)
        result["eval"] = metrics
        if is_chief:
            log.info("eval step %d: %s", step, progress.fmt(metrics))

    pending: list[tuple[int, Any]] = []
    in_flight = InFlight(setup.policy.max_steps_in_flight)
    window = progress.Window(time.time())
    step = start_step
    if _agree(stop.requested):  # a collective: every process calls it
        log.warning("%s received before the first step; nothing new to save",
                    stop.signal_name or "a signal on another process")
        result["preempted"] = True
    while step < train.num_steps and not result["preempted"]:
        batch = next(pipe.train_iter)
        window.flops += flops_lib.batch_train_flops(model_cfg, batch) * jax.process_count()
        state, metrics = setup.train_step(state, parallel.shard_batch(batch), dropout_rng)
        step += 1
        pending.append((step, metrics))
        in_flight.push(metrics)
        bar.update(1)
        for hook in hooks:
            hook(step)

        last = step == train.num_steps
        eval_now = (last and train.eval_at_end) or bool(
            train.eval_every_steps and step % train.eval_every_steps == 0)
        ckpt_now = last or step % train.checkpoint_every_steps == 0
        flush_now = eval_now or ckpt_now or step % train.log_every_steps == 0
        # One process checks its own flag every step; several agree at the flush steps.
        stopping = stop.requested if jax.process_count() == 1 else False
        if flush_now or stopping:
            stopping = _agree(stop.requested)
            # NaN/Inf raises here, before any checkpoint of this step is written
            try:
                result["train"] = progress.flush(pending, parallel, window, peak, writer, bar)
            except NonFiniteLossError as e:
                raise NonFiniteLossError(f"{e} {_newest_good(checkpointer)}") from None
            pending = []
        if stopping:
            save(step)
            checkpointer.wait()
            result["preempted"] = True
            log.warning("stopped by %s at step %d; checkpoint saved",
                        stop.signal_name or "a signal on another process", step)
            break
        if eval_now:
            run_eval(step)
        if ckpt_now:
            save(step)
        if eval_now or ckpt_now:
            window.reset(time.time())
    result["step"] = step
    checkpointer.wait()
    return result


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


