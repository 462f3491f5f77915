"""Hugging Face model directories in and out: GPT-2, Llama, Mistral, Qwen2 -> DecoderLM, Marian
(opus-mt) -> EncoderDecoder, BERT -> the encoder-only model (EncoderClassifier, with its
classifier, masked-LM or no head).

A model directory in Hugging Face's layout (what ``save_pretrained`` writes, or what one
downloads from the Hub) holds ``config.json``, ``model.safetensors`` (or shards listed by
``model.safetensors.index.json``) and the tokenizer's files. No torch is needed::

    import tfm
    lm = tfm.from_pretrained("~/models/gpt2")              # a tfm.inference.Pretrained
    tfm.generate(lm, "The meaning of life is", max_new_tokens=20, temperature=0)
    mt = tfm.from_pretrained("~/models/opus-mt-en-de")
    tfm.translate(mt, "How are you?")
    tfm.save_pretrained(lm, "/tmp/gpt2-copy")              # transformers loads it back

Import then export (or export then import) gives bitwise the same arrays. Anything that does not
fit -- a missing file, an unsupported ``model_type`` or setting, a missing, mis-shaped or extra
tensor -- is an :class:`HFFormatError` naming the file or tensor.

Interop sits beside inference: above the models, below the launchers (``--pretrained DIR`` in
``python -m tfm.cli generate`` / ``translate``, ``train.init_from`` in training).
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tfm import arguments, files
from tfm.config import ModelConfig
from tfm.data.tokenizers import Tokenizer
from tfm.interop import bert, gpt2, llama, marian
from tfm.interop.convert import check_against_model, export_problems
from tfm.interop.hf_io import CONFIG_FILE, HFFormatError, TensorReader, read_config, write_config, write_tensors

log = logging.getLogger(__name__)

# The registered families, in the order save_pretrained tries them when no model_type is given
# (each module states the contract of tfm.interop.convert: MODEL_TYPES, ARCH, IGNORE, MAPPED,
# PINNED, config_from_hf, read_params, load_tokenizer, config_to_hf, params_to_hf).
FAMILY_MODULES: tuple[types.ModuleType, ...] = (gpt2, marian, *llama.FAMILIES, bert)
FAMILIES: dict[str, types.ModuleType] = {t: m for m in FAMILY_MODULES for t in m.MODEL_TYPES}

__all__ = ["FAMILIES", "HFFormatError", "from_pretrained", "load_model", "read_model_config", "save_pretrained"]


def _family(hf: dict, directory) -> types.ModuleType:
    model_type = hf.get("model_type")
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        raise HFFormatError(
            f"{pathlib.Path(directory) / CONFIG_FILE}: model_type={model_type!r} is not supported; "
            f"tfm imports {sorted(FAMILIES)}")
    return FAMILIES[model_type]


def _model_config(family: types.ModuleType, hf: dict, directory) -> ModelConfig:
    """``family.config_from_hf``, with every value it reads checked first and any failure an
    HFFormatError naming the config.json key (not tfm's field): the user edits config.json."""
    where = pathlib.Path(directory) / CONFIG_FILE
    keys: dict[str, str] = getattr(family, "HF_KEYS", {})
    for field, key in keys.items():
        value = hf.get(key)
        if value is None:
            continue
        if field.endswith(("dropout_rate", "_eps")):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            want = "a number"
        else:
            ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value < 1 << 31
            want = "a positive integer"
        if not ok:
            raise HFFormatError(f"{where}: {key}={value!r} must be {want}")
    try:
        return family.config_from_hf(hf, str(directory))
    except HFFormatError:
        raise
    except (ValueError, TypeError, KeyError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        match = re.match(r"ModelConfig\.(\w+)=(.*?): (.*)", message)
        if match and match.group(1) in keys:
            field, value, why = match.groups()
            for tfm_name, key in keys.items():  # "divisible by num_heads=5" -> "by n_head=5"
                why = re.sub(rf"\b{tfm_name}\b", key, why)
            raise HFFormatError(f"{where}: {keys[field]}={value}: {why}") from None
        raise HFFormatError(f"{where}: {type(e).__name__}: {message[:200]}") from None


def read_model_config(directory: str | os.PathLike) -> ModelConfig:
    """The tfm ModelConfig of a Hugging Face model directory (reads config.json only)."""
    directory = pathlib.Path(directory).expanduser()
    hf = read_config(directory)
    return _model_config(_family(hf, directory), hf, directory)


def load_model(directory: str | os.PathLike, *, dtype: str | None = None, check: bool = False,
               on_device: bool = False) -> tuple[ModelConfig, Any]:
    """(ModelConfig, params) of a Hugging Face model directory, params as NumPy arrays.

    Every tensor is checked by name and shape against config.json as it is read, and tensors
    nobody asked for are refused.

    Args:
      dtype: parameter dtype ("float32" default; "bfloat16" halves memory).
      check: also compare the whole tree with the model's own (``jax.eval_shape`` of its init,
        which allocates nothing; the tests do it for every converter).
      on_device: return jax.Arrays on the default device instead of NumPy arrays.

    Each tensor is copied exactly once out of the file, straight into ``dtype`` (a bfloat16
    checkpoint loaded with dtype="bfloat16" is never widened), and moved to the device one
    tensor at a time: the host never holds the checkpoint twice.
    """
    directory = pathlib.Path(directory).expanduser()
    hf = read_config(directory)
    family = _family(hf, directory)
    cfg = _model_config(family, hf, directory)
    if dtype is not None and dtype != "float32":
        cfg = cfg.replace(param_dtype=dtype)
    reader = TensorReader(directory, ignore=family.IGNORE, dtype=jnp.dtype(cfg.param_dtype))
    params = family.read_params(reader, cfg)
    reader.finish()
    if check:
        check_against_model(params, cfg, str(directory))
    if on_device:
        leaves, treedef = jax.tree.flatten(params)
        del params
        for i, leaf in enumerate(leaves):  # each host array is freed as its device copy is made
            leaves[i] = jnp.array(leaf, copy=True)
            del leaf
        params = jax.tree.unflatten(treedef, leaves)
    else:
        params = jax.tree.map(np.ascontiguousarray, params)
    return cfg, params


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """The tokenizer of a Hugging Face model directory (GPT-2 byte-level BPE, Marian SentencePiece,
    BERT WordPiece)."""
    directory = pathlib.Path(directory).expanduser()
    hf = read_config(directory)
    try:
        return _family(hf, directory).load_tokenizer(directory, hf)
    except (ValueError, OSError, TypeError, KeyError) as e:
        if isinstance(e, HFFormatError):
            raise
        raise HFFormatError(f"{directory}: cannot load the tokenizer: {e}") from None


def from_pretrained(directory: str | os.PathLike, *, dtype: str | None = None):
    """A :class:`tfm.inference.Pretrained` (config, params on the default device, tokenizer)
    from a Hugging Face model directory: what ``tfm.generate`` / ``tfm.translate`` take."""
    from tfm.pretrained import Pretrained
    from tfm.token_ids import VocabularyError

    directory = pathlib.Path(directory).expanduser()
    cfg, params = load_model(directory, dtype=dtype, on_device=True)
    tokenizer = load_tokenizer(directory)
    try:
        return Pretrained(cfg, params, tokenizer, workdir=str(directory), model_type=read_config(directory)["model_type"])
    except VocabularyError as e:  # the one check: tfm.token_ids.check_vocabulary
        raise HFFormatError(f"{directory}: {e}; {CONFIG_FILE} vocab_size={cfg.vocab_size}") from None


def export_family(cfg: ModelConfig, model_type: str | None = None) -> tuple[str, types.ModuleType]:
    """(model_type, family) that ``save_pretrained`` writes ``cfg`` as.

    With ``model_type``, that family (HFFormatError listing why when ``cfg`` does not fit it);
    without, the first registered family of ``cfg.arch`` that fits (HFFormatError listing, per
    candidate family, why not)."""
    if model_type is not None:
        if model_type not in FAMILIES:
            raise HFFormatError(f"model_type={model_type!r} cannot be exported; tfm exports {sorted(FAMILIES)}")
        family = FAMILIES[model_type]
        problems = export_problems(family, cfg)
        if problems:
            raise HFFormatError(f"this model cannot be exported as {model_type}: " + "; ".join(problems))
        return model_type, family
    candidates = [m for m in FAMILY_MODULES if m.ARCH is cfg.arch]
    if not candidates:
        raise HFFormatError(f"ModelConfig.arch={cfg.arch.value!r}: no Hugging Face family of this "
                            "architecture is supported for export")
    reasons = []
    for family in candidates:
        problems = export_problems(family, cfg)
        if not problems:
            return family.MODEL_TYPES[0], family
        reasons.append(f"as {family.MODEL_TYPES[0]}: " + "; ".join(problems))
    raise HFFormatError("this model cannot be exported " + " | ".join(reasons))


def save_pretrained(model, directory: str | os.PathLike, *, model_type: str | None = None,
                    max_shard_bytes: int | None = None) -> list[str]:
    """Writes a model in Hugging Face's layout, as the family ``model_type`` (see :func:`export_family`).

    Args:
      model: a :class:`tfm.inference.Pretrained` (imported, or loaded from a training workdir)
        or a (config, params, tokenizer) tuple; the tokenizer may be None.
      directory: a new or empty directory (an existing non-empty one is refused: nothing is
        overwritten).
      model_type: the config.json ``model_type`` to write; None = the one the model was imported
        from (``Pretrained.model_type``), else the first registered family that fits.
      max_shard_bytes: write shards of at most this size plus ``model.safetensors.index.json``.
    Returns:
      The file names written. The tokenizer's files are written when it came from a Hugging
      Face directory; a tfm tokenizer (char, SentencePiece) has no Hugging Face equivalent and
      is left out with a warning.
    """
    if max_shard_bytes is not None:
        max_shard_bytes = arguments.integer("max_shard_bytes", max_shard_bytes, 1)
    if isinstance(model, tuple):
        cfg, params, tokenizer = model
    else:
        cfg, params, tokenizer = model.config, model.params, model.tokenizer
        if model_type is None:
            model_type = getattr(model, "model_type", None)
    model_type, family = export_family(cfg, model_type)
    directory = pathlib.Path(directory).expanduser()
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise HFFormatError(f"{directory} exists and is not empty; refusing to overwrite it")
    params = jax.tree.map(lambda x: np.asarray(jax.device_get(x), np.float32), params)  # checkpoints: float32
    if cfg.scan_layers:
        raise HFFormatError("export of scan_layers=True parameters is not supported; load the model "
                            "with scan_layers=False")
    check_against_model(params, cfg, "save_pretrained")
    tensors = family.params_to_hf(params, cfg)
    try:
        files.make_dirs(directory)
    except files.FileError as e:
        raise HFFormatError(str(e)) from None
    hf_tokenizer = tokenizer if hasattr(tokenizer, "save_hf") else None
    hf = family.config_to_hf(cfg, hf_tokenizer)
    hf["model_type"] = model_type
    written = write_tensors(directory, tensors, max_shard_bytes)
    write_config(directory, hf)
    written.append(CONFIG_FILE)
    if hf_tokenizer is not None:
        try:
            written += hf_tokenizer.save_hf(directory)
        except files.FileError as e:
            raise HFFormatError(str(e)) from None
    elif tokenizer is not None:
        log.warning("the %s tokenizer has no Hugging Face equivalent; %s holds the model only",
                    getattr(tokenizer, "kind", type(tokenizer).__name__), directory)
    return written
