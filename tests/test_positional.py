"""Sinusoidal encoding against the paper's formula; rotary embedding properties."""

import jax
import jax.numpy as jnp
import numpy as np

from tfm.positional import apply_rope, sinusoidal_encoding


def test_sinusoidal_equals_paper_formula():
    d_model, positions = 17, np.arange(50)
    pe = np.asarray(sinusoidal_encoding(jnp.asarray(positions), d_model), np.float64)
    ref = np.zeros((50, d_model))
    for pos in positions:
        for j in range(d_model):
            i = j // 2
            angle = pos / 10000 ** (2 * i / d_model)
            ref[pos, j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
    assert pe.shape == (50, d_model)
    np.testing.assert_allclose(pe, ref, atol=2e-5)
    # a hand-checked value: PE(1, 0) = sin(1), PE(1, 1) = cos(1)
    np.testing.assert_allclose(pe[1, :2], [np.sin(1.0), np.cos(1.0)], rtol=1e-6)


def test_sinusoidal_batched_positions():
    pos = jnp.array([[0, 1, 2], [5, 6, 7]])
    pe = sinusoidal_encoding(pos, 8)
    assert pe.shape == (2, 3, 8)
    np.testing.assert_allclose(np.asarray(pe[1, 0]), np.asarray(sinusoidal_encoding(jnp.array([5]), 8)[0]))


def test_rope_preserves_norms():
    x = jax.random.normal(jax.random.key(0), (3, 7, 5, 16))
    pos = jnp.broadcast_to(jnp.arange(7) * 13, (3, 7))
    y = apply_rope(x, pos)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(y), axis=-1), np.linalg.norm(np.asarray(x), axis=-1), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(apply_rope(x, jnp.zeros((3, 7), jnp.int32))), np.asarray(x))


def test_rope_dot_product_depends_only_on_relative_offset():
    kq, kk = jax.random.split(jax.random.key(1))
    q = jax.random.normal(kq, (1, 1, 1, 32))
    k = jax.random.normal(kk, (1, 1, 1, 32))

    def score(m, n):
        qm = apply_rope(q, jnp.array([[m]]))
        kn = apply_rope(k, jnp.array([[n]]))
        return float(jnp.sum(qm * kn))

    for offset in (0, 3, 11):
        scores = [score(m + offset, m) for m in (0, 5, 40, 123)]
        np.testing.assert_allclose(scores, scores[0], rtol=1e-4, atol=1e-4)
    assert abs(score(3, 0) - score(10, 0)) > 1e-3  # and it does depend on the offset


def test_rope_matches_complex_rotation_reference():
    """RoFormer eq. (34): pairs (x_2i, x_2i+1) as complex numbers times exp(i * pos * theta_i)."""
    x = np.asarray(jax.random.normal(jax.random.key(2), (1, 4, 1, 6)), np.float64)
    pos = np.array([[0, 1, 7, 30]])
    theta = 10000.0 ** (-np.arange(0, 6, 2) / 6)
    z = x[..., 0::2] + 1j * x[..., 1::2]
    rotated = z * np.exp(1j * pos[:, :, None, None] * theta)
    ref = np.stack([rotated.real, rotated.imag], -1).reshape(x.shape)
    out = apply_rope(jnp.asarray(x, jnp.float32), jnp.asarray(pos))
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)
