"""Model FLOPs for the MFU estimate: a hand count, and XLA's own count of the forward pass."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from tfm.config import get_preset
from tfm.models import build_model
from tfm.training import flops


def test_decoder_lm_by_hand():
    cfg = get_preset("tiny_lm", vocab_size=50, d_model=8, num_heads=2, num_layers=3, d_ff=12)
    t, d, f, v = 5, 8, 12, 50
    per_layer = 2 * t * 4 * d * d + 2 * 2 * t * t * d + 2 * t * 2 * d * f
    assert flops.forward_flops_per_row(cfg, t) == 3 * per_layer + 2 * t * d * v
    assert flops.train_flops_per_row(cfg, t) == 3 * flops.forward_flops_per_row(cfg, t)


@pytest.mark.parametrize("preset", ["tiny_encdec", "tiny_lm"])
def test_close_to_xla_cost_analysis_of_the_forward_pass(preset):
    """XLA also counts elementwise work (softmax, LayerNorm, ...), so it is a bit higher; the
    matmuls dominate once d_model is not tiny."""
    cfg = get_preset(preset, vocab_size=512, d_model=128, num_heads=4, num_layers=2, d_ff=512)
    model = build_model(cfg)
    tokens = jnp.ones((4, 32), jnp.int32)
    args = (tokens, tokens) if preset == "tiny_encdec" else (tokens,)
    params = jax.eval_shape(lambda: nn.meta.unbox(model.init(jax.random.key(0), *args)))
    compiled = jax.jit(lambda p, *a: model.apply(p, *a)).lower(params, *args).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    ours = 4 * flops.forward_flops_per_row(cfg, 32, 32)
    assert ours <= analysis["flops"] <= 1.3 * ours


def test_peak_flops_lookup():
    assert flops.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert flops.peak_flops("TPU v4") == 275e12
    assert flops.peak_flops("cpu") is None
