"""tfm: the Transformer (Vaswani et al. 2017) in JAX/Flax.

The public API, bottom to top:

* configuration: :class:`ModelConfig` and its enums, :func:`get_preset`;
* pure functions: :func:`scaled_dot_product_attention`, masks, positional encodings;
* Flax modules: :class:`MultiHeadAttention`, blocks, and the three models
  (:class:`EncoderDecoder`, :class:`DecoderLM`, :class:`EncoderClassifier`) via :func:`build_model`.

* inference: :func:`generate` and :func:`translate`, from a workdir or in-memory params
  (``tfm.inference.load`` gives a :class:`tfm.inference.Pretrained`).
* Hugging Face interop: :func:`from_pretrained` (a GPT-2 or Marian directory in Hugging Face's
  layout -> a Pretrained) and :func:`save_pretrained` (back to that layout); see ``tfm.interop``.

Training, data and decoding live in ``tfm.training``, ``tfm.data`` and ``tfm.decoding``.
"""

from tfm.attention import (
    MultiHeadAttention,
    attention_weights,
    causal_mask,
    combine_masks,
    padding_mask,
    scaled_dot_product_attention,
    segment_mask,
)
from tfm.config import (
    Activation,
    Arch,
    ModelConfig,
    NormPosition,
    Pooling,
    PositionalKind,
    Remat,
    SinusoidalLayout,
    get_preset,
)
from tfm import decoding, inference
from tfm.inference import Pretrained, generate, translate
from tfm.interop import from_pretrained, save_pretrained
from tfm.layers import Block, DecoderBlock, Embedder, EncoderBlock, FeedForward, Stack
from tfm.models import (
    Decoder,
    DecoderLM,
    Encoder,
    EncoderClassifier,
    EncoderDecoder,
    build_model,
    dummy_inputs,
    param_count,
)
from tfm.positional import (
    LearnedPositions,
    RotaryPositions,
    SinusoidalPositions,
    apply_rope,
    sinusoidal_encoding,
)

__version__ = "0.1.0"

__all__ = [
    "Activation", "Arch", "Block", "Decoder", "DecoderBlock", "DecoderLM", "Embedder",
    "Encoder", "EncoderBlock", "EncoderClassifier", "EncoderDecoder", "FeedForward",
    "LearnedPositions", "ModelConfig", "MultiHeadAttention", "NormPosition", "Pooling",
    "PositionalKind", "Pretrained", "Remat", "RotaryPositions", "SinusoidalPositions", "Stack",
    "apply_rope", "attention_weights", "build_model", "causal_mask", "combine_masks",
    "decoding", "dummy_inputs", "from_pretrained", "generate", "get_preset",
    "inference", "padding_mask", "param_count", "save_pretrained", "scaled_dot_product_attention",
    "segment_mask", "SinusoidalLayout", "sinusoidal_encoding", "translate",
]
