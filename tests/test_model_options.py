"""The ModelConfig options added for imported models (issue 14), each against an independent
reference: the split sinusoidal layout (NumPy float64, as Marian builds it), the activations
(their formulas), the logits bias, and their validation."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tfm
from tfm.layers import ACTIVATIONS
from tfm.positional import sinusoidal_encoding


@pytest.mark.parametrize("d_model", [8, 7])
def test_split_sinusoidal_layout_is_marians_table(d_model):
    """transformers' MarianSinusoidalPositionalEmbedding.create_weight, in float64."""
    n = 50
    j = np.arange(d_model)
    enc = np.arange(n)[:, None] / np.power(10000.0, 2 * (j // 2) / d_model)[None, :]
    sentinel = d_model // 2 if d_model % 2 == 0 else d_model // 2 + 1
    want = np.empty((n, d_model))
    want[:, :sentinel] = np.sin(enc[:, 0::2])
    want[:, sentinel:] = np.cos(enc[:, 1::2])
    got = sinusoidal_encoding(jnp.arange(n), d_model, layout="split")
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)
    # the same columns as the paper's interleaved layout, reordered
    inter = np.asarray(sinusoidal_encoding(jnp.arange(n), d_model))
    np.testing.assert_array_equal(np.asarray(got), np.concatenate([inter[:, 0::2], inter[:, 1::2]], 1))
    with pytest.raises(ValueError, match="layout"):
        sinusoidal_encoding(jnp.arange(3), 4, layout="sideways")


def test_activations_match_their_formulas():
    x = np.linspace(-5, 5, 101)
    phi = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    want = {
        tfm.Activation.RELU: np.maximum(x, 0),
        tfm.Activation.GELU: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
        tfm.Activation.GELU_EXACT: x * phi,
        tfm.Activation.SILU: x / (1 + np.exp(-x)),
    }
    assert set(want) == set(tfm.Activation)
    for act, ref in want.items():
        np.testing.assert_allclose(np.asarray(ACTIVATIONS[act](jnp.asarray(x, jnp.float32))), ref,
                                   atol=1e-6, err_msg=act.value)


def test_logits_bias_is_added_to_the_tied_logits():
    cfg = tfm.get_preset("tiny_lm", logits_bias=True)
    model = tfm.build_model(cfg)
    tokens = jnp.array([[5, 6, 7]], jnp.int32)
    params = jax.tree.map(np.asarray, nn.meta.unbox(model.init(jax.random.key(0), tokens)["params"]))
    assert params["decoder"]["logits_bias"].shape == (cfg.vocab_size,)
    bias = np.random.default_rng(0).standard_normal(cfg.vocab_size).astype(np.float32)
    without = model.apply({"params": params}, tokens)
    params["decoder"]["logits_bias"] = bias
    np.testing.assert_allclose(np.asarray(model.apply({"params": params}, tokens) - without),
                               np.broadcast_to(bias, without.shape), atol=1e-5)


def test_option_validation_names_the_field():
    with pytest.raises(ValueError, match=r"ModelConfig.logits_bias.*tie_output"):
        tfm.get_preset("tiny_lm", logits_bias=True, tie_output=False)
    with pytest.raises(ValueError, match=r"ModelConfig.sinusoidal_layout: unknown value 'diagonal'"):
        tfm.get_preset("tiny_lm", sinusoidal_layout="diagonal")
    with pytest.raises(ValueError, match=r"ModelConfig.activation: unknown value 'swish'"):
        tfm.get_preset("tiny_lm", activation="swish")  # tfm's name is "silu"
    cfg = tfm.get_preset("tiny_encdec", activation="silu", sinusoidal_layout="split", logits_bias=True)
    assert tfm.ModelConfig.from_dict(cfg.to_dict()) == cfg
