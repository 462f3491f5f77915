"""tfm: the Transformer (Vaswani et al. 2017) in JAX/Flax.

The public API, bottom to top (each name is imported on first use, so ``import tfm`` itself
loads neither JAX nor Flax; ``dir(tfm)`` and ``tfm.__all__`` list them):

* configuration: :class:`ModelConfig`, :func:`get_preset` and the enums of its fields;
* pure functions of arrays: :func:`scaled_dot_product_attention`, :func:`attention_weights`,
  the masks (:func:`causal_mask`, :func:`padding_mask`, :func:`segment_mask`,
  :func:`combine_masks`), :func:`sinusoidal_encoding` and :func:`apply_rope`;
* models (Flax linen): :func:`build_model` (a :class:`ModelConfig` -> :class:`EncoderDecoder`,
  :class:`DecoderLM` or :class:`EncoderClassifier`), :func:`dummy_inputs`, :func:`param_count`,
  and :class:`MultiHeadAttention`. From Flax NNX code, wrap them with
  ``flax.nnx.bridge.ToNNX(tfm.build_model(cfg), rngs=nnx.Rngs(0))``, initialised inside
  ``nnx.use_eager_sharding(False)`` when no mesh is set (see ``tests/test_nnx_bridge.py``);
* inference: :func:`generate` and :func:`translate`, from a workdir or a :class:`Pretrained`;
  encoder-only models: :func:`classify`, :func:`fill_mask` and :func:`embed`;
  Hugging Face interop: :func:`from_pretrained` (a GPT-2, Marian or BERT directory in Hugging Face's
  layout -> a Pretrained) and :func:`save_pretrained` (back to that layout);
* subpackages: ``tfm.training``, ``tfm.data``, ``tfm.decoding``, ``tfm.inference``,
  ``tfm.interop``, ``tfm.metrics`` (and every other module, e.g. ``tfm.layers`` for
  :class:`~tfm.layers.Block`, by its own name).

The command lines are ``python -m tfm.cli generate|translate|export`` (:mod:`tfm.cli`).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it, grouped as in the docstring
_EXPORTS: dict[str, str] = {
    # configuration
    **dict.fromkeys(
        ["ModelConfig", "get_preset", "Activation", "Arch", "AttentionImpl", "GradKernels",
         "NormPosition", "Pooling", "PositionalKind", "Remat", "SinusoidalLayout", "EncoderHead"], "tfm.config"),
    # pure functions
    **dict.fromkeys(
        ["scaled_dot_product_attention", "attention_weights", "causal_mask", "padding_mask",
         "segment_mask", "combine_masks"], "tfm.attention"),
    **dict.fromkeys(["sinusoidal_encoding", "apply_rope"], "tfm.positional"),
    # models
    **dict.fromkeys(
        ["build_model", "dummy_inputs", "param_count", "EncoderDecoder", "DecoderLM",
         "EncoderClassifier"], "tfm.models"),
    "MultiHeadAttention": "tfm.attention",
    # inference and Hugging Face interop
    **dict.fromkeys(["generate", "translate", "Pretrained"], "tfm.inference"),
    **dict.fromkeys(["from_pretrained", "save_pretrained"], "tfm.interop"),
    **dict.fromkeys(["classify", "fill_mask", "embed"], "tfm.encoding_tasks"),
}
_SUBPACKAGES = ("training", "data", "decoding", "inference", "interop", "metrics")

__all__ = [*_EXPORTS, *_SUBPACKAGES]


def __getattr__(name: str):
    """PEP 562: imports a public name's module (or any tfm submodule) on first use."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif not name.startswith("__"):
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise  # the submodule exists but one of its imports is missing
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, "__version__"})
