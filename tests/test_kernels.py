"""tfm.kernels, the backend-tuning room, and the setting that chooses it (grad_kernels).

* The CPU kernels against NumPy float64: ``dense_dot_general`` (values, gradients, the fall-back
  to lax.dot_general, the compiled layout it exists for), the closed-form LayerNorm gradient
  (against float64 finite differences), the flat all-reduce (its program).
* The setting: "auto" and "autodiff" build the same parameters and give the same loss and
  gradients for all three architectures; "autodiff" has no custom_vjp, so jax.jvp, jax.jacfwd
  and Hessian-vector products work through every architecture; "auto" is plain autodiff off
  CPU; under "auto" on CPU forward mode raises JAX's standard custom_vjp error."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tfm import kernels
from tfm.config import GradKernels, get_preset
from tfm.kernels import dense_dot_general
from tfm.models import build_model


def _dense_dims(x_ndim: int, k: int):
    return ((tuple(range(x_ndim - k, x_ndim)), tuple(range(k))), ((), ()))


# Every dimension a different prime; both weight-gradient branches (K <= N and K > N), the
# attention projections' (D) -> (N, H) kernels and the output projection's (N, H) -> D one.
CASES = {
    "K<N": ((2, 3, 5), (5, 7), 1),
    "K>N": ((2, 3, 7), (7, 5), 1),
    "features (N, H)": ((3, 5, 7), (7, 2, 3), 1),
    "contract (N, H)": ((3, 5, 2, 3), (2, 3, 11), 2),
    "2-D input": ((13, 7), (7, 3), 1),
}


@pytest.mark.parametrize("name", CASES)
def test_value_and_gradients_match_float64(name):
    x_shape, w_shape, k = CASES[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    out_shape = x_shape[: len(x_shape) - k] + w_shape[k:]
    r = rng.standard_normal(out_shape)  # loss = sum(y * r), so dL/dy = r

    x2 = x.reshape(-1, int(np.prod(w_shape[:k])))
    w2 = w.reshape(int(np.prod(w_shape[:k])), -1)
    r2 = r.reshape(x2.shape[0], -1)
    want_y = (x2 @ w2).reshape(out_shape)
    want_dx = (r2 @ w2.T).reshape(x_shape)
    want_dw = (x2.T @ r2).reshape(w_shape)

    def loss(x, w):
        y = dense_dot_general(x, w, _dense_dims(x.ndim, k))
        return jnp.sum(y * jnp.asarray(r, jnp.float32)), y

    (_, y), (dx, dw) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)
    )
    np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, want_dw, rtol=1e-5, atol=1e-5)


def test_other_products_fall_back_to_lax_dot_general():
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.standard_normal((3, 5, 7)), jnp.float32)
    b = jnp.asarray(rng.standard_normal((3, 7, 2)), jnp.float32)
    c = jnp.asarray(rng.standard_normal((5, 11)), jnp.float32)
    table = jnp.asarray(rng.standard_normal((13, 7)), jnp.float32)
    cases = [
        (a, b, (((2,), (1,)), ((0,), (0,)))),  # batch dims (attention's products)
        (a, c, (((1,), (0,)), ((), ()))),  # contracting a middle dim
        (a, table, (((2,), (1,)), ((), ()))),  # rhs contracted on its last dim (x E^T)
    ]
    for lhs, rhs, dims in cases:
        f = lambda lhs, rhs, fn, dims=dims: jnp.sum(fn(lhs, rhs, dims) ** 2)  # noqa: E731
        want = jax.value_and_grad(f, argnums=(0, 1))(lhs, rhs, jax.lax.dot_general)
        got = jax.value_and_grad(f, argnums=(0, 1))(lhs, rhs, dense_dot_general)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(g, w, rtol=1e-6)
    # A precision request is honoured (passed on), not silently dropped.
    hi = dense_dot_general(c, c.T, (((1,), (0,)), ((), ())), precision=jax.lax.Precision.HIGHEST)
    c64 = np.asarray(c, np.float64)
    np.testing.assert_allclose(hi, c64 @ c64.T, rtol=1e-5, atol=1e-5)


def test_dtypes_are_kept():
    x = jnp.ones((2, 3, 8), jnp.bfloat16)
    w = jnp.ones((8, 16), jnp.bfloat16)
    y, vjp = jax.vjp(lambda x, w: dense_dot_general(x, w, _dense_dims(3, 1)), x, w)
    dx, dw = vjp(jnp.ones_like(y))
    assert y.dtype == dx.dtype == dw.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(dw, np.float32), np.full((8, 16), 6.0))


def test_flax_dense_with_it_is_flax_dense():
    x = jax.random.normal(jax.random.key(0), (3, 5, 7))
    plain = nn.DenseGeneral((2, 3), use_bias=True)
    ours = nn.DenseGeneral((2, 3), use_bias=True, dot_general=dense_dot_general)
    params = plain.init(jax.random.key(1), x)

    def grads(module):
        return jax.grad(lambda p, x: jnp.sum(jnp.sin(module.apply(p, x))), argnums=(0, 1))(params, x)

    for g, w in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(plain))):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def _mlp_grad_hlo(dot_general) -> str:
    """Compiled HLO of a GELU MLP's gradient at cpu_small's per-core sizes (384 tokens)."""
    x = jnp.ones((6, 64, 128))
    w1, w2 = jnp.ones((128, 512)), jnp.ones((512, 128))

    def loss(w1, w2):
        h = jax.nn.gelu(dot_general(x, w1, _dense_dims(3, 1)))
        return jnp.sum(dot_general(h, w2, _dense_dims(3, 1)) ** 2)

    return jax.jit(jax.grad(loss, argnums=(0, 1))).lower(w1, w2).compile().as_text()


def _eigen_weight_grads(hlo: str) -> list[str]:
    """Plain `dot` instructions (Eigen, outside YNNPACK fusions) contracting over the tokens."""
    return [line for line in hlo.splitlines()
            if re.search(r"= f32\[\d+,\d+\]\{1,0\} dot\(", line) and "lhs_contracting_dims={0}" in line]


def test_cpu_weight_gradients_compile_to_ynnpack():
    if jax.default_backend() != "cpu":
        pytest.skip("an XLA:CPU layout property")
    baseline = _mlp_grad_hlo(jax.lax.dot_general)
    if "ynn_fusion" not in baseline or not _eigen_weight_grads(baseline):
        pytest.skip("this XLA:CPU build does not split dots between YNNPACK and Eigen")
    hlo = _mlp_grad_hlo(dense_dot_general)
    assert _eigen_weight_grads(hlo) == []
    # All four products of the backward pass and the two forward ones run in YNNPACK.
    assert hlo.count("ynn_fusion") >= len(re.findall(r"ynn_fusion(\.\d+)? = ", baseline)) + 2


def _np_layer_norm(x, scale, bias, eps):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * scale + bias


@pytest.mark.parametrize("setting", ["cpu", "autodiff"])
def test_layer_norm_values_and_gradients_match_float64_finite_differences(setting):
    rng = np.random.default_rng(0)
    x = rng.normal(1.5, 2.0, (2, 3, 8))
    scale, bias, w = rng.normal(1.0, 0.3, 8), rng.normal(0.0, 0.3, 8), rng.normal(size=x.shape)
    eps = 1e-5

    def loss64(x, scale, bias):  # the NumPy float64 reference
        return float((w * _np_layer_norm(x, scale, bias, eps)).sum())

    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    y = kernels.layer_norm(f32(x), f32(scale), f32(bias), eps, setting)
    np.testing.assert_allclose(y, _np_layer_norm(x, scale, bias, eps), rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda *a: (f32(w) * kernels.layer_norm(*a, eps, setting)).sum(), argnums=(0, 1, 2))(
        f32(x), f32(scale), f32(bias))
    args = [x, scale, bias]
    for i, grad in enumerate(grads):
        numeric = np.zeros_like(args[i])
        for j in np.ndindex(args[i].shape):  # central differences, float64
            up = [a.copy() for a in args]
            down = [a.copy() for a in args]
            up[i][j] += 1e-6
            down[i][j] -= 1e-6
            numeric[j] = (loss64(*up) - loss64(*down)) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-4)
    # Each gradient keeps its input's dtype (bfloat16 compute gets bfloat16 gradients).
    bf16 = lambda a: jnp.asarray(a, jnp.bfloat16)  # noqa: E731
    g = jax.grad(lambda *a: kernels.layer_norm(*a, eps, setting).sum(), argnums=(0, 1, 2))(
        bf16(x), f32(scale), bf16(bias))
    assert [a.dtype for a in g] == [jnp.bfloat16, jnp.float32, jnp.bfloat16]


def test_device_sum_is_one_flat_all_reduce_under_cpu_only():
    if jax.default_backend() != "cpu":
        pytest.skip("the flat all-reduce is a CPU kernel")
    tree = {"w": jnp.arange(12.0).reshape(2, 2, 3), "b": jnp.arange(2.0), "n": jnp.arange(4).reshape(2, 2)}

    def program(setting):
        fn = jax.vmap(lambda t: kernels.device_sum(t, "i", setting), axis_name="i")
        out = jax.jit(fn)(tree)
        for key, x in tree.items():  # a sum over the mapped axis, whatever the setting
            np.testing.assert_array_equal(out[key][0], np.asarray(x).sum(0))
        return [e for e in jax.make_jaxpr(fn)(tree).eqns if e.primitive.name == "psum"]

    flat, plain = program("cpu"), program("autodiff")
    # one all-reduce per dtype (float32, int32) of one buffer each, against one per leaf
    assert sorted(len(e.invars) for e in flat) == [1, 1]
    assert sum(len(e.invars) for e in plain) == 3


# ---------------------------------------------------------------------- the setting on models
# the encoder-decoder is the slowest to compile (~11 s each here): in the slow run
ARCHS = [pytest.param("tiny_encdec", marks=pytest.mark.slow), "tiny_lm", "tiny_classifier"]


def _loss_fn(name, setting, seed=0, **overrides):
    """(params, boxed params, loss(params)) of a tiny preset: a fixed random projection of its
    outputs."""
    small = dict(num_layers=1, d_model=16, num_heads=2, d_ff=24, vocab_size=13)
    cfg = get_preset(name, grad_kernels=setting, **{**small, **overrides})
    rng = np.random.default_rng(seed)
    tokens = [jnp.asarray(rng.integers(0, cfg.vocab_size, (2, n)), jnp.int32) for n in (7, 5)]
    inputs = tokens if name == "tiny_encdec" else tokens[:1]
    model = build_model(cfg)
    params = jax.jit(model.init)(jax.random.key(seed), *inputs)["params"]
    out_shape = jax.eval_shape(lambda p: model.apply({"params": p}, *inputs), params).shape
    r = jnp.asarray(rng.standard_normal(out_shape) / np.sqrt(np.prod(out_shape)), jnp.float32)

    def loss(params):
        return jnp.sum(model.apply({"params": params}, *inputs) * r)

    return nn.meta.unbox(params), params, loss


def _has_custom_vjp(fn, *args) -> bool:
    return "custom_vjp_call" in str(jax.make_jaxpr(fn)(*args))


@pytest.mark.parametrize("name", ARCHS)
def test_auto_and_autodiff_build_the_same_parameters_and_give_the_same_loss_and_gradients(name):
    p_auto, boxed_auto, loss_auto = _loss_fn(name, "auto")
    p_plain, boxed_plain, loss_plain = _loss_fn(name, "autodiff")
    # the same tree: names, shapes, dtypes, logical axes and (same seed) values
    assert nn.get_partition_spec(boxed_auto) == nn.get_partition_spec(boxed_plain)
    jax.tree.map(np.testing.assert_array_equal, p_auto, p_plain)
    # CPU kernels in "auto" on CPU; none in "autodiff"
    assert _has_custom_vjp(loss_auto, p_auto) == (jax.default_backend() == "cpu")
    assert not _has_custom_vjp(loss_plain, p_plain)
    (l_auto, g_auto), (l_plain, g_plain) = (jax.jit(jax.value_and_grad(f))(p_auto)
                                            for f in (loss_auto, loss_plain))
    np.testing.assert_allclose(l_auto, l_plain, rtol=1e-6, atol=1e-7)
    scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(g_plain))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale),
                 g_auto, g_plain)


def _direction(params, seed=1):
    """A random unit vector in parameter space (drawn with NumPy: no per-shape compilation)."""
    rng = np.random.default_rng(seed)
    v = jax.tree.map(lambda x: rng.standard_normal(x.shape), params)
    norm = np.sqrt(sum(np.sum(t * t) for t in jax.tree.leaves(v)))
    return jax.tree.map(lambda t: jnp.asarray(t / norm, jnp.float32), v)


def _shift(params, v, eps):
    return jax.tree.map(lambda p, t: p + eps * t, params, v)


def _vdot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("name", ARCHS)
def test_jvp_through_every_architecture_with_autodiff(name):
    """The directional derivative by jax.jvp against reverse mode and central differences."""
    params, _, loss = _loss_fn(name, "autodiff", activation="gelu")  # smooth, for differences
    v = _direction(params)
    loss_at = jax.jit(loss)
    _, tangent = jax.jit(lambda p, t: jax.jvp(loss, (p,), (t,)))(params, v)
    np.testing.assert_allclose(tangent, _vdot(jax.jit(jax.grad(loss))(params), v), rtol=1e-4, atol=1e-7)
    eps = 1e-2
    numeric = (loss_at(_shift(params, v, eps)) - loss_at(_shift(params, v, -eps))) / (2 * eps)
    np.testing.assert_allclose(tangent, numeric, rtol=1e-2, atol=1e-5)


def test_hessian_vector_product_and_jacfwd_with_autodiff():
    """Forward over reverse (an HVP) against central differences of the gradient, and jacfwd
    over one parameter vector against reverse mode."""
    params, _, loss = _loss_fn("tiny_lm", "autodiff", activation="gelu")
    v = _direction(params)
    grad_at = jax.jit(jax.grad(loss))
    eps = 1e-2
    hvp = jax.jit(lambda p, t: jax.jvp(jax.grad(loss), (p,), (t,))[1])(params, v)
    g_up, g_down = grad_at(_shift(params, v, eps)), grad_at(_shift(params, v, -eps))
    numeric_hvp = jax.tree.map(lambda a, b: (a - b) / (2 * eps), g_up, g_down)
    scale = max(float(np.abs(h).max()) for h in jax.tree.leaves(numeric_hvp))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=5e-2, atol=1e-2 * scale), hvp, numeric_hvp)
    np.testing.assert_allclose(_vdot(hvp, v), _vdot(numeric_hvp, v), rtol=2e-2, atol=1e-3 * scale)

    path, leaf = next((p, x) for p, x in jax.tree_util.tree_leaves_with_path(params) if x.ndim == 1)

    def of_leaf(x):
        return loss(jax.tree_util.tree_map_with_path(lambda q, y: x if q == path else y, params))

    want = dict(jax.tree_util.tree_leaves_with_path(grad_at(params)))[path]
    np.testing.assert_allclose(jax.jit(jax.jacfwd(of_leaf))(leaf), want, rtol=1e-4, atol=1e-6)


def test_forward_mode_under_auto_on_cpu_raises_the_custom_vjp_error():
    if jax.default_backend() != "cpu":
        pytest.skip("'auto' has no custom_vjp off CPU")
    params, _, loss = _loss_fn("tiny_lm", "auto")
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff \\(jvp\\) to a custom_vjp"):
        jax.jvp(loss, (params,), (params,))


def test_auto_is_plain_autodiff_off_cpu(monkeypatch):
    """The CPU kernels are decided by the backend policy when the model is built: another
    backend gets none, and "auto" that reaches the kernels unresolved is the plain path."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert not kernels.cpu_kernels(GradKernels.AUTO)
    assert kernels.cpu_kernels(GradKernels.CPU)
    params, _, loss = _loss_fn("tiny_lm", "auto")
    assert not _has_custom_vjp(loss, params)
    jax.jit(lambda p: jax.jvp(loss, (p,), (p,)))(params)  # forward mode works
    psums = [e for e in jax.make_jaxpr(jax.vmap(lambda t: kernels.device_sum(t, "i", "auto"), axis_name="i"))(
        {"a": jnp.ones((2, 3)), "b": jnp.ones((2,))}).eqns if e.primitive.name == "psum"]
    assert sum(len(e.invars) for e in psums) == 2  # lax.psum of each leaf, no flat buffer


def test_unknown_setting_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"ModelConfig\.grad_kernels: unknown value 'fast'.*'auto', 'autodiff'"):
        get_preset("tiny_lm", grad_kernels="fast")
    with pytest.raises(ValueError, match=r"grad_kernels: unknown value 'fast'"):
        kernels.dense(4, grad_kernels="fast")
