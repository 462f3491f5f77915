"""What a run builds before its first step (:class:`Setup`): the resolved config, the workdir's
saved run, the strategy with the compiled steps, the data pipeline and the model.

:meth:`Setup.build`, in order -- every check before the work it guards:

1. the parallel strategy, checked against the batch sizes, and the host batch against the
   host's memory (:mod:`tfm.training.parallel`, :mod:`tfm.training.memory`);
2. the workdir's saved run, read once (:func:`tfm.training.workdir_guard.saved_run`); the
   imported model's architecture (``train.init_from``), the classifier's classes, and a
   refusal when the saved run holds a different model;
3. the data's provenance against the workdir's record, the data pipeline and its tokenizer
   (built, or reloaded from ``WORKDIR/tokenizer``), whose vocabulary sizes the model;
4. the model, the optimiser and the init, traced once by the strategy, which then compiles
   the steps (on their first call) and keeps them; the device memory a step needs is checked
   before anything is placed on a device.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Any

import jax
import ml_collections

from tfm.backend import BackendPolicy
from tfm.data import tokenizers as tokenizers_lib
from tfm.data.pipeline import Pipeline, build_pipeline
from tfm.models import build_model
from tfm.training import memory
from tfm.training import parallel as parallel_lib
from tfm.training import state as state_lib
from tfm.training import workdir_guard as workdir_lib
from tfm.training.config import RunConfig
from tfm.training.init_from import resolve_init_from
from tfm.training.optimizer import make_schedule, make_tx
from tfm.run_files.layout import TOKENIZER_DIR

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Setup:
    """Everything built before the first step. ``parallel`` holds the run's init and its
    compiled steps; ``saved`` is the workdir's saved run (None for a fresh workdir)."""

    config: RunConfig
    workdir: str
    parallel: parallel_lib.Parallel
    pipe: Pipeline
    model: Any
    dropout_rng: jax.Array
    saved: RunConfig | None
    policy: BackendPolicy  # the backend choices (kernels, attention, steps in flight)

    @classmethod
    def build(cls, config: RunConfig, workdir: str) -> Setup:
        train = config.train
        is_chief = jax.process_index() == 0
        # strategy and batch sizes first: a bad combination fails before any work
        parallel = parallel_lib.make_parallel(train)
        parallel_lib.check_batch_sizes(
            parallel, batch_size=config.data.batch_size, grad_accum_steps=train.grad_accum_steps,
            eval_batch_size=config.data.eval_batch_size,
        )
        memory.check_host_batch(config.data, config.model.arch, jax.process_count())  # before any batch
        saved = workdir_lib.saved_run(workdir)
        config = resolve_classes(resolve_init_from(config, saved))
        workdir_lib.check_saved_model(saved, config, workdir)
        if is_chief:
            os.makedirs(workdir, exist_ok=True)

        # data, vocabulary (checked against what the workdir's tokenizer was built from), config
        provenance = workdir_lib.check_provenance(config.data, workdir, is_chief=is_chief,
                                                  init_from=train.init_from)
        sync("tfm_provenance_checked")
        pretrained_tokenizer = None
        if train.init_from and not tokenizers_lib.exists(os.path.join(workdir, TOKENIZER_DIR)):
            from tfm import interop

            pretrained_tokenizer = interop.load_tokenizer(train.init_from)
        pipe = build_pipeline(
            config.data, config.model.arch, workdir=workdir,
            process_index=jax.process_index(), process_count=jax.process_count(),
            batch_multiple=parallel.num_devices, pretrained_tokenizer=pretrained_tokenizer,
        )
        if is_chief:
            workdir_lib.check_and_record_tokenizer(workdir, provenance)
        config = resolve_model(config, pipe)
        # the model's sizes now come from the data: the saved run's model again;
        # config.json is written once the restore succeeded
        workdir_lib.check_saved_model(saved, config, workdir)
        model_cfg = config.model

        # model, optimiser, steps
        policy = BackendPolicy.resolve(model_cfg, train)
        model = build_model(model_cfg, policy)
        schedule = make_schedule(train, model_cfg)
        tx = make_tx(train, schedule)
        init_rng, dropout_rng = jax.random.split(jax.random.key(train.seed))
        parallel.prepare(state_lib.boxed_init_fn(model, model_cfg, tx), init_rng)  # the one trace of the init
        num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(parallel.abstract_state().params))
        log.info("model: %s, %s parameters; %s", model_cfg.arch.value, f"{num_params:,}",
                 parallel.describe())
        memory.check_device_batch(  # the vocabulary is known now; the init was only traced: nothing is on a device yet
            model_cfg, config.data, devices=parallel.num_devices, local_devices=jax.local_device_count(),
            grad_accum_steps=train.grad_accum_steps, params=num_params,
            sharded=parallel.strategy is parallel_lib.Strategy.SHARDED)
        parallel.compile_steps(model, tx, schedule, train)
        return cls(config, workdir, parallel, pipe, model, dropout_rng, saved, policy)


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


def sync(name: str) -> None:
    """A barrier of all processes (multi-process only)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
