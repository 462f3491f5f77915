"""GPT-2 (Radford et al. 2019; every size, distilgpt2) <-> tfm's :class:`~tfm.models.DecoderLM`.

GPT-2 is tfm's pre-LN decoder-only model: learned positions (``wpe``) added to the token
embeddings (``wte``, not scaled), blocks ``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))``, a final
``ln_f``, and the output projection tied to ``wte`` (no bias). Its ``Conv1D`` layers store
weights input-first (in, out), as tfm's Dense kernels, so nothing is transposed; ``c_attn``
packs the query, key and value projections side by side along the output dimension.

Tensor names (``transformer.`` prefix optional; checkpoints on the Hub have none)::

    wte.weight (V, D)   wpe.weight (P, D)   ln_f.{weight,bias} (D,)
    h.N.ln_1 / h.N.ln_2 .{weight,bias} (D,)
    h.N.attn.c_attn.weight (D, 3D) .bias (3D,)   h.N.attn.c_proj.weight (D, D) .bias (D,)
    h.N.mlp.c_fc.weight (D, F) .bias (F,)        h.N.mlp.c_proj.weight (F, D) .bias (D,)
    lm_head.weight (V, D): optional, must equal wte.weight (tied)
    h.N.attn.bias, h.N.attn.masked_bias: causal-mask buffers of old checkpoints, ignored
"""

from __future__ import annotations

import logging

import numpy as np

from tfm.config import (Activation, Arch, ModelConfig, NormKind, NormPosition, Pooling, PositionalKind, RopeLayout,
                        SinusoidalLayout)
from tfm.data.hf_tokenizers import ByteLevelBPETokenizer
from tfm.data.tokenizers import Tokenizer
from tfm.interop import convert
from tfm.interop.convert import get_path, require, set_path
from tfm.interop.hf_io import CONFIG_FILE, HFFormatError, TensorReader

log = logging.getLogger(__name__)

MODEL_TYPES = ("gpt2",)
ARCH = Arch.DECODER_LM
# config.json key of each ModelConfig field read from it (errors name the key the user wrote).
HF_KEYS = {"vocab_size": "vocab_size", "d_model": "n_embd", "num_heads": "n_head", "num_layers": "n_layer",
           "d_ff": "n_inner", "max_len": "n_positions", "dropout_rate": "resid_pdrop",
           "attention_dropout_rate": "attn_pdrop", "layer_norm_eps": "layer_norm_epsilon"}
IGNORE = (r"(^|\.)h\.\d+\.attn\.(masked_)?bias$",)

# Hugging Face activation names -> tfm's (gelu_new, gelu_fast and gelu_pytorch_tanh are one
# function: the tanh approximation).
ACTIVATIONS = {
    "gelu_new": Activation.GELU, "gelu_pytorch_tanh": Activation.GELU, "gelu_fast": Activation.GELU,
    "gelu": Activation.GELU_EXACT, "relu": Activation.RELU, "silu": Activation.SILU,
    "swish": Activation.SILU,
}
EXPORT_ACTIVATIONS = {Activation.GELU: "gelu_new", Activation.GELU_EXACT: "gelu",
                      Activation.RELU: "relu", Activation.SILU: "silu"}


def config_from_hf(hf: dict, source: str) -> ModelConfig:
    """The ModelConfig of a GPT-2 ``config.json``; HFFormatError for what tfm cannot express."""
    where = f"{source}/{CONFIG_FILE}"
    activation = convert.read_activation(hf, where, ("n_embd", "n_layer", "n_head", "vocab_size"), "gelu_new",
                                         ACTIVATIONS)
    require(hf.get("scale_attn_weights", True), where, "scale_attn_weights=false is not supported")
    require(not hf.get("scale_attn_by_inverse_layer_idx", False), where,
            "scale_attn_by_inverse_layer_idx=true is not supported")
    require(not hf.get("add_cross_attention", False), where, "add_cross_attention=true is not supported")
    require(hf.get("tie_word_embeddings", True), where,
            "tie_word_embeddings=false is not supported (GPT-2's output layer is the embedding)")
    d_model = hf["n_embd"]
    resid, embd = hf.get("resid_pdrop", 0.1), hf.get("embd_pdrop", 0.1)
    if embd != resid:
        log.warning("%s: embd_pdrop=%s differs from resid_pdrop=%s; tfm uses one dropout rate (%s)",
                    where, embd, resid, resid)
    return ModelConfig(
        arch=Arch.DECODER_LM,
        vocab_size=hf["vocab_size"],
        d_model=d_model,
        num_heads=hf["n_head"],
        num_layers=hf["n_layer"],
        d_ff=hf.get("n_inner") or 4 * d_model,
        max_len=hf.get("n_positions", hf.get("n_ctx", 1024)),
        dropout_rate=float(resid),
        attention_dropout_rate=float(hf.get("attn_pdrop", 0.1)),
        activation=activation,
        norm=NormPosition.PRE,
        positional=PositionalKind.LEARNED,
        share_embeddings=True,
        tie_output=True,
        scale_embeddings=False,
        use_bias=True,
        layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
    )


def read_params(reader: TensorReader, cfg: ModelConfig) -> dict:
    """tfm's DecoderLM parameters from a GPT-2 checkpoint (see the module docstring)."""
    prefix = "transformer." if any(n.startswith("transformer.") for n in reader.names()) else ""
    D, N, F, V = cfg.d_model, cfg.num_heads, cfg.d_ff, cfg.vocab_size

    def take(name, shape):
        return reader.take(prefix + name, shape)

    params: dict = {}
    wte = take("wte.weight", (V, D))
    set_path(params, "embedder/embedding", wte)
    set_path(params, "decoder/position_embedding/embedding", take("wpe.weight", (cfg.max_len, D)))
    if reader.has("lm_head.weight"):
        head = reader.take("lm_head.weight", (V, D))
        if not np.array_equal(head, wte):
            raise HFFormatError(
                f"tensor 'lm_head.weight' in {reader.files['lm_head.weight']} differs from "
                f"'{prefix}wte.weight': an untied output layer is not supported")
    for i in range(cfg.num_layers):
        h, out = f"h.{i}.", f"decoder/stack/layer_{i}/"
        for hf_norm, tfm_norm in (("ln_1", "self_attention_norm"), ("ln_2", "feed_forward_norm")):
            set_path(params, out + tfm_norm + "/scale", take(h + hf_norm + ".weight", (D,)))
            set_path(params, out + tfm_norm + "/bias", take(h + hf_norm + ".bias", (D,)))
        qkv_w = take(h + "attn.c_attn.weight", (D, 3 * D))  # (D, 3D): [q | k | v]
        qkv_b = take(h + "attn.c_attn.bias", (3 * D,))
        for j, name in enumerate(("query", "key", "value")):
            set_path(params, out + f"self_attention/{name}/kernel", convert.heads_in(qkv_w[:, j * D:(j + 1) * D], N))
            set_path(params, out + f"self_attention/{name}/bias", convert.heads_bias(qkv_b[j * D:(j + 1) * D], N))
        set_path(params, out + "self_attention/out/kernel", convert.heads_out(take(h + "attn.c_proj.weight", (D, D)), N))
        set_path(params, out + "self_attention/out/bias", take(h + "attn.c_proj.bias", (D,)))
        set_path(params, out + "feed_forward/wi/kernel", take(h + "mlp.c_fc.weight", (D, F)))
        set_path(params, out + "feed_forward/wi/bias", take(h + "mlp.c_fc.bias", (F,)))
        set_path(params, out + "feed_forward/wo/kernel", take(h + "mlp.c_proj.weight", (F, D)))
        set_path(params, out + "feed_forward/wo/bias", take(h + "mlp.c_proj.bias", (D,)))
    set_path(params, "decoder/stack/final_norm/scale", take("ln_f.weight", (D,)))
    set_path(params, "decoder/stack/final_norm/bias", take("ln_f.bias", (D,)))
    return params


def load_tokenizer(directory, hf: dict) -> Tokenizer:
    return ByteLevelBPETokenizer.from_hf_dir(directory, eos_id=hf.get("eos_token_id"),
                                             bos_id=hf.get("bos_token_id"))


# ---------------------------------------------------------------------- the complete mapping
# ModelConfig fields config.json carries (config_from_hf / config_to_hf); every other field
# (except convert.EXECUTION_FIELDS) must hold GPT-2's value.
MAPPED = frozenset({"vocab_size", "d_model", "num_heads", "num_layers", "d_ff", "max_len", "dropout_rate",
                    "attention_dropout_rate", "activation", "layer_norm_eps"})
PINNED = {
    "arch": ARCH, "num_decoder_layers": None, "norm": NormPosition.PRE, "positional": PositionalKind.LEARNED,
    "sinusoidal_layout": SinusoidalLayout.INTERLEAVED, "share_embeddings": True, "tie_output": True,
    "logits_bias": False, "scale_embeddings": False, "num_classes": 2, "pooling": Pooling.MEAN,
    "use_bias": True, "rope_base": 10000.0,
    "norm_kind": NormKind.LAYER_NORM, "gated_ffn": False, "num_kv_heads": None,
    "rope_layout": RopeLayout.INTERLEAVED, "rope_scaling": None, "qkv_bias": None, "output_bias": True,
    **convert.pinned_to_defaults(*convert.ENCODER_ONLY_OPTIONS),
}


# ---------------------------------------------------------------------- export
def config_to_hf(cfg: ModelConfig, tokenizer: Tokenizer | None) -> dict:
    eos = tokenizer.eos_id if tokenizer is not None else cfg.vocab_size - 1
    bos = tokenizer.bos_id if tokenizer is not None else eos
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.max_len,
        "n_embd": cfg.d_model,
        "n_layer": cfg.num_layers,
        "n_head": cfg.num_heads,
        "n_inner": cfg.d_ff,
        "activation_function": EXPORT_ACTIVATIONS[cfg.activation],
        "resid_pdrop": cfg.dropout_rate,
        "embd_pdrop": cfg.dropout_rate,
        "attn_pdrop": cfg.attention_dropout_rate,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "use_cache": True,
    }


def params_to_hf(params, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """The checkpoint :func:`read_params` reads back to the same arrays (``transformer.`` names,
    no lm_head: transformers ties it to wte)."""
    out = {"transformer.wte.weight": get_path(params, "embedder/embedding"),
           "transformer.wpe.weight": get_path(params, "decoder/position_embedding/embedding")}
    for i in range(cfg.num_layers):
        h, p = f"transformer.h.{i}.", f"decoder/stack/layer_{i}/"
        for hf_norm, tfm_norm in (("ln_1", "self_attention_norm"), ("ln_2", "feed_forward_norm")):
            out[h + hf_norm + ".weight"] = get_path(params, p + tfm_norm + "/scale")
            out[h + hf_norm + ".bias"] = get_path(params, p + tfm_norm + "/bias")
        attn = p + "self_attention/"
        out[h + "attn.c_attn.weight"] = np.concatenate(
            [convert.flat_in(get_path(params, attn + f"{n}/kernel")) for n in ("query", "key", "value")], axis=1)
        out[h + "attn.c_attn.bias"] = np.concatenate(
            [get_path(params, attn + f"{n}/bias").reshape(-1) for n in ("query", "key", "value")])
        out[h + "attn.c_proj.weight"] = convert.flat_out(get_path(params, attn + "out/kernel"))
        out[h + "attn.c_proj.bias"] = get_path(params, attn + "out/bias")
        out[h + "mlp.c_fc.weight"] = get_path(params, p + "feed_forward/wi/kernel")
        out[h + "mlp.c_fc.bias"] = get_path(params, p + "feed_forward/wi/bias")
        out[h + "mlp.c_proj.weight"] = get_path(params, p + "feed_forward/wo/kernel")
        out[h + "mlp.c_proj.bias"] = get_path(params, p + "feed_forward/wo/bias")
    out["transformer.ln_f.weight"] = get_path(params, "decoder/stack/final_norm/scale")
    out["transformer.ln_f.bias"] = get_path(params, "decoder/stack/final_norm/bias")
    return out
