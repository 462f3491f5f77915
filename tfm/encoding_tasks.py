"""Using an encoder-only model (BERT-style): classify texts, fill masks, embed sentences.

The model is a :class:`tfm.inference.Pretrained` (e.g. ``tfm.from_pretrained(DIR)`` of a BERT
directory), a training workdir, or a Hugging Face model directory path::

    import tfm
    clf = tfm.from_pretrained("~/models/bert-sst2")
    tfm.classify(clf, ["a gripping film", ("The cat sat.", "A cat was sitting.")])
    # [{"label": "positive", "score": 0.97, "probabilities": {"negative": 0.03, "positive": 0.97}}, ...]
    tfm.fill_mask(tfm.from_pretrained("~/models/bert-base-uncased"), "Paris is the [MASK] of France.")
    # [{"token": "capital", "token_id": 3007, "score": 0.99, "sequence": "paris is the capital of france."}, ...]
    tfm.embed(model, ["first sentence", "second"], pooling="mean")   # (2, D) float32

Texts are encoded as the model's tokenizer says: a WordPiece tokenizer gives ``[CLS] a [SEP]``
(``[CLS] a [SEP] b [SEP]`` with token types 0/1 for a pair), tfm's own tokenizers ``[bos] a
[eos]`` as its classifier was trained; texts longer than the model's ``max_len`` are truncated.
Batches are padded to a multiple of 8 tokens (fewer shapes to compile); padding is masked, so a
text's result does not depend on the batch it is in.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tfm import arguments
from tfm.config import Arch, EncoderHead, ModelConfig
from tfm.inference import Pretrained, WorkdirError, _resolve
from tfm.models import build_model

TextOrPair = str | tuple[str, str]


def _resolve_encoder(model) -> Pretrained:
    """A Pretrained encoder-only model from a Pretrained, a (config, params, tokenizer) tuple,
    a training workdir or a Hugging Face model directory."""
    if isinstance(model, (str, os.PathLike)):
        config = pathlib.Path(model).expanduser() / "config.json"
        try:
            is_hf = config.is_file() and "model_type" in json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            is_hf = False
        if is_hf:
            from tfm.interop import from_pretrained

            model = from_pretrained(model)
    return _resolve(model, Arch.ENCODER_CLASSIFIER)


@functools.lru_cache(maxsize=32)
def _compiled(cfg: ModelConfig, method: str):
    model = build_model(cfg)

    @jax.jit
    def run(params, tokens, segment_ids, token_types):
        return model.apply({"params": params}, tokens, segment_ids=segment_ids, token_types=token_types,
                           method=method)

    return run


def _encode(pre: Pretrained, inputs: Sequence[TextOrPair]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ids, token_types) of each text or pair, as the tokenizer's model reads them."""
    tok, cfg = pre.tokenizer, pre.config
    for x in inputs:
        if not (isinstance(x, str) or (isinstance(x, tuple) and len(x) == 2 and all(isinstance(s, str) for s in x))):
            raise TypeError(f"expected texts or (text, text) pairs; got {type(x).__name__} {x!r:.60}")
    pairs = [x for x in inputs if isinstance(x, tuple)]
    if hasattr(tok, "encode_for_model"):
        singles = [x for x in inputs if isinstance(x, str)]
        one = iter(tok.encode_for_model(singles, max_len=cfg.max_len)) if singles else iter(())
        two = iter(tok.encode_for_model([a for a, _ in pairs], [b for _, b in pairs], max_len=cfg.max_len)) \
            if pairs else iter(())
        return [next(two) if isinstance(x, tuple) else next(one) for x in inputs]
    if pairs:
        raise arguments.ArgumentError(f"the {tok.kind} tokenizer has no sentence-pair encoding (a BERT WordPiece tokenizer has)")
    out = []
    for ids in tok.encode_batch(list(inputs)):
        ids = np.concatenate([[tok.bos_id], ids[: cfg.max_len - 2], [tok.eos_id]]).astype(np.int32)
        out.append((ids, np.zeros_like(ids)))
    return out


def _run(pre: Pretrained, method: str, encoded, batch_size: int) -> list[np.ndarray]:
    """The model's ``method`` on each encoded text (row i of the result: text i, unpadded)."""
    arguments.integer("batch_size", batch_size, 1)
    cfg = pre.config
    fn = _compiled(cfg, method)
    out: list[np.ndarray] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start:start + batch_size]
        width = min(-(-max(len(ids) for ids, _ in chunk) // 8) * 8, cfg.max_len)
        rows = -(-len(chunk) // 8) * 8 if len(encoded) > 8 else len(chunk)
        tokens = np.zeros((rows, width), np.int32)
        types = np.zeros((rows, width), np.int32)
        segs = np.zeros((rows, width), np.int32)
        segs[len(chunk):, 0] = 1  # filler rows: one real token, results dropped
        for i, (ids, tt) in enumerate(chunk):
            tokens[i, :len(ids)], types[i, :len(ids)], segs[i, :len(ids)] = ids, tt, 1
        result = np.asarray(fn(pre.params, jnp.asarray(tokens), jnp.asarray(segs),
                               jnp.asarray(types) if cfg.type_vocab_size else None))
        for i, (ids, _) in enumerate(chunk):
            out.append(result[i, :len(ids)] if result.ndim == 3 else result[i])
    return out


def _as_list(texts) -> tuple[list, bool]:
    single = isinstance(texts, (str, tuple))
    return ([texts] if single else list(texts)), single


def class_names(config: ModelConfig) -> tuple[str, ...]:
    """The classifier's output names: ``config.class_names``, else "0", "1", ..."""
    return config.class_names or tuple(str(i) for i in range(config.num_classes))


def classify(model, texts_or_pairs: TextOrPair | Sequence[TextOrPair], *, batch_size: int = 32) -> Any:
    """Class probabilities of texts or (text, text) pairs.

    Returns, per input, ``{"label": name, "score": p, "probabilities": {name: p, ...}}`` (the
    names from the model's ``class_names``, a checkpoint's id2label); a list for a list of
    inputs, one dict for one text or pair.
    """
    pre = _resolve_encoder(model)
    if pre.config.head is not EncoderHead.CLASSIFIER:
        raise WorkdirError(f"this model has head={pre.config.head.value!r}; classify needs a classifier "
                           "(ModelConfig.head='classifier')")
    inputs, single = _as_list(texts_or_pairs)
    names = class_names(pre.config)
    results = []
    for logits in _run(pre, "classify", _encode(pre, inputs), batch_size):
        p = np.exp(logits - logits.max())
        p = p / p.sum()
        best = int(np.argmax(p))
        results.append({"label": names[best], "score": float(p[best]),
                        "probabilities": {n: float(v) for n, v in zip(names, p)}})
    return results[0] if single else results


def fill_mask(model, texts: str | Sequence[str], *, top_k: int = 5, batch_size: int = 32) -> Any:
    """The ``top_k`` most likely tokens at each mask token (e.g. ``[MASK]``) of each text.

    Returns, for a text with one mask, a list of ``{"token", "token_id", "score", "sequence"}``
    (best first; ``sequence`` is the text with that token filled in); with several masks, one
    such list per mask; for a list of texts, a list of those.
    """
    pre = _resolve_encoder(model)
    tok = pre.tokenizer
    if pre.config.head is not EncoderHead.MLM:
        raise WorkdirError(f"this model has head={pre.config.head.value!r}; fill_mask needs a masked-LM head "
                           "(ModelConfig.head='mlm', e.g. a BertForMaskedLM checkpoint)")
    if not hasattr(tok, "mask_id"):
        raise WorkdirError(f"the {tok.kind} tokenizer has no mask token")
    arguments.integer("top_k", top_k, 1, pre.config.vocab_size)
    inputs, single = _as_list(texts)
    encoded = _encode(pre, inputs)
    results = []
    for text, (ids, _), logits in zip(inputs, encoded, _run(pre, "mlm_logits", encoded, batch_size)):
        where = np.flatnonzero(ids == tok.mask_id)
        if not len(where):
            raise arguments.ArgumentError(f"no {tok.mask_token} in {text!r:.80}")
        per_mask = []
        for pos in where:
            z = logits[pos] - logits[pos].max()
            p = np.exp(z) / np.exp(z).sum()
            best = np.argsort(-p, kind="stable")[:top_k]
            cands = []
            for i in best:
                filled = ids.copy()
                filled[pos] = i
                cands.append({"token": tok.id_to_token(int(i)), "token_id": int(i), "score": float(p[i]),
                              "sequence": tok.decode([t for t in filled.tolist() if t != tok.mask_id])})
            per_mask.append(cands)
        results.append(per_mask[0] if len(per_mask) == 1 else per_mask)
    return results[0] if single else results


def embed(model, texts: str | Sequence[str], *, pooling: str = "mean", batch_size: int = 32) -> np.ndarray:
    """Sentence embeddings (N, D) float32 (one row (D,) for one text) from the last hidden
    states: "mean" over the text's tokens ([CLS] and [SEP] included, as sentence-transformers'
    mean pooling), or "cls" (the first token's state, before any pooler)."""
    if pooling not in ("mean", "cls"):
        raise arguments.ArgumentError(f"pooling={pooling!r}: expected 'mean' or 'cls'")
    pre = _resolve_encoder(model)
    inputs, single = _as_list(texts)
    states = _run(pre, "encode", _encode(pre, inputs), batch_size)
    out = np.stack([s.mean(0) if pooling == "mean" else s[0] for s in states]).astype(np.float32)
    return out[0] if single else out
