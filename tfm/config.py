"""Model configuration: one frozen, validated dataclass passed down whole, plus named presets.

Every knob of the network lives in :class:`ModelConfig`. It is validated on construction, before
anything is compiled, and every error names the offending field. Presets reproduce published
models: the paper's Table 3 (``transformer_base``, ``transformer_big``), GPT-2 small, and tiny
models for tests and notebooks.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar, TypeVar


class Arch(str, enum.Enum):
    """Which of the three architectures the blocks are assembled into."""

    ENCODER_DECODER = "encoder_decoder"  # translation (the paper)
    DECODER_LM = "decoder_lm"  # GPT-style language model
    ENCODER_CLASSIFIER = "encoder_classifier"  # BERT-style sequence classification


class PositionalKind(str, enum.Enum):
    SINUSOIDAL = "sinusoidal"  # the paper, section 3.5: fixed, added to the embeddings
    LEARNED = "learned"  # GPT-2: a trained (max_len, D) table added to the embeddings
    ROPE = "rope"  # rotary (Su et al. 2021): rotates q and k inside every attention layer
    NONE = "none"  # no positional information (the encoder is then permutation-equivariant)


class Activation(str, enum.Enum):
    RELU = "relu"  # the paper, eq. (2)
    GELU = "gelu"  # GPT-2 (tanh approximation; Hugging Face's "gelu_new")
    GELU_EXACT = "gelu_exact"  # x * Phi(x) with the exact normal CDF (BERT; Hugging Face's "gelu")
    SILU = "silu"  # x * sigmoid(x), a.k.a. swish (Marian / opus-mt)


class SinusoidalLayout(str, enum.Enum):
    """Where the sines and cosines of the sinusoidal encoding go (same frequencies either way)."""

    INTERLEAVED = "interleaved"  # the paper's formula: sin in even columns, cos in odd ones
    SPLIT = "split"  # all sines, then all cosines (tensor2tensor, fairseq, Marian / opus-mt)


class NormPosition(str, enum.Enum):
    POST = "post"  # the paper: LayerNorm(x + Sublayer(x))
    PRE = "pre"  # GPT-2 / flax wmt: x + Sublayer(LayerNorm(x)), and a final LayerNorm


class NormKind(str, enum.Enum):
    """Which normalisation every norm of the model is (eps: ``layer_norm_eps``)."""

    LAYER_NORM = "layer_norm"  # Ba et al. 2016: (x - mean) / sqrt(var + eps) * scale + bias
    RMS_NORM = "rms_norm"  # Zhang & Sennrich 2019 (Llama): x / sqrt(mean(x^2) + eps) * scale, no bias


class RopeLayout(str, enum.Enum):
    """Which features of a query/key vector a rotary embedding rotates together (same angles)."""

    INTERLEAVED = "interleaved"  # RoFormer, eq. 34: adjacent pairs (x[2i], x[2i+1])
    ROTATE_HALF = "rotate_half"  # GPT-NeoX / Hugging Face Llama: (x[i], x[i + H/2])


class Remat(str, enum.Enum):
    NONE = "none"  # keep all activations
    FULL = "full"  # recompute each block in the backward pass
    DOTS = "dots"  # save matmul outputs (no batch dims), recompute the cheap elementwise ops


E = TypeVar("E", bound=enum.Enum)


def parse_enum(enum_cls: type[E], value: Any, what: str) -> E:
    """``enum_cls(value)``; an unknown value is a ValueError naming ``what`` and the valid values."""
    try:
        return enum_cls(value)
    except ValueError:
        valid = ", ".join(repr(m.value) for m in enum_cls)
        raise ValueError(f"{what}: unknown value {value!r}; expected one of {valid}") from None


class AttentionImpl(str, enum.Enum):
    """How attention is computed: execution only, the same mathematics (the one list of names
    that validation, :func:`tfm.attention.scaled_dot_product_attention` and help texts use)."""

    # the backend policy's choice when the model is built (tfm.backend): "blocked" on CPU,
    # "cudnn_if_supported" on GPU, "xla" elsewhere
    AUTO = "auto"
    XLA = "xla"  # the reference path: the full (T, S) square, softmax in float32 whatever the dtype
    CUDNN = "cudnn"  # jax.nn.dot_product_attention's cuDNN flash attention (GPU only)
    # cuDNN for bf16/fp16 inputs without attention dropout and head width a multiple of 8 up to
    # 128, else the reference path
    CUDNN_IF_SUPPORTED = "cudnn_if_supported"
    # a causal self-attention longer than one block, without dropout or bias, skips the key
    # blocks above the diagonal (tfm.attention.causal_attention); else the reference path
    BLOCKED = "blocked"


class Pooling(str, enum.Enum):
    MEAN = "mean"  # mean over the tokens with segment id > 0 (every token without segment ids)
    FIRST = "first"  # the first token (a [CLS]-style token put there by the data)


class EncoderHead(str, enum.Enum):
    """What an encoder-only model's ``__call__`` returns (its other methods give the rest)."""

    CLASSIFIER = "classifier"  # class logits (B, num_classes): the pooled state through the classifier
    MLM = "mlm"  # masked-LM logits (B, S, V): BERT's transform (dense, activation, LayerNorm) + output
    NONE = "none"  # the encoder's hidden states (B, S, D), no head (BertModel)


class GradKernels(str, enum.Enum):
    """How the model is differentiated and its gradients summed (tfm.kernels); execution only."""

    # the backend policy's choice when the model is built (tfm.backend): "cpu" on CPU (the
    # kernels measured to win there), "autodiff" elsewhere
    AUTO = "auto"
    AUTODIFF = "autodiff"  # plain JAX autodiff and lax.psum, no custom_vjp: jax.jvp/jacfwd work
    CPU = "cpu"  # tfm.kernels' three XLA:CPU kernels (custom_vjp), on any backend


_DTYPES = ("float32", "bfloat16", "float16")


class ConfigBase:
    """What tfm's frozen config dataclasses share (ModelConfig, DataConfig, TrainConfig and the
    per-data-set specs inside DataConfig, such as :class:`tfm.data.numbers.NumbersSpec`).

    Enum fields (listed in ``_ENUMS``) accept their string values (config files, JSON) and
    store the enum, with an error naming the field for an unknown value; spec fields (listed in
    ``_SPECS``: a nested config dataclass each) accept a dict of the spec's fields; ``validate()``
    runs on construction; ``to_dict``/``from_dict`` round-trip through plain JSON-able dicts
    (a spec as a nested dict). ``_NAME`` is how errors name the class (default: its class name).
    """

    _ENUMS: ClassVar[dict[str, type[enum.Enum]]] = {}
    _SPECS: ClassVar[dict[str, type[ConfigBase]]] = {}
    _NAME: ClassVar[str] = ""

    def __post_init__(self):
        name = self._name()
        for field, enum_cls in self._ENUMS.items():
            value = getattr(self, field)
            if not isinstance(value, enum_cls):
                object.__setattr__(self, field, parse_enum(enum_cls, value, f"{name}.{field}"))
        for field, spec_cls in self._SPECS.items():
            value = getattr(self, field)
            if isinstance(value, dict):  # from JSON or a config file
                object.__setattr__(self, field, spec_cls.from_dict(value))
            elif not isinstance(value, spec_cls):
                raise ValueError(f"{name}.{field}={value!r}: must be a {spec_cls.__name__} or a dict "
                                 "of its fields")
        self.validate()

    @classmethod
    def _name(cls) -> str:
        return cls._NAME or cls.__name__

    def validate(self) -> None:
        """Raises ValueError naming the first offending field (subclasses override)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (enums as their string values, specs as nested dicts)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, ConfigBase):
                value = value.to_dict()
            out[f.name] = value.value if isinstance(value, enum.Enum) else value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{cls._name()}: unknown field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class ModelConfig(ConfigBase):
    """Everything that defines the network. Sizes use the paper's names.

    Attributes:
      arch: which architecture to build (see :class:`Arch`).
      vocab_size: size of the (shared) token vocabulary V. ``0`` means "not known yet": the
        training loop fills it in from the tokenizer; building a model with 0 is an error.
      d_model: model width D (the paper's d_model).
      num_heads: attention heads N; the head width is H = d_model / num_heads.
      num_layers: encoder layers (or decoder layers of a decoder-only model).
      num_decoder_layers: decoder layers of an encoder-decoder; ``None`` means num_layers.
      d_ff: inner width F of the position-wise feed-forward network.
      max_len: longest sequence the positional encoding supports.
      dropout_rate: the paper's P_drop: on each sub-layer output before the residual add and on
        the sums of embeddings and positional encodings.
      attention_dropout_rate: dropout on the attention weights (0 in the paper).
      activation: feed-forward nonlinearity.
      norm: post-LN (the paper) or pre-LN.
      positional: how positions enter the model.
      sinusoidal_layout: column order of the sinusoidal encoding (see :class:`SinusoidalLayout`);
        only read when ``positional="sinusoidal"``. Imported Marian models use "split".
      share_embeddings: one embedding table for source and target tokens (encoder-decoder).
      tie_output: the output projection is the transpose of the (target) embedding table
        (the paper, section 3.4). Otherwise a separate Dense layer with bias.
      logits_bias: a learned (V,) bias added to the tied output projection's logits (Marian's
        ``final_logits_bias``); needs ``tie_output`` (the untied Dense layer has its own bias).
      scale_embeddings: multiply embeddings by sqrt(d_model) (the paper, section 3.4).
      num_classes: classes of the encoder classifier head.
      pooling: how the encoder classifier pools token states.
      use_bias: biases in the attention and feed-forward projections.
      layer_norm_eps: LayerNorm epsilon.
      dtype: compute dtype ("bfloat16" for mixed precision); softmax, LayerNorm statistics and
        logits stay in float32.
      param_dtype: dtype of the parameters.
      scan_layers: build each stack with nn.scan over stacked layer params (faster compile).
      remat: rematerialisation policy for each block.
      attention_impl: an :class:`AttentionImpl` (or its value): "auto" (the backend policy's
        choice, :mod:`tfm.backend`: "blocked" on CPU, "cudnn_if_supported" on GPU, else "xla"),
        "xla", "cudnn", "cudnn_if_supported" or "blocked".
      grad_kernels: "auto" (the backend policy's choice: "cpu" on CPU, "autodiff" elsewhere),
        "cpu" (dense weight gradients in XLA:CPU's fast matmul layout, the closed-form LayerNorm
        gradient and one flat gradient all-reduce) or "autodiff" (plain JAX autodiff, no
        custom_vjp: needed for jax.jvp, jax.jacfwd and Hessians through the model). Execution
        only: the parameters are the same either way (see :mod:`tfm.kernels`). "auto" is
        resolved by :func:`tfm.models.build_model`; a module used on its own with "auto" takes
        the plain path ("autodiff", "xla").
      rope_base: the base (theta) of rotary embeddings (Hugging Face's ``rope_theta``).

      The Llama-lineage options (defaults keep the paper's / GPT-2's blocks; usable by every
      architecture):
      norm_kind: "layer_norm" or "rms_norm" (no bias, no mean subtraction) for every norm of the
        model, with ``layer_norm_eps``.
      gated_ffn: gated feed-forward (Shazeer 2020; SwiGLU with activation "silu"):
        ``wo(act(wi_gate(x)) * wi(x))``.
      num_kv_heads: key/value heads K of grouped-query attention (Ainslie et al. 2023): each
        group of num_heads / K query heads shares one key/value head; 1 = multi-query; None =
        num_heads (multi-head). The decoding cache holds only the K heads.
      rope_layout: which features a rotary embedding rotates together (see :class:`RopeLayout`).
      rope_scaling: None, or Llama 3's frequency scaling as (factor, low_freq_factor,
        high_freq_factor, original_max_position_embeddings) (Hugging Face's rope_type "llama3").
      qkv_bias: biases on the query/key/value projections; None = ``use_bias`` (which then
        governs the attention output projection and the feed-forward layers). Qwen2: True with
        use_bias False.
      output_bias: the untied output layer (``tie_output=False``) has a bias (Llama's has none).

      Encoder-only options (BERT, Devlin et al. 2019; usable by every tower unless noted):
      type_vocab_size: token-type (segment A/B) embeddings added to the token and position
        embeddings; the model takes ``token_types`` (B, T) ids below this; 0 = none.
      embedding_norm: a LayerNorm on the summed embeddings, before dropout and the first block.
      pooler: the encoder-only model's pooled vector goes through dense (D -> D) + tanh before
        the classifier (BERT's pooler, with ``pooling="first"``).
      head: what the encoder-only model's ``__call__`` returns (see :class:`EncoderHead`): the
        classifier (default), the masked-LM head (transform + output projection, tied to the
        embeddings when ``tie_output``, plus ``logits_bias``) or the hidden states.
      class_names: names of the classifier's outputs (index -> name), () = unnamed; when
        given, one per class.
    """

    arch: Arch = Arch.ENCODER_DECODER
    vocab_size: int = 0
    d_model: int = 512
    num_heads: int = 8
    num_layers: int = 6
    num_decoder_layers: int | None = None
    d_ff: int = 2048
    max_len: int = 512
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.0
    activation: Activation = Activation.RELU
    norm: NormPosition = NormPosition.POST
    positional: PositionalKind = PositionalKind.SINUSOIDAL
    sinusoidal_layout: SinusoidalLayout = SinusoidalLayout.INTERLEAVED
    share_embeddings: bool = True
    tie_output: bool = True
    logits_bias: bool = False
    scale_embeddings: bool = True
    num_classes: int = 2
    pooling: Pooling = Pooling.MEAN
    use_bias: bool = True
    layer_norm_eps: float = 1e-6
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat: Remat = Remat.NONE
    attention_impl: AttentionImpl = AttentionImpl.AUTO
    grad_kernels: GradKernels = GradKernels.AUTO
    rope_base: float = 10000.0
    # -- Llama-lineage options (see the docstring); one block, defaults = the original blocks
    norm_kind: NormKind = NormKind.LAYER_NORM
    gated_ffn: bool = False
    num_kv_heads: int | None = None
    rope_layout: RopeLayout = RopeLayout.INTERLEAVED
    rope_scaling: tuple[float, float, float, int] | None = None
    qkv_bias: bool | None = None
    output_bias: bool = True
    # encoder-only options (BERT)
    type_vocab_size: int = 0
    embedding_norm: bool = False
    pooler: bool = False
    head: EncoderHead = EncoderHead.CLASSIFIER
    class_names: tuple[str, ...] = ()

    _ENUMS: ClassVar[dict[str, type[enum.Enum]]] = {
        "arch": Arch,
        "activation": Activation,
        "norm": NormPosition,
        "positional": PositionalKind,
        "sinusoidal_layout": SinusoidalLayout,
        "remat": Remat,
        "pooling": Pooling,
        "attention_impl": AttentionImpl,
        "grad_kernels": GradKernels,
        "norm_kind": NormKind,
        "rope_layout": RopeLayout,
        "head": EncoderHead,
    }

    def __post_init__(self):
        for field in ("rope_scaling", "class_names"):  # JSON lists -> tuples
            if isinstance(getattr(self, field), list):
                object.__setattr__(self, field, tuple(getattr(self, field)))
        super().__post_init__()

    # ------------------------------------------------------------------ derived sizes
    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def kv_heads(self) -> int:
        """Key/value heads K (``num_kv_heads``, or num_heads when None)."""
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def decoder_layers(self) -> int:
        return self.num_layers if self.num_decoder_layers is None else self.num_decoder_layers

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raises ValueError naming the first offending field."""

        def fail(field: str, msg: str):
            raise ValueError(f"ModelConfig.{field}={getattr(self, field)!r}: {msg}")

        for field in ("d_model", "num_heads", "num_layers", "d_ff", "max_len", "num_classes"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                fail(field, "must be a positive integer")
        if not isinstance(self.vocab_size, int) or self.vocab_size < 0:
            fail("vocab_size", "must be a positive integer (or 0 to take it from the tokenizer)")
        if self.num_decoder_layers is not None and (
            not isinstance(self.num_decoder_layers, int) or self.num_decoder_layers <= 0
        ):
            fail("num_decoder_layers", "must be a positive integer or None (= num_layers)")
        if self.d_model % self.num_heads:
            fail("d_model", f"must be divisible by num_heads={self.num_heads}")
        if self.positional is PositionalKind.ROPE and self.head_dim % 2:
            fail("num_heads", f"rotary embeddings need an even head_dim, got {self.head_dim}")
        for field in ("dropout_rate", "attention_dropout_rate"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                fail(field, "must be in [0, 1)")
        if not self.layer_norm_eps > 0:
            fail("layer_norm_eps", "must be > 0")
        if not self.rope_base > 1:
            fail("rope_base", "must be > 1")
        for field in ("dtype", "param_dtype"):
            if getattr(self, field) not in _DTYPES:
                fail(field, f"must be one of {_DTYPES}")
        for field in ("share_embeddings", "tie_output", "logits_bias", "scale_embeddings", "use_bias",
                      "embedding_norm", "pooler"):
            if not isinstance(getattr(self, field), bool):
                fail(field, "must be a bool")
        for field in ("gated_ffn", "output_bias"):
            if not isinstance(getattr(self, field), bool):
                fail(field, "must be a bool")
        if self.qkv_bias is not None and not isinstance(self.qkv_bias, bool):
            fail("qkv_bias", "must be a bool or None (= use_bias)")
        if self.num_kv_heads is not None:
            k = self.num_kv_heads
            if not isinstance(k, int) or isinstance(k, bool) or k <= 0 or self.num_heads % k:
                fail("num_kv_heads", f"must be a positive integer dividing num_heads={self.num_heads} (or None)")
        if self.rope_scaling is not None:
            r = self.rope_scaling
            if not (isinstance(r, tuple) and len(r) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                                   for v in r)):
                fail("rope_scaling", "must be None or (factor, low_freq_factor, high_freq_factor, "
                     "original_max_position_embeddings)")
            factor, low, high, original = r
            if not (factor >= 1 and 0 < low < high and original > 0):
                fail("rope_scaling", "needs factor >= 1, 0 < low_freq_factor < high_freq_factor and "
                     "original_max_position_embeddings > 0")
        if self.logits_bias and not self.tie_output:
            fail("logits_bias", "needs tie_output=True (the untied output layer has its own bias)")
        if not isinstance(self.type_vocab_size, int) or isinstance(self.type_vocab_size, bool) \
                or self.type_vocab_size < 0:
            fail("type_vocab_size", "must be a non-negative integer (0 = no token-type embeddings)")
        if not isinstance(self.class_names, tuple) or not all(isinstance(n, str) and n for n in self.class_names):
            fail("class_names", "must be a tuple of non-empty strings")
        if self.class_names and len(self.class_names) != self.num_classes:
            fail("class_names", f"needs one name per class (num_classes={self.num_classes})")
        if len(set(self.class_names)) != len(self.class_names):
            fail("class_names", "holds a name twice")

    def require_vocab(self) -> None:
        """Called when a model is built: the vocabulary must be known by then."""
        if self.vocab_size <= 0:
            raise ValueError(
                "ModelConfig.vocab_size=0: the vocabulary size is unknown; set it, or let the "
                "training loop take it from the tokenizer"
            )


# ---------------------------------------------------------------------- presets
def _transformer_base() -> ModelConfig:
    """The paper's base model (Table 3): N=6, d_model=512, d_ff=2048, h=8, P_drop=0.1,
    shared source/target/output embeddings (section 3.4), sinusoidal positions, post-LN."""
    return ModelConfig(arch=Arch.ENCODER_DECODER, vocab_size=37000, max_len=1024)


def _transformer_big() -> ModelConfig:
    """The paper's big model (Table 3): d_model=1024, d_ff=4096, h=16, P_drop=0.3."""
    return _transformer_base().replace(d_model=1024, d_ff=4096, num_heads=16, dropout_rate=0.3)


def _gpt2_small() -> ModelConfig:
    """GPT-2 small (Radford et al. 2019): 124,439,808 parameters."""
    return ModelConfig(
        arch=Arch.DECODER_LM,
        vocab_size=50257,
        d_model=768,
        num_heads=12,
        num_layers=12,
        d_ff=3072,
        max_len=1024,
        dropout_rate=0.1,
        activation=Activation.GELU,
        norm=NormPosition.PRE,
        positional=PositionalKind.LEARNED,
        tie_output=True,
        scale_embeddings=False,
        layer_norm_eps=1e-5,
    )


def _tiny(arch: Arch) -> ModelConfig:
    return ModelConfig(
        arch=arch,
        vocab_size=67,
        d_model=32,
        num_heads=4,
        num_layers=2,
        d_ff=64,
        max_len=128,
        dropout_rate=0.0,
    )


PRESETS = {
    "transformer_base": _transformer_base,
    "transformer_big": _transformer_big,
    "gpt2_small": _gpt2_small,
    "tiny_encdec": lambda: _tiny(Arch.ENCODER_DECODER),
    "tiny_lm": lambda: _tiny(Arch.DECODER_LM).replace(norm=NormPosition.PRE),
    "tiny_classifier": lambda: _tiny(Arch.ENCODER_CLASSIFIER),
}


def get_preset(name: str, **overrides) -> ModelConfig:
    """A named preset, optionally with fields replaced: ``get_preset("tiny_lm", d_model=64)``."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known presets: {sorted(PRESETS)}")
    cfg = PRESETS[name]()
    return cfg.replace(**overrides) if overrides else cfg
