"""Masked, label-smoothed cross-entropy and accuracy: pure functions of arrays.

Label smoothing follows the paper (section 5.4, "we employed label smoothing of value
eps_ls = 0.1"), which cites Szegedy et al. 2016, "Rethinking the Inception Architecture",
section 7: the one-hot target is mixed with the uniform distribution over the vocabulary,

    q(k) = (1 - eps) * [k == y] + eps / V          for every k in 0..V-1,

so the target token gets 1 - eps + eps/V and every other token of the vocabulary gets eps/V
(a tokenizer's pad id too, if it has one: that keeps q the paper's distribution, a mix with the
uniform one, and costs nothing, because the model learns quickly that pad never follows a real
token).

Which positions count is data, never inferred from target ids (any id, 0 included, is a real
token): the batch carries ``weights`` (the data pipeline emits them with every batch, 0 on
padding), and a position of weight 0 contributes nothing at all. Without weights every position
counts.

The smoothed loss is what is optimised; it is bounded below by the entropy of q, not by 0, so it
is not a log-likelihood. Every function therefore also returns the plain negative
log-likelihood (eps = 0) of the same logits, which is what perplexity is computed from.

Everything returns *sums* and the *sum of weights*, never means: the training step adds them
over devices, hosts and micro-batches and divides once, so the loss of a global batch is the
same however it was split (one device, pmap, a sharded mesh, gradient accumulation).

Shapes: B batch, T target length, V vocabulary (or classes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _weights(targets: jax.Array, weights: jax.Array | None) -> jax.Array:
    """The given weights in float32, or 1 everywhere (every target counts) when None."""
    if weights is None:
        return jnp.ones(targets.shape, jnp.float32)
    if weights.shape != targets.shape:
        raise ValueError(f"weights {weights.shape} must have the shape of targets {targets.shape}")
    return weights.astype(jnp.float32)


def smoothed_cross_entropy(
    logits: jax.Array, targets: jax.Array, label_smoothing: float = 0.0
) -> tuple[jax.Array, jax.Array]:
    """Per-position smoothed cross-entropy and plain negative log-likelihood.

    loss = -sum_k q(k) log p(k) = (1 - eps) * nll + eps * mean_k(-log p(k)),
    with q the smoothed target of the module docstring. Computed in float32 whatever the
    dtype of the logits.

    Args:
      logits: (..., V) unnormalised scores.
      targets: (...) int ids in [0, V).
      label_smoothing: eps in [0, 1).
    Returns:
      (loss, nll), each of shape (...) float32.
    """
    logits = logits.astype(jnp.float32)
    log_probs = jax.nn.log_softmax(logits, axis=-1)  # (..., V)
    nll = -jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    if not label_smoothing:
        return nll, nll
    uniform = -jnp.mean(log_probs, axis=-1)  # cross-entropy against the uniform distribution
    loss = (1.0 - label_smoothing) * nll + label_smoothing * uniform
    return loss, nll


def weighted_cross_entropy(
    logits: jax.Array,
    targets: jax.Array,
    weights: jax.Array | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, jax.Array]:
    """Weighted sums of the smoothed loss and of the nll over a batch.

    Args:
      logits: (B, T, V) or, for classification, (B, V).
      targets: (B, T) or (B,) int ids.
      weights: same shape as targets, float (0 on padding); None = every position counts
        (weight 1). Padding is never inferred from the target ids.
      label_smoothing: eps of the module docstring.
    Returns:
      {"loss_sum", "nll_sum", "weight_sum"}: float32 scalars.
    """
    if logits.ndim != targets.ndim + 1:
        raise ValueError(f"logits {logits.shape} must have one more axis than targets {targets.shape}")
    weights = _weights(targets, weights)
    loss, nll = smoothed_cross_entropy(logits, targets, label_smoothing)
    return {
        "loss_sum": jnp.sum(loss * weights),
        "nll_sum": jnp.sum(nll * weights),
        "weight_sum": jnp.sum(weights),
    }


def weighted_accuracy(
    logits: jax.Array, targets: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
    """Weighted count of positions whose argmax is the target (divide by the weight sum).

    Args:
      logits: (B, T, V) or (B, V).
      targets: (B, T) or (B,).
      weights: as in `weighted_cross_entropy`.
    Returns:
      float32 scalar: sum of weights at correct positions.
    """
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return jnp.sum(correct * _weights(targets, weights))


def loss_and_accuracy_sums(
    logits: jax.Array,
    targets: jax.Array,
    weights: jax.Array | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, jax.Array]:
    """All the summed statistics a step reports: loss_sum, nll_sum, correct_sum, weight_sum.

    Works for token targets (B, T) with logits (B, T, V) and for labels (B,) with (B, V).
    """
    out = weighted_cross_entropy(logits, targets, weights, label_smoothing)
    out["correct_sum"] = weighted_accuracy(logits, targets, weights)
    return out


def class_counts(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> dict[str, jax.Array]:
    """Weighted per-class counts for precision, recall and F1 (summed, like the other statistics).

    Args:
      logits: (B, C) class logits.
      labels: (B,) int labels.
      weights: (B,) or None (every row 1).
    Returns:
      float32 (C,) arrays: ``class_true_positive_sum`` (predicted c and labelled c),
      ``class_predicted_sum`` (predicted c) and ``class_actual_sum`` (labelled c).
    """
    num_classes = logits.shape[-1]
    w = _weights(labels, weights)[:, None]  # (B, 1)
    predicted = jax.nn.one_hot(jnp.argmax(logits, axis=-1), num_classes, dtype=jnp.float32) * w  # (B, C)
    actual = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * w  # (B, C)
    return {"class_true_positive_sum": jnp.sum(predicted * (actual > 0).astype(jnp.float32), axis=0),
            "class_predicted_sum": jnp.sum(predicted, axis=0), "class_actual_sum": jnp.sum(actual, axis=0)}
