"""Label-smoothed, masked cross-entropy and accuracy against a NumPy float64 reference."""

import jax.numpy as jnp
import numpy as np
import pytest

from tfm import losses

B, T, V = 3, 5, 7  # different primes-ish so a transposed axis cannot pass


def reference(logits, targets, weights, eps):
    """Straight from the definition: q = (1 - eps) one_hot + eps / V, loss = -sum q log p."""
    logits = logits.astype(np.float64)
    log_p = logits - logits.max(-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
    q = np.full(logits.shape, eps / logits.shape[-1])
    np.put_along_axis(q, targets[..., None], 1 - eps + eps / logits.shape[-1], axis=-1)
    loss = -(q * log_p).sum(-1)
    nll = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
    correct = (logits.argmax(-1) == targets).astype(np.float64)
    return (loss * weights).sum(), (nll * weights).sum(), (correct * weights).sum(), weights.sum()


@pytest.fixture
def data():
    rs = np.random.RandomState(0)
    logits = rs.randn(B, T, V).astype(np.float32) * 3
    targets = rs.randint(1, V, (B, T)).astype(np.int32)
    targets[0, 3:] = 0  # padding (what a padded position holds is arbitrary) ...
    targets[2, 1:] = 0
    targets[1, 2] = 0  # ... and a real target token 0
    mask = np.ones((B, T), np.float32)
    mask[0, 3:] = 0
    mask[2, 1:] = 0
    return logits, targets, mask


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_matches_float64_reference_with_padding_masked(data, eps):
    logits, targets, mask = data
    out = losses.loss_and_accuracy_sums(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask), eps)
    loss, nll, correct, weight = reference(logits, targets, mask.astype(np.float64), eps)
    np.testing.assert_allclose(float(out["loss_sum"]), loss, rtol=1e-6)
    np.testing.assert_allclose(float(out["nll_sum"]), nll, rtol=1e-6)
    np.testing.assert_allclose(float(out["correct_sum"]), correct)
    assert float(out["weight_sum"]) == weight == mask.sum() == 9


def test_without_weights_every_target_counts_token_0_included(data):
    """Padding is never inferred from target ids (issue 14: id 0 is GPT-2's '!'): with no
    weights every position is scored, those whose target is 0 included."""
    logits, targets, _ = data
    out = losses.loss_and_accuracy_sums(jnp.asarray(logits), jnp.asarray(targets), None, 0.1)
    loss, nll, correct, weight = reference(logits, targets, np.ones((B, T)), 0.1)
    np.testing.assert_allclose(float(out["loss_sum"]), loss, rtol=1e-6)
    np.testing.assert_allclose(float(out["nll_sum"]), nll, rtol=1e-6)
    np.testing.assert_allclose(float(out["correct_sum"]), correct)
    assert float(out["weight_sum"]) == B * T


def test_weights_of_the_wrong_shape_are_an_error(data):
    logits, targets, mask = data
    with pytest.raises(ValueError, match="shape of targets"):
        losses.weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask[:, :-1]))


def test_fractional_weights(data):
    logits, targets, _ = data
    w = np.random.RandomState(1).rand(B, T).astype(np.float32)
    out = losses.loss_and_accuracy_sums(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(w), 0.1)
    loss, nll, correct, weight = reference(logits, targets, w.astype(np.float64), 0.1)
    np.testing.assert_allclose(float(out["loss_sum"]), loss, rtol=1e-6)
    np.testing.assert_allclose(float(out["nll_sum"]), nll, rtol=1e-6)
    np.testing.assert_allclose(float(out["correct_sum"]), correct, rtol=1e-6)
    np.testing.assert_allclose(float(out["weight_sum"]), weight, rtol=1e-6)


def test_padding_positions_contribute_nothing(data):
    logits, targets, mask = data
    base = losses.weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask), 0.1)
    scrambled = logits.copy()
    scrambled[mask == 0] = 1e4 * np.random.RandomState(2).randn(int((mask == 0).sum()), V)
    out = losses.weighted_cross_entropy(jnp.asarray(scrambled), jnp.asarray(targets), jnp.asarray(mask), 0.1)
    assert float(out["loss_sum"]) == pytest.approx(float(base["loss_sum"]), rel=1e-6)


def test_smoothing_spreads_eps_over_the_whole_vocabulary_pad_included():
    """The smoothed target is the paper's mix with the uniform distribution over all V ids, so
    the minimum of the loss is reached at p = q, where the pad id 0 has probability eps / V."""
    eps = 0.1
    q = np.full(V, eps / V)
    q[3] += 1 - eps
    at_q = losses.smoothed_cross_entropy(jnp.log(jnp.asarray(q, jnp.float32))[None], jnp.array([3]), eps)[0]
    entropy = -(q * np.log(q)).sum()
    np.testing.assert_allclose(float(at_q[0]), entropy, rtol=1e-5)
    # moving mass off the pad id (or anywhere) raises the loss
    p = q.copy()
    p[0] /= 2
    p[3] += q[0] / 2
    worse = losses.smoothed_cross_entropy(jnp.log(jnp.asarray(p, jnp.float32))[None], jnp.array([3]), eps)[0]
    assert float(worse[0]) > float(at_q[0])


def test_classification_labels_weigh_one_per_example():
    rs = np.random.RandomState(3)
    logits = rs.randn(4, 3).astype(np.float32)
    labels = np.array([0, 2, 1, 0], np.int32)  # label 0 is a class here, not padding
    out = losses.loss_and_accuracy_sums(jnp.asarray(logits), jnp.asarray(labels), None, 0.0)
    _, nll, correct, weight = reference(logits, labels, np.ones(4), 0.0)
    assert float(out["weight_sum"]) == weight == 4
    np.testing.assert_allclose(float(out["nll_sum"]), nll, rtol=1e-6)
    np.testing.assert_allclose(float(out["correct_sum"]), correct)


def test_bfloat16_logits_are_scored_in_float32(data):
    logits, targets, mask = data
    out = losses.weighted_cross_entropy(jnp.asarray(logits, jnp.bfloat16), jnp.asarray(targets), jnp.asarray(mask), 0.1)
    assert out["loss_sum"].dtype == jnp.float32
    rounded = np.asarray(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32))
    loss, *_ = reference(rounded, targets, mask.astype(np.float64), 0.1)
    np.testing.assert_allclose(float(out["loss_sum"]), loss, rtol=1e-5)


def test_shape_mismatch_is_an_error(data):
    logits, targets, _ = data
    with pytest.raises(ValueError, match="one more axis"):
        losses.weighted_cross_entropy(jnp.asarray(logits[..., 0]), jnp.asarray(targets))
