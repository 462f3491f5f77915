"""Model FLOPs from the config, and device peak FLOP/s, for the MFU estimate.

MFU (model FLOPs utilisation, Chowdhery et al. 2022, appendix B) = the FLOPs the model needs
per second at the measured throughput / the hardware's peak FLOP/s. Only matrix multiplies are
counted (2 FLOPs per multiply-add): the projections, attention scores and values, the
feed-forward layers and the output projection. Training costs 3x the forward pass (the backward
pass is twice the forward); rematerialisation is not counted, as MFU (unlike HFU) prescribes.

Shapes: S source length, T target (or LM) length, D d_model, F d_ff, V vocab, L layers.
"""

from __future__ import annotations

from tfm.config import Arch, ModelConfig

# Dense bfloat16 peak FLOP/s per device (per chip for TPUs), from the vendors' data sheets.
# Matched as substrings of jax.Device.device_kind, first match wins.
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100", 989e12),  # SXM; the PCIe card is 756e12
    ("A100", 312e12),
    ("L4", 121e12),
    ("A10", 125e12),
    ("V100", 125e12),  # float16 tensor cores
    ("TPU v6", 918e12),
    ("TPU v5p", 459e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
    ("TPU v4", 275e12),
    ("TPU v3", 123e12),
)


def peak_flops(device_kind: str) -> float | None:
    """The table's peak for a ``jax.Device.device_kind``, or None when unknown (e.g. CPU)."""
    for name, flops in PEAK_FLOPS:
        if name.lower() in device_kind.lower():
            return flops
    return None


def _layer_flops(cfg: ModelConfig, length: int, kv_length: int, cross_length: int | None) -> float:
    """Forward FLOPs of one block for one row of ``length`` tokens."""
    d, f = cfg.d_model, cfg.d_ff
    flops = 2 * length * 4 * d * d  # q, k, v, out projections (self-attention)
    flops += 2 * 2 * length * kv_length * d  # scores and weighted values
    if cross_length is not None:
        flops += 2 * length * 2 * d * d  # q and out projections
        flops += 2 * cross_length * 2 * d * d  # k and v of the encoder output
        flops += 2 * 2 * length * cross_length * d
    flops += 2 * length * 2 * d * f  # the two feed-forward matrices
    return flops


def forward_flops_per_row(cfg: ModelConfig, length: int, source_length: int | None = None) -> float:
    """Forward-pass matmul FLOPs for one row.

    Args:
      cfg: the model.
      length: T, the decoder (or LM, or classifier input) length.
      source_length: S, encoder-decoder only.
    """
    v, d = cfg.vocab_size, cfg.d_model
    if cfg.arch is Arch.ENCODER_DECODER:
        s = length if source_length is None else source_length
        enc = cfg.num_layers * _layer_flops(cfg, s, s, None)
        dec = cfg.decoder_layers * _layer_flops(cfg, length, length, s)
        return enc + dec + 2 * length * d * v
    if cfg.arch is Arch.DECODER_LM:
        return cfg.num_layers * _layer_flops(cfg, length, length, None) + 2 * length * d * v
    return cfg.num_layers * _layer_flops(cfg, length, length, None) + 2 * d * cfg.num_classes


def train_flops_per_row(cfg: ModelConfig, length: int, source_length: int | None = None) -> float:
    """Training FLOPs (forward + backward = 3x forward) for one row."""
    return 3.0 * forward_flops_per_row(cfg, length, source_length)


def batch_train_flops(cfg: ModelConfig, batch: dict) -> float:
    """Training FLOPs of one (host-local) batch in the contract's format, padding included."""
    rows, length = batch["inputs"].shape[:2]
    if cfg.arch is Arch.ENCODER_DECODER:
        return rows * train_flops_per_row(cfg, batch["targets"].shape[1], length)
    return rows * train_flops_per_row(cfg, length)
