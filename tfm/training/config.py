"""Training configuration, and the one place a config file becomes validated dataclasses.

A run is described by three frozen dataclasses, passed down whole:

* :class:`tfm.config.ModelConfig` -- the network (owned by the core),
* :class:`tfm.data.config.DataConfig` -- data set, tokenizer, lengths, GLOBAL batch size,
* :class:`TrainConfig` -- optimiser, schedule, parallelism, logging, checkpoints (here).

Their dataclass defaults ARE the project's defaults. ``configs/default.py`` turns them into an
``ml_collections.ConfigDict`` with :func:`default_config_dict` (so no default is written twice),
experiment files override a few fields, ``--config.train.num_steps=10`` overrides on the command
line, and :meth:`RunConfig.from_config_dict` turns the result back into dataclasses, validating
every field and the fields against each other before anything is compiled.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from typing import Any, ClassVar

import ml_collections
from ml_collections import config_dict

from tfm.config import ConfigBase, ModelConfig
from tfm.data.config import FLAT_NAMES, DataConfig, TokenizerKind


class Strategy(str, enum.Enum):
    """How a step is spread over devices (see :mod:`tfm.training.parallel`)."""

    SINGLE = "single"  # jax.jit on one device (process 0's first device)
    PMAP = "pmap"  # jax.pmap over every device of every host; state replicated; gradients summed over
    # devices, then divided once by the global token count (tfm.training.steps)
    SHARDED = "sharded"  # jax.jit over a Mesh('data', 'fsdp'); params sharded along 'fsdp'


class Optimizer(str, enum.Enum):
    ADAM = "adam"  # the paper, section 5.3
    ADAMW = "adamw"  # decoupled weight decay (GPT-2 / nanoGPT)


class Schedule(str, enum.Enum):
    RSQRT = "rsqrt"  # the paper: d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)
    WARMUP_COSINE = "warmup_cosine"  # linear warm-up to learning_rate, cosine decay to the end
    CONSTANT = "constant"  # learning_rate throughout (linear warm-up if warmup_steps > 0)


@dataclasses.dataclass(frozen=True)
class TrainConfig(ConfigBase):
    """Everything about how a model is trained (not what it is, nor what it reads).

    The global batch size is ``DataConfig.batch_size`` (rows per optimiser step, all hosts and
    devices together); it is not repeated here.

    Attributes:
      seed: seeds parameter initialisation and the dropout key (the data order has its own
        ``DataConfig.shuffle_seed``).
      num_steps: optimiser steps to train for (a resumed run stops at the same step).
      grad_accum_steps: split every global batch into this many micro-batches, run one after
        the other (lax.scan) and add their gradients before the single update. The update is
        the same as without accumulation; only peak memory changes.
      optimizer: Adam (the paper) or AdamW.
      schedule: the paper's rsqrt warm-up, warm-up + cosine, or constant.
      learning_rate: rsqrt: a multiplier of the paper's formula (1.0 = the paper);
        warmup_cosine / constant: the peak learning rate.
      warmup_steps: linear warm-up steps (4000 in the paper).
      end_learning_rate_ratio: warmup_cosine: final learning rate as a fraction of the peak.
      b1, b2, eps: Adam's parameters (the paper: 0.9, 0.98, 1e-9).
      weight_decay: AdamW's decoupled weight decay (kernels and embeddings only).
      grad_clip_norm: clip gradients to this global norm before the update; 0 = no clipping.
      label_smoothing: eps_ls of the paper (0.1); see :mod:`tfm.losses`.
      strategy: single device, pmap, or sharded (see :class:`Strategy`). The default is
        sharded with mesh_data=-1, mesh_fsdp=1, i.e. plain data parallelism over every device
        through jax.jit. The three run at the same speed (benchmarks/README.md, "Strategies"),
        as expected with pmap itself built on jit + shard_map (JAX >= 0.8,
        maintenance mode). Sharded wins on everything else: one code path from one device to
        FSDP (mesh_fsdp > 1) for models that do not fit replicated, global arrays across hosts,
        no leading device axis on the state.
      cpu_devices: on a CPU host, split it into this many XLA devices (data parallelism over
        its cores; ``train.py --cpu_devices=N`` sets it). 0 = automatic: one per physical core
        on a CPU-only host, as the batch sizes allow (:mod:`tfm.training.devices`), unless
        ``TFM_CPU_DEVICES`` or ``XLA_FLAGS`` says otherwise. Takes effect only before JAX's
        backends start (the first run of a process).
      mesh_data, mesh_fsdp: sharded strategy mesh shape; -1 in one of them means "all the
        remaining devices". Parameters and optimiser state are sharded over 'fsdp'; the batch
        over both axes.
      log_every_steps: metrics are pulled from the devices, checked for NaN/Inf and written
        (TensorBoard, metrics.jsonl, the progress bar) every this many steps -- not every step.
      max_steps_in_flight: at most this many train (or eval) steps are dispatched and not yet
        finished; the loop waits for the oldest beyond that. 2 hides the host's dispatch and
        data loading; an unbounded queue can hang XLA:CPU with several devices
        (:mod:`tfm.training.inflight`).
      eval_every_steps: evaluate (loss, accuracy, perplexity; translation: also BLEU and exact
        match of decoded sentences) every this many steps; 0 = no periodic evaluation.
      eval_at_end: also evaluate after the last step.
      eval_decode_examples: translation: decode this many validation examples for BLEU and
        exact match at each evaluation (tfm.decoding); 0 = skip.
      eval_beam_size: beam width of that decoding; 1 = greedy (fast; the paper's final
        numbers use beam 4 with length penalty 0.6).
      checkpoint_every_steps: save every this many steps (asynchronously) and at the end.
      keep_checkpoints: keep the newest this many checkpoints.
      async_checkpointing: write checkpoints in a background thread while training goes on.
      peak_flops_per_device: the device's peak FLOP/s for the MFU estimate; 0 = look it up by
        device kind (H100, A100, TPU v4/v5...), and skip MFU when unknown (CPU).
      progress_bar: show a tqdm bar on process 0.
      reset_optimizer: on resume, restore the step, parameters, data position and dropout key
        but start a fresh optimiser state (its schedule continues at the restored step) -- for
        resuming after a change of optimiser or clipping, whose checkpointed state no longer
        fits. It applies to every resume it is passed to; pass it once.
      init_from: a model directory in Hugging Face's layout (GPT-2 or Marian, see
        :mod:`tfm.interop`) to start from: a fresh run takes its parameters, its tokenizer (set
        ``DataConfig.tokenizer="pretrained"``) and its architecture -- every ``ModelConfig``
        field except the execution-only ones (EXECUTION_ONLY_MODEL_FIELDS) and the dropout
        rates, which stay as configured. Resuming a run restores its checkpoint as usual.
        "" = train from scratch.
    """

    seed: int = 0
    num_steps: int = 100_000
    grad_accum_steps: int = 1
    optimizer: Optimizer = Optimizer.ADAM
    schedule: Schedule = Schedule.RSQRT
    learning_rate: float = 1.0
    warmup_steps: int = 4000
    end_learning_rate_ratio: float = 0.1
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-9
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0
    label_smoothing: float = 0.1
    strategy: Strategy = Strategy.SHARDED
    cpu_devices: int = 0
    mesh_data: int = -1
    mesh_fsdp: int = 1
    log_every_steps: int = 100
    max_steps_in_flight: int = 2
    eval_every_steps: int = 1000
    eval_at_end: bool = True
    eval_decode_examples: int = 256
    eval_beam_size: int = 1
    checkpoint_every_steps: int = 1000
    keep_checkpoints: int = 3
    async_checkpointing: bool = True
    peak_flops_per_device: float = 0.0
    progress_bar: bool = True
    reset_optimizer: bool = False
    init_from: str = ""

    _ENUMS: ClassVar[dict[str, type[enum.Enum]]] = {
        "optimizer": Optimizer, "schedule": Schedule, "strategy": Strategy,
    }

    def validate(self) -> None:
        """Raises ValueError naming the first offending field."""

        def fail(field: str, msg: str):
            raise ValueError(f"TrainConfig.{field}={getattr(self, field)!r}: {msg}")

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v) -> bool:  # a finite int or float (NaN and inf pass every comparison test)
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        for field in ("num_steps", "grad_accum_steps", "log_every_steps", "max_steps_in_flight",
                      "eval_beam_size", "checkpoint_every_steps", "keep_checkpoints"):
            if not is_int(getattr(self, field)) or getattr(self, field) <= 0:
                fail(field, "must be a positive integer")
        for field in ("seed", "warmup_steps", "eval_every_steps", "eval_decode_examples",
                      "cpu_devices"):
            if not is_int(getattr(self, field)) or getattr(self, field) < 0:
                fail(field, "must be a non-negative integer")
        if not is_num(self.learning_rate) or self.learning_rate <= 0:
            fail("learning_rate", "must be a finite number > 0")
        if self.schedule is Schedule.RSQRT and self.warmup_steps == 0:
            fail("warmup_steps", "the rsqrt schedule needs warmup_steps > 0")
        if not is_num(self.end_learning_rate_ratio) or not 0 <= self.end_learning_rate_ratio <= 1:
            fail("end_learning_rate_ratio", "must be in [0, 1]")
        for field in ("b1", "b2"):
            if not is_num(getattr(self, field)) or not 0 <= getattr(self, field) < 1:
                fail(field, "must be in [0, 1)")
        if not is_num(self.eps) or self.eps <= 0:
            fail("eps", "must be a finite number > 0")
        for field in ("weight_decay", "grad_clip_norm", "peak_flops_per_device"):
            if not is_num(getattr(self, field)) or getattr(self, field) < 0:
                fail(field, "must be a finite number >= 0")
        if self.weight_decay and self.optimizer is not Optimizer.ADAMW:
            fail("weight_decay", "is only used by optimizer='adamw'")
        if not is_num(self.label_smoothing) or not 0 <= self.label_smoothing < 1:
            fail("label_smoothing", "must be in [0, 1)")
        for field in ("mesh_data", "mesh_fsdp"):
            v = getattr(self, field)
            if not is_int(v) or (v <= 0 and v != -1):
                fail(field, "must be a positive integer or -1 (all remaining devices)")
        if self.mesh_data == -1 and self.mesh_fsdp == -1:
            fail("mesh_fsdp", "only one of mesh_data and mesh_fsdp may be -1")
        if not isinstance(self.init_from, str):
            fail("init_from", "must be a directory path (a string) or ''")
        for field in ("async_checkpointing", "progress_bar", "eval_at_end", "reset_optimizer"):
            if not isinstance(getattr(self, field), bool):
                fail(field, "must be a bool")



# ModelConfig fields that change how the same network is computed, not which network it is:
# a workdir may be resumed with different values of these (e.g. turning mixed precision on).
EXECUTION_ONLY_MODEL_FIELDS = frozenset({"dtype", "remat", "attention_impl", "grad_kernels"})


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The whole, validated description of a run: model, data and training."""

    model: ModelConfig
    data: DataConfig
    train: TrainConfig

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Checks between the three parts (each part validated itself on construction)."""
        if self.model.arch is not self.data.arch:
            raise ValueError(
                f"ModelConfig.arch={self.model.arch.value!r} cannot train on "
                f"DataConfig.dataset={self.data.dataset.value!r}, whose task "
                f"{self.data.task.value!r} needs arch={self.data.arch.value!r}"
            )
        longest = max(self.data.max_len, self.data.max_target_len)
        if self.model.max_len < longest:
            raise ValueError(
                f"ModelConfig.max_len={self.model.max_len}: shorter than the data's longest "
                f"sequence (DataConfig.max_len={self.data.max_len}, "
                f"max_target_len={self.data.max_target_len})"
            )
        pretrained_tokenizer = self.data.tokenizer is TokenizerKind.PRETRAINED
        if pretrained_tokenizer and not self.train.init_from:
            raise ValueError("DataConfig.tokenizer='pretrained' needs the model to take it from: "
                             "--config.train.init_from=DIR (a Hugging Face model directory)")
        if self.train.init_from and not pretrained_tokenizer:
            raise ValueError(
                f"TrainConfig.init_from={self.train.init_from!r} brings its own tokenizer: set "
                f"--config.data.tokenizer=pretrained (not {self.data.tokenizer.value!r})")
        if self.train.init_from and self.model.scan_layers:
            raise ValueError("TrainConfig.init_from: ModelConfig.scan_layers=True is not supported "
                             "(imported parameters are per layer)")
        if self.data.batch_size % self.train.grad_accum_steps:
            raise ValueError(
                f"TrainConfig.grad_accum_steps={self.train.grad_accum_steps}: must divide "
                f"DataConfig.batch_size={self.data.batch_size}"
            )
        if self.data.tokens_per_batch and self.train.grad_accum_steps > 1:
            raise ValueError(
                f"TrainConfig.grad_accum_steps={self.train.grad_accum_steps}: gradient "
                "accumulation needs fixed-size batches, but DataConfig.tokens_per_batch is set"
            )

    # ------------------------------------------------------------------ conversions
    @classmethod
    def from_config_dict(cls, config: ml_collections.ConfigDict | dict) -> RunConfig:
        """Builds (and validates) the dataclasses from a config file's ConfigDict."""
        d = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
        unknown = sorted(set(d) - {"model", "data", "train"})
        if unknown:
            raise ValueError(f"config: unknown section(s) {unknown}; expected model, data, train")
        return cls(
            model=ModelConfig.from_dict(dict(d.get("model", {}))),
            data=DataConfig.from_dict(dict(d.get("data", {}))),
            train=TrainConfig.from_dict(dict(d.get("train", {}))),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able nested dict, the inverse of :meth:`from_config_dict`."""
        return {"model": self.model.to_dict(), "data": self.data.to_dict(),
                "train": self.train.to_dict()}

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)


# a config's sections and their dataclasses
_SECTIONS: dict[str, type[ConfigBase]] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def default_config_dict() -> ml_collections.ConfigDict:
    """The defaults of all three dataclasses as one ConfigDict (what configs/default.py returns).

    Fields whose default is None (e.g. ``model.num_decoder_layers``) become typed placeholders,
    so ``--config.model.num_decoder_layers=3`` still parses on the command line; a spec (e.g.
    ``data.numbers``) is a nested ConfigDict: ``--config.data.numbers.max=99999``.
    """
    return ml_collections.ConfigDict(
        {section: _dataclass_to_config_dict(cls) for section, cls in _SECTIONS.items()})


def override_error(name: str) -> str | None:
    """What is wrong with the command-line override ``name`` (``--config.data.numbers.max``),
    in one line naming the valid names; None when it names a field."""
    section, *path = name.split(".")[1:] or [""]  # "--config" dropped
    if section not in _SECTIONS:
        return f"{name}: unknown section {section!r}; the sections are {', '.join(_SECTIONS)}"
    if section == "data" and len(path) == 1 and path[0] in FLAT_NAMES:
        return f"{name}: renamed --config.data.{FLAT_NAMES[path[0]]}"
    cls = _SECTIONS[section]
    spec = cls._SPECS.get(path[0]) if path else None
    if spec is not None:  # a data set's spec: --config.data.numbers.FIELD
        if len(path) == 1:
            return (f"{name}: {spec._name()} holds several settings; set them one by one, "
                    f"{name}.FIELD=VALUE, FIELD one of: {', '.join(f.name for f in dataclasses.fields(spec))}")
        cls, path = spec, path[1:]
    fields = [f.name for f in dataclasses.fields(cls)]
    if len(path) != 1 or path[0] not in fields:
        return f"{name}: {cls._name()} has no field {'.'.join(path)!r}; its fields are: {', '.join(fields)}"
    return None


# ---------------------------------------------------------------------- helpers
def _dataclass_to_config_dict(cls, instance: Any = None) -> ml_collections.ConfigDict:
    """The fields of ``cls`` as a ConfigDict: its defaults, or the values of ``instance``."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if instance is not None:
            value = getattr(instance, f.name)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:  # pragma: no cover - none today
            value = f.default_factory()
        else:
            raise ValueError(f"{cls.__name__}.{f.name} has no default")
        if isinstance(value, ConfigBase):  # a spec: a nested ConfigDict
            value = _dataclass_to_config_dict(type(value), value)
        elif isinstance(value, enum.Enum):
            value = value.value
        elif value is None:
            value = config_dict.placeholder(_non_none_type(hints[f.name]))
        out[f.name] = value
    return ml_collections.ConfigDict(out)


def _non_none_type(hint) -> type:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return typing.get_origin(args[0]) or args[0]  # tuple[float, ...] -> tuple
    return object

