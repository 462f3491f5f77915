"""Offline BERT tests against the committed fixtures (tests/fixtures/hf/bert_*, saved by
transformers with what it computed: tools/make_hf_fixtures.py): import, outputs, the WordPiece
tokenizer (cased from vocab.txt, uncased from tokenizer.json), classify / fill_mask / embed and
their command lines, export round trips, and the refusals naming the config.json key."""

from __future__ import annotations

import io
import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

import tfm
from tfm import interop
from tfm.arguments import ArgumentError
from tfm.data.tokenizers import load_tokenizer
from tfm.interop.hf_io import HFFormatError

from interop_helpers import FIXTURES, reference

NAMES = ("bert_classifier", "bert_mlm", "bert_base")


@pytest.fixture(scope="module")
def loaded():
    return {name: interop.from_pretrained(FIXTURES / name) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_outputs_match_transformers(loaded, name):
    arrays, meta = reference(name)
    pre = loaded[name]
    assert pre.config.head.value == {"bert_classifier": "classifier", "bert_mlm": "mlm", "bert_base": "none"}[name]
    got = np.asarray(pre.model.apply({"params": pre.params}, jnp.asarray(arrays["inputs"]),
                                     token_types=jnp.asarray(arrays["token_types"]),
                                     segment_ids=jnp.asarray(arrays["mask"])))
    want = arrays["output"]
    real = arrays["mask"].astype(bool) if want.ndim == 3 else slice(None)
    np.testing.assert_allclose(got[real], want[real], atol=2e-5, rtol=0)
    interop.load_model(FIXTURES / name, check=True)  # the tree is exactly the model's


@pytest.mark.parametrize("name", NAMES)
def test_tokenizer_ids_and_pairs_match_transformers(loaded, name):
    _, meta = reference(name)
    tok = loaded[name].tokenizer
    assert tok.vocab_size == meta["vocab_size"] and tok.mask_id == meta["mask_id"]
    texts = list(meta["token_ids"])
    for text, (ids, types) in zip(texts, tok.encode_for_model(texts, max_len=64)):
        assert ids.tolist() == meta["token_ids"][text], text
        assert not types.any()
        assert tok.decode(ids) == meta["decoded"][text]
    for pair in meta["pairs"]:
        ((ids, types),) = tok.encode_for_model([pair["a"]], [pair["b"]], max_len=64)
        assert ids.tolist() == pair["input_ids"] and types.tolist() == pair["token_type_ids"]
    # lower-casing as configured: the cased vocabulary keeps "Hello" apart from "hello"
    assert (tok.encode("Hello") == tok.encode("hello")) == meta["lowercase"]


def test_truncation_is_longest_first(loaded):
    tok = loaded["bert_classifier"].tokenizer
    a, b = tok.encode("the quick brown fox jumps over the lazy dog"), tok.encode("hello")
    ((ids, types),) = tok.encode_for_model(["the quick brown fox jumps over the lazy dog"], ["hello"], max_len=10)
    assert len(ids) == 10 and ids.tolist() == [tok.bos_id, *a[:10 - 3 - len(b)], tok.eos_id, *b, tok.eos_id]
    assert types.tolist() == [0] * (10 - len(b) - 1) + [1] * (len(b) + 1)


def test_classify_fill_mask_embed(loaded):
    arrays, meta = reference("bert_classifier")
    assert arrays["mask"][0].all() and not arrays["token_types"][0, arrays["token_types"][0] > 1].size
    pair = (meta["pairs"][0]["a"], meta["pairs"][0]["b"])
    result = tfm.classify(loaded["bert_classifier"], [pair, "Hello world!"])
    logits = arrays["output"][0].astype(np.float64)
    p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert list(result[0]["probabilities"]) == meta["class_names"]
    np.testing.assert_allclose(list(result[0]["probabilities"].values()), p, atol=1e-5)
    assert result[0]["label"] == meta["class_names"][int(np.argmax(p))]
    # a text's result does not depend on its batch
    alone = tfm.classify(loaded["bert_classifier"], "Hello world!")
    np.testing.assert_allclose(alone["score"], result[1]["score"], atol=1e-6)

    arrays, meta = reference("bert_mlm")
    top = tfm.fill_mask(loaded["bert_mlm"], meta["masked_text"], top_k=5)
    assert [c["token_id"] for c in top] == arrays["mask_top5"].tolist()
    np.testing.assert_allclose([c["score"] for c in top], arrays["mask_top5_probs"], atol=1e-5)
    assert top[0]["sequence"].startswith("The quick brown")
    two = tfm.fill_mask(loaded["bert_mlm"], ["[MASK] world [MASK]"], top_k=2)
    assert len(two) == 1 and len(two[0]) == 2 and len(two[0][0]) == 2
    with pytest.raises(ArgumentError, match="no \\[MASK\\]"):
        tfm.fill_mask(loaded["bert_mlm"], "nothing masked")
    with pytest.raises(ArgumentError, match="top_k=0: must be an integer >= 1"):
        tfm.fill_mask(loaded["bert_mlm"], "a [MASK]", top_k=0)
    with pytest.raises(tfm.inference.WorkdirError, match="fill_mask needs a masked-LM head"):
        tfm.fill_mask(loaded["bert_classifier"], "a [MASK]")

    arrays, meta = reference("bert_base")
    pair = (meta["pairs"][0]["a"], meta["pairs"][0]["b"])
    pre = loaded["bert_base"]
    ids = np.asarray(meta["pairs"][0]["input_ids"])
    np.testing.assert_array_equal(ids, arrays["inputs"][0])
    states = arrays["output"][0]
    with pytest.raises(TypeError, match="expected texts or"):
        tfm.embed(pre, [3])
    with pytest.raises(ArgumentError, match="pooling='max': expected 'mean' or 'cls'"):
        tfm.embed(pre, "a", pooling="max")
    with pytest.raises(ArgumentError, match="batch_size=0"):
        tfm.embed(pre, "a", batch_size=0)
    cls = tfm.embed(pre, [meta["pairs"][0]["a"], "Hello world!"], pooling="cls")
    assert cls.shape == (2, 24) and cls.dtype == np.float32
    # a single text's [CLS] state from transformers' batch is not at hand; the pair's is:
    got = tfm.encoding_tasks._run(pre, "encode", tfm.encoding_tasks._encode(pre, [pair]), 4)[0]
    np.testing.assert_allclose(got, states, atol=2e-5)
    mean = tfm.embed(pre, "Hello world!")
    one = tfm.encoding_tasks._run(pre, "encode", tfm.encoding_tasks._encode(pre, ["Hello world!"]), 4)[0]
    np.testing.assert_allclose(mean, one.mean(0), atol=1e-6)
    np.testing.assert_allclose(cls[1], one[0], atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_export_round_trip(loaded, tmp_path, name):
    pre = loaded[name]
    written = interop.save_pretrained(pre, tmp_path / "out")
    assert "model.safetensors" in written and "config.json" in written
    cfg, params = interop.load_model(tmp_path / "out")
    assert cfg == pre.config
    src = dict(tfm.interop.convert.flat_paths(pre.params))
    for path, value in tfm.interop.convert.flat_paths(params).items():
        np.testing.assert_array_equal(value, np.asarray(src[path]), err_msg=path)
    back = interop.load_tokenizer(tmp_path / "out")
    texts = ["Hello world!", "The fox jumps over the dog."]
    assert [x.tolist() for x in back.encode_batch(texts)] == [x.tolist() for x in pre.tokenizer.encode_batch(texts)]
    # a tfm workdir keeps the tokenizer too
    pre.tokenizer.save(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert [x.tolist() for x in again.encode_batch(texts)] == [x.tolist() for x in pre.tokenizer.encode_batch(texts)]


@pytest.mark.parametrize("key,value,message", [
    ("position_embedding_type", "relative_key", "position_embedding_type='relative_key' is not supported"),
    ("is_decoder", True, "is_decoder=true is not supported"),
    ("add_cross_attention", True, "add_cross_attention=true is not supported"),
    ("hidden_act", "mish", "hidden_act='mish' is not supported"),
    ("problem_type", "multi_label_classification", "problem_type='multi_label_classification'"),
])
def test_unsupported_settings_name_the_key(tmp_path, key, value, message):
    d = tmp_path / "m"
    shutil.copytree(FIXTURES / "bert_classifier", d)
    hf = json.loads((d / "config.json").read_text())
    hf[key] = value
    (d / "config.json").write_text(json.dumps(hf))
    with pytest.raises(HFFormatError, match=message.replace("(", r"\(").replace("[", r"\[")):
        interop.read_model_config(d)


def test_export_refuses_what_bert_cannot_hold():
    cfg = tfm.get_preset("tiny_classifier")  # mean pooling, no token types, pre-existing classifier
    problems = interop.bert.export_problems(cfg)
    assert any("ModelConfig.pooling='first' is needed" in p for p in problems)
    assert any("ModelConfig.embedding_norm=True" in p for p in problems)


def test_command_lines(monkeypatch, capsys):
    from tfm import cli

    monkeypatch.setattr("sys.stdin", io.StringIO("Hello world!\nHow are you today?\tThe fox.\n"))
    assert cli.main(["classify", "--pretrained", str(FIXTURES / "bert_classifier")]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    names = reference("bert_classifier")[1]["class_names"]
    assert len(lines) == 2 and all(line.split("\t")[0] in names for line in lines)
    assert lines[1].endswith("How are you today? | The fox.")
    _, meta = reference("bert_mlm")
    assert cli.main(["fill-mask", "--pretrained", str(FIXTURES / "bert_mlm"), "--top_k", "3",
                     meta["masked_text"]]) == 0
    out = capsys.readouterr().out.strip().split("\n")
    assert out[0] == meta["masked_text"] and len(out[1].split("  ")) == 3 + 1
    assert cli.main(["fill-mask", "--pretrained", str(FIXTURES / "bert_classifier"), "a [MASK]"]) == 2
    assert "masked-LM head" in capsys.readouterr().err
    # an argument the model refuses is tfm's one error line too, not a traceback
    assert cli.main(["fill-mask", "--pretrained", str(FIXTURES / "bert_mlm"), "nothing masked"]) == 2
    assert capsys.readouterr().err.strip() == "error: no [MASK] in 'nothing masked'"
