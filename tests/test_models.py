"""Model-level properties: causality, padding, permutation equivariance, packing, precision,
scan/remat equivalence, and hand-checkable sub-layers."""

from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tfm.attention as A
from tfm.config import get_preset
from tfm.layers import Block, Context, FeedForward
from tfm.models import build_model, dummy_inputs


def init(cfg, *inputs, seed=0):
    model = build_model(cfg)
    inputs = inputs or dummy_inputs(cfg, 2, 7)
    return model, nn.meta.unbox(model.init(jax.random.key(seed), *inputs))["params"]


def tokens(seed, shape, vocab=67, low=3):
    return jax.random.randint(jax.random.key(seed), shape, low, vocab, jnp.int32)


@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "rope"])
@pytest.mark.parametrize("norm", ["post", "pre"])
def test_decoder_lm_is_causal(positional, norm):
    cfg = get_preset("tiny_lm", positional=positional, norm=norm)
    model, params = init(cfg)
    x = tokens(1, (3, 11))
    base = np.asarray(model.apply({"params": params}, x))
    for j in (0, 4, 10):
        changed = x.at[:, j].set((x[:, j] + 7) % 60 + 3)
        out = np.asarray(model.apply({"params": params}, changed))
        np.testing.assert_array_equal(out[:, :j], base[:, :j])
        assert not np.allclose(out[:, j:], base[:, j:])


def test_decoder_lm_longer_than_one_attention_block():
    """T = 100 > 64: the causal self-attention runs in query blocks (64 + 36) and skips the hidden
    key blocks; every position's logits equal those of its own prefix (the square, T <= 64, for
    the first one), and a packed example that straddles the block boundary equals itself alone."""
    cfg = get_preset("tiny_lm", positional="learned")
    model, params = init(cfg)
    x = tokens(1, (2, 100))
    calls = []
    real = A.causal_attention
    with mock.patch.object(A, "causal_attention", lambda *a, **k: calls.append(1) or real(*a, **k)):
        full = np.asarray(model.apply({"params": params}, x))
    assert len(calls) == cfg.num_layers  # every layer took the blocked path
    for t in (40, 64, 80, 99):
        prefix = np.asarray(model.apply({"params": params}, x[:, : t + 1]))
        np.testing.assert_allclose(full[:, t], prefix[:, t], atol=1e-5)
    a, b = x[:1, :58], x[1:, :42]  # b occupies positions 58..99 of the packed row
    packed = jnp.concatenate([a, b], axis=1)
    seg = jnp.array([[1] * 58 + [2] * 42])
    pos = jnp.array([list(range(58)) + list(range(42))])
    out = np.asarray(model.apply({"params": params}, packed, segment_ids=seg, positions=pos))
    np.testing.assert_allclose(out[0, 58:], np.asarray(model.apply({"params": params}, b))[0], atol=1e-5)


def _segments(lengths, width):
    """(B, width) int32 segment ids of right-padded rows: 1 on the first lengths[b] tokens, 0 after."""
    return (np.arange(width)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)


def test_padded_source_tokens_do_not_change_outputs():
    cfg = get_preset("tiny_encdec")
    model, params = init(cfg)
    src = tokens(1, (2, 9)).at[0, 6:].set(0).at[1, 3:].set(0)  # padded sources
    tgt = tokens(2, (2, 5)).at[1, 4:].set(0)  # and a padded target position
    src_seg, tgt_seg = _segments([6, 3], 9), _segments([5, 4], 5)
    apply = lambda s, seg: np.asarray(model.apply(
        {"params": params}, s, tgt, inputs_segment_ids=seg, decoder_segment_ids=tgt_seg))
    base = apply(src, src_seg)
    # more padding (a longer S) changes nothing
    longer = jnp.concatenate([src, jnp.zeros((2, 4), jnp.int32)], axis=1)
    np.testing.assert_allclose(apply(longer, _segments([6, 3], 13)), base, rtol=1e-5, atol=1e-5)
    # nor does the source's padding without decoder segment ids (cross-attention still hides it)
    out = np.asarray(model.apply({"params": params}, longer, tgt, inputs_segment_ids=_segments([6, 3], 13)))
    np.testing.assert_allclose(out[0], base[0], rtol=1e-5, atol=1e-5)
    # and the non-padded source tokens do matter
    other = src.at[0, 2].set(5 if int(src[0, 2]) != 5 else 6)
    assert not np.allclose(apply(other, src_seg)[0], base[0])


def test_padding_positions_may_hold_any_token_id():
    """What padded positions (segment 0) hold does not change the outputs at real positions:
    padding is the segment ids, not an id."""
    cfg = get_preset("tiny_encdec")
    model, params = init(cfg)
    src, tgt = tokens(1, (2, 9)), tokens(2, (2, 5))
    src_seg, tgt_seg = _segments([6, 3], 9), _segments([5, 3], 5)
    apply = lambda s, t: np.asarray(model.apply(
        {"params": params}, s, t, inputs_segment_ids=src_seg, decoder_segment_ids=tgt_seg))
    base = apply(src, tgt)
    out = apply(jnp.where(src_seg > 0, src, tokens(3, (2, 9))), jnp.where(tgt_seg > 0, tgt, tokens(4, (2, 5))))
    valid = np.asarray(tgt_seg > 0)
    np.testing.assert_allclose(out[valid], base[valid], rtol=1e-5, atol=1e-5)


def test_classifier_mean_pools_over_segment_ids():
    """Mean pooling averages the tokens with segment id > 0 (all tokens without segment ids),
    against a NumPy mean of the encoder's outputs."""
    cfg = get_preset("tiny_classifier")  # mean pooling by default
    model, params = init(cfg)
    x = tokens(1, (2, 7)).at[0, 1].set(0)  # a real token 0 in row 0
    seg = _segments([7, 4], 7)
    encoded = np.asarray(model.apply({"params": params}, x, segment_ids=seg, method=lambda m, x, segment_ids: m.encoder(x, segment_ids=segment_ids)), np.float64)
    head = params["head"]
    for b, n in enumerate([7, 4]):
        pooled = encoded[b, :n].mean(0)
        want = pooled @ np.asarray(head["kernel"], np.float64) + np.asarray(head["bias"], np.float64)
        got = np.asarray(model.apply({"params": params}, x, segment_ids=seg))[b]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # without segment ids every token counts: row 1 then differs from its 4-token version
    full = np.asarray(model.apply({"params": params}, x))
    short = np.asarray(model.apply({"params": params}, x[1:, :4]))
    np.testing.assert_allclose(np.asarray(model.apply({"params": params}, x, segment_ids=seg))[1], short[0], rtol=1e-5, atol=1e-5)
    assert not np.allclose(full[1], short[0], atol=1e-4)


def _encode(cfg, x, seed=0):
    model = build_model(cfg)
    params = nn.meta.unbox(model.init(jax.random.key(seed), x))["params"]
    # run the encoder tower of the classifier directly
    return model.apply({"params": params}, x, method=lambda m, x: m.encoder(x))


def test_encoder_is_permutation_equivariant_without_positions_only():
    x = tokens(1, (2, 8))
    perm = jnp.array([3, 0, 7, 1, 6, 2, 5, 4])
    cfg = get_preset("tiny_classifier", positional="none")
    out, out_perm = _encode(cfg, x), _encode(cfg, x[:, perm])
    np.testing.assert_allclose(np.asarray(out[:, perm]), np.asarray(out_perm), rtol=1e-5, atol=1e-5)
    cfg = get_preset("tiny_classifier", positional="sinusoidal")
    out, out_perm = _encode(cfg, x), _encode(cfg, x[:, perm])
    assert not np.allclose(np.asarray(out[:, perm]), np.asarray(out_perm), atol=1e-3)


def test_packed_rows_equal_separate_examples():
    """Two examples packed into one row (segment ids, restarting positions) give the same logits
    as each example alone: packed examples cannot attend to each other."""
    cfg = get_preset("tiny_lm", positional="learned")
    model, params = init(cfg)
    a, b = tokens(1, (1, 5)), tokens(2, (1, 4))
    packed = jnp.concatenate([a, b, jnp.zeros((1, 3), jnp.int32)], axis=1)  # (1, 12)
    seg = jnp.array([[1] * 5 + [2] * 4 + [0] * 3])
    pos = jnp.array([list(range(5)) + list(range(4)) + [0] * 3])
    out = model.apply({"params": params}, packed, segment_ids=seg, positions=pos)
    np.testing.assert_allclose(np.asarray(out[0, :5]), np.asarray(model.apply({"params": params}, a))[0], atol=1e-5)
    np.testing.assert_allclose(np.asarray(out[0, 5:9]), np.asarray(model.apply({"params": params}, b))[0], atol=1e-5)

    cfg = get_preset("tiny_encdec")
    model, params = init(cfg)
    sa, sb, ta, tb = tokens(3, (1, 4)), tokens(4, (1, 6)), tokens(5, (1, 3)), tokens(6, (1, 5))
    src = jnp.concatenate([sa, sb], 1)
    tgt = jnp.concatenate([ta, tb], 1)
    out = model.apply(
        {"params": params},
        src,
        tgt,
        inputs_segment_ids=jnp.array([[1] * 4 + [2] * 6]),
        inputs_positions=jnp.array([list(range(4)) + list(range(6))]),
        decoder_segment_ids=jnp.array([[1] * 3 + [2] * 5]),
        decoder_positions=jnp.array([list(range(3)) + list(range(5))]),
    )
    np.testing.assert_allclose(np.asarray(out[0, :3]), np.asarray(model.apply({"params": params}, sa, ta))[0], atol=1e-5)
    np.testing.assert_allclose(np.asarray(out[0, 3:]), np.asarray(model.apply({"params": params}, sb, tb))[0], atol=1e-5)


@pytest.mark.parametrize("name", ["tiny_encdec", "tiny_lm", "tiny_classifier"])
def test_bfloat16_compute_stays_close_to_float32(name):
    cfg = get_preset(name, d_model=64, d_ff=128)
    model, params = init(cfg)
    x = dummy_inputs(cfg, 2, 7)
    x = tuple(tokens(i, a.shape) for i, a in enumerate(x))
    ref = np.asarray(model.apply({"params": params}, *x))
    bf = build_model(cfg.replace(dtype="bfloat16"))
    out = bf.apply({"params": params}, *x)  # float32 params, bfloat16 compute
    assert out.dtype == jnp.float32
    assert jax.tree.leaves(params)[0].dtype == jnp.float32
    rel = np.abs(np.asarray(out) - ref).max() / np.abs(ref).max()
    assert rel < 2e-2, rel


def _stack_layers(params):
    """Unrolled params (layer_0, layer_1, ...) -> scanned params (layers, stacked on axis 0)."""
    if not isinstance(params, dict):
        return params
    out = {}
    layer_keys = sorted((k for k in params if k.startswith("layer_")), key=lambda k: int(k[6:]))
    if layer_keys:
        out["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *[params[k] for k in layer_keys])
    for k, v in params.items():
        if not k.startswith("layer_"):
            out[k] = _stack_layers(v)
    return out


@pytest.mark.parametrize("name", ["tiny_encdec", "tiny_lm"])
def test_scan_and_remat_compute_the_same_function_as_unrolled(name):
    cfg = get_preset(name)
    model, params = init(cfg)
    x = tuple(tokens(i, (2, 7)) for i in range(len(dummy_inputs(cfg))))
    ref = jax.jit(model.apply)({"params": params}, *x)
    grad_ref = jax.jit(jax.grad(lambda p: model.apply({"params": p}, *x).sum()))(params)
    scanned = _stack_layers(params)
    for scan, remat in [(True, "none"), (False, "full"), (True, "dots")]:
        variant = build_model(cfg.replace(scan_layers=scan, remat=remat))
        p = scanned if scan else params
        abstract = jax.eval_shape(lambda: variant.init(jax.random.key(0), *x))
        shapes = jax.tree.map(jnp.shape, nn.meta.unbox(abstract)["params"])
        assert shapes == jax.tree.map(jnp.shape, p)
        out = jax.jit(variant.apply)({"params": p}, *x)
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)
        g = jax.jit(jax.grad(lambda p: variant.apply({"params": p}, *x).sum()))(p)
        g_ref = _stack_layers(grad_ref) if scan else grad_ref
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_feed_forward_equals_numpy():
    cfg = get_preset("tiny_lm", d_model=5, num_heads=1, d_ff=7)
    x = jax.random.normal(jax.random.key(0), (2, 3, 5))
    ffn = FeedForward(cfg)
    p = nn.meta.unbox(ffn.init(jax.random.key(1), x))["params"]
    out = ffn.apply({"params": p}, x)
    p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    h = np.maximum(np.asarray(x, np.float64) @ p64["wi"]["kernel"] + p64["wi"]["bias"], 0.0)
    ref = h @ p64["wo"]["kernel"] + p64["wo"]["bias"]
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_block_residual_and_layer_norm_arrangement(norm):
    """With the attention and FFN output projections zeroed every sub-layer returns its bias (0),
    so a post-LN block is LayerNorm(LayerNorm(x)) = LayerNorm(x) and a pre-LN block is identity."""
    cfg = get_preset("tiny_lm", norm=norm)
    x = jax.random.normal(jax.random.key(0), (2, 3, cfg.d_model)) * 3 + 1
    block = Block(cfg)
    ctx = Context(mask=None, positions=jnp.zeros((2, 3), jnp.int32))
    p = nn.meta.unbox(block.init(jax.random.key(1), x, ctx))["params"]
    p["self_attention"]["out"]["kernel"] = jnp.zeros_like(p["self_attention"]["out"]["kernel"])
    p["feed_forward"]["wo"]["kernel"] = jnp.zeros_like(p["feed_forward"]["wo"]["kernel"])
    out, _ = block.apply({"params": p}, x, ctx)
    xf = np.asarray(x, np.float64)
    if norm == "pre":
        ref = xf
    else:
        ref = (xf - xf.mean(-1, keepdims=True)) / np.sqrt(xf.var(-1, keepdims=True) + cfg.layer_norm_eps)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-4)


def test_dropout_only_in_training_mode():
    cfg = get_preset("tiny_lm", dropout_rate=0.3, attention_dropout_rate=0.2)
    model, params = init(cfg)
    x = tokens(1, (2, 7))
    a = model.apply({"params": params}, x)
    b = model.apply({"params": params}, x)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c = model.apply({"params": params}, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
    d = model.apply({"params": params}, x, deterministic=False, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(np.asarray(c), np.asarray(a)) and not np.allclose(np.asarray(c), np.asarray(d))


def test_embeddings_are_scaled_and_shared():
    cfg = get_preset("tiny_encdec")
    _, params = init(cfg)
    assert "target_embedder" not in params and "logits" not in params["decoder"]  # one shared table
    untied = get_preset("tiny_encdec", share_embeddings=False, tie_output=False)
    _, params = init(untied)
    assert "target_embedder" in params and "logits" in params["decoder"]


def test_sequence_longer_than_max_len_is_an_error():
    cfg = get_preset("tiny_lm", max_len=8)
    model, params = init(cfg, jnp.ones((1, 8), jnp.int32))
    with pytest.raises(ValueError, match="max_len"):
        model.apply({"params": params}, jnp.ones((1, 9), jnp.int32))


def test_params_carry_logical_axis_names():
    cfg = get_preset("tiny_encdec", scan_layers=True)
    model = build_model(cfg)
    boxed = model.init(jax.random.key(0), *dummy_inputs(cfg))["params"]
    specs = nn.get_partition_spec(boxed)
    assert specs["source_embedder"]["embedding"] == jax.sharding.PartitionSpec("vocab", "embed")
    q = specs["encoder"]["stack"]["layers"]["self_attention"]["query"]["kernel"]
    assert q == jax.sharding.PartitionSpec("layers", "embed", "heads", "head_dim")


# ---------------------------------------------------------------------- token id 0 is a token
def _swap_token_ids(params, a, b):
    """The same model with token ids a and b exchanged: embedding rows (and, for an untied output
    projection, its columns) swapped. Feeding it the input with a <-> b exchanged must give the
    original logits with vocabulary columns a <-> b exchanged, if no id is special."""

    def swap(path, x):
        names = [getattr(p, "key", None) for p in path]
        if names[-1] == "embedding":
            return x.at[jnp.array([a, b])].set(x[jnp.array([b, a])])
        if "logits" in names:  # untied output Dense: kernel (D, V), bias (V,)
            return x.at[..., jnp.array([a, b])].set(x[..., jnp.array([b, a])])
        return x

    return jax.tree_util.tree_map_with_path(swap, params)


@pytest.mark.parametrize("name", ["tiny_lm", "tiny_encdec", "tiny_classifier"])
def test_token_id_0_is_an_ordinary_token(name):
    """Regression (issue 14): token id 0 used to be masked out as padding, so GPT-2's real token
    0 broke every position after it. With ids 0 and 5 exchanged in both the parameters and the
    inputs, the model must compute the same function (up to the same exchange of logit columns),
    which holds only if neither id is treated specially."""
    cfg = get_preset(name, tie_output=False) if name == "tiny_lm" else get_preset(name)
    model, params = init(cfg)
    x = tokens(1, (2, 9)).at[0, 2].set(0).at[1, 5:].set(0).at[1, 0].set(5)
    y = tokens(2, (2, 6)).at[0, 1].set(0).at[1, 3].set(5)
    swapped = lambda t: jnp.where(t == 0, 5, jnp.where(t == 5, 0, t))
    params2 = _swap_token_ids(params, 0, 5)
    args = (x, y) if name == "tiny_encdec" else (x,)
    out = np.asarray(model.apply({"params": params}, *args))
    out2 = np.asarray(model.apply({"params": params2}, *map(swapped, args)))
    if name != "tiny_classifier":  # vocabulary logits: exchange columns 0 and 5 back
        out2 = out2[..., [5, 1, 2, 3, 4, 0, *range(6, out2.shape[-1])]]
    np.testing.assert_allclose(out2, out, rtol=2e-5, atol=2e-5)
