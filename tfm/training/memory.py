"""Will a batch fit? A rough, deliberately low estimate of the memory one training step needs,
checked before anything is allocated, and the one error both the estimate and a real
out-of-memory during a step become.

The estimate counts only what certainly exists, so it never refuses a batch that fits:

* host: every batch row holds at least two 4-byte ids per token position (ids and targets, or
  ids and a mask); the pipeline builds one batch at a time at least;
* device, per micro-batch of ``rows`` rows on one device: the activations each layer keeps for
  the backward pass, at least (4 d_model + d_ff) values per position per layer (q, k, v, the
  attention output and the feed-forward hidden layer; with ``remat`` only d_model per layer
  plus one layer's worth), plus vocab_size logits per scored position (the target side);
  and the parameters with their gradient and the two Adam moments (4 copies; spread over the
  devices when sharded). With token-count batching (``tokens_per_batch``) a batch counts as
  its fewest rows (all of the longest bucket).

Available memory: the device's ``memory_stats()`` where the backend reports one (GPU, TPU);
on CPU the devices share the host's ``MemAvailable`` (/proc/meminfo, else ``os.sysconf``).
"""

from __future__ import annotations

import os

import jax
import numpy as np

from tfm.config import Arch, ModelConfig, Remat
from tfm.data.config import DataConfig

GiB = 2**30


class BatchMemoryError(ValueError):
    """A batch does not fit in (host or device) memory; the message names the batch size."""


def host_available_bytes() -> int | None:
    """Memory the host can still give (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def device_available_bytes() -> int | None:
    """Free memory of one local device (the smallest), or None where the backend reports none
    (CPU: the devices share the host's memory)."""
    free = []
    for device in jax.local_devices():
        try:
            stats = device.memory_stats()
        except Exception:  # noqa: BLE001 -- backends without the query raise various errors
            stats = None
        if not stats or "bytes_limit" not in stats:
            return None
        free.append(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return min(free) if free else None


def _tokens(data: DataConfig, arch: Arch) -> int:
    """Token positions of one row (source and target for an encoder-decoder)."""
    return data.max_len + (data.max_target_len if arch is Arch.ENCODER_DECODER else 0)


def train_rows(data: DataConfig) -> tuple[str, int]:
    """(the setting that sizes a training batch, the fewest rows it can mean): batch_size, or
    with token-count batching tokens_per_batch (rows of the longest bucket)."""
    if data.tokens_per_batch > 0:
        return "tokens_per_batch", data.tokens_per_batch // max(data.max_len, data.max_target_len, 1)
    return "batch_size", data.batch_size


def host_row_bytes(data: DataConfig, arch: Arch) -> int:
    return 8 * _tokens(data, arch)


def device_row_bytes(model: ModelConfig, data: DataConfig) -> int:
    """Low estimate of the activation bytes one row of a micro-batch keeps on its device: the
    layers' activations over the row's positions, and the logits of the positions scored
    (the target side; none per position for a classifier)."""
    per_layer = 4 * model.d_model + model.d_ff

    def kept(layers: int) -> int:
        return layers * per_layer if model.remat is Remat.NONE else layers * model.d_model + per_layer

    if model.arch is Arch.ENCODER_DECODER:
        values = data.max_len * kept(model.num_layers) + data.max_target_len * (
            kept(model.decoder_layers) + model.vocab_size)
    elif model.arch is Arch.DECODER_LM:
        values = data.max_len * (kept(model.num_layers) + model.vocab_size)
    else:  # a classifier scores one vector per row
        values = data.max_len * kept(model.num_layers)
    return np.dtype(model.dtype).itemsize * values


def check_host_batch(data: DataConfig, arch: Arch, processes: int = 1,
                     available: int | None = None) -> None:
    """Refuses a batch (train or eval) whose rows alone exceed the host's available memory."""
    available = host_available_bytes() if available is None else available
    if available is None:
        return
    per_row = host_row_bytes(data, arch)
    field, train = train_rows(data)
    for field, value, rows in ((field, getattr(data, field), train),
                               ("eval_batch_size", data.eval_batch_size, data.eval_batch_size)):
        rows //= processes
        if rows * per_row > available:
            raise BatchMemoryError(
                f"DataConfig.{field}={value}: one batch needs at least "
                f"{rows * per_row / GiB:.1f} GiB of host memory ({per_row} bytes a row), but "
                f"{available / GiB:.1f} GiB are available; at most ~{available // per_row:,} rows "
                f"per process fit")


def check_device_batch(model: ModelConfig, data: DataConfig, *, devices: int, local_devices: int,
                       grad_accum_steps: int = 1, params: int = 0, sharded: bool = False,
                       available: int | None = None, host: bool | None = None) -> None:
    """Refuses a training batch whose micro-batch (per device) cannot fit the device memory.

    ``available``: free bytes of one device (default: :func:`device_available_bytes`, or on a
    backend without memory stats the host's available memory shared by the local devices).
    """
    if available is None:
        available = device_available_bytes()
        if available is None:
            host_free = host_available_bytes()
            available = None if host_free is None else host_free // max(local_devices, 1)
    if available is None:
        return
    field, rows = train_rows(data)
    rows = rows // devices // max(grad_accum_steps, 1)
    per_row = device_row_bytes(model, data)
    fixed = 4 * 4 * params // (devices if sharded else 1)  # params, grads, Adam's m and v (float32)
    if rows * per_row + fixed > available:
        fit = max((available - fixed) // per_row, 0) * devices * max(grad_accum_steps, 1)
        raise BatchMemoryError(
            f"DataConfig.{field}={getattr(data, field)}: a step needs at least "
            f"{(rows * per_row + fixed) / GiB:.1f} GiB on each of {devices} device(s) ({rows:,} rows "
            f"per device and micro-batch), but {available / GiB:.1f} GiB are available; at most "
            f"~{fit:,} rows fit (or raise TrainConfig.grad_accum_steps)")


def out_of_memory(error: BaseException, data: DataConfig) -> BatchMemoryError | None:
    """The one-line error for XLA running out of memory (or NumPy's MemoryError) while training;
    None for any other error."""
    text = str(error)
    # XLA says RESOURCE_EXHAUSTED, or (CPU dispatch) "INTERNAL: ... Out of memory allocating N bytes"
    if isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
        first = next((line for line in text.splitlines() if line.strip()), type(error).__name__)
        return BatchMemoryError(
            f"out of memory while training with DataConfig.batch_size={data.batch_size} "
            f"(eval_batch_size={data.eval_batch_size}): lower it or raise TrainConfig.grad_accum_steps "
            f"({first[:160]})")
    return None
