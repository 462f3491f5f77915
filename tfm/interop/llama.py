"""Llama (Touvron et al. 2023; Llama 2/3, TinyLlama, SmolLM), Mistral and Qwen2 <-> tfm's
:class:`~tfm.models.DecoderLM`.

All three are tfm's pre-norm decoder with the Llama-lineage options of :class:`ModelConfig`:
RMSNorm (``norm_kind``), a SwiGLU feed-forward (``gated_ffn``), grouped-query attention
(``num_kv_heads``), rotary positions in the rotate-half layout with ``rope_theta`` and, for
Llama 3, ``rope_scaling`` type "llama3", no biases except Qwen2's on q/k/v (``qkv_bias``), and an
output head without bias, tied to the embeddings or not (``tie_word_embeddings``). What differs
between the three model types is data (:data:`TYPES`); each is registered as its own family
(:data:`FAMILIES`), so re-exporting keeps the type and each states its own pins.

torch ``Linear`` weights are (out, in): every kernel is transposed. Tensor names::

    model.embed_tokens.weight (V, D)            model.norm.weight (D,)
    model.layers.N.input_layernorm.weight (D,)  model.layers.N.post_attention_layernorm.weight (D,)
    model.layers.N.self_attn.q_proj.weight (N*H, D)   [.bias (N*H,): Qwen2]
    model.layers.N.self_attn.{k,v}_proj.weight (K*H, D)   [.bias (K*H,): Qwen2]
    model.layers.N.self_attn.o_proj.weight (D, N*H)
    model.layers.N.mlp.{gate,up}_proj.weight (F, D)   model.layers.N.mlp.down_proj.weight (D, F)
    lm_head.weight (V, D): untied models; tied ones may carry a copy equal to embed_tokens
    model.layers.N.self_attn.rotary_emb.inv_freq: a buffer of old checkpoints, ignored

What tfm does not implement is refused naming the config.json key, never approximated: another
rope type, a sliding window shorter than the model's length, ``attention_bias`` (it includes
o_proj), ``mlp_bias``, a ``head_dim`` other than hidden_size / num_attention_heads.
"""

from __future__ import annotations

import functools
import types

import numpy as np

from tfm.config import (Activation, Arch, ModelConfig, NormKind, NormPosition, Pooling, PositionalKind, RopeLayout,
                        SinusoidalLayout)
from tfm.data.hf_tokenizers import TokenizerJSON
from tfm.data.tokenizers import Tokenizer
from tfm.interop import convert
from tfm.interop.convert import get_path, require, set_path
from tfm.interop.hf_io import CONFIG_FILE, HFFormatError, TensorReader

ARCH = Arch.DECODER_LM
IGNORE = (r"(^|\.)rotary_emb\.inv_freq$",)
# config.json key of each ModelConfig field read from it (errors name the key the user wrote).
HF_KEYS = {"vocab_size": "vocab_size", "d_model": "hidden_size", "num_heads": "num_attention_heads",
           "num_kv_heads": "num_key_value_heads", "num_layers": "num_hidden_layers",
           "d_ff": "intermediate_size", "max_len": "max_position_embeddings",
           "attention_dropout_rate": "attention_dropout", "layer_norm_eps": "rms_norm_eps"}

ACTIVATIONS = {"silu": Activation.SILU, "swish": Activation.SILU, "gelu": Activation.GELU_EXACT,
               "gelu_pytorch_tanh": Activation.GELU, "gelu_new": Activation.GELU, "relu": Activation.RELU}
EXPORT_ACTIVATIONS = {Activation.SILU: "silu", Activation.GELU_EXACT: "gelu",
                      Activation.GELU: "gelu_pytorch_tanh", Activation.RELU: "relu"}

# What differs between the model types: the class transformers builds, whether q/k/v have
# biases, and the config.json keys only that type has (written as these values on export).
TYPES = {
    "llama": dict(architecture="LlamaForCausalLM", qkv_bias=False,
                  extra={"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1}),
    "mistral": dict(architecture="MistralForCausalLM", qkv_bias=False, extra={"sliding_window": None}),
    "qwen2": dict(architecture="Qwen2ForCausalLM", qkv_bias=True,
                  extra={"use_sliding_window": False, "sliding_window": None}),
}

# ModelConfig fields config.json carries; every other field (except convert.EXECUTION_FIELDS)
# must hold the value of PINNED (qkv_bias: the model type's).
MAPPED = frozenset({"vocab_size", "d_model", "num_heads", "num_kv_heads", "num_layers", "d_ff", "max_len",
                    "attention_dropout_rate", "activation", "layer_norm_eps", "rope_base", "rope_scaling",
                    "tie_output"})
_PINNED = {
    "arch": ARCH, "num_decoder_layers": None, "dropout_rate": 0.0, "norm": NormPosition.PRE,
    "positional": PositionalKind.ROPE, "sinusoidal_layout": SinusoidalLayout.INTERLEAVED, "share_embeddings": True,
    "logits_bias": False, "scale_embeddings": False, "num_classes": 2, "pooling": Pooling.MEAN, "use_bias": False,
    "norm_kind": NormKind.RMS_NORM, "gated_ffn": True, "rope_layout": RopeLayout.ROTATE_HALF, "output_bias": False,
    **convert.pinned_to_defaults(*convert.ENCODER_ONLY_OPTIONS),
}


# ---------------------------------------------------------------------- import
def _rope(hf: dict, where: str) -> tuple[float, tuple | None]:
    """(rope_theta, rope_scaling tuple or None) from transformers 4's ``rope_theta`` /
    ``rope_scaling`` or transformers 5's ``rope_parameters``."""
    key = "rope_parameters" if hf.get("rope_parameters") else "rope_scaling"
    params = hf.get(key) or {}
    require(isinstance(params, dict), where, f"{key}={params!r} is not an object")
    rope_type = params.get("rope_type", params.get("type", "default"))
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    require(partial in (None, 1, 1.0), where, f"partial_rotary_factor={partial!r} is not supported (only 1.0)")
    if rope_type == "default":
        return theta, None
    require(rope_type == "llama3", where,
            f"{key} rope_type={rope_type!r} is not supported (tfm implements 'default' and 'llama3')")
    try:
        scaling = (float(params["factor"]), float(params["low_freq_factor"]), float(params["high_freq_factor"]),
                   int(params.get("original_max_position_embeddings", hf.get("max_position_embeddings"))))
    except (KeyError, TypeError, ValueError) as e:
        raise HFFormatError(f"{where}: {key} of rope_type 'llama3' lacks or mis-states {e}") from None
    return theta, scaling


def _check_window(hf: dict, where: str, max_len: int) -> None:
    """A sliding window shorter than the model's length is refused (Mistral: sliding_window;
    Qwen2: use_sliding_window + sliding_window, or layer_types)."""
    window = hf.get("sliding_window")
    if hf.get("model_type") == "qwen2":
        layer_types = hf.get("layer_types") or []
        if not hf.get("use_sliding_window", False) and "sliding_attention" not in layer_types:
            return
    if window is not None and window < max_len:
        raise HFFormatError(f"{where}: sliding_window={window} is shorter than max_position_embeddings={max_len}: "
                            "sliding-window attention is not supported")


def config_from_hf(hf: dict, source: str, model_type: str = "llama") -> ModelConfig:
    """The ModelConfig of a Llama / Mistral / Qwen2 ``config.json``; HFFormatError naming the key
    for what tfm cannot express."""
    where = f"{source}/{CONFIG_FILE}"
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        require(key in hf, where, f"has no {key!r}")
    act = hf.get("hidden_act", "silu")
    require(act in ACTIVATIONS, where, f"hidden_act={act!r} is not supported; supported: {sorted(ACTIVATIONS)}")
    d_model, heads = hf["hidden_size"], hf["num_attention_heads"]
    kv = hf.get("num_key_value_heads") or heads
    head_dim = hf.get("head_dim")
    require(head_dim in (None, d_model // heads) and d_model % heads == 0, where,
            f"head_dim={head_dim} with hidden_size={d_model} and num_attention_heads={heads}: tfm needs "
            "head_dim = hidden_size / num_attention_heads")
    require(not hf.get("attention_bias", False), where,
            "attention_bias=true is not supported (it puts a bias on o_proj too)")
    require(not hf.get("mlp_bias", False), where, "mlp_bias=true is not supported")
    max_len = hf.get("max_position_embeddings", 2048)
    _check_window(hf, where, max_len)
    theta, scaling = _rope(hf, where)
    tied = hf.get("tie_word_embeddings", False)  # transformers' default for all three types
    try:
        return ModelConfig(
            arch=ARCH, vocab_size=hf["vocab_size"], d_model=d_model, num_heads=heads,
            num_kv_heads=None if kv == heads else kv, num_layers=hf["num_hidden_layers"],
            d_ff=hf["intermediate_size"], max_len=max_len, dropout_rate=0.0,
            attention_dropout_rate=float(hf.get("attention_dropout", 0.0)), activation=ACTIVATIONS[act],
            norm=NormPosition.PRE, positional=PositionalKind.ROPE, share_embeddings=True, tie_output=bool(tied),
            scale_embeddings=False, use_bias=False, layer_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_base=theta, norm_kind=NormKind.RMS_NORM, gated_ffn=True, rope_layout=RopeLayout.ROTATE_HALF,
            rope_scaling=scaling, qkv_bias=TYPES[model_type]["qkv_bias"], output_bias=False,
        )
    except ValueError as e:  # e.g. num_key_value_heads not dividing num_attention_heads
        raise HFFormatError(f"{where}: {e}") from None


def _linear(reader: TensorReader, name: str, n_in: int, n_out: int, bias: bool):
    """A torch Linear's weight (out, in), transposed to (in, out), and its bias (or None)."""
    w = reader.take(name + ".weight", (n_out, n_in)).T
    return w, reader.take(name + ".bias", (n_out,)) if bias else None


def _layer_modules(cfg: ModelConfig, i: int):
    """(Hugging Face name, tfm path, tfm heads or None, (in, out)) of the linears of layer i."""
    D, F, N, K, H = cfg.d_model, cfg.d_ff, cfg.num_heads, cfg.kv_heads, cfg.head_dim
    h, p = f"model.layers.{i}.", f"decoder/stack/layer_{i}/"
    yield h + "self_attn.q_proj", p + "self_attention/query", N, (D, N * H)
    yield h + "self_attn.k_proj", p + "self_attention/key", K, (D, K * H)
    yield h + "self_attn.v_proj", p + "self_attention/value", K, (D, K * H)
    yield h + "self_attn.o_proj", p + "self_attention/out", None, (N * H, D)
    yield h + "mlp.gate_proj", p + "feed_forward/wi_gate", None, (D, F)
    yield h + "mlp.up_proj", p + "feed_forward/wi", None, (D, F)
    yield h + "mlp.down_proj", p + "feed_forward/wo", None, (F, D)


def _norms(cfg: ModelConfig, i: int):
    h, p = f"model.layers.{i}.", f"decoder/stack/layer_{i}/"
    yield h + "input_layernorm.weight", p + "self_attention_norm/scale"
    yield h + "post_attention_layernorm.weight", p + "feed_forward_norm/scale"


def read_params(reader: TensorReader, cfg: ModelConfig) -> dict:
    """tfm's DecoderLM parameters from a Llama / Mistral / Qwen2 checkpoint (module docstring)."""
    D, V, H = cfg.d_model, cfg.vocab_size, cfg.head_dim
    params: dict = {}
    embed = reader.take("model.embed_tokens.weight", (V, D))
    set_path(params, "embedder/embedding", embed)
    for i in range(cfg.num_layers):
        for hf_name, path, heads, (n_in, n_out) in _layer_modules(cfg, i):
            qkv = heads is not None
            w, b = _linear(reader, hf_name, n_in, n_out, bias=qkv and bool(cfg.qkv_bias))
            if qkv:
                set_path(params, path + "/kernel", w.reshape(D, heads, H))  # (D, N|K, H)
                if b is not None:
                    set_path(params, path + "/bias", b.reshape(heads, H))
            elif path.endswith("/out"):
                set_path(params, path + "/kernel", w.reshape(cfg.num_heads, H, D))  # (N, H, D)
            else:
                set_path(params, path + "/kernel", w)
        for hf_name, path in _norms(cfg, i):
            set_path(params, path, reader.take(hf_name, (D,)))
    set_path(params, "decoder/stack/final_norm/scale", reader.take("model.norm.weight", (D,)))
    if cfg.tie_output:
        if reader.has("lm_head.weight") and not np.array_equal(reader.take("lm_head.weight", (V, D)), embed):
            raise HFFormatError(f"tensor 'lm_head.weight' in {reader.files['lm_head.weight']} differs from "
                                f"'model.embed_tokens.weight' but {CONFIG_FILE} says tie_word_embeddings=true")
    else:
        set_path(params, "decoder/logits/kernel", reader.take("lm_head.weight", (V, D)).T)
    return params


def _first(x):
    return x[0] if isinstance(x, list) and x else x


def load_tokenizer(directory, hf: dict) -> Tokenizer:
    """tokenizer.json through ``tokenizers``, with config.json's own bos/eos/pad ids (Llama 3's
    list of EOS ids: the first)."""
    return TokenizerJSON.from_hf_dir(directory, eos_id=_first(hf.get("eos_token_id")),
                                     bos_id=hf.get("bos_token_id"), pad_id=hf.get("pad_token_id"))


# ---------------------------------------------------------------------- export
def config_to_hf(cfg: ModelConfig, tokenizer: Tokenizer | None, model_type: str = "llama") -> dict:
    kind = TYPES[model_type]
    eos = tokenizer.eos_id if tokenizer is not None else cfg.vocab_size - 1
    bos = tokenizer.bos_id if tokenizer is not None else eos
    scaling = None
    if cfg.rope_scaling is not None:
        factor, low, high, original = cfg.rope_scaling
        scaling = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
                   "original_max_position_embeddings": int(original)}
    return {
        "architectures": [kind["architecture"]],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": EXPORT_ACTIVATIONS[cfg.activation],
        "max_position_embeddings": cfg.max_len,
        "rms_norm_eps": cfg.layer_norm_eps,
        "rope_theta": cfg.rope_base,
        "rope_scaling": scaling,
        "attention_dropout": cfg.attention_dropout_rate,
        "tie_word_embeddings": cfg.tie_output,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "float32",
        **kind["extra"],
    }


def params_to_hf(params, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """The checkpoint :func:`read_params` reads back to the same arrays (no lm_head when tied)."""
    embed = get_path(params, "embedder/embedding")
    out = {"model.embed_tokens.weight": embed}
    for i in range(cfg.num_layers):
        for hf_name, path, heads, (n_in, n_out) in _layer_modules(cfg, i):
            out[hf_name + ".weight"] = get_path(params, path + "/kernel").reshape(n_in, n_out).T
            if heads is not None and cfg.qkv_bias:
                out[hf_name + ".bias"] = get_path(params, path + "/bias").reshape(-1)
        for hf_name, path in _norms(cfg, i):
            out[hf_name] = get_path(params, path)
    out["model.norm.weight"] = get_path(params, "decoder/stack/final_norm/scale")
    if not cfg.tie_output:
        out["lm_head.weight"] = get_path(params, "decoder/logits/kernel").T
    return out


# ---------------------------------------------------------------------- one family per model type
def _family(model_type: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        __name__=f"{__name__}[{model_type}]", MODEL_TYPES=(model_type,), ARCH=ARCH, IGNORE=IGNORE, MAPPED=MAPPED,
        PINNED={**_PINNED, "qkv_bias": TYPES[model_type]["qkv_bias"]},
        config_from_hf=functools.partial(config_from_hf, model_type=model_type),
        read_params=read_params, load_tokenizer=load_tokenizer,
        config_to_hf=functools.partial(config_to_hf, model_type=model_type), params_to_hf=params_to_hf,
    )


FAMILIES: tuple[types.SimpleNamespace, ...] = tuple(_family(t) for t in TYPES)
