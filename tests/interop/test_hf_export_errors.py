"""Export to Hugging Face layout (export -> import is bitwise identical, shards too) and the
errors for bad model directories, each naming the file or tensor. No torch needed."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest

import tfm
from tfm import interop
from tfm.interop import HFFormatError
from tfm.interop.convert import flat_paths
from tfm.interop.hf_io import WEIGHTS_FILE

from interop_helpers import FIXTURES


def _assert_bitwise_equal(a, b):
    fa, fb = flat_paths(a), flat_paths(b)
    assert sorted(fa) == sorted(fb)
    for k in fa:
        x, y = np.asarray(fa[k]), np.asarray(fb[k])
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert x.tobytes() == y.tobytes(), k


@pytest.mark.parametrize("name", ["gpt2", "marian"])
@pytest.mark.parametrize("shards", [None, 40_000], ids=["single", "sharded"])
def test_export_then_import_is_bitwise_identical(tmp_path, name, shards):
    cfg, params = interop.load_model(FIXTURES / name, check=True)
    tok = interop.load_tokenizer(FIXTURES / name)
    written = interop.save_pretrained((cfg, params, tok), tmp_path / "out", max_shard_bytes=shards)
    if shards:
        assert "model.safetensors.index.json" in written and len([w for w in written if "-of-" in w]) > 1
    cfg2, params2 = interop.load_model(tmp_path / "out")
    assert cfg2 == cfg
    _assert_bitwise_equal(params, params2)
    tok2 = interop.load_tokenizer(tmp_path / "out")
    for text in ("Hello world!", "How are you today?"):
        assert tok2.encode(text) == tok.encode(text)
    # and once more: the exported directory exports to the same bytes
    interop.save_pretrained((cfg2, params2, tok2), tmp_path / "again", max_shard_bytes=shards)
    for f in written:
        if f.endswith(".safetensors"):
            assert (tmp_path / "out" / f).read_bytes() == (tmp_path / "again" / f).read_bytes()


def test_export_of_a_tfm_trained_gpt2_shaped_model(tmp_path):
    """A model tfm built itself (pre-LN, GELU, learned positions: shakespeare_char's shape) with
    its own char tokenizer: the weights are exported, the tokenizer is not (no HF equivalent)."""
    from tfm.data.tokenizers import CharTokenizer

    cfg = tfm.get_preset("tiny_lm", positional="learned", activation="gelu", scale_embeddings=False,
                         layer_norm_eps=1e-5)
    import flax.linen as nn

    params = nn.meta.unbox(tfm.build_model(cfg).init(jax.random.key(0), *tfm.dummy_inputs(cfg))["params"])
    written = interop.save_pretrained((cfg, params, CharTokenizer("abc")), tmp_path / "out")
    assert sorted(written) == ["config.json", WEIGHTS_FILE]
    cfg2, params2 = interop.load_model(tmp_path / "out")
    assert cfg2 == cfg
    _assert_bitwise_equal(jax.tree.map(np.asarray, params), params2)


def test_export_refuses_a_non_empty_directory_and_foreign_shapes(tmp_path):
    cfg, params = interop.load_model(FIXTURES / "gpt2")
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(HFFormatError, match="not empty"):
        interop.save_pretrained((cfg, params, None), tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "user data"
    paper = tfm.get_preset("tiny_encdec")  # interleaved positions, eps 1e-6: not a Marian
    p = tfm.build_model(paper).init(jax.random.key(0), *tfm.dummy_inputs(paper))["params"]
    with pytest.raises(HFFormatError, match="sinusoidal_layout"):
        interop.save_pretrained((paper, p, None), tmp_path / "new")


# ---------------------------------------------------------------------- bad input
def _copy(tmp_path, name="gpt2"):
    d = tmp_path / name
    shutil.copytree(FIXTURES / name, d)
    return d


def _rewrite_weights(d, edit):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(d / WEIGHTS_FILE))
    edit(tensors)
    save_file(tensors, str(d / WEIGHTS_FILE), metadata={"format": "pt"})


def test_error_directory_without_config(tmp_path):
    with pytest.raises(HFFormatError, match="config.json is missing"):
        interop.from_pretrained(tmp_path)
    with pytest.raises(HFFormatError, match="is not a directory"):
        interop.from_pretrained(tmp_path / "nope")


def test_error_directory_without_weights(tmp_path):
    d = _copy(tmp_path)
    (d / WEIGHTS_FILE).unlink()
    (d / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(HFFormatError, match=r"has no weights.*pytorch_model.bin.*safetensors only"):
        interop.from_pretrained(d)


def test_error_unsupported_model_type(tmp_path):
    d = _copy(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "gemma"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HFFormatError, match=r"config.json: model_type='gemma' is not supported"):
        interop.from_pretrained(d)


def test_error_unsupported_setting(tmp_path):
    d = _copy(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["scale_attn_by_inverse_layer_idx"] = True
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HFFormatError, match="scale_attn_by_inverse_layer_idx"):
        interop.from_pretrained(d)


def test_error_missing_tensor(tmp_path):
    d = _copy(tmp_path)
    _rewrite_weights(d, lambda t: t.pop("transformer.h.1.mlp.c_fc.bias"))
    with pytest.raises(HFFormatError, match=r"tensor 'transformer.h.1.mlp.c_fc.bias' is missing"):
        interop.from_pretrained(d)


def test_error_mis_shaped_tensor(tmp_path):
    d = _copy(tmp_path, "marian")

    def edit(t):
        t["model.decoder.layers.0.fc1.weight"] = t["model.decoder.layers.0.fc1.weight"][:, :-1].copy()

    _rewrite_weights(d, edit)
    with pytest.raises(HFFormatError, match=r"'model.decoder.layers.0.fc1.weight'.*shape \[64, 31\].*needs \[64, 32\]"):
        interop.from_pretrained(d)


def test_error_unexpected_extra_tensor(tmp_path):
    d = _copy(tmp_path)

    def edit(t):
        t["transformer.h.2.ln_1.weight"] = np.ones(32, np.float32)  # a third layer config.json lacks
        t["transformer.h.0.attn.bias"] = np.ones((1, 1, 4, 4), np.float32)  # old causal-mask buffer: fine

    _rewrite_weights(d, edit)
    with pytest.raises(HFFormatError, match=r"unexpected tensor\(s\).*'transformer.h.2.ln_1.weight' \(model.safetensors\)"):
        interop.from_pretrained(d)


def test_error_untied_output_layer(tmp_path):
    d = _copy(tmp_path)
    _rewrite_weights(d, lambda t: t.__setitem__("lm_head.weight", t["transformer.wte.weight"] + 1))
    with pytest.raises(HFFormatError, match=r"'lm_head.weight'.*untied"):
        interop.from_pretrained(d)


def test_error_missing_shard_and_missing_tokenizer(tmp_path):
    cfg, params = interop.load_model(FIXTURES / "gpt2")
    out = tmp_path / "sharded"
    written = interop.save_pretrained((cfg, params, None), out, max_shard_bytes=40_000)
    shard = next(w for w in written if "-of-" in w)
    (out / shard).unlink()
    with pytest.raises(HFFormatError, match=rf"{shard} is missing \(listed in .*index.json"):
        interop.load_model(out)
    out2 = tmp_path / "no_tokenizer"
    interop.save_pretrained((cfg, params, None), out2)
    with pytest.raises(HFFormatError, match="no GPT-2 tokenizer"):
        interop.from_pretrained(out2)


def test_workdir_loader_points_to_from_pretrained():
    from tfm.inference import WorkdirError, load

    with pytest.raises(WorkdirError, match="Hugging Face model directory.*from_pretrained"):
        load(FIXTURES / "gpt2")


def test_command_lines_take_pretrained(tmp_path, capsys):
    from tfm.cli import export_main, generate_main, translate_main

    # the wrong kind of model, named; --workdir and --pretrained exclude each other
    assert translate_main(["--pretrained", str(FIXTURES / "gpt2"), "hello"]) == 2
    assert "kind 'decoder_lm', but this needs 'encoder_decoder'" in capsys.readouterr().err
    assert generate_main(["--pretrained", str(tmp_path)]) == 2
    assert "config.json is missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        generate_main(["--pretrained", str(FIXTURES / "gpt2"), "--workdir", str(tmp_path)])
    # export of an imported model: the same tensors, bitwise
    assert export_main(["--pretrained", str(FIXTURES / "marian"), "--out", str(tmp_path / "out")]) == 0
    _assert_bitwise_equal(interop.load_model(FIXTURES / "marian")[1], interop.load_model(tmp_path / "out")[1])
    assert export_main(["--pretrained", str(FIXTURES / "marian"), "--out", str(tmp_path / "out")]) == 2
    assert "not empty; refusing to overwrite" in capsys.readouterr().err


def test_gpt2_hub_layout_without_prefix_with_mask_buffers_and_bf16(tmp_path):
    """The Hub's gpt2 checkpoint: names without "transformer.", the old causal-mask buffers
    h.N.attn.bias / masked_bias (ignored), and a tied lm_head copy; a bfloat16 checkpoint is
    widened to float32 exactly."""
    import ml_dtypes

    d = _copy(tmp_path)
    want = interop.load_model(FIXTURES / "gpt2")[1]

    def edit(t):
        for k in list(t):
            t[k.removeprefix("transformer.")] = t.pop(k)
        t["lm_head.weight"] = t["wte.weight"].copy()
        for i in range(2):
            t[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), np.float32))
            t[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)

    _rewrite_weights(d, edit)
    _assert_bitwise_equal(interop.load_model(d)[1], want)

    _rewrite_weights(d, lambda t: t.update({k: v.astype(ml_dtypes.bfloat16) for k, v in t.items()}))
    got = interop.load_model(d)[1]
    for k, v in flat_paths(want).items():
        np.testing.assert_array_equal(flat_paths(got)[k], v.astype(ml_dtypes.bfloat16).astype(np.float32), err_msg=k)
