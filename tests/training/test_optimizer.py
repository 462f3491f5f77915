"""The paper's schedule and optimiser settings; warm-up + cosine; clipping; weight-decay mask."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tfm.training import optimizer as optim
from tfm.training.config import TrainConfig

_T = TrainConfig()
PAPER = {"kind": "adam", "b1": _T.b1, "b2": _T.b2, "eps": _T.eps}  # TrainConfig's defaults, the paper's


@pytest.mark.parametrize("step", [1, 4000, 100_000])
def test_rsqrt_schedule_matches_the_paper_formula(step):
    d_model, warmup = 512, 4000
    expected = d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)
    assert float(optim.paper_learning_rate(step, d_model, warmup)) == pytest.approx(expected, rel=1e-6)
    # the optax schedule receives the number of updates done so far (step - 1)
    schedule = optim.rsqrt_schedule(d_model, warmup)
    assert float(schedule(jnp.asarray(step - 1))) == pytest.approx(expected, rel=1e-6)


def test_rsqrt_schedule_peaks_at_the_end_of_warmup():
    schedule = optim.rsqrt_schedule(512, 4000)
    lrs = np.array([float(schedule(jnp.asarray(c))) for c in (0, 1000, 3998, 3999, 4000, 8000)])
    assert np.all(np.diff(lrs[:4]) > 0) and np.all(np.diff(lrs[3:]) < 0)
    assert lrs[3] == pytest.approx(512**-0.5 * 4000**-0.5, rel=1e-6)  # the peak, ~7.0e-4


def test_warmup_cosine():
    schedule = optim.warmup_cosine_schedule(1e-3, warmup_steps=10, total_steps=110, end_ratio=0.1)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(60)) == pytest.approx(0.55e-3, rel=1e-5)  # half way down the cosine
    assert float(schedule(110)) == pytest.approx(1e-4)
    assert float(schedule(500)) == pytest.approx(1e-4)


def test_paper_adam_hyperparameters_are_the_defaults():
    tx = optim.make_optimizer(optax.constant_schedule(1e-3), **PAPER)
    params = {"w": jnp.array([1.0, -2.0])}
    state = tx.init(params)
    g = {"w": jnp.array([0.5, 0.25])}
    with jax.numpy_dtype_promotion("standard"):
        updates, _ = tx.update(g, state, params)
    # first Adam step: m = (1-b1) g, v = (1-b2) g^2, bias-corrected -> g / (|g| + eps)
    expected = -1e-3 * np.array([0.5, 0.25]) / (np.abs([0.5, 0.25]) + 1e-9)
    np.testing.assert_allclose(np.asarray(updates["w"]), expected, rtol=1e-6)
    # second step exposes b1 = 0.9 and b2 = 0.98
    with jax.numpy_dtype_promotion("standard"):
        _, s1 = tx.update(g, state, params)
        updates2, _ = tx.update({"w": jnp.array([1.0, 1.0])}, s1, params)
    g1, g2 = np.array([0.5, 0.25]), np.array([1.0, 1.0])
    m = (0.9 * 0.1 * g1 + 0.1 * g2) / (1 - 0.9**2)
    v = (0.98 * 0.02 * g1**2 + 0.02 * g2**2) / (1 - 0.98**2)
    np.testing.assert_allclose(np.asarray(updates2["w"]), -1e-3 * m / (np.sqrt(v) + 1e-9), rtol=1e-5)


def test_global_norm_clipping_feeds_clipped_gradients_to_adam():
    """Adam's first step hides the gradient's scale, the second does not: compare two steps on
    (big, small) gradients with Adam run by hand on the clipped gradients."""
    tx = optim.make_optimizer(optax.constant_schedule(1.0), grad_clip_norm=1.0, **PAPER)
    params = {"a": jnp.zeros(2)}
    g1, g2 = np.array([30.0, 40.0]), np.array([0.3, 0.0])  # norms 50 (clipped to 1) and 0.3
    with jax.numpy_dtype_promotion("standard"):
        _, s = tx.update({"a": jnp.asarray(g1, jnp.float32)}, tx.init(params), params)
        updates, _ = tx.update({"a": jnp.asarray(g2, jnp.float32)}, s, params)
    c1 = g1 / 50.0
    m = (0.9 * 0.1 * c1 + 0.1 * g2) / (1 - 0.9**2)
    v = (0.98 * 0.02 * c1**2 + 0.02 * g2**2) / (1 - 0.98**2)
    np.testing.assert_allclose(np.asarray(updates["a"]), -m / (np.sqrt(v) + 1e-9), rtol=1e-5)


def test_adamw_decays_kernels_and_embeddings_only():
    params = {
        "dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
        "norm": {"scale": jnp.ones(2)},
        "embedder": {"embedding": jnp.ones((3, 2))},
        "stack": {"bias": jnp.ones((4, 2))},  # a scanned stack's stacked bias: rank 2, no decay
    }
    tx = optim.make_optimizer(optax.constant_schedule(0.1), **{**PAPER, "kind": "adamw"}, weight_decay=0.5)
    zeros = jax.tree.map(jnp.zeros_like, params)
    with jax.numpy_dtype_promotion("standard"):
        updates, _ = tx.update(zeros, tx.init(params), params)
    # zero gradients: only the decoupled decay -lr * wd * p moves anything
    assert np.allclose(updates["dense"]["kernel"], -0.05)
    assert np.allclose(updates["embedder"]["embedding"], -0.05)
    for leaf in (updates["dense"]["bias"], updates["norm"]["scale"], updates["stack"]["bias"]):
        assert np.allclose(leaf, 0.0)


def test_unknown_optimizer_is_an_error():
    with pytest.raises(ValueError, match="adamw"):
        optim.make_optimizer(optax.constant_schedule(1.0), **{**PAPER, "kind": "sgd"})
