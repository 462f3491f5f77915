"""tfm.matmul.dense_dot_general: values and gradients against NumPy float64, the fall-back to
lax.dot_general, and the compiled layout it exists for (weight gradients in YNNPACK on CPU)."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tfm.matmul import dense_dot_general


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


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_accelerators_get_the_plain_weight_gradient(platform):
    x, w = jnp.ones((4, 8, 16)), jnp.ones((16, 32))
    grad = jax.jit(jax.grad(lambda w: jnp.sum(dense_dot_general(x, w, _dense_dims(3, 1)) ** 2)))
    assert "optimization_barrier" in grad.trace(w).lower(lowering_platforms=("cpu",)).as_text()
    assert "optimization_barrier" not in grad.trace(w).lower(lowering_platforms=(platform,)).as_text()
