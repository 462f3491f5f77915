"""A model ready to use (:class:`Pretrained`: config, parameters, tokenizer) and loading one
from a training workdir.

A workdir written by ``train.py`` (:mod:`tfm.training.loop`) holds everything needed: its
config.json, tokenizer/ and checkpoints/ (the layout: :mod:`tfm.run_files.layout`). Only the
parameters of the newest readable checkpoint are restored (no optimiser state, nothing written to
the workdir; the fallback past a damaged one is :func:`tfm.run_files.restore.restore_newest`, the one
training uses). Every file read is untrusted (:mod:`tfm.files`); what cannot be used is one
:class:`WorkdirError` naming it. Generation and translation over a Pretrained: :mod:`tfm.inference`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from typing import Any

import jax

from tfm import files
from tfm.config import Arch, ModelConfig
from tfm.data.config import DataConfig
from tfm.data.tokenizers import Tokenizer, load_tokenizer
from tfm.files import TfmError
from tfm.models import build_model, param_shapes
from tfm.token_ids import VocabularyError, check_vocabulary
from tfm.run_files.layout import CHECKPOINT_DIR, CONFIG_FILE, STATE_ITEM, TOKENIZER_DIR, checkpoint_dir
from tfm.run_files.restore import CheckpointError, read_state_items, restore_newest, short_error, unreadable_steps

log = logging.getLogger(__name__)


class WorkdirError(TfmError, ValueError):
    """The workdir cannot be used for what was asked (missing parts, wrong model kind)."""


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """A model ready for inference: its config, parameters and tokenizer.

    Attributes:
      config: the ModelConfig (with its vocab_size set).
      params: the parameter tree (unboxed arrays).
      tokenizer: the tokenizer the model was trained with.
      data: the DataConfig it was trained on, when known (decides whether LM prompts start with
        BOS and whether EOS ends a generation; see :func:`generate`).
      step: the training step of the checkpoint, when loaded from a workdir.
      workdir: where it was loaded from, if anywhere.
      model_type: the Hugging Face ``model_type`` it was imported from, if any (exporting it
        again writes the same family).
    """

    config: ModelConfig
    params: Any
    tokenizer: Tokenizer
    data: DataConfig | None = None
    step: int | None = None
    workdir: str | None = None
    model_type: str | None = None

    def __post_init__(self):
        if self.tokenizer is not None:
            check_vocabulary(self.tokenizer.vocab_size, self.config.vocab_size)

    @property
    def model(self):
        return build_model(self.config)

    @property
    def vocab_limit(self) -> int | None:
        """The ids decoding may choose: the tokenizer's (None without a tokenizer)."""
        return getattr(self.tokenizer, "vocab_size", None)


# ---------------------------------------------------------------------- loading
def read_config(workdir: str | os.PathLike) -> tuple[ModelConfig, DataConfig | None]:
    """The model (and data) config a training run saved in ``WORKDIR/config.json``."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isdir(workdir):
        raise WorkdirError(f"workdir {workdir} does not exist")
    if not os.path.lexists(path):
        raise WorkdirError(f"{workdir} is not a tfm workdir: {CONFIG_FILE} is missing (train.py writes it)")
    try:
        saved = files.read_json(path, limit=64 << 20)
    except files.FileError as e:
        raise WorkdirError(str(e)) from None
    if "model_type" in saved:
        raise WorkdirError(
            f"{workdir} is a Hugging Face model directory (model_type {saved['model_type']!r}), not a "
            "tfm workdir: load it with tfm.from_pretrained, or --pretrained on the command line")
    if "model" not in saved:
        raise WorkdirError(f"{path} has no 'model' section")
    model_cfg = _section(path, saved, "model", ModelConfig)
    data_cfg = _section(path, saved, "data", DataConfig) if "data" in saved else None
    return model_cfg, data_cfg


def _section(path: str, saved: dict, name: str, cls: type) -> Any:
    """``cls.from_dict(saved[name])``; a hand-edited section (not an object, a field of the wrong
    type or value) is a WorkdirError naming the file, the section and the field."""
    section = saved[name]
    if not isinstance(section, dict):
        raise WorkdirError(f"{path}: the {name!r} section must be a JSON object, not a "
                           f"{type(section).__name__}")
    try:
        return cls.from_dict(section)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        lines = str(e).strip().splitlines()
        raise WorkdirError(f"{path} ({name!r} section): {lines[0][:300] if lines else type(e).__name__}") from None


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax logs every step of a restore (and warns about read-only mode) through absl."""
    from absl import logging as absl_logging

    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(verbosity)


def restore_params(workdir: str | os.PathLike, config: ModelConfig, step: int | None = None) -> tuple[Any, int]:
    """Parameters of the newest readable checkpoint (or of ``step``) onto the default device.

    Reads only the 'params' of the saved TrainState; the optimiser state is never loaded and the
    workdir is opened read-only. A newest checkpoint that cannot be read falls back to the one
    before it (with a warning).

    Returns:
      (params, step).
    Raises:
      WorkdirError: no checkpoint, or none readable.
    """
    import orbax.checkpoint as ocp

    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        raise WorkdirError(f"{workdir} has no checkpoint ({CHECKPOINT_DIR}/ is missing): train it first")
    unreadable = unreadable_steps(directory)
    if unreadable:  # read-only: refused before orbax could block on it, nothing moved
        step_, why = max(unreadable.items())
        raise WorkdirError(f"the checkpoint of step {step_} cannot be read: {why}; nothing was changed "
                           "(a training run in this workdir moves such a step aside)")
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = {
        "params": jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), param_shapes(config)
        )
    }
    with _quiet_orbax():
        try:  # orbax reads each step's metadata here: a damaged one is one line, not a traceback
            manager = ocp.CheckpointManager(
                directory,
                item_handlers={STATE_ITEM: ocp.PyTreeCheckpointHandler()},
                options=ocp.CheckpointManagerOptions(read_only=True),
            )
            steps = sorted(manager.all_steps())
        except Exception as e:  # noqa: BLE001 - orbax raises many types
            raise WorkdirError(f"the checkpoints in {directory} cannot be listed ({short_error(e)}); "
                               "nothing was changed") from None
        if step is not None:
            if step not in steps:
                raise WorkdirError(f"{directory} has no checkpoint of step {step}; it has steps {steps}")
            steps = [step]
        if not steps:
            raise WorkdirError(f"{workdir} has no checkpoint yet ({directory} is empty): train it first")

        try:  # read-only: nothing moved
            s, params = restore_newest(directory, steps, lambda s: read_state_items(directory, s, target)["params"])
        except CheckpointError as e:
            raise WorkdirError(str(e)) from None
    return params, s


def load(workdir: str | os.PathLike, *, step: int | None = None, arch: Arch | str | None = None) -> Pretrained:
    """Config, tokenizer and the newest checkpoint's params of a training workdir.

    Args:
      workdir: the --workdir of train.py.
      step: a specific checkpoint step instead of the newest.
      arch: when given, the architecture the caller needs: anything else is a WorkdirError.
    """
    workdir = os.fspath(workdir)
    config, data = read_config(workdir)
    if arch is not None and config.arch is not Arch(arch):
        raise WorkdirError(
            f"{workdir} holds a model of kind {config.arch.value!r}, but this needs "
            f"{Arch(arch).value!r} (train.py writes the kind in {CONFIG_FILE})"
        )
    tokenizer_dir = os.path.join(workdir, TOKENIZER_DIR)
    try:
        tokenizer = load_tokenizer(tokenizer_dir)
    except (ValueError, files.FileError) as e:
        raise WorkdirError(f"{workdir} has no usable tokenizer: {e}") from None
    try:
        check_vocabulary(tokenizer.vocab_size, config.vocab_size)
    except VocabularyError as e:
        raise WorkdirError(f"{workdir}: {e}") from None
    params, restored_step = restore_params(workdir, config, step)
    return Pretrained(config, params, tokenizer, data=data, step=restored_step, workdir=workdir)
