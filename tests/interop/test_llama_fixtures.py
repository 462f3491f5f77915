"""Offline parity with transformers for the Llama family: the committed tiny llama (GQA 2 of 4
kv heads, rope_scaling llama3, untied), mistral (multi-query, bfloat16 weights) and qwen2 (q/k/v
biases, tied head) checkpoints of tools/make_hf_fixtures.py and what transformers computed for
them. No torch needed."""

from __future__ import annotations

import numpy as np
import pytest

import tfm
from tfm import decoding, interop
from tfm.interop.convert import flat_paths

from interop_helpers import FIXTURES, reference, rel_err, strip

TYPES = ("llama", "mistral", "qwen2")


@pytest.fixture(scope="module", params=TYPES)
def fixture(request):
    return request.param, interop.from_pretrained(FIXTURES / request.param)


def test_config_states_the_options(fixture):
    name, pre = fixture
    cfg = pre.config
    assert pre.model_type == name
    assert (cfg.norm_kind, cfg.gated_ffn, cfg.rope_layout, cfg.positional) == (
        tfm.config.NormKind.RMS_NORM, True, tfm.config.RopeLayout.ROTATE_HALF, tfm.PositionalKind.ROPE)
    want = {"llama": (2, (4.0, 1.0, 4.0, 16), False, False, 500000.0),
            "mistral": (1, None, False, False, 1e6), "qwen2": (2, None, True, True, 10000.0)}[name]
    assert (cfg.num_kv_heads, cfg.rope_scaling, cfg.qkv_bias, cfg.tie_output, cfg.rope_base) == want


def test_logits_match_transformers(fixture):
    name, pre = fixture
    ref, _ = reference(name)
    got = pre.model.apply({"params": pre.params}, ref["inputs"])
    assert np.abs(np.asarray(got) - ref["logits"]).max() < 2e-5 and rel_err(got, ref["logits"]) < 1e-5


def test_greedy_matches_transformers(fixture):
    name, pre = fixture
    ref, meta = reference(name)
    out = decoding.lm_generate(pre.model, pre.params, ref["inputs"], max_new_tokens=meta["max_new_tokens"],
                               temperature=0.0, eos_id=meta["eos_id"])
    for row in range(len(ref["inputs"])):
        got = np.asarray(out.tokens)[row, : int(out.lengths[row])].tolist()
        assert got == strip(ref["greedy"][row], meta["eos_id"]), row


def test_tokenizer_matches_transformers(fixture):
    name, pre = fixture
    _, meta = reference(name)
    tok = pre.tokenizer
    assert (tok.vocab_size, tok.eos_id) == (meta["vocab_size"], meta["eos_id"])
    assert tok.starts_with_bos == (meta["bos_id"] is not None)
    for text, ids in meta["token_ids"].items():
        assert ([tok.bos_id] if tok.starts_with_bos else []) + tok.encode(text) == ids, text
    assert tok.decode(tok.encode("How are you today?")) == meta["decoded"]["How are you today?"]


def test_export_then_import_is_bitwise_and_keeps_the_model_type(fixture, tmp_path):
    name, pre = fixture
    written = interop.save_pretrained(pre, tmp_path / "out", max_shard_bytes=30_000)
    assert "model.safetensors.index.json" in written and "tokenizer.json" in written
    again = interop.from_pretrained(tmp_path / "out")
    assert again.model_type == name and again.config == pre.config
    a, b = flat_paths(pre.params), flat_paths(again.params)
    assert sorted(a) == sorted(b)
    for k in a:
        assert np.asarray(a[k]).tobytes() == np.asarray(b[k]).tobytes(), k
    assert again.tokenizer.encode("Hello world!") == pre.tokenizer.encode("Hello world!")


def test_left_padded_batch_generates_each_row_as_alone():
    pre = interop.from_pretrained(FIXTURES / "llama")
    prompts = ["The weather is nice", "She reads a book in the garden every"]
    batched = tfm.generate(pre, prompts, max_new_tokens=6, temperature=0.0, stop_at_eos=False)
    alone = [tfm.generate(pre, p, max_new_tokens=6, temperature=0.0, stop_at_eos=False) for p in prompts]
    assert batched == alone


def test_generate_from_pretrained_end_to_end_starts_with_bos():
    """tfm.generate on text: Llama's tokenizer puts <s> first, so the prompt of reference row 0
    (which starts with it) continues as transformers' greedy."""
    pre = interop.from_pretrained(FIXTURES / "llama")
    ref, meta = reference("llama")
    assert ref["inputs"][0][0] == pre.tokenizer.bos_id
    prompt = pre.tokenizer.decode(ref["inputs"][0][1:])
    text = tfm.generate(pre, prompt, max_new_tokens=meta["max_new_tokens"], temperature=0.0)
    want = [t for t in strip(ref["greedy"][0], meta["eos_id"]) if t != meta["eos_id"]]
    assert text == pre.tokenizer.decode(want)


@pytest.mark.parametrize("change, key", [
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}}, "rope_type='yarn'"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling rope_type='linear'"),
    ({"sliding_window": 16}, "sliding_window=16"),
    ({"attention_bias": True}, "attention_bias=true"),
    ({"mlp_bias": True}, "mlp_bias=true"),
    ({"head_dim": 16}, "head_dim=16"),
    ({"num_key_value_heads": 3}, "num_kv_heads"),
])
def test_unsupported_settings_are_refused_naming_the_key(tmp_path, change, key):
    import json
    import shutil

    shutil.copytree(FIXTURES / "mistral", tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    hf = json.loads(path.read_text())
    if "rope_scaling" in change:
        hf.pop("rope_parameters")
        hf["rope_theta"] = 1e4
    hf.update(change)
    path.write_text(json.dumps(hf))
    with pytest.raises(interop.HFFormatError, match=f"config.json: .*{key}"):
        interop.read_model_config(tmp_path / "m")


def test_qwen2_sliding_window_only_counts_when_used(tmp_path):
    import json
    import shutil

    shutil.copytree(FIXTURES / "qwen2", tmp_path / "q")
    path = tmp_path / "q" / "config.json"
    hf = json.loads(path.read_text())
    path.write_text(json.dumps({**hf, "sliding_window": 16, "use_sliding_window": False}))
    interop.read_model_config(tmp_path / "q")
    path.write_text(json.dumps({**hf, "sliding_window": 16, "use_sliding_window": True}))
    with pytest.raises(interop.HFFormatError, match="sliding_window=16"):
        interop.read_model_config(tmp_path / "q")


def test_cli_generate_pretrained_continues_as_transformers(capsys):
    from tfm.cli import generate_main

    pre = interop.from_pretrained(FIXTURES / "llama")
    ref, meta = reference("llama")
    prompt = pre.tokenizer.decode(ref["inputs"][0][1:])
    assert generate_main(["--pretrained", str(FIXTURES / "llama"), "--prompt", prompt, "--max_new_tokens",
                          str(meta["max_new_tokens"]), "--temperature", "0"]) == 0
    want = [t for t in strip(ref["greedy"][0], meta["eos_id"]) if t != meta["eos_id"]]
    assert capsys.readouterr().out == prompt + pre.tokenizer.decode(want) + "\n"


def test_bfloat16_checkpoint_loads_as_bfloat16_without_widening():
    """mistral's weights are stored in bfloat16: loaded with dtype="bfloat16" they are the file's
    bits, and widened they are the float32 load exactly."""
    import ml_dtypes

    cfg16, p16 = interop.load_model(FIXTURES / "mistral", dtype="bfloat16", check=True)
    cfg32, p32 = interop.load_model(FIXTURES / "mistral")
    assert cfg16.param_dtype == "bfloat16" and cfg16.replace(param_dtype="float32") == cfg32
    a, b = flat_paths(p16), flat_paths(p32)
    for k in b:
        assert a[k].dtype == ml_dtypes.bfloat16, k
        np.testing.assert_array_equal(a[k].astype(np.float32), b[k], err_msg=k)
