"""The encoder-only options (issue 24): token-type embeddings, the embedding LayerNorm, the
pooler, the classifier and the masked-LM head, against a BERT written here in NumPy float64
(Devlin et al. 2019: post-LN blocks, learned positions, exact GELU), outputs and gradients."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tfm

CFG = tfm.ModelConfig(
    arch="encoder_classifier", vocab_size=23, d_model=12, num_heads=3, num_layers=2, d_ff=20, max_len=11,
    dropout_rate=0.0, activation="gelu_exact", norm="post", positional="learned", scale_embeddings=False,
    layer_norm_eps=1e-12, type_vocab_size=3, embedding_norm=True, pooler=True, pooling="first",
    num_classes=5, grad_kernels="autodiff")
MLM = CFG.replace(head="mlm", logits_bias=True)
BASE = CFG.replace(head="none")

TOKENS = np.array([[4, 9, 2, 17, 5, 0, 0], [3, 3, 22, 1, 8, 6, 11]], np.int32)
TYPES = np.array([[0, 0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 2, 2, 2]], np.int32)
SEGS = np.array([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]], np.int32)


def _init(cfg, seed=0):
    model = tfm.build_model(cfg)
    params = nn.meta.unbox(model.init(jax.random.key(seed), jnp.asarray(TOKENS))["params"])
    # random values everywhere (biases and norms too), so no term can hide behind a zero or a one
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [0.3 * jax.random.normal(k, x.shape, x.dtype) + (x if x.ndim == 1 else 0) for k, x in zip(keys, leaves)]
    return model, jax.tree.unflatten(tree, leaves)


# ---------------------------------------------------------------------- NumPy float64 BERT
def _ln(x, p, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _gelu(x):
    return x * 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def np_encode(p, cfg, tokens, types, segs):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    enc = p["encoder"]
    B, S = tokens.shape
    x = p["embedder"]["embedding"][tokens] + enc["position_embedding"]["embedding"][np.arange(S)][None]
    x = x + enc["token_type_embedding"]["embedding"][types]
    x = _ln(x, enc["embedding_norm"], cfg.layer_norm_eps)
    keep = (segs[:, None, :, None] > 0) & (segs[:, None, None, :] == segs[:, None, :, None])  # (B,1,S,S)
    for i in range(cfg.num_layers):
        L = enc["stack"][f"layer_{i}"]
        a = L["self_attention"]
        q = np.einsum("bsd,dnh->bnsh", x, a["query"]["kernel"]) + a["query"]["bias"][None, :, None]
        k = np.einsum("bsd,dnh->bnsh", x, a["key"]["kernel"]) + a["key"]["bias"][None, :, None]
        v = np.einsum("bsd,dnh->bnsh", x, a["value"]["kernel"]) + a["value"]["bias"][None, :, None]
        s = np.einsum("bnth,bnsh->bnts", q, k) / math.sqrt(cfg.head_dim)
        s = np.where(keep, s, -1e30)
        w = np.exp(s - s.max(-1, keepdims=True))
        w = np.where(keep, w, 0)
        w = w / np.maximum(w.sum(-1, keepdims=True), 1e-300)
        o = np.einsum("bnts,bnsh->bnth", w, v)
        o = np.einsum("bnth,nhd->btd", o, a["out"]["kernel"]) + a["out"]["bias"]
        x = _ln(x + o, L["self_attention_norm"], cfg.layer_norm_eps)
        f = L["feed_forward"]
        h = _gelu(x @ f["wi"]["kernel"] + f["wi"]["bias"]) @ f["wo"]["kernel"] + f["wo"]["bias"]
        x = _ln(x + h, L["feed_forward_norm"], cfg.layer_norm_eps)
    return x, p


def np_classify(p, cfg, tokens, types, segs):
    x, p = np_encode(p, cfg, tokens, types, segs)
    pooled = np.tanh(x[:, 0] @ p["pooler"]["kernel"] + p["pooler"]["bias"])
    return pooled @ p["head"]["kernel"] + p["head"]["bias"]


def np_mlm(p, cfg, tokens, types, segs):
    x, p = np_encode(p, cfg, tokens, types, segs)
    m = p["mlm"]
    h = _ln(_gelu(x @ m["transform"]["kernel"] + m["transform"]["bias"]), m["transform_norm"], cfg.layer_norm_eps)
    return h @ p["embedder"]["embedding"].T + m["logits_bias"]


def _apply(model, params, method, **kw):
    return model.apply({"params": params}, jnp.asarray(TOKENS), token_types=jnp.asarray(TYPES),
                       segment_ids=jnp.asarray(SEGS), method=method, **kw)


# ---------------------------------------------------------------------- tests
def test_parameters_of_each_head():
    from tfm.models import param_shapes as _shapes

    p = _shapes(CFG)
    assert set(p) == {"embedder", "encoder", "pooler", "head"}
    assert p["encoder"]["token_type_embedding"]["embedding"].shape == (3, 12)
    assert set(p["encoder"]["embedding_norm"]) == {"scale", "bias"}
    p = _shapes(MLM)
    assert set(p) == {"embedder", "encoder", "pooler", "mlm"}
    assert set(p["mlm"]) == {"transform", "transform_norm", "logits_bias"}
    p = _shapes(BASE.replace(pooler=False))
    assert set(p) == {"embedder", "encoder"}
    # the defaults keep the classifier's tree as it was: no new parameter
    p = _shapes(tfm.get_preset("tiny_classifier"))
    assert set(p) == {"embedder", "encoder", "head"}
    assert set(p["encoder"]) == {"stack"}


def test_hidden_states_classifier_and_mlm_match_numpy():
    model, p = _init(CFG)
    got = _apply(model, p, "encode")
    want, _ = np_encode(p, CFG, TOKENS, TYPES, SEGS)
    np.testing.assert_allclose(np.asarray(got)[SEGS > 0], want[SEGS > 0], atol=2e-5)
    np.testing.assert_allclose(np.asarray(_apply(model, p, None)), np_classify(p, CFG, TOKENS, TYPES, SEGS),
                               atol=2e-5)
    model, p = _init(MLM)
    got = _apply(model, p, None)
    assert got.dtype == jnp.float32 and got.shape == (2, 7, 23)
    np.testing.assert_allclose(np.asarray(got)[SEGS > 0], np_mlm(p, MLM, TOKENS, TYPES, SEGS)[SEGS > 0], atol=2e-5)
    model, p = _init(BASE)
    np.testing.assert_allclose(np.asarray(_apply(model, p, None))[SEGS > 0],
                               np_encode(p, BASE, TOKENS, TYPES, SEGS)[0][SEGS > 0], atol=2e-5)


def _grad_check(cfg, ref, leaf_paths):
    """jax.grad of sum(logits * R) against central differences of the float64 reference."""
    model, p = _init(cfg)
    out_shape = _apply(model, p, None).shape
    r = np.random.default_rng(3).standard_normal(out_shape)
    if len(out_shape) == 3:
        r = r * (SEGS > 0)[..., None]

    def loss(params):
        return jnp.sum(_apply(model, params, None) * jnp.asarray(r, jnp.float32))

    grads = jax.grad(loss)(p)
    p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    rng = np.random.default_rng(4)
    for path in leaf_paths:
        node, gnode = p64, grads
        for k in path.split("/"):
            node, gnode = node[k], gnode[k]
        for _ in range(2):
            idx = tuple(int(rng.integers(0, n)) for n in node.shape)
            eps = 1e-6
            old = node[idx]
            node[idx] = old + eps
            up = np.sum(ref(p64, cfg, TOKENS, TYPES, SEGS) * r)
            node[idx] = old - eps
            down = np.sum(ref(p64, cfg, TOKENS, TYPES, SEGS) * r)
            node[idx] = old
            np.testing.assert_allclose(float(np.asarray(gnode)[idx]), (up - down) / (2 * eps), rtol=2e-3,
                                       atol=2e-4, err_msg=f"{path}{idx}")


def test_classifier_gradients_match_numpy():
    _grad_check(CFG, np_classify, ["encoder/token_type_embedding/embedding", "encoder/embedding_norm/scale",
                                   "encoder/embedding_norm/bias", "pooler/kernel", "pooler/bias", "head/kernel",
                                   "encoder/stack/layer_0/self_attention/query/kernel"])


def test_mlm_gradients_match_numpy():
    _grad_check(MLM, np_mlm, ["mlm/transform/kernel", "mlm/transform/bias", "mlm/transform_norm/scale",
                              "mlm/logits_bias", "embedder/embedding", "encoder/token_type_embedding/embedding"])


def test_methods_refuse_a_head_the_model_lacks():
    model, p = _init(CFG)
    with pytest.raises(ValueError, match="mlm_logits needs ModelConfig.head='mlm'"):
        _apply(model, p, "mlm_logits")
    with pytest.raises(ValueError, match="token_types: token id 3"):
        model.apply({"params": p}, jnp.asarray(TOKENS), token_types=jnp.full(TOKENS.shape, 3, jnp.int32))
    model, p = _init(tfm.get_preset("tiny_classifier"))
    with pytest.raises(ValueError, match="type_vocab_size=0"):
        model.apply({"params": p}, jnp.ones((1, 3), jnp.int32), token_types=jnp.zeros((1, 3), jnp.int32))


def test_validation_names_the_field():
    with pytest.raises(ValueError, match="ModelConfig.type_vocab_size"):
        CFG.replace(type_vocab_size=-1)
    with pytest.raises(ValueError, match="ModelConfig.class_names.*one name per class"):
        CFG.replace(class_names=("a", "b"))
    with pytest.raises(ValueError, match="ModelConfig.head: unknown value 'pretraining'"):
        CFG.replace(head="pretraining")
    cfg = CFG.replace(class_names=["a", "b", "c", "d", "e"])  # a JSON list becomes a tuple
    assert cfg.class_names == ("a", "b", "c", "d", "e")
    assert tfm.ModelConfig.from_dict(cfg.to_dict()) == cfg
