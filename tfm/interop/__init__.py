"""Hugging Face model directories in and out: GPT-2 -> DecoderLM, Marian (opus-mt) -> EncoderDecoder,
BERT -> the encoder-only model (EncoderClassifier, with its classifier, masked-LM or no head).

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
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tfm.config import Arch, ModelConfig
from tfm.data.tokenizers import Tokenizer
from tfm.interop import bert, gpt2, marian
from tfm.interop.convert import check_against_model
from tfm.interop.hf_io import CONFIG_FILE, HFFormatError, TensorReader, read_config, write_config, write_tensors

log = logging.getLogger(__name__)

FAMILIES: dict[str, types.ModuleType] = {t: m for m in (gpt2, marian, bert) for t in m.MODEL_TYPES}
_BY_ARCH = {Arch.DECODER_LM: gpt2, Arch.ENCODER_DECODER: marian, Arch.ENCODER_CLASSIFIER: bert}

__all__ = ["FAMILIES", "HFFormatError", "from_pretrained", "load_model", "read_model_config", "save_pretrained"]


def _family(hf: dict, directory) -> types.ModuleType:
    model_type = hf.get("model_type")
    if model_type not in FAMILIES:
        raise HFFormatError(
            f"{pathlib.Path(directory) / CONFIG_FILE}: model_type={model_type!r} is not supported; "
            f"tfm imports {sorted(FAMILIES)}")
    return FAMILIES[model_type]


def read_model_config(directory: str | os.PathLike) -> ModelConfig:
    """The tfm ModelConfig of a Hugging Face model directory (reads config.json only)."""
    directory = pathlib.Path(directory).expanduser()
    hf = read_config(directory)
    return _family(hf, directory).config_from_hf(hf, str(directory))


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

    Each parameter is copied exactly once out of the memory-mapped files (JAX on CPU would
    otherwise alias the file's pages: a later change to the file must not change the model).
    """
    directory = pathlib.Path(directory).expanduser()
    hf = read_config(directory)
    family = _family(hf, directory)
    cfg = family.config_from_hf(hf, str(directory))
    reader = TensorReader(directory, ignore=family.IGNORE)
    params = family.read_params(reader, cfg)
    reader.finish()
    if check:
        check_against_model(params, cfg, str(directory))
    if dtype is not None and dtype != "float32":
        cfg = cfg.replace(param_dtype=dtype)
    target = jnp.dtype(cfg.param_dtype)
    if on_device:
        params = jax.tree.map(lambda x: jnp.array(x, target, copy=True), params)
    else:
        params = jax.tree.map(lambda x: np.array(jnp.asarray(x, target) if target != x.dtype else x, copy=True),
                              params)
    return cfg, params


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """The tokenizer of a Hugging Face model directory (GPT-2 byte-level BPE, Marian SentencePiece,
    BERT WordPiece)."""
    directory = pathlib.Path(directory).expanduser()
    hf = read_config(directory)
    try:
        return _family(hf, directory).load_tokenizer(directory, hf)
    except (ValueError, OSError) as e:
        if isinstance(e, HFFormatError):
            raise
        raise HFFormatError(f"{directory}: cannot load the tokenizer: {e}") from None


def from_pretrained(directory: str | os.PathLike, *, dtype: str | None = None):
    """A :class:`tfm.inference.Pretrained` (config, params on the default device, tokenizer)
    from a Hugging Face model directory: what ``tfm.generate`` / ``tfm.translate`` take."""
    from tfm.inference import Pretrained

    directory = pathlib.Path(directory).expanduser()
    cfg, params = load_model(directory, dtype=dtype, on_device=True)
    tokenizer = load_tokenizer(directory)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise HFFormatError(
            f"{directory}: the tokenizer has {tokenizer.vocab_size} ids but the model only "
            f"{cfg.vocab_size} embeddings ({CONFIG_FILE} vocab_size)")
    return Pretrained(cfg, params, tokenizer, workdir=str(directory))


def save_pretrained(model, directory: str | os.PathLike, *, max_shard_bytes: int | None = None) -> list[str]:
    """Writes a GPT-2-shaped DecoderLM, Marian-shaped EncoderDecoder or BERT-shaped encoder-only
    model in Hugging Face's layout.

    Args:
      model: a :class:`tfm.inference.Pretrained` (imported, or loaded from a training workdir)
        or a (config, params, tokenizer) tuple; the tokenizer may be None.
      directory: a new or empty directory (an existing non-empty one is refused: nothing is
        overwritten).
      max_shard_bytes: write shards of at most this size plus ``model.safetensors.index.json``.
    Returns:
      The file names written. The tokenizer's files are written when it came from a Hugging
      Face directory; a tfm tokenizer (char, SentencePiece) has no Hugging Face equivalent and
      is left out with a warning.
    """
    if isinstance(model, tuple):
        cfg, params, tokenizer = model
    else:
        cfg, params, tokenizer = model.config, model.params, model.tokenizer
    family = _BY_ARCH.get(cfg.arch)
    problems = family.export_problems(cfg) if family else [f"ModelConfig.arch={cfg.arch.value!r}"]
    if problems:
        kinds = {Arch.DECODER_LM: "GPT-2 (decoder_lm)", Arch.ENCODER_DECODER: "Marian (encoder_decoder)",
                 Arch.ENCODER_CLASSIFIER: "BERT (encoder_classifier)"}[cfg.arch]
        raise HFFormatError(f"this model cannot be exported as {kinds}: " + "; ".join(problems))
    directory = pathlib.Path(directory).expanduser()
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise HFFormatError(f"{directory} exists and is not empty; refusing to overwrite it")
    params = jax.tree.map(lambda x: np.asarray(jax.device_get(x), np.float32), params)  # checkpoints: float32
    if cfg.scan_layers:
        raise HFFormatError("export of scan_layers=True parameters is not supported; load the model "
                            "with scan_layers=False")
    check_against_model(params, cfg, "save_pretrained")
    tensors = family.params_to_hf(params, cfg)
    directory.mkdir(parents=True, exist_ok=True)
    hf_tokenizer = tokenizer if hasattr(tokenizer, "save_hf") else None
    hf = family.config_to_hf(cfg, hf_tokenizer)
    written = write_tensors(directory, tensors, max_shard_bytes)
    write_config(directory, hf)
    written.append(CONFIG_FILE)
    if hf_tokenizer is not None:
        written += hf_tokenizer.save_hf(directory)
    elif tokenizer is not None:
        log.warning("the %s tokenizer has no Hugging Face equivalent; %s holds the model only",
                    getattr(tokenizer, "kind", type(tokenizer).__name__), directory)
    return written
