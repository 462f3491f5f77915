"""Per-class counts and F1 of a classifier's evaluation (tfm.losses.class_counts,
tfm.metrics.summarize) against the definitions, in NumPy float64."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from tfm import losses, metrics


def test_class_counts_and_f1_match_their_definitions():
    rng = np.random.default_rng(0)
    B, C = 37, 4
    logits = rng.standard_normal((B, C)).astype(np.float32)
    labels = rng.integers(0, C - 1, B).astype(np.int32)  # class 3 never labelled
    weights = (rng.random(B) > 0.2).astype(np.float32)  # padding rows weigh 0
    counts = {k: np.asarray(v) for k, v in losses.class_counts(jnp.asarray(logits), jnp.asarray(labels),
                                                               jnp.asarray(weights)).items()}
    pred = logits.argmax(-1)
    for c in range(C):
        tp = np.sum(weights * ((pred == c) & (labels == c)))
        fp = np.sum(weights * ((pred == c) & (labels != c)))
        fn = np.sum(weights * ((pred != c) & (labels == c)))
        assert counts["class_true_positive_sum"][c] == tp
        assert counts["class_predicted_sum"][c] == tp + fp
        assert counts["class_actual_sum"][c] == tp + fn
    sums = {**counts, **{k: np.asarray(v) for k, v in losses.loss_and_accuracy_sums(
        jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights)).items()}}
    out = metrics.summarize(sums, class_names=("a", "b", "c", "d"))
    for c, name in enumerate("abcd"):
        tp = np.sum(weights * ((pred == c) & (labels == c)))
        precision = tp / max(np.sum(weights * (pred == c)), 1e-12)
        recall = tp / max(np.sum(weights * (labels == c)), 1e-12)
        want = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        np.testing.assert_allclose(out[f"f1_{name}"], want, atol=1e-12)
    np.testing.assert_allclose(out["macro_f1"], np.mean([out[f"f1_{n}"] for n in "abcd"]), atol=1e-12)
    assert "f1_0" in metrics.summarize(sums)  # unnamed classes: their ids
