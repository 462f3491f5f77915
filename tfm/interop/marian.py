"""Marian (opus-mt-*) <-> tfm's :class:`~tfm.models.EncoderDecoder`.

Marian (Junczys-Dowmunt et al. 2018) as transformers implements it (``MarianMTModel``) is the
paper's base architecture: post-LN blocks ``LN(x + sublayer(x))`` with no final LayerNorm and
no LayerNorm on the embeddings (LayerNorm eps 1e-5), embeddings scaled by sqrt(d_model)
(``scale_embedding``) plus sinusoidal positions from 0 in the "split" layout (all sines, then all
cosines: ``MarianSinusoidalPositionalEmbedding``), one embedding table shared by encoder,
decoder and the output projection, plus a ``final_logits_bias``. opus-mt uses swish (SiLU) in
the feed-forward layers, EOS ``</s>`` = id 0, and starts decoding from ``<pad>``.

torch ``Linear`` weights are (out, in): every kernel is transposed. Tensor names::

    model.shared.weight (V, D)        model.{encoder,decoder}.embed_tokens.weight, lm_head.weight:
                                      optional tied copies, must equal model.shared.weight
    final_logits_bias (1, V)          optional (transformers treats a missing one as zeros)
    model.{encoder,decoder}.embed_positions.weight (P, D): optional fixed table; must be the
                                      sinusoidal "split" table
    model.encoder.layers.N.{self_attn.{q,k,v,out}_proj, self_attn_layer_norm, fc1, fc2,
                            final_layer_norm}
    model.decoder.layers.N.{self_attn.*, self_attn_layer_norm, encoder_attn.*,
                            encoder_attn_layer_norm, fc1, fc2, final_layer_norm}
"""

from __future__ import annotations

import logging

import numpy as np

from tfm.config import (Activation, Arch, ModelConfig, NormKind, NormPosition, Pooling, PositionalKind, RopeLayout,
                        SinusoidalLayout)
from tfm.data.hf_tokenizers import MarianSentencePieceTokenizer
from tfm.data.tokenizers import Tokenizer
from tfm.interop import convert
from tfm.interop.convert import get_path, require, set_path
from tfm.interop.hf_io import CONFIG_FILE, HFFormatError, TensorReader

log = logging.getLogger(__name__)

MODEL_TYPES = ("marian",)
ARCH = Arch.ENCODER_DECODER
# config.json key of each ModelConfig field read from it (errors name the key the user wrote).
HF_KEYS = {"vocab_size": "vocab_size", "d_model": "d_model", "num_heads": "encoder_attention_heads",
           "num_layers": "encoder_layers", "num_decoder_layers": "decoder_layers", "d_ff": "encoder_ffn_dim",
           "max_len": "max_position_embeddings", "dropout_rate": "dropout",
           "attention_dropout_rate": "attention_dropout"}
IGNORE = ()
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which MarianMTModel uses

ACTIVATIONS = {"swish": Activation.SILU, "silu": Activation.SILU, "gelu": Activation.GELU_EXACT,
               "gelu_new": Activation.GELU, "gelu_pytorch_tanh": Activation.GELU, "relu": Activation.RELU}
EXPORT_ACTIVATIONS = {Activation.SILU: "swish", Activation.GELU_EXACT: "gelu",
                      Activation.GELU: "gelu_new", Activation.RELU: "relu"}

_ATTN = (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value"))


def config_from_hf(hf: dict, source: str) -> ModelConfig:
    """The ModelConfig of a Marian ``config.json``; HFFormatError for what tfm cannot express."""
    where = f"{source}/{CONFIG_FILE}"
    activation = convert.read_activation(hf, where, ("d_model", "vocab_size", "encoder_layers", "decoder_layers"),
                                         "gelu", ACTIVATIONS)
    heads = hf.get("encoder_attention_heads", 16), hf.get("decoder_attention_heads", 16)
    require(heads[0] == heads[1], where, f"encoder_attention_heads={heads[0]} != decoder_attention_heads="
            f"{heads[1]}: tfm uses one num_heads")
    ffn = hf.get("encoder_ffn_dim", 4096), hf.get("decoder_ffn_dim", 4096)
    require(ffn[0] == ffn[1], where, f"encoder_ffn_dim={ffn[0]} != decoder_ffn_dim={ffn[1]}: tfm uses one d_ff")
    require(hf.get("share_encoder_decoder_embeddings", True), where,
            "share_encoder_decoder_embeddings=false is not supported (tfm's Marian shares one table)")
    dec_vocab = hf.get("decoder_vocab_size") or hf["vocab_size"]
    require(dec_vocab == hf["vocab_size"], where, f"decoder_vocab_size={dec_vocab} != vocab_size={hf['vocab_size']}")
    require(hf.get("tie_word_embeddings", True), where, "tie_word_embeddings=false is not supported")
    if hf.get("activation_dropout", 0.0):
        log.warning("%s: activation_dropout=%s is not modelled by tfm (no dropout inside the FFN)",
                    where, hf["activation_dropout"])
    return ModelConfig(
        arch=Arch.ENCODER_DECODER,
        vocab_size=hf["vocab_size"],
        d_model=hf["d_model"],
        num_heads=heads[0],
        num_layers=hf["encoder_layers"],
        num_decoder_layers=hf["decoder_layers"],
        d_ff=ffn[0],
        max_len=hf.get("max_position_embeddings", 1024),
        dropout_rate=float(hf.get("dropout", 0.1)),
        attention_dropout_rate=float(hf.get("attention_dropout", 0.0)),
        activation=activation,
        norm=NormPosition.POST,
        positional=PositionalKind.SINUSOIDAL,
        sinusoidal_layout=SinusoidalLayout.SPLIT,
        share_embeddings=True,
        tie_output=True,
        logits_bias=True,
        scale_embeddings=bool(hf.get("scale_embedding", False)),
        use_bias=True,
        layer_norm_eps=LAYER_NORM_EPS,
    )


def _positions_table(cfg: ModelConfig) -> np.ndarray:
    """MarianSinusoidalPositionalEmbedding's table, computed as transformers does (float64)."""
    n, d = cfg.max_len, cfg.d_model
    j = np.arange(d)
    enc = np.arange(n)[:, None] / np.power(10000, 2 * (j // 2) / d)[None, :]
    sentinel = -(-d // 2)
    out = np.empty((n, d), np.float32)
    out[:, :sentinel] = np.sin(enc[:, 0::2])
    out[:, sentinel:] = np.cos(enc[:, 1::2])
    return out


def _modules(cfg: ModelConfig):
    """(kind, Hugging Face name, tfm path, (in, out) of a linear) of every block module, in the
    order both directions of the conversion walk them."""
    D, F = cfg.d_model, cfg.d_ff
    for side, layers in (("encoder", cfg.num_layers), ("decoder", cfg.decoder_layers)):
        for i in range(layers):
            h, p = f"model.{side}.layers.{i}.", f"{side}/stack/layer_{i}/"
            yield "attention", h + "self_attn.", p + "self_attention", None
            yield "norm", h + "self_attn_layer_norm", p + "self_attention_norm", None
            if side == "decoder":
                yield "attention", h + "encoder_attn.", p + "cross_attention", None
                yield "norm", h + "encoder_attn_layer_norm", p + "cross_attention_norm", None
            yield "linear", h + "fc1", p + "feed_forward/wi", (D, F)
            yield "linear", h + "fc2", p + "feed_forward/wo", (F, D)
            yield "norm", h + "final_layer_norm", p + "feed_forward_norm", None


def _linear(reader: TensorReader, name: str, n_in: int, n_out: int):
    """A torch Linear's weight (out, in), transposed to (in, out), and its bias."""
    return reader.take(name + ".weight", (n_out, n_in)).T, reader.take(name + ".bias", (n_out,))


def read_params(reader: TensorReader, cfg: ModelConfig) -> dict:
    """tfm's EncoderDecoder parameters from a Marian checkpoint (see the module docstring)."""
    D, N, V = cfg.d_model, cfg.num_heads, cfg.vocab_size
    params: dict = {}
    shared_name = "model.shared.weight"
    if not reader.has(shared_name):  # some checkpoints keep only the tied copies
        shared_name = next((n for n in ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight",
                                        "lm_head.weight") if reader.has(n)), shared_name)
    shared = reader.take(shared_name, (V, D))
    set_path(params, "source_embedder/embedding", shared)
    for name in ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"):
        if reader.has(name) and name != shared_name and not np.array_equal(reader.take(name, (V, D)), shared):
            raise HFFormatError(f"tensor {name!r} in {reader.files[name]} differs from {shared_name!r}: "
                                "untied embeddings are not supported")
    for side in ("encoder", "decoder"):
        name = f"model.{side}.embed_positions.weight"
        if reader.has(name):
            table = reader.take(name, (cfg.max_len, D), np.float32)
            if not np.allclose(table, _positions_table(cfg), atol=1e-5):
                raise HFFormatError(f"tensor {name!r} in {reader.files[name]} is not Marian's sinusoidal "
                                    "table (sines, then cosines): these positions are not supported")
    bias = reader.take("final_logits_bias", (1, V))[0] if reader.has("final_logits_bias") else np.zeros(V, np.float32)
    set_path(params, "decoder/logits_bias", bias)

    for kind, hf_name, path, shape in _modules(cfg):
        if kind == "attention":
            for hf_proj, tfm_proj in _ATTN:
                w, b = _linear(reader, hf_name + hf_proj, D, D)
                set_path(params, f"{path}/{tfm_proj}/kernel", convert.heads_in(w, N))
                set_path(params, f"{path}/{tfm_proj}/bias", convert.heads_bias(b, N))
            w, b = _linear(reader, hf_name + "out_proj", D, D)
            set_path(params, f"{path}/out/kernel", convert.heads_out(w, N))
            set_path(params, f"{path}/out/bias", b)
        elif kind == "norm":
            set_path(params, path + "/scale", reader.take(hf_name + ".weight", (D,)))
            set_path(params, path + "/bias", reader.take(hf_name + ".bias", (D,)))
        else:
            w, b = _linear(reader, hf_name, *shape)
            set_path(params, path + "/kernel", w)
            set_path(params, path + "/bias", b)
    return params


def load_tokenizer(directory, hf: dict) -> Tokenizer:
    return MarianSentencePieceTokenizer.from_hf_dir(
        directory, bos_id=hf.get("decoder_start_token_id"), eos_id=_first(hf.get("eos_token_id")),
        pad_id=hf.get("pad_token_id"))


def _first(x):
    return x[0] if isinstance(x, list) and x else x


# ---------------------------------------------------------------------- the complete mapping
# ModelConfig fields config.json carries (config_from_hf / config_to_hf; logits_bias=False is
# written as a zero final_logits_bias); every other field (except convert.EXECUTION_FIELDS)
# must hold Marian's value.
MAPPED = frozenset({"vocab_size", "d_model", "num_heads", "num_layers", "num_decoder_layers", "d_ff", "max_len",
                    "dropout_rate", "attention_dropout_rate", "activation", "scale_embeddings", "logits_bias"})
PINNED = {
    "arch": ARCH, "norm": NormPosition.POST, "positional": PositionalKind.SINUSOIDAL,
    "sinusoidal_layout": SinusoidalLayout.SPLIT, "share_embeddings": True, "tie_output": True,
    "num_classes": 2, "pooling": Pooling.MEAN, "use_bias": True, "layer_norm_eps": LAYER_NORM_EPS,
    "rope_base": 10000.0, "norm_kind": NormKind.LAYER_NORM, "gated_ffn": False, "num_kv_heads": None,
    "rope_layout": RopeLayout.INTERLEAVED, "rope_scaling": None, "qkv_bias": None, "output_bias": True,
    **convert.pinned_to_defaults(*convert.ENCODER_ONLY_OPTIONS),
}


# ---------------------------------------------------------------------- export
def config_to_hf(cfg: ModelConfig, tokenizer: Tokenizer | None) -> dict:
    if tokenizer is not None:
        pad, eos, start = tokenizer.pad_id, tokenizer.eos_id, tokenizer.bos_id
    else:  # tfm's own conventions (pad 0, bos 1, eos 2)
        pad, eos, start = 0, 2, 1
    return {
        "architectures": ["MarianMTModel"],
        "model_type": "marian",
        "vocab_size": cfg.vocab_size,
        "decoder_vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "encoder_layers": cfg.num_layers,
        "decoder_layers": cfg.decoder_layers,
        "encoder_attention_heads": cfg.num_heads,
        "decoder_attention_heads": cfg.num_heads,
        "encoder_ffn_dim": cfg.d_ff,
        "decoder_ffn_dim": cfg.d_ff,
        "max_position_embeddings": cfg.max_len,
        "activation_function": EXPORT_ACTIVATIONS[cfg.activation],
        "scale_embedding": cfg.scale_embeddings,
        "dropout": cfg.dropout_rate,
        "attention_dropout": cfg.attention_dropout_rate,
        "activation_dropout": 0.0,
        "pad_token_id": pad,
        "eos_token_id": eos,
        "forced_eos_token_id": eos,
        "decoder_start_token_id": start,
        "share_encoder_decoder_embeddings": True,
        "tie_word_embeddings": True,
        "is_encoder_decoder": True,
        "use_cache": True,
    }


def params_to_hf(params, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """The checkpoint :func:`read_params` reads back to the same arrays (transformers' names;
    the tied copies and the fixed position tables are left out, as save_pretrained does)."""
    out = {"model.shared.weight": get_path(params, "source_embedder/embedding")}
    bias = params.get("decoder", {}).get("logits_bias") if cfg.logits_bias else None
    out["final_logits_bias"] = (np.zeros((1, cfg.vocab_size), np.float32) if bias is None
                                else np.asarray(bias).reshape(1, -1))

    for kind, hf_name, path, _ in _modules(cfg):
        if kind == "attention":
            for hf_proj, tfm_proj in _ATTN:
                out[hf_name + hf_proj + ".weight"] = convert.flat_in(get_path(params, f"{path}/{tfm_proj}/kernel")).T
                out[hf_name + hf_proj + ".bias"] = get_path(params, f"{path}/{tfm_proj}/bias").reshape(-1)
            out[hf_name + "out_proj.weight"] = convert.flat_out(get_path(params, f"{path}/out/kernel")).T
            out[hf_name + "out_proj.bias"] = get_path(params, f"{path}/out/bias")
        elif kind == "norm":
            out[hf_name + ".weight"] = get_path(params, path + "/scale")
            out[hf_name + ".bias"] = get_path(params, path + "/bias")
        else:
            out[hf_name + ".weight"] = get_path(params, path + "/kernel").T
            out[hf_name + ".bias"] = get_path(params, path + "/bias")
    return out
