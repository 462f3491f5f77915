"""BERT (Devlin et al. 2019) <-> tfm's encoder-only model (:class:`~tfm.models.EncoderClassifier`).

BERT is tfm's post-LN encoder with learned absolute positions, token-type embeddings and a
LayerNorm on the summed embeddings (``type_vocab_size``, ``embedding_norm``), exact GELU,
unscaled embeddings, and one of three heads (``ModelConfig.head``, decided by the tensors the
checkpoint holds, else by ``architectures``):

* ``BertForSequenceClassification`` -> head "classifier": the pooler (dense + tanh on [CLS],
  ``pooling="first"``, ``pooler=True``) and ``classifier``; ``id2label`` -> ``class_names``;
* ``BertForMaskedLM`` / ``BertForPreTraining`` -> head "mlm": ``cls.predictions`` (transform
  dense + act + LayerNorm, output tied to the word embeddings, plus its bias = ``logits_bias``);
  a pretraining checkpoint's pooler is kept, its next-sentence head is ignored;
* ``BertModel`` -> head "none" (hidden states), with the pooler when the checkpoint has it.

torch ``Linear`` weights are (out, in): every kernel is transposed. Tensor names, with or without
the ``bert.`` prefix (the head's own names never have it)::

    embeddings.{word,position,token_type}_embeddings.weight   embeddings.LayerNorm.{weight,bias}
    encoder.layer.N.attention.self.{query,key,value}.{weight,bias}
    encoder.layer.N.attention.output.dense / .LayerNorm      (-> self_attention/out, _norm)
    encoder.layer.N.intermediate.dense / output.dense / output.LayerNorm  (feed-forward)
    pooler.dense.{weight,bias}   classifier.{weight,bias}
    cls.predictions.transform.dense / .transform.LayerNorm   cls.predictions.bias
    cls.predictions.decoder.weight (optional tied copy, must equal the word embeddings)
    cls.predictions.decoder.bias (optional copy of cls.predictions.bias)
Old TensorFlow-converted names ``LayerNorm.gamma`` / ``.beta`` are read as weight / bias.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from tfm.config import Activation, Arch, EncoderHead, ModelConfig, NormPosition, Pooling, PositionalKind
from tfm.config import SinusoidalLayout
from tfm.data.hf_wordpiece import WordPieceTokenizer
from tfm.data.tokenizers import Tokenizer
from tfm.interop import convert
from tfm.interop.convert import get_path, require, set_path
from tfm.interop.hf_io import CONFIG_FILE, HFFormatError, TensorReader, weight_files

log = logging.getLogger(__name__)

MODEL_TYPES = ("bert",)
ARCH = Arch.ENCODER_CLASSIFIER
IGNORE = (r"(^|\.)embeddings\.position_ids$", r"^cls\.seq_relationship\.")

# ModelConfig fields config_from_hf / config_to_hf carry
MAPPED = frozenset({"vocab_size", "d_model", "num_heads", "num_layers", "d_ff", "max_len", "dropout_rate",
                    "attention_dropout_rate", "activation", "num_classes", "layer_norm_eps", "logits_bias",
                    "type_vocab_size", "pooler", "head", "class_names"})
# ModelConfig fields a BERT has exactly so
PINNED: dict[str, Any] = {
    "arch": Arch.ENCODER_CLASSIFIER, "num_decoder_layers": None, "norm": NormPosition.POST,
    "positional": PositionalKind.LEARNED, "sinusoidal_layout": SinusoidalLayout.INTERLEAVED,
    "share_embeddings": True, "tie_output": True, "scale_embeddings": False, "pooling": Pooling.FIRST,
    "use_bias": True, "rope_base": 10000.0, "embedding_norm": True,
    **convert.pinned_to_defaults(*convert.LLAMA_OPTIONS),
}

ACTIVATIONS = {"gelu": Activation.GELU_EXACT, "gelu_new": Activation.GELU, "gelu_pytorch_tanh": Activation.GELU,
               "gelu_fast": Activation.GELU, "relu": Activation.RELU, "silu": Activation.SILU,
               "swish": Activation.SILU}
EXPORT_ACTIVATIONS = {Activation.GELU_EXACT: "gelu", Activation.GELU: "gelu_new", Activation.RELU: "relu",
                      Activation.SILU: "silu"}
_HEAD_ARCHITECTURES = {"BertForSequenceClassification": EncoderHead.CLASSIFIER,
                       "BertForMaskedLM": EncoderHead.MLM, "BertForPreTraining": EncoderHead.MLM,
                       "BertModel": EncoderHead.NONE}
_EXPORT_ARCHITECTURES = {EncoderHead.CLASSIFIER: "BertForSequenceClassification",
                         EncoderHead.MLM: "BertForMaskedLM", EncoderHead.NONE: "BertModel"}


def _tensor_names(source: str) -> list[str]:
    try:
        return list(weight_files(source))
    except HFFormatError:
        return []  # no weights (yet): the head comes from "architectures"


def config_from_hf(hf: dict, source: str) -> ModelConfig:
    """The ModelConfig of a BERT ``config.json``; HFFormatError naming the key tfm cannot express."""
    where = f"{source}/{CONFIG_FILE}"
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        require(key in hf, where, f"has no {key!r}")
    act = hf.get("hidden_act", "gelu")
    require(act in ACTIVATIONS, where, f"hidden_act={act!r} is not supported; supported: {sorted(ACTIVATIONS)}")
    kind = hf.get("position_embedding_type", "absolute")
    require(kind == "absolute", where, f"position_embedding_type={kind!r} is not supported (only 'absolute')")
    require(not hf.get("is_decoder", False), where, "is_decoder=true is not supported (tfm's BERT is an encoder)")
    require(not hf.get("add_cross_attention", False), where, "add_cross_attention=true is not supported")
    names = _tensor_names(source)
    strip = [n.removeprefix("bert.") for n in names]
    if names:
        has_classifier = any(n.startswith("classifier.") for n in strip)
        has_mlm = any(n.startswith("cls.predictions.") for n in strip)
        require(not (has_classifier and has_mlm), where, "the checkpoint holds both a classifier and "
                "cls.predictions (a masked-LM head): tfm's model has one head")
        head = EncoderHead.CLASSIFIER if has_classifier else EncoderHead.MLM if has_mlm else EncoderHead.NONE
        pooler = any(n.startswith("pooler.") for n in strip)
    else:
        archs = hf.get("architectures") or ["BertModel"]
        require(archs[0] in _HEAD_ARCHITECTURES, where,
                f"architectures={archs!r} is not supported; supported: {sorted(_HEAD_ARCHITECTURES)}")
        head = _HEAD_ARCHITECTURES[archs[0]]
        pooler = head is not EncoderHead.MLM or archs[0] == "BertForPreTraining"
    num_classes, class_names = 2, ()
    if head is EncoderHead.CLASSIFIER:
        problem = hf.get("problem_type")
        require(problem in (None, "single_label_classification"), where,
                f"problem_type={problem!r} is not supported (only single-label classification)")
        id2label = hf.get("id2label")
        if isinstance(id2label, dict) and id2label:
            try:
                class_names = tuple(str(id2label[str(i)]) for i in range(len(id2label)))
            except KeyError:
                raise HFFormatError(f"{where}: id2label keys are not 0..{len(id2label) - 1}") from None
        num_classes = len(class_names) or int(hf.get("num_labels", 2))
        require(num_classes >= 2, where, f"num_labels={num_classes} (regression) is not supported; "
                "tfm classifies into 2 or more labels")
        require(pooler, where, "a sequence classifier without the pooler is not supported")
    else:
        require(hf.get("tie_word_embeddings", True), where,
                "tie_word_embeddings=false is not supported (the masked-LM output is the word embedding)")
    hidden, attn, cls_drop = (float(hf.get(k) if hf.get(k) is not None else 0.1) for k in
                              ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"))
    if head is EncoderHead.CLASSIFIER and hf.get("classifier_dropout") is not None and cls_drop != hidden:
        log.warning("%s: classifier_dropout=%s differs from hidden_dropout_prob=%s; tfm uses one dropout rate",
                    where, cls_drop, hidden)
    return ModelConfig(
        **PINNED,
        vocab_size=hf["vocab_size"],
        d_model=hf["hidden_size"],
        num_heads=hf["num_attention_heads"],
        num_layers=hf["num_hidden_layers"],
        d_ff=hf["intermediate_size"],
        max_len=hf.get("max_position_embeddings", 512),
        dropout_rate=hidden,
        attention_dropout_rate=attn,
        activation=ACTIVATIONS[act],
        num_classes=num_classes,
        class_names=class_names,
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        logits_bias=head is EncoderHead.MLM,
        type_vocab_size=int(hf.get("type_vocab_size", 2)),
        pooler=pooler,
        head=head,
    )


def _layers(cfg: ModelConfig):
    """(kind, Hugging Face name (no bert. prefix), tfm path, (in, out) of a linear), in the order
    both directions of the conversion walk them."""
    D, F = cfg.d_model, cfg.d_ff
    yield "norm", "embeddings.LayerNorm", "encoder/embedding_norm", None
    for i in range(cfg.num_layers):
        h, p = f"encoder.layer.{i}.", f"encoder/stack/layer_{i}/"
        yield "attention", h + "attention.", p + "self_attention", None
        yield "norm", h + "attention.output.LayerNorm", p + "self_attention_norm", None
        yield "linear", h + "intermediate.dense", p + "feed_forward/wi", (D, F)
        yield "linear", h + "output.dense", p + "feed_forward/wo", (F, D)
        yield "norm", h + "output.LayerNorm", p + "feed_forward_norm", None
    if cfg.pooler:
        yield "linear", "pooler.dense", "pooler", (D, D)


def _heads(cfg: ModelConfig):
    """The head's modules: (kind, Hugging Face name, tfm path, (in, out))."""
    if cfg.head is EncoderHead.CLASSIFIER:
        yield "linear", "classifier", "head", (cfg.d_model, cfg.num_classes)
    elif cfg.head is EncoderHead.MLM:
        yield "linear", "cls.predictions.transform.dense", "mlm/transform", (cfg.d_model, cfg.d_model)
        yield "norm", "cls.predictions.transform.LayerNorm", "mlm/transform_norm", None


def read_params(reader: TensorReader, cfg: ModelConfig) -> dict:
    """tfm's parameters from a BERT checkpoint (see the module docstring)."""
    prefix = "bert." if any(n.startswith("bert.") for n in reader.names()) else ""
    D, N, V = cfg.d_model, cfg.num_heads, cfg.vocab_size
    params: dict = {}

    def norm(name):
        if not reader.has(name + ".weight") and reader.has(name + ".gamma"):
            return reader.take(name + ".gamma", (D,)), reader.take(name + ".beta", (D,))
        return reader.take(name + ".weight", (D,)), reader.take(name + ".bias", (D,))

    def linear(name, n_in, n_out):
        return reader.take(name + ".weight", (n_out, n_in)).T, reader.take(name + ".bias", (n_out,))

    words = reader.take(prefix + "embeddings.word_embeddings.weight", (V, D))
    set_path(params, "embedder/embedding", words)
    set_path(params, "encoder/position_embedding/embedding",
             reader.take(prefix + "embeddings.position_embeddings.weight", (cfg.max_len, D)))
    set_path(params, "encoder/token_type_embedding/embedding",
             reader.take(prefix + "embeddings.token_type_embeddings.weight", (cfg.type_vocab_size, D)))
    modules = [(k, prefix + n, p, s) for k, n, p, s in _layers(cfg)] + list(_heads(cfg))
    for kind, name, path, shape in modules:
        if kind == "attention":
            for proj in ("query", "key", "value"):
                w, b = linear(name + "self." + proj, D, D)
                set_path(params, f"{path}/{proj}/kernel", convert.heads_in(w, N))
                set_path(params, f"{path}/{proj}/bias", convert.heads_bias(b, N))
            w, b = linear(name + "output.dense", D, D)
            set_path(params, f"{path}/out/kernel", convert.heads_out(w, N))
            set_path(params, f"{path}/out/bias", b)
        elif kind == "norm":
            scale, bias = norm(name)
            set_path(params, path + "/scale", scale)
            set_path(params, path + "/bias", bias)
        else:
            w, b = linear(name, *shape)
            set_path(params, path + "/kernel", w)
            set_path(params, path + "/bias", b)
    if cfg.head is EncoderHead.MLM:
        bias_names = [n for n in ("cls.predictions.bias", "cls.predictions.decoder.bias") if reader.has(n)]
        require(bool(bias_names), str(reader.directory), "tensor 'cls.predictions.bias' is missing")
        bias = reader.take(bias_names[0], (V,))
        for other in bias_names[1:]:
            if not np.array_equal(reader.take(other, (V,)), bias):
                raise HFFormatError(f"tensor {other!r} in {reader.files[other]} differs from {bias_names[0]!r}")
        set_path(params, "mlm/logits_bias", bias)
        name = "cls.predictions.decoder.weight"
        if reader.has(name) and not np.array_equal(reader.take(name, (V, D)), words):
            raise HFFormatError(f"tensor {name!r} in {reader.files[name]} differs from the word embeddings: "
                                "an untied masked-LM output is not supported")
    return params


def load_tokenizer(directory, hf: dict) -> Tokenizer:
    return WordPieceTokenizer.from_hf_dir(directory, pad_id=hf.get("pad_token_id"))


# ---------------------------------------------------------------------- export
def export_checks(cfg: ModelConfig) -> list[str]:
    """What PINNED cannot state: BERT always has token types, its MLM output has a bias."""
    problems = []
    if cfg.type_vocab_size < 1:
        problems.append("ModelConfig.type_vocab_size >= 1 is needed (it is 0)")
    if cfg.head is EncoderHead.MLM and not cfg.logits_bias:
        problems.append("ModelConfig.logits_bias=True is needed with head='mlm' (it is False)")
    if cfg.head is EncoderHead.CLASSIFIER and not cfg.pooler:
        problems.append("ModelConfig.pooler=True is needed with head='classifier' (it is False)")
    if cfg.activation not in EXPORT_ACTIVATIONS:
        problems.append(f"ModelConfig.activation={cfg.activation.value!r} has no BERT hidden_act")
    return problems


def export_problems(cfg: ModelConfig) -> list[str]:
    """Why ``cfg`` is not a BERT (empty when it is one)."""
    import sys

    return convert.export_problems(sys.modules[__name__], cfg)


def config_to_hf(cfg: ModelConfig, tokenizer: Tokenizer | None) -> dict:
    hf = {
        "architectures": [_EXPORT_ARCHITECTURES[cfg.head]],
        "model_type": "bert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.d_ff,
        "hidden_act": EXPORT_ACTIVATIONS[cfg.activation],
        "hidden_dropout_prob": cfg.dropout_rate,
        "attention_probs_dropout_prob": cfg.attention_dropout_rate,
        "max_position_embeddings": cfg.max_len,
        "type_vocab_size": cfg.type_vocab_size,
        "layer_norm_eps": cfg.layer_norm_eps,
        "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        "pad_token_id": tokenizer.pad_id if tokenizer is not None else 0,
        "tie_word_embeddings": True,
        "classifier_dropout": None,
        "use_cache": True,
    }
    if cfg.head is EncoderHead.CLASSIFIER:
        names = cfg.class_names or tuple(f"LABEL_{i}" for i in range(cfg.num_classes))
        hf["id2label"] = {str(i): n for i, n in enumerate(names)}
        hf["label2id"] = {n: i for i, n in enumerate(names)}
        hf["problem_type"] = "single_label_classification"
    return hf


def params_to_hf(params, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """The checkpoint :func:`read_params` reads back to the same arrays (transformers' names: the
    ``bert.`` prefix for the classifier and masked-LM models, none for BertModel; the tied
    decoder weight left out, as save_pretrained does)."""
    prefix = "" if cfg.head is EncoderHead.NONE else "bert."
    out = {prefix + "embeddings.word_embeddings.weight": get_path(params, "embedder/embedding"),
           prefix + "embeddings.position_embeddings.weight": get_path(params, "encoder/position_embedding/embedding"),
           prefix + "embeddings.token_type_embeddings.weight":
               get_path(params, "encoder/token_type_embedding/embedding")}
    modules = [(k, prefix + n, p, s) for k, n, p, s in _layers(cfg)] + list(_heads(cfg))
    for kind, name, path, _ in modules:
        if kind == "attention":
            for proj in ("query", "key", "value"):
                out[name + f"self.{proj}.weight"] = convert.flat_in(get_path(params, f"{path}/{proj}/kernel")).T
                out[name + f"self.{proj}.bias"] = get_path(params, f"{path}/{proj}/bias").reshape(-1)
            out[name + "output.dense.weight"] = convert.flat_out(get_path(params, f"{path}/out/kernel")).T
            out[name + "output.dense.bias"] = get_path(params, f"{path}/out/bias")
        elif kind == "norm":
            out[name + ".weight"] = get_path(params, path + "/scale")
            out[name + ".bias"] = get_path(params, path + "/bias")
        else:
            out[name + ".weight"] = get_path(params, path + "/kernel").T
            out[name + ".bias"] = get_path(params, path + "/bias")
    if cfg.head is EncoderHead.MLM:
        out["cls.predictions.bias"] = get_path(params, "mlm/logits_bias")
    return out

