"""The Llama-lineage ModelConfig options (issue 23) against NumPy float64 written here: RMSNorm,
the gated feed-forward, grouped-query / multi-query attention, rotate-half rotary embeddings
with Llama 3 frequency scaling, q/k/v biases without an output bias, an untied output head
without bias. A whole DecoderLM with all of them equals a NumPy forward pass; every parameter's
gradient equals a float64 central difference of it; scan/remat equal unrolled; cached decoding
equals the full forward pass; the encoder-decoder and classifier build with them."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tfm
from tfm.attention import MultiHeadAttention
from tfm.positional import apply_rope, rope_frequencies

from test_decoding import _lm_cached_and_full, _params, _rel_err, _encdec_cached_and_full
from test_models import _stack_layers

SCALING = (2.0, 1.0, 8.0, 64)  # factor, low_freq_factor, high_freq_factor, original max length
LLAMA = dict(d_model=64, num_heads=4, num_kv_heads=2, d_ff=96, num_layers=2, vocab_size=53, norm="pre",
             positional="rope", rope_layout="rotate_half", rope_scaling=SCALING, rope_base=10000.0,
             norm_kind="rms_norm", gated_ffn=True, activation="silu", use_bias=False, qkv_bias=True,
             tie_output=False, output_bias=False, scale_embeddings=False, layer_norm_eps=1e-5)


# ---------------------------------------------------------------------- NumPy float64 reference
def np_inv_freq(head_dim, base, scaling):
    """transformers' default and llama3 rope frequencies, in float64."""
    inv = 1.0 / base ** (np.arange(0, head_dim, 2) / head_dim)
    if scaling is None:
        return inv
    factor, low, high, old = scaling
    wavelen = 2 * np.pi / inv
    out = np.where(wavelen > old / low, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    medium = ~(wavelen < old / high) & ~(wavelen > old / low)
    return np.where(medium, (1 - smooth) * out / factor + smooth * out, out)


def np_rope(x, pos, base, layout, scaling):
    """x (B, T, N, H), pos (B, T)."""
    h = x.shape[-1]
    ang = pos[..., None, None] * np_inv_freq(h, base, scaling)  # (B, T, 1, H/2)
    cos, sin = np.cos(ang), np.sin(ang)
    if layout == "rotate_half":
        cos, sin = np.concatenate([cos, cos], -1), np.concatenate([sin, sin], -1)
        rot = np.concatenate([-x[..., h // 2:], x[..., : h // 2]], -1)
        return x * cos + rot * sin
    xe, xo = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = xe * cos - xo * sin, xe * sin + xo * cos
    return out


def np_rms(x, scale, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * scale


def np_attention(p, x, pos, cfg):
    """Grouped-query causal self-attention written per query head: head n uses kv head n // (N/K)."""
    n, k = cfg.num_heads, cfg.kv_heads
    q = np.einsum("btd,dnh->btnh", x, p["query"]["kernel"]) + p["query"].get("bias", 0)
    kk = np.einsum("btd,dkh->btkh", x, p["key"]["kernel"]) + p["key"].get("bias", 0)
    v = np.einsum("btd,dkh->btkh", x, p["value"]["kernel"]) + p["value"].get("bias", 0)
    rope = dict(base=cfg.rope_base, layout=cfg.rope_layout.value, scaling=cfg.rope_scaling)
    q, kk = np_rope(q, pos, **rope), np_rope(kk, pos, **rope)
    t = x.shape[1]
    causal = np.tril(np.ones((t, t), bool))
    heads = []
    for i in range(n):
        j = i // (n // k)
        s = np.einsum("bth,bsh->bts", q[:, :, i], kk[:, :, j]) / np.sqrt(cfg.head_dim)
        s = np.where(causal, s, -np.inf)
        w = np.exp(s - s.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        heads.append(np.einsum("bts,bsh->bth", w, v[:, :, j]))
    out = np.einsum("btnh,nhd->btd", np.stack(heads, 2), p["out"]["kernel"])
    return out + p["out"].get("bias", 0)


def np_lm(p, tokens, cfg):
    """The Llama-shaped DecoderLM in float64: logits (B, T, V)."""
    silu = lambda a: a / (1 + np.exp(-a))  # noqa: E731
    x = p["embedder"]["embedding"][tokens]
    pos = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape).astype(np.float64)
    stack = p["decoder"]["stack"]
    for i in range(cfg.num_layers):
        layer = stack[f"layer_{i}"]
        x = x + np_attention(layer["self_attention"], np_rms(x, layer["self_attention_norm"]["scale"],
                                                             cfg.layer_norm_eps), pos, cfg)
        h = np_rms(x, layer["feed_forward_norm"]["scale"], cfg.layer_norm_eps)
        ff = layer["feed_forward"]
        x = x + (silu(h @ ff["wi_gate"]["kernel"]) * (h @ ff["wi"]["kernel"])) @ ff["wo"]["kernel"]
    x = np_rms(x, stack["final_norm"]["scale"], cfg.layer_norm_eps)
    return x @ p["decoder"]["logits"]["kernel"]


def _f64(params):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), params)


@pytest.fixture(scope="module")
def llama():
    cfg = tfm.ModelConfig(arch="decoder_lm", max_len=128, dropout_rate=0.0, **LLAMA)
    model, params = _params(cfg, seed=5)
    return cfg, model, params


# ---------------------------------------------------------------------- pure functions
@pytest.mark.parametrize("layout", ["interleaved", "rotate_half"])
@pytest.mark.parametrize("scaling", [None, SCALING], ids=["plain", "llama3"])
def test_rope_layouts_and_llama3_scaling_equal_numpy(layout, scaling):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 3, 16))
    pos = rng.integers(0, 100, (2, 9))
    got = apply_rope(jnp.asarray(x, jnp.float32), jnp.asarray(pos), 500.0, layout, scaling)
    np.testing.assert_allclose(np.asarray(got), np_rope(x, pos, 500.0, layout, scaling), atol=2e-5)


def test_llama3_scaling_covers_its_three_bands():
    """head_dim 16, theta 1e4, (2, 1, 8, 64): wavelengths 6.3 (kept), 20 and 63 (smoothed), then divided."""
    inv = np_inv_freq(16, 10000.0, None)
    got = np.asarray(rope_frequencies(16, 10000.0, SCALING), np.float64)
    np.testing.assert_allclose(got, np_inv_freq(16, 10000.0, SCALING), rtol=1e-6)
    assert got[0] == pytest.approx(inv[0]) and got[-1] == pytest.approx(inv[-1] / 2)
    assert inv[1] / 2 < got[1] < inv[1]


def test_rotate_half_is_interleaved_after_a_feature_permutation():
    x = jax.random.normal(jax.random.key(0), (1, 5, 2, 8))
    pos = jnp.arange(5)[None]
    perm = np.concatenate([np.arange(0, 8, 2), np.arange(1, 8, 2)])  # interleaved -> halves
    a = apply_rope(x, pos, layout="interleaved")[..., perm]
    b = apply_rope(x[..., perm], pos, layout="rotate_half")
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_rms_norm_equals_numpy_and_has_no_bias():
    cfg = tfm.get_preset("tiny_lm", norm_kind="rms_norm", layer_norm_eps=1e-5)
    from tfm.layers import norm

    x = jax.random.normal(jax.random.key(0), (2, 3, 32)) * 3 + 1
    module = norm(cfg)
    p = nn.meta.unbox(module.init(jax.random.key(1), x))["params"]
    assert set(p) == {"scale"}
    scale = np.random.default_rng(0).standard_normal(32).astype(np.float32)
    got = module.apply({"params": {"scale": jnp.asarray(scale)}}, x)
    np.testing.assert_allclose(np.asarray(got), np_rms(np.asarray(x, np.float64), scale, 1e-5), rtol=1e-5, atol=1e-5)


def test_gqa_and_mqa_attention_equal_numpy_and_project_only_kv_heads():
    rng = np.random.default_rng(0)
    for kv in (2, 1):
        cfg = tfm.get_preset("tiny_lm", d_model=32, num_heads=4, num_kv_heads=kv, positional="rope",
                             rope_layout="rotate_half", use_bias=False, qkv_bias=True)
        mha = MultiHeadAttention.from_config(cfg, causal=True)
        x = jnp.asarray(rng.standard_normal((2, 6, 32)), jnp.float32)
        pos = jnp.broadcast_to(jnp.arange(6), (2, 6))
        shapes = nn.meta.unbox(jax.eval_shape(lambda: mha.init(jax.random.key(2), x, positions=pos)))["params"]
        assert shapes["key"]["kernel"].shape == (32, kv, 8) and shapes["value"]["bias"].shape == (kv, 8)
        assert shapes["query"]["kernel"].shape == (32, 4, 8) and "bias" not in shapes["out"]
        p = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), jnp.float32), shapes)
        got = jax.jit(lambda p: mha.apply({"params": p}, x, positions=pos))(p)
        want = np_attention(_f64(p), np.asarray(x, np.float64), np.asarray(pos, np.float64), cfg)
        assert _rel_err(got, want) < 1e-5


def test_validation_names_the_new_fields():
    for bad, field in [({"num_kv_heads": 3}, "num_kv_heads"), ({"num_kv_heads": 0}, "num_kv_heads"),
                       ({"rope_scaling": (0.5, 1, 4, 8)}, "rope_scaling"), ({"rope_scaling": (2, 1)}, "rope_scaling"),
                       ({"qkv_bias": "yes"}, "qkv_bias"), ({"gated_ffn": 1}, "gated_ffn"),
                       ({"norm_kind": "batch"}, "norm_kind"), ({"rope_layout": "x"}, "rope_layout")]:
        with pytest.raises(ValueError, match=f"ModelConfig.{field}"):
            tfm.get_preset("tiny_lm", **bad)
    cfg = tfm.get_preset("tiny_lm", rope_scaling=[8, 1, 4, 8192])  # a JSON list is read as the tuple
    assert cfg.rope_scaling == (8, 1, 4, 8192) and tfm.ModelConfig.from_dict(cfg.to_dict()) == cfg


# ---------------------------------------------------------------------- the whole model
def test_llama_shaped_lm_equals_numpy(llama):
    cfg, model, params = llama
    assert set(params["decoder"]["logits"]) == {"kernel"}  # untied head without bias
    tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 11))
    got = jax.jit(model.apply)({"params": params}, jnp.asarray(tokens, jnp.int32))
    assert _rel_err(got, np_lm(_f64(params), tokens, cfg)) < 2e-5


def test_every_gradient_equals_a_float64_central_difference(llama):
    cfg, model, params = llama
    tokens = np.random.default_rng(2).integers(0, cfg.vocab_size, (2, 7))
    w = np.random.default_rng(3).standard_normal((2, 7, cfg.vocab_size))  # loss = sum(w * logits)
    grads = jax.jit(jax.grad(lambda p: (model.apply({"params": p}, jnp.asarray(tokens, jnp.int32))
                                        * jnp.asarray(w, jnp.float32)).sum()))(params)
    p64 = _f64(params)
    flat, treedef = jax.tree_util.tree_flatten_with_path(p64)
    rng = np.random.default_rng(4)
    g_flat = jax.tree.leaves(grads)
    for i, (path, leaf) in enumerate(flat):
        d = rng.standard_normal(leaf.shape)
        h = 1e-5

        def loss(sign):
            leaves = [x + sign * h * d if j == i else x for j, (_, x) in enumerate(flat)]
            return (np_lm(jax.tree.unflatten(treedef, leaves), tokens, cfg) * w).sum()

        want = (loss(1) - loss(-1)) / (2 * h)
        got = float((np.asarray(g_flat[i], np.float64) * d).sum())
        assert got == pytest.approx(want, rel=2e-4, abs=1e-3), jax.tree_util.keystr(path)


def test_scan_and_remat_equal_unrolled(llama):
    cfg, model, params = llama
    x = jnp.asarray(np.random.default_rng(5).integers(0, cfg.vocab_size, (2, 7)), jnp.int32)
    ref = jax.jit(model.apply)({"params": params}, x)
    grad_ref = jax.jit(jax.grad(lambda p: model.apply({"params": p}, x).sum()))(params)
    for scan, remat in [(True, "dots")]:  # both at once (tests/test_models.py covers each alone)
        variant = tfm.build_model(cfg.replace(scan_layers=scan, remat=remat))
        p = _stack_layers(params) if scan else params
        np.testing.assert_allclose(np.asarray(jax.jit(variant.apply)({"params": p}, x)), np.asarray(ref),
                                   rtol=1e-5, atol=1e-5)
        g = jax.jit(jax.grad(lambda p: variant.apply({"params": p}, x).sum()))(p)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(_stack_layers(grad_ref) if scan else grad_ref)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kv", [2, 1], ids=["gqa", "mqa"])
def test_cached_decoding_equals_full_forward(llama, kv):
    cfg, _, _ = llama
    cfg = cfg.replace(num_kv_heads=kv, num_layers=1)
    model, params = _params(cfg, seed=6)
    rng = np.random.default_rng(0)
    prompts = jnp.asarray(rng.integers(0, cfg.vocab_size, (3, 5)), jnp.int32)
    cont = jnp.asarray(rng.integers(0, cfg.vocab_size, (3, 6)), jnp.int32)
    mask = np.ones((3, 5), bool)
    mask[1, :3] = mask[2, :4] = False  # left padding
    cached, full = _lm_cached_and_full(model, params, prompts, jnp.asarray(mask), cont)
    for t in range(cont.shape[1] + 1):
        assert _rel_err(cached[:, t], full[:, t]) < 1e-5, t
    # the cache holds only the kv heads
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), prompts, decode=True))
    key_cache = variables["cache"]["decoder"]["stack"]["layer_0"]["self_attention"]["cached_key"]
    assert key_cache.shape == (3, 5, kv, cfg.head_dim)


def test_encoder_decoder_and_classifier_take_the_options():
    opts = {k: v for k, v in LLAMA.items() if k not in ("vocab_size", "num_layers")}
    cfg = tfm.get_preset("tiny_encdec", max_len=64, num_layers=1, **opts)
    model, params = _params(cfg, seed=7)
    dec_attn = params["decoder"]["stack"]["layer_0"]["cross_attention"]
    assert dec_attn["key"]["kernel"].shape == (64, 2, 16)  # cross-attention is grouped too
    rng = np.random.default_rng(1)
    src = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 6)), jnp.int32)
    dec = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 5)), jnp.int32)
    cached, full, _ = _encdec_cached_and_full(model, params, src, jnp.ones((2, 6), bool), dec)
    assert _rel_err(cached, full) < 1e-5
    clf = tfm.get_preset("tiny_classifier", **opts)
    out = tfm.build_model(clf).apply({"params": _params(clf)[1]}, src)
    assert out.shape == (2, clf.num_classes) and np.isfinite(np.asarray(out)).all()
