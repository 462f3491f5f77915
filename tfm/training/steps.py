"""Pure training and evaluation steps, compiled once by a parallel strategy.

``train_step(state, batch, rng) -> (state, metrics)`` and ``eval_step(params, batch) ->
metrics`` are plain functions of arrays: the parallel strategy (:mod:`tfm.training.parallel`)
wraps them in ``jax.jit`` with shardings or in ``jax.pmap``; the loop does all I/O.

How a batch becomes one update (the same whatever the device layout):

1. The dropout key is ``fold_in(rng, state.step)`` (then the micro-batch index, and under pmap
   or shard_map the device index), so it needs no state of its own and a resumed run draws the
   same masks.
2. The batch is split into ``grad_accum_steps`` micro-batches (rows ``j::k``, so a batch that is
   sharded by rows splits without moving data) and ``lax.scan`` adds their gradients.
3. Gradients are gradients of the *summed* smoothed loss. Under pmap or shard_map they are
   summed over devices (:func:`tfm.kernels.device_sum`: on CPU one all-reduce of one flat
   buffer), and the sum is divided once by the global number of target tokens.
   This is the global token-mean loss exactly, however the batch was split. (Averaging
   per-device mean gradients with ``lax.pmean`` would weight a device with few real tokens as
   much as one with many, so pmap would not match one device.)
4. Optional global-norm clipping and Adam(W) (:mod:`tfm.training.optimizer`).

Metrics are sums over the global batch (``loss_sum``, ``nll_sum``, ``correct_sum``,
``weight_sum``) plus ``grad_norm`` and ``learning_rate``; the loop divides when it logs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from tfm import kernels, losses
from tfm.config import Arch
from tfm.training.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def forward(
    model: nn.Module,
    arch: Arch,
    params: Any,
    batch: Batch,
    *,
    deterministic: bool,
    dropout_rng: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """Runs the model on a batch of the shared contract's format.

    Returns:
      (logits, targets, weights): logits (B, T, V) with targets (B, T) for translation and
      language modelling, (B, C) with labels (B,) for classification; weights are the batch's
      ``weights`` (the pipeline emits them with every batch, 0 on padding), else None (then
      every target counts: padding is never inferred from token ids).

    Padding reaches the model as the batch's segment ids (``inputs_segment_ids`` and
    ``targets_segment_ids`` for translation, ``segment_ids`` otherwise); a batch without them
    has no padding.
    """
    rngs = {} if dropout_rng is None else {"dropout": dropout_rng}
    variables = {"params": params}
    get = batch.get
    if arch is Arch.ENCODER_DECODER:
        logits = model.apply(
            variables,
            batch["inputs"],
            batch["decoder_inputs"],
            inputs_segment_ids=get("inputs_segment_ids"),
            inputs_positions=get("inputs_positions"),
            decoder_segment_ids=get("targets_segment_ids"),
            decoder_positions=get("targets_positions"),
            deterministic=deterministic,
            rngs=rngs,
        )
    else:  # decoder_lm and encoder_classifier take the same inputs
        logits = model.apply(
            variables,
            batch["inputs"],
            segment_ids=get("segment_ids"),
            positions=get("positions"),
            deterministic=deterministic,
            rngs=rngs,
            **({"token_types": batch["token_types"]} if "token_types" in batch else {}),  # sentence pairs
        )
    targets = batch["label"] if arch is Arch.ENCODER_CLASSIFIER else batch["targets"]
    return logits, targets, get("weights")


def split_micro_batches(batch: Batch, k: int) -> Batch:
    """(B, ...) -> (k, B/k, ...): micro-batch j holds rows j, j+k, j+2k, ...

    Strided rather than contiguous so that when the rows are sharded across devices, every
    device already holds its part of every micro-batch.
    """

    def split(x):
        if x.shape[0] % k:
            raise ValueError(f"batch of {x.shape[0]} rows does not split into {k} micro-batches")
        return jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def make_train_step(
    model: nn.Module,
    arch: Arch,
    tx: optax.GradientTransformation,
    schedule: Callable[[jax.Array], jax.Array],
    *,
    label_smoothing: float,
    grad_accum_steps: int = 1,
    axis_name: str | None = None,
    gather_params: Callable[[Any], Any] | None = None,
) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]:
    """Builds the pure ``train_step(state, batch, rng) -> (state, metrics)``.

    Args:
      model, arch: the Flax model and which of the three batch formats it takes.
      tx: the optimiser (tfm.training.optimizer.make_tx).
      schedule: the learning-rate schedule inside ``tx`` (reported as a metric).
      label_smoothing: eps_ls of the paper.
      grad_accum_steps: micro-batches per update (see the module docstring).
      axis_name: the pmap / shard_map axis to sum gradients and metrics over; None when the
        step sees the whole batch (one device, or GSPMD under jit).
      gather_params: applied to the parameters inside the differentiated function (the
        sharded strategy all-gathers FSDP-sharded parameters here, so that activations stay
        sharded by batch and gradients are reduce-scattered back).

    Gradients and metrics are summed over ``axis_name`` by :func:`tfm.kernels.device_sum`, as
    the model's ``ModelConfig.grad_kernels`` says.
    """

    def loss_fn(params, micro_batch, dropout_rng):
        if gather_params is not None:
            params = gather_params(params)
        logits, targets, weights = forward(
            model, arch, params, micro_batch, deterministic=False, dropout_rng=dropout_rng
        )
        stats = losses.loss_and_accuracy_sums(logits, targets, weights, label_smoothing)
        return stats["loss_sum"], stats

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
        step_rng = jax.random.fold_in(rng, state.step)
        if axis_name is not None:
            step_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis_name))

        if grad_accum_steps == 1:
            (_, stats), grads = grad_fn(state.params, batch, step_rng)
        else:
            micro = split_micro_batches(batch, grad_accum_steps)

            def body(carry, xs):
                index, micro_batch = xs
                (_, s), g = grad_fn(state.params, micro_batch, jax.random.fold_in(step_rng, index))
                return jax.tree.map(jnp.add, carry, (g, s)), None

            zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
                lambda: grad_fn(state.params, jax.tree.map(lambda x: x[0], micro), step_rng)
            ))
            init = (zeros[1], zeros[0][1])  # (grads, stats)
            (grads, stats), _ = jax.lax.scan(
                body, init, (jnp.arange(grad_accum_steps), micro)
            )

        if axis_name is not None:
            grads, stats = kernels.device_sum((grads, stats), axis_name, model.cfg.grad_kernels)
        denominator = jnp.maximum(stats["weight_sum"], 1.0)
        grads = jax.tree.map(lambda g: g / denominator.astype(g.dtype), grads)

        # optax mixes float and int32 (bias correction `b ** count`), which strict dtype
        # promotion (on in the tests) rejects; our own code above stays strict.
        # The same holds for optax's schedules (warmup_cosine), whose value is logged below.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            learning_rate = jnp.asarray(schedule(state.step), jnp.float32)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(stats, grad_norm=optax.tree.norm(grads), learning_rate=learning_rate)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return train_step


def make_eval_step(
    model: nn.Module,
    arch: Arch,
    *,
    label_smoothing: float,
    axis_name: str | None = None,
    gather_params: Callable[[Any], Any] | None = None,
) -> Callable[[Any, Batch], Metrics]:
    """Builds the pure ``eval_step(params, batch) -> metrics`` (sums, like the train step's)."""

    def eval_step(params: Any, batch: Batch) -> Metrics:
        if gather_params is not None:
            params = gather_params(params)
        logits, targets, weights = forward(model, arch, params, batch, deterministic=True)
        stats = losses.loss_and_accuracy_sums(logits, targets, weights, label_smoothing)
        if arch is Arch.ENCODER_CLASSIFIER:  # per-class counts for F1
            stats.update(losses.class_counts(logits, targets, weights))
        if axis_name is not None:
            stats = kernels.device_sum(stats, axis_name, model.cfg.grad_kernels)
        return stats

    return eval_step
