"""ModelConfig validation and presets."""

import dataclasses

import pytest

from tfm.config import Activation, Arch, ModelConfig, NormPosition, PositionalKind, get_preset, PRESETS
from tfm.models import param_count


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(d_model=30, num_heads=4), "d_model"),
        (dict(activation="swish"), "activation"),
        (dict(positional="alibi"), "positional"),
        (dict(norm="sandwich"), "norm"),
        (dict(arch="rnn"), "arch"),
        (dict(d_model=0), "d_model"),
        (dict(num_heads=-2), "num_heads"),
        (dict(num_layers=0), "num_layers"),
        (dict(d_ff=-1), "d_ff"),
        (dict(max_len=0), "max_len"),
        (dict(vocab_size=-5), "vocab_size"),
        (dict(num_decoder_layers=0), "num_decoder_layers"),
        (dict(dropout_rate=1.0), "dropout_rate"),
        (dict(dropout_rate=-0.1), "dropout_rate"),
        (dict(attention_dropout_rate=1.5), "attention_dropout_rate"),
        (dict(dtype="float8"), "dtype"),
        (dict(param_dtype="int8"), "param_dtype"),
        (dict(attention_impl="triton"), "attention_impl"),
        (dict(grad_kernels="fast"), "grad_kernels"),
        (dict(layer_norm_eps=0.0), "layer_norm_eps"),
        (dict(positional="rope", d_model=36, num_heads=4), "num_heads"),  # head_dim 9 is odd
    ],
)
def test_bad_config_raises_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field}\b"):
        ModelConfig(**changes)
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field}\b"):
        dataclasses.replace(get_preset("tiny_lm"), **changes)


def test_enums_accept_strings_and_round_trip():
    cfg = ModelConfig(arch="decoder_lm", activation="gelu", norm="pre", positional="rope", vocab_size=11)
    assert cfg.arch is Arch.DECODER_LM and cfg.activation is Activation.GELU
    assert cfg.norm is NormPosition.PRE and cfg.positional is PositionalKind.ROPE
    d = cfg.to_dict()
    assert d["arch"] == "decoder_lm" and isinstance(d["activation"], str)
    assert ModelConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown field"):
        ModelConfig.from_dict({**d, "num_experts": 8})


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_preset("tiny_lm").d_model = 3


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown model preset"):
        get_preset("gpt5")


def test_missing_vocab_is_reported_when_building():
    from tfm.models import build_model

    with pytest.raises(ValueError, match="vocab_size"):
        build_model(ModelConfig(vocab_size=0))


def test_paper_table3_presets():
    base, big = get_preset("transformer_base"), get_preset("transformer_big")
    assert (base.num_layers, base.d_model, base.d_ff, base.num_heads, base.dropout_rate) == (6, 512, 2048, 8, 0.1)
    assert (big.num_layers, big.d_model, big.d_ff, big.num_heads, big.dropout_rate) == (6, 1024, 4096, 16, 0.3)
    assert base.head_dim == 64 and big.head_dim == 64


def test_gpt2_small_has_exactly_the_public_parameter_count():
    assert param_count(get_preset("gpt2_small")) == 124_439_808


@pytest.mark.parametrize("name, paper", [("transformer_base", 65e6), ("transformer_big", 213e6)])
def test_paper_parameter_counts_within_5_percent(name, paper):
    cfg = get_preset(name, vocab_size=37000)  # the paper's shared BPE vocabulary
    assert abs(param_count(cfg) - paper) / paper < 0.05


def test_every_preset_builds_abstractly():
    for name in PRESETS:
        assert param_count(get_preset(name)) > 0


def test_attention_impl_names_live_in_one_enum():
    """Validation and the attention dispatch both take their names from AttentionImpl."""
    import jax.numpy as jnp

    from tfm.attention import scaled_dot_product_attention
    from tfm.config import AttentionImpl

    cfg = get_preset("tiny_lm", vocab_size=7, attention_impl="xla")
    assert cfg.attention_impl is AttentionImpl.XLA and cfg.to_dict()["attention_impl"] == "xla"
    names = ", ".join(repr(m.value) for m in AttentionImpl)
    with pytest.raises(ValueError, match=f"ModelConfig.attention_impl.*{names}"):
        get_preset("tiny_lm", vocab_size=7, attention_impl="triton")
    q = jnp.ones((1, 3, 2, 4))
    with pytest.raises(ValueError, match="triton"):
        scaled_dot_product_attention(q, q, q, implementation="triton")
    for impl in ("xla", AttentionImpl.XLA, AttentionImpl.AUTO):
        assert scaled_dot_product_attention(q, q, q, implementation=impl).shape == (1, 3, 2, 4)
