"""Scaled dot-product and multi-head attention against a NumPy float64 reference."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tfm import attention as A

# Every dimension a different prime, so a transposed axis cannot pass by accident.
B, T, S, N, H = 2, 5, 7, 3, 11


def np_attention(q, k, v, mask=None, bias=None):
    """Eq. (1) of the paper in float64, one head at a time, written independently of tfm."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    out = np.zeros(q.shape)
    weights = np.zeros((q.shape[0], q.shape[2], q.shape[1], k.shape[1]))
    for b in range(q.shape[0]):
        for n in range(q.shape[2]):
            scores = q[b, :, n] @ k[b, :, n].T / np.sqrt(q.shape[-1])  # (T, S)
            if bias is not None:
                scores = scores + np.broadcast_to(bias, (q.shape[0], q.shape[2], *scores.shape))[b, n]
            m = np.ones(scores.shape, bool)
            if mask is not None:
                m = np.broadcast_to(np.asarray(mask), (q.shape[0], q.shape[2], *scores.shape))[b, n]
            w = np.zeros(scores.shape)
            for t in range(scores.shape[0]):
                if m[t].any():
                    e = np.exp(scores[t][m[t]] - scores[t][m[t]].max())
                    w[t, m[t]] = e / e.sum()
            weights[b, n] = w
            out[b, :, n] = w @ v[b, :, n]
    return out, weights


def rand(key, shape, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(key), shape, dtype)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / np.abs(b).max()


def test_matches_float64_reference():
    q, k, v = rand(0, (B, T, N, H)), rand(1, (B, S, N, H)), rand(2, (B, S, N, H))
    out = A.scaled_dot_product_attention(q, k, v, implementation="xla")
    ref, _ = np_attention(q, k, v)
    assert out.shape == (B, T, N, H) and out.dtype == jnp.float32
    assert rel_err(out, ref) < 1e-5


def test_mask_and_bias_match_reference_and_masked_keys_get_zero_weight():
    q, k, v = rand(0, (B, T, N, H)), rand(1, (B, S, N, H)), rand(2, (B, S, N, H))
    mask = jax.random.bernoulli(jax.random.key(3), 0.6, (B, 1, T, S))
    mask = mask.at[:, :, :, 0].set(True)  # every row keeps at least one key here
    bias = rand(4, (1, N, T, S))
    out = A.scaled_dot_product_attention(q, k, v, mask, bias)
    ref, ref_w = np_attention(q, k, v, mask, bias)
    assert rel_err(out, ref) < 1e-5
    w = A.attention_weights(q, k, mask, bias)
    assert rel_err(w, ref_w) < 1e-5
    masked = ~np.broadcast_to(np.asarray(mask), w.shape)
    assert np.all(np.asarray(w)[masked] == 0.0)  # exactly zero, not just small
    np.testing.assert_allclose(np.asarray(w).sum(-1), 1.0, rtol=1e-6)


def test_fully_masked_row_gives_zeros_not_nan():
    q, k, v = rand(0, (B, T, N, H)), rand(1, (B, S, N, H)), rand(2, (B, S, N, H))
    mask = jnp.ones((B, 1, T, S), bool).at[0, 0, 2, :].set(False)
    out = A.scaled_dot_product_attention(q, k, v, mask)
    assert not np.isnan(np.asarray(out)).any()
    np.testing.assert_array_equal(np.asarray(out[0, 2]), 0.0)
    # and the gradient through such a row is finite too
    g = jax.grad(lambda q: A.scaled_dot_product_attention(q, k, v, mask).sum())(q)
    assert np.isfinite(np.asarray(g)).all()


def test_bfloat16_inputs_softmax_in_float32():
    q, k, v = (rand(i, (B, S if i else T, N, H)).astype(jnp.bfloat16) for i in range(3))
    w = A.attention_weights(q, k)
    assert w.dtype == jnp.float32
    out = A.scaled_dot_product_attention(q, k, v, implementation="xla")
    assert out.dtype == jnp.bfloat16
    ref, _ = np_attention(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32))
    assert rel_err(out.astype(jnp.float32), ref) < 2e-2


def test_agrees_with_jax_nn_dot_product_attention():
    """The library kernel (whose 'cudnn' implementation we dispatch to on GPU) agrees with ours."""
    q, k, v = rand(0, (B, T, N, H)), rand(1, (B, S, N, H)), rand(2, (B, S, N, H))
    mask = A.causal_mask(T, S)
    ours = A.scaled_dot_product_attention(q, k, v, mask, implementation="xla")
    theirs = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")
    assert rel_err(ours, theirs) < 1e-5


@pytest.mark.parametrize("t_len", [5, 64, 149])
def test_causal_blocks_cover_exactly_the_visible_keys(t_len):
    seen = np.zeros((t_len, t_len), int)
    for a, b, s_end in A.causal_blocks(t_len, t_len):
        seen[a:b, :s_end] += 1
    visible = np.tril(np.ones((t_len, t_len), int))
    assert (seen[visible == 1] == 1).all()  # every visible key once
    if t_len > 64:  # and some hidden blocks are skipped
        assert seen[visible == 0].sum() < (visible == 0).sum()


def test_causal_attention_in_blocks_matches_float64_reference_values_and_gradients():
    # T = 149 > 64: three query blocks (64, 64, 21), the last one uneven; packed-style mask with a
    # row that sees no key at all (query 70 of example 0).
    b, t, n, h = 2, 149, 3, 5
    q, k, v = rand(0, (b, t, n, h)), rand(1, (b, t, n, h)), rand(2, (b, t, n, h))
    mask = jax.random.bernoulli(jax.random.key(3), 0.8, (b, 1, t, t))
    mask = mask.at[:, :, jnp.arange(t), jnp.arange(t)].set(True).at[0, 0, 70, :].set(False)
    out = A.scaled_dot_product_attention(q, k, v, mask, causal=True)
    full = A.combine_masks(A.causal_mask(t), mask)
    ref, _ = np_attention(q, k, v, full)
    assert rel_err(out, ref) < 1e-5
    np.testing.assert_array_equal(np.asarray(out[0, 70]), 0.0)
    # gradients equal those of the unblocked path with the causal mask spelled out
    g = rand(4, (b, t, n, h))
    blocked = jax.grad(lambda q, k, v: (A.causal_attention(q, k, v, mask) * g).sum(), (0, 1, 2))
    square = jax.grad(lambda q, k, v: (A.scaled_dot_product_attention(q, k, v, full) * g).sum(), (0, 1, 2))
    for got, want in zip(blocked(q, k, v), square(q, k, v)):
        assert np.isfinite(np.asarray(got)).all() and rel_err(got, want) < 1e-5
    # without a mask, causal=True is the causal mask alone
    ref, _ = np_attention(q, k, v, A.causal_mask(t))
    assert rel_err(A.scaled_dot_product_attention(q, k, v, causal=True), ref) < 1e-5


def test_causal_blocks_only_for_blocked(monkeypatch):
    """The blocks were measured on XLA:CPU only (where the backend policy makes "auto" "blocked"):
    "xla" (the reference square), an unresolved "auto", "cudnn_if_supported" on float32, dropout,
    a bias and a single block all take the square; each result is the same function."""
    t = 130
    q, k, v = rand(0, (1, t, 2, 4)), rand(1, (1, t, 2, 4)), rand(2, (1, t, 2, 4))
    calls = []
    real = A.causal_attention
    monkeypatch.setattr(A, "causal_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    ref, _ = np_attention(q, k, v, A.causal_mask(t))

    def blocked(**kw):
        calls.clear()
        out = A.scaled_dot_product_attention(q, k, v, causal=True, **{"implementation": "blocked", **kw})
        assert rel_err(out, ref) < 1e-5
        return bool(calls)

    assert blocked()
    assert not blocked(implementation="xla")
    assert not blocked(implementation="auto")
    assert not blocked(bias=jnp.zeros((1, 1, t, t)))
    calls.clear()
    A.scaled_dot_product_attention(q[:, :64], k[:, :64], v[:, :64], causal=True, implementation="blocked")
    assert not calls  # T <= 64: one block, the square
    assert not blocked(implementation="cudnn_if_supported")  # float32: neither cuDNN nor blocks


def test_attention_dropout_is_inverted_dropout_with_expected_mean():
    q, k, v = rand(0, (1, 4, 1, 8)), rand(1, (1, 64, 1, 8)), jnp.ones((1, 64, 1, 8))
    outs = [
        A.scaled_dot_product_attention(q, k, v, dropout_rate=0.5, dropout_rng=jax.random.key(i), deterministic=False)
        for i in range(200)
    ]
    # rows of V are all ones, so without dropout every output is exactly 1; inverted dropout
    # keeps the expectation.
    assert abs(float(jnp.stack(outs).mean()) - 1.0) < 0.05
    assert not np.allclose(np.asarray(outs[0]), 1.0)
    with pytest.raises(ValueError, match="dropout_rng"):
        A.scaled_dot_product_attention(q, k, v, dropout_rate=0.5, deterministic=False)


def test_masks():
    np.testing.assert_array_equal(np.asarray(A.causal_mask(3))[0, 0], np.tril(np.ones((3, 3), bool)))
    np.testing.assert_array_equal(
        np.asarray(A.causal_mask(2, 5, offset=2))[0, 0], np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], bool)
    )
    valid = jnp.array([[True, True, False], [True, False, False]])
    assert A.padding_mask(valid).shape == (2, 1, 1, 3)
    np.testing.assert_array_equal(np.asarray(A.padding_mask(valid))[:, 0, 0], [[1, 1, 0], [1, 0, 0]])
    # segment ids work as the validity too (0 = padding, 1, 2, ... real)
    np.testing.assert_array_equal(np.asarray(A.padding_mask(jnp.array([[1, 2, 0]])))[0, 0, 0], [1, 1, 0])
    seg = jnp.array([[1, 1, 2, 0]])
    np.testing.assert_array_equal(
        np.asarray(A.segment_mask(seg, seg))[0, 0],
        [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
    )
    assert A.combine_masks(None, None) is None
    np.testing.assert_array_equal(
        np.asarray(A.combine_masks(A.causal_mask(3), A.padding_mask(jnp.array([[1, 1, 0]]))))[0, 0],
        [[1, 0, 0], [1, 1, 0], [1, 1, 0]],
    )


def test_multi_head_attention_equals_concat_heads_times_w_o():
    """MultiHead(Q,K,V) = Concat(head_1..head_h) W^O, head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)."""
    D = 13
    x, y = rand(0, (B, T, D)), rand(1, (B, S, D))
    mha = A.MultiHeadAttention(num_heads=N, head_dim=H, cross=True)
    params = nn.meta.unbox(mha.init(jax.random.key(2), x, y))["params"]
    mask = jax.random.bernoulli(jax.random.key(3), 0.7, (B, 1, T, S)).at[..., 0].set(True)
    out = mha.apply({"params": params}, x, y, mask=mask)

    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    xf, yf = np.asarray(x, np.float64), np.asarray(y, np.float64)
    heads = []
    for i in range(N):
        qi = xf @ p["query"]["kernel"][:, i] + p["query"]["bias"][i]  # (B, T, H)
        ki = yf @ p["key"]["kernel"][:, i] + p["key"]["bias"][i]
        vi = yf @ p["value"]["kernel"][:, i] + p["value"]["bias"][i]
        hi, _ = np_attention(qi[:, :, None], ki[:, :, None], vi[:, :, None], mask)
        heads.append(hi[:, :, 0])
    concat = np.concatenate(heads, axis=-1)  # (B, T, N*H)
    w_o = p["out"]["kernel"].reshape(N * H, D)
    ref = concat @ w_o + p["out"]["bias"]
    assert rel_err(out, ref) < 1e-5


def test_sown_attention_weights_do_not_change_outputs():
    D = 13
    x = rand(0, (B, T, D))
    mha = A.MultiHeadAttention(num_heads=N, head_dim=H)
    variables = mha.init(jax.random.key(2), x)
    mask = A.causal_mask(T)
    plain = mha.apply(variables, x, mask=mask)
    out, state = mha.apply(variables, x, mask=mask, mutable=["intermediates"])
    np.testing.assert_array_equal(np.asarray(out), np.asarray(plain))
    (w,) = state["intermediates"]["attention_weights"]
    assert w.shape == (B, N, T, T)
    np.testing.assert_allclose(np.asarray(w).sum(-1), 1.0, rtol=1e-6)
    assert np.all(np.asarray(w)[:, :, 0, 1:] == 0)


def test_real_tokens_from_masks_or_segment_ids_never_from_token_values():
    from tfm.attention import real_tokens

    tokens = jnp.zeros((2, 3), jnp.int32)  # id 0 everywhere: still real tokens
    np.testing.assert_array_equal(real_tokens(tokens, None), np.ones((2, 3), bool))
    segments = jnp.asarray([[1, 2, 0], [3, 0, 0]], jnp.int32)
    np.testing.assert_array_equal(real_tokens(tokens, segments), [[True, True, False], [True, False, False]])
    mask = np.array([[False, True, True], [True, True, True]])
    np.testing.assert_array_equal(real_tokens(tokens, mask), mask)
