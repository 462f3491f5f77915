"""Live parity with transformers for the Llama family (skipped without torch and transformers):
fresh random llama / mistral / qwen2 models with settings the fixtures do not have (sizes, head
counts, theta, tying, rope scaling), imported into tfm: logits within 2e-5, the gradient of every
parameter, greedy tokens (KV-cached, left-padded batch = each row alone = transformers), and an
export that transformers loads back with the same logits."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402

from tfm import decoding, interop  # noqa: E402

from test_hf_live import _perturb, _tfm_logits_and_grads, _torch_grads  # noqa: E402

V = 67
SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 8}
SHAPES = {
    "llama_d40_h5_kv1_tied_llama3_theta1e5": ("llama", dict(
        hidden_size=40, num_attention_heads=5, num_key_value_heads=1, num_hidden_layers=3, intermediate_size=56,
        tie_word_embeddings=True, rope_theta=1e5, rope_scaling=SCALING, rms_norm_eps=1e-6)),
    "mistral_d48_h6_kv3_untied_theta2e4": ("mistral", dict(
        hidden_size=48, num_attention_heads=6, num_key_value_heads=3, num_hidden_layers=2, intermediate_size=72,
        tie_word_embeddings=False, rope_theta=2e4, sliding_window=None)),
    "qwen2_d24_h2_kv2_untied_theta1e6": ("qwen2", dict(
        hidden_size=24, num_attention_heads=2, num_key_value_heads=2, num_hidden_layers=2, intermediate_size=40,
        tie_word_embeddings=False, rope_theta=1e6)),
}
CLASSES = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "mistral": ("MistralConfig", "MistralForCausalLM"),
           "qwen2": ("Qwen2Config", "Qwen2ForCausalLM")}


def _model(model_type, kw, seed):
    torch.manual_seed(seed)
    conf_cls, model_cls = (getattr(transformers, n) for n in CLASSES[model_type])
    config = conf_cls(vocab_size=V, max_position_embeddings=32, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                      initializer_range=0.1, **kw)
    model = model_cls(config).eval()
    _perturb(model, seed)
    return model


@pytest.fixture(scope="module", params=[  # the first in the default run, the others with -m slow
    pytest.param(k, marks=() if i == 0 else pytest.mark.slow) for i, k in enumerate(sorted(SHAPES))])
def pair(request, tmp_path_factory):
    model_type, kw = SHAPES[request.param]
    model = _model(model_type, kw, seed=sorted(SHAPES).index(request.param))
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path, safe_serialization=True)
    cfg, params = interop.load_model(path, check=True)
    return model_type, model, cfg, params, path


def test_logits_and_every_gradient(pair):
    model_type, model, cfg, params, _ = pair
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, V, (2, 11)).astype(np.int64)
    weights = rng.standard_normal((2, 11, V)).astype(np.float32)
    want, torch_grads = _torch_grads(model, weights, input_ids=tokens)
    got, grads = _tfm_logits_and_grads(cfg, params, jnp.asarray(weights), tokens)
    assert np.abs(got - want).max() < 2e-5
    mapped = interop.FAMILIES[model_type].params_to_hf(grads, cfg)
    floor = 1e-3 * max(float(np.abs(g).max()) for g in torch_grads.values())
    for name, g in torch_grads.items():
        err = float(np.abs(mapped[name] - g).max()) / max(float(np.abs(g).max()), floor)
        assert err < 1e-4, (name, err)
    assert set(mapped) == set(torch_grads)  # every parameter compared (tied: one table)


def test_greedy_cached_left_padded_equals_transformers_row_by_row(pair):
    _, model, cfg, params, _ = pair
    from tfm.models import build_model

    rng = np.random.default_rng(1)
    rows = [rng.integers(3, V, n).tolist() for n in (7, 3, 5)]
    width, steps = max(map(len, rows)), 8
    prompts = np.array([[0] * (width - len(r)) + r for r in rows], np.int32)
    mask = np.array([[False] * (width - len(r)) + [True] * len(r) for r in rows])
    out = decoding.lm_generate(build_model(cfg), params, prompts, prompt_mask=mask, max_new_tokens=steps,
                               temperature=0.0, eos_id=-1)
    for i, r in enumerate(rows):
        with torch.no_grad():
            want = model.generate(torch.tensor([r]), max_new_tokens=steps, do_sample=False, eos_token_id=None,
                                  pad_token_id=0, attention_mask=torch.ones(1, len(r), dtype=torch.long))
        assert np.asarray(out.tokens)[i].tolist() == want[0, len(r):].tolist(), i


def test_transformers_loads_the_export_with_the_same_logits(pair, tmp_path):
    model_type, model, cfg, params, _ = pair
    interop.save_pretrained((cfg, params, None), tmp_path / "out", model_type=model_type)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert type(back).__name__ == CLASSES[model_type][1]
    tokens = torch.tensor(np.random.default_rng(2).integers(0, V, (2, 9)))
    with torch.no_grad():
        np.testing.assert_allclose(back(tokens).logits.numpy(), model(tokens).logits.numpy(), atol=1e-6)
