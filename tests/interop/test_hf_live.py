"""Live parity with transformers (skipped without torch and transformers): fresh random GPT-2
and Marian models of several shapes, imported into tfm: logits and the gradient of every
parameter; and exports that transformers loads back with the same logits."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from tfm import interop  # noqa: E402
from tfm.interop import gpt2 as gpt2_lib  # noqa: E402
from tfm.interop import marian as marian_lib  # noqa: E402

from interop_helpers import rel_err  # noqa: E402

GPT2_SHAPES = {
    "d24_h3_l1_gelu_new": dict(n_embd=24, n_head=3, n_layer=1, n_inner=40, activation_function="gelu_new"),
    "d32_h4_l3_gelu_eps1e-6": dict(n_embd=32, n_head=4, n_layer=3, activation_function="gelu",
                                   layer_norm_epsilon=1e-6),
}
MARIAN_SHAPES = {
    "d16_h2_1+2_swish_scaled": dict(d_model=16, encoder_attention_heads=2, decoder_attention_heads=2,
                                    encoder_layers=1, decoder_layers=2, encoder_ffn_dim=24, decoder_ffn_dim=24,
                                    activation_function="swish", scale_embedding=True),
    "d24_h4_2+1_gelu_unscaled": dict(d_model=24, encoder_attention_heads=4, decoder_attention_heads=4,
                                     encoder_layers=2, decoder_layers=1, encoder_ffn_dim=40, decoder_ffn_dim=40,
                                     activation_function="gelu", scale_embedding=False),
}
V = 61


def _perturb(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" not in name:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.copy_(0.3 * torch.randn(model.final_logits_bias.shape, generator=gen))


def _save(model, path):
    model.save_pretrained(path, safe_serialization=True)
    return path


def _tokens(rng, shape, low=1):
    return rng.integers(low, V - 1, size=shape).astype(np.int64)


def _torch_grads(model, loss_weights, **inputs):
    """transformers' logits and the gradient of sum(logits * loss_weights) for every parameter."""
    model.zero_grad()
    logits = model(**{k: torch.tensor(x) for k, x in inputs.items()}).logits
    (logits * torch.tensor(loss_weights)).sum().backward()
    return logits.detach().numpy(), {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}


def _compare_grads(family, cfg, tfm_grads, torch_grads):
    mapped = family.params_to_hf(tfm_grads, cfg)  # the conversion is linear: gradients map alike
    # Relative to each tensor's own scale, except for gradients that are zero in exact
    # arithmetic (attention key biases: softmax ignores them), judged against the largest one.
    floor = 1e-3 * max(float(np.abs(g).max()) for g in torch_grads.values())
    compared = 0
    for name, g in torch_grads.items():
        key = name if name in mapped else "transformer." + name
        assert key in mapped, name
        err = float(np.abs(mapped[key] - g).max()) / max(float(np.abs(g).max()), floor)
        assert err < 1e-4, (name, err)
        compared += 1
    assert compared == len(torch_grads) > 10


def _tfm_logits_and_grads(cfg, params, weights, *inputs):
    from tfm.models import build_model

    model = build_model(cfg)

    def loss(p):
        logits = model.apply({"params": p}, *[jnp.asarray(x, jnp.int32) for x in inputs])
        return (logits * weights).sum(), logits

    (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(jax.tree.map(jnp.asarray, params))
    return np.asarray(logits), jax.tree.map(np.asarray, grads)


def _shapes(shapes):  # the first shape in the default run, the others with -m slow
    return [pytest.param(k, marks=() if i == 0 else pytest.mark.slow) for i, k in enumerate(shapes)]


@pytest.mark.parametrize("shape", _shapes(GPT2_SHAPES))
def test_gpt2_logits_and_every_gradient(tmp_path, shape):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=V, n_positions=16, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0,
                                     **GPT2_SHAPES[shape])
    model = transformers.GPT2LMHeadModel(config).eval()
    _perturb(model, 0)
    cfg, params = interop.load_model(_save(model, tmp_path / "m"), check=True)
    rng = np.random.default_rng(0)
    tokens = _tokens(rng, (2, 9))
    weights = rng.standard_normal((2, 9, V)).astype(np.float32)
    want, torch_grads = _torch_grads(model, weights, input_ids=tokens)
    got, grads = _tfm_logits_and_grads(cfg, params, weights, tokens)
    assert rel_err(got, want) < 1e-5
    _compare_grads(gpt2_lib, cfg, grads, torch_grads)


@pytest.mark.parametrize("shape", _shapes(MARIAN_SHAPES))
def test_marian_logits_and_every_gradient(tmp_path, shape):
    torch.manual_seed(0)
    config = transformers.MarianConfig(vocab_size=V, max_position_embeddings=16, pad_token_id=V - 1,
                                       decoder_start_token_id=V - 1, eos_token_id=0, dropout=0.0,
                                       **MARIAN_SHAPES[shape])
    model = transformers.MarianMTModel(config).eval()
    _perturb(model, 1)
    cfg, params = interop.load_model(_save(model, tmp_path / "m"), check=True)
    rng = np.random.default_rng(1)
    src, tgt = _tokens(rng, (2, 7)), _tokens(rng, (2, 5))
    weights = rng.standard_normal((2, 5, V)).astype(np.float32)
    want, torch_grads = _torch_grads(model, weights, input_ids=src, decoder_input_ids=tgt)
    got, grads = _tfm_logits_and_grads(cfg, params, weights, src, tgt)
    assert rel_err(got, want) < 1e-5
    _compare_grads(marian_lib, cfg, grads, torch_grads)


@pytest.mark.slow  # the offline fixture tests check token 0 in the default run
def test_gpt2_logits_with_token_0(tmp_path):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=V, n_positions=16, n_embd=16, n_head=2, n_layer=1)
    model = transformers.GPT2LMHeadModel(config).eval()
    _perturb(model, 2)
    cfg, params = interop.load_model(_save(model, tmp_path / "m"))
    tokens = np.array([[5, 0, 7, 0, 9]])
    with torch.no_grad():
        want = model(torch.tensor(tokens)).logits.numpy()
    got = np.asarray(interop_model_apply(cfg, params, tokens))
    assert rel_err(got, want) < 1e-5


def interop_model_apply(cfg, params, *inputs):
    from tfm.models import build_model

    return build_model(cfg).apply({"params": params}, *[jnp.asarray(x, jnp.int32) for x in inputs])


@pytest.mark.parametrize("name", ["gpt2", "marian"])
def test_transformers_loads_the_export_with_the_same_logits(tmp_path, name):
    from interop_helpers import FIXTURES

    pre = interop.from_pretrained(FIXTURES / name)
    interop.save_pretrained(pre, tmp_path / "out")
    rng = np.random.default_rng(3)
    src = _tokens(rng, (2, 6))
    if name == "gpt2":
        hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
        with torch.no_grad():
            want = hf(torch.tensor(src)).logits.numpy()
        got = interop_model_apply(pre.config, pre.params, src)
        tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    else:
        hf = transformers.MarianMTModel.from_pretrained(tmp_path / "out").eval()
        tgt = _tokens(rng, (2, 4))
        with torch.no_grad():
            want = hf(input_ids=torch.tensor(src), decoder_input_ids=torch.tensor(tgt)).logits.numpy()
        got = interop_model_apply(pre.config, pre.params, src, tgt)
        tok = transformers.MarianTokenizer.from_pretrained(tmp_path / "out")
    assert rel_err(got, want) < 1e-5
    text = "How are you today?"
    extra = [pre.tokenizer.eos_id] if name == "marian" else []
    assert tok(text)["input_ids"] == pre.tokenizer.encode(text) + extra
