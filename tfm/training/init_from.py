"""Starting a run from an imported model (``train.init_from``: a Hugging Face model directory).

The imported model decides the architecture (:func:`resolve_init_from`; the run keeps its own
execution-only fields and dropout rates, :data:`INIT_FROM_KEPT_FIELDS`), and a fresh run's
parameters are replaced by the imported ones (:func:`with_imported_params`). A workdir already
started from the same directory keeps the architecture it saved.
"""

from __future__ import annotations

import logging

import jax
import numpy as np

from tfm.config import ModelConfig
from tfm.training.config import EXECUTION_ONLY_MODEL_FIELDS, RunConfig
from tfm.training.workdir_guard import WorkdirMismatchError, model_differences

log = logging.getLogger(__name__)

# ModelConfig fields a run that starts from an imported model keeps from its own config.
INIT_FROM_KEPT_FIELDS = EXECUTION_ONLY_MODEL_FIELDS | {"dropout_rate", "attention_dropout_rate"}
# The encoder-only model's head: a classification run replaces an imported masked-LM or bare
# encoder head (or a classifier of other classes) with a freshly initialised classifier.
HEAD_FIELDS = frozenset({"head", "pooler", "num_classes", "class_names", "logits_bias"})


def _as_classifier(model: ModelConfig, config: RunConfig) -> ModelConfig:
    """An imported encoder-only model with the classifier head a classification run trains."""
    from tfm.config import Arch, EncoderHead, Pooling
    from tfm.data.config import Task

    if config.data.task is not Task.CLASSIFICATION or model.arch is not Arch.ENCODER_CLASSIFIER \
            or model.head is EncoderHead.CLASSIFIER:
        return model
    return model.replace(head=EncoderHead.CLASSIFIER, logits_bias=False,
                         pooler=model.pooler or model.pooling is Pooling.FIRST)


def resolve_init_from(config: RunConfig, saved: RunConfig | None = None) -> RunConfig:
    """With ``train.init_from``: the imported model's architecture (its config.json), keeping
    the run's execution-only fields and dropout rates (:data:`INIT_FROM_KEPT_FIELDS`). A
    workdir already started from the same directory (``saved``: its saved run, from
    :func:`tfm.training.workdir_guard.saved_run`) keeps the architecture it saved (resuming
    does not need the imported directory any more)."""
    if not config.train.init_from:
        return config
    kept = {f: getattr(config.model, f) for f in INIT_FROM_KEPT_FIELDS}
    if saved is not None and saved.train.init_from == config.train.init_from:
        return config.replace(model=saved.model.replace(**kept))
    from tfm import interop

    imported = interop.read_model_config(config.train.init_from)
    model = _as_classifier(imported.replace(**kept), config)
    ignored = [d.replace(" in the workdir", " in init_from") for d in model_differences(model, config.model)
               if d.split(":")[0].split(".")[1] != "vocab_size"]
    if ignored:
        log.info("train.init_from=%s decides the architecture; config values not used:\n  %s",
                 config.train.init_from, "\n  ".join(ignored))
    return config.replace(model=model)


def with_imported_params(parallel, state, directory: str, model_cfg: ModelConfig):
    """``state`` with its parameters replaced by those of a Hugging Face model directory, each
    placed like the parameter it replaces (the optimiser state of a fresh run does not depend
    on the parameter values)."""
    from tfm import interop

    from tfm.interop.convert import flat_paths

    imported_cfg, params = interop.load_model(directory)
    free = INIT_FROM_KEPT_FIELDS | (HEAD_FIELDS if model_cfg.arch.value == "encoder_classifier" else set())
    if imported_cfg.replace(**{f: getattr(model_cfg, f) for f in free}) != model_cfg:
        raise WorkdirMismatchError(f"{directory} no longer holds the model this run was configured from")
    canonical = parallel.canonical(state)
    imported = dict(flat_paths(params))
    fresh = []

    def place(path, old):
        key = "/".join(str(getattr(k, "key", k)) for k in path)
        new = imported.get(key)
        if new is None or np.shape(new) != old.shape:  # a new head: keeps its fresh initialisation
            fresh.append(key)
            return old
        return jax.device_put(np.asarray(new, old.dtype), old.sharding)

    placed = jax.tree_util.tree_map_with_path(place, canonical.params)
    if fresh:
        log.info("initialised from %s except (fresh): %s", directory, ", ".join(fresh))
    return parallel.from_canonical(canonical.replace(params=placed))
