"""Issue 22 (generation, translation and command arguments): each fault found by trying tfm as
an adversarial user, reproduced first, then fixed. The table is docs/FAULTS.md."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tfm import inference
from tfm.config import get_preset
from tfm.data.tokenizers import CharTokenizer
from tfm.models import param_shapes
from tfm.token_ids import BOS_ID, EOS_ID

CHARS = "abcdefghijklmnopqrstuvwxyz ,.:!?\nROMEJULIT"


def _params(cfg, seed, position_scale=0.5):
    """Random params; large learned position embeddings make the output depend on where the
    context starts (a context cut short shows up in the output)."""
    rng = np.random.default_rng(seed)

    def init(path, s):
        scale = position_scale if "position" in jax.tree_util.keystr(path) else 0.5
        return jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype)

    return jax.tree_util.tree_map_with_path(init, param_shapes(cfg))


@pytest.fixture(scope="module")
def char_lm():
    tok = CharTokenizer(CHARS)
    cfg = get_preset("tiny_lm", vocab_size=tok.vocab_size, max_len=32, positional="learned", num_layers=1)
    return inference.Pretrained(cfg, _params(cfg, 2, position_scale=3.0), tok)


@pytest.fixture(scope="module")
def char_mt():
    tok = CharTokenizer(CHARS)
    cfg = get_preset("tiny_encdec", vocab_size=tok.vocab_size, max_len=24, num_layers=1)
    return inference.Pretrained(cfg, _params(cfg, 3), tok)


def test_issue_case_greedy_generation_does_not_depend_on_the_batch(char_lm):
    alone = inference.generate(char_lm, "ROMEO:", max_new_tokens=20, temperature=0)
    batched = inference.generate(char_lm, ["ROMEO:", "JULIET: hello there my friend"], max_new_tokens=20,
                                 temperature=0)
    assert batched[0] == alone


def test_each_row_generates_as_alone_for_prompts_of_every_length(char_lm):
    """Property: prompts of lengths 6 .. past max_len (32), continued past the context (each row
    restarts at its own time), batched together == each generated alone (greedy)."""
    tok = char_lm.tokenizer
    rows = [tok.encode("ROMEO:"), tok.encode("JULIET: hello there my friend"), tok.encode("it is " * 7)]
    kw = dict(max_new_tokens=20, temperature=0, eos_id=tok.eos_id)  # the compilations of generate's
    together = inference.generate_ids(char_lm, rows, **kw)
    assert len(together[1]) == 20  # past the context
    for row, out in zip(rows, together):
        assert out == inference.generate_ids(char_lm, [row], **kw)[0], len(row)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_each_sentence_translates_as_alone(char_mt, beam_size):
    sentences = ["a", "hello there my friend, how are you", "ROMEO", "it is"]
    kw = dict(beam_size=beam_size, extra_len=5, batch_size=4)
    together = inference.translate(char_mt, sentences, **kw)
    assert together == [inference.translate(char_mt, s, **kw) for s in sentences]


# ---------------------------------------------------------------------- arguments
from tfm import arguments  # noqa: E402
from tfm.cli import export_main, generate_main, translate_main  # noqa: E402

BAD_GENERATE = [
    (dict(max_new_tokens=5.5), TypeError, "max_new_tokens=5.5"),
    (dict(max_new_tokens=5.0), TypeError, "max_new_tokens"),
    (dict(max_new_tokens=True), TypeError, "max_new_tokens"),
    (dict(max_new_tokens=0), ValueError, "max_new_tokens=0"),
    (dict(max_new_tokens="5"), TypeError, "max_new_tokens"),
    (dict(seed=10**23), ValueError, "seed=1"),
    (dict(seed=-(2**64)), ValueError, "seed"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(temperature=float("nan")), ValueError, "temperature=nan"),
    (dict(temperature=float("inf")), ValueError, "temperature=inf"),
    (dict(temperature=-0.5), ValueError, "temperature"),
    (dict(temperature="hot"), TypeError, "temperature"),
    (dict(top_k=-1), ValueError, "top_k=-1"),
    (dict(top_k=2.5), TypeError, "top_k"),
    (dict(top_k=10**20), ValueError, "top_k"),
    (dict(temperature=1e300), ValueError, "temperature"),
    (dict(top_p=0.0), ValueError, "top_p=0.0"),
    (dict(top_p=1.5), ValueError, "top_p"),
    (dict(top_p=float("nan")), ValueError, "top_p"),
    (dict(num_samples=0), ValueError, "num_samples"),
    (dict(num_samples=2.0), TypeError, "num_samples"),
    (dict(add_bos="yes"), TypeError, "add_bos"),
    (dict(stop_at_eos=1), TypeError, "stop_at_eos"),
]


@pytest.mark.parametrize("kwargs,kind,name", BAD_GENERATE)
def test_generate_refuses_bad_arguments_naming_them(char_lm, kwargs, kind, name):
    with pytest.raises(kind, match=name) as e:
        inference.generate(char_lm, "ab", **{"max_new_tokens": 3, **kwargs})
    assert isinstance(e.value, arguments.ArgumentError) and "\n" not in str(e.value)


@pytest.mark.parametrize("prompt", [5, b"ROMEO", ["ROMEO", 5], [None], {"a": 1}])
def test_generate_refuses_prompts_that_are_not_text(char_lm, prompt):
    with pytest.raises(arguments.ArgumentTypeError, match="prompt"):
        inference.generate(char_lm, prompt, max_new_tokens=3)


BAD_TRANSLATE = [
    (dict(alpha=float("nan")), ValueError, "alpha=nan"),
    (dict(alpha=float("inf")), ValueError, "alpha=inf"),
    (dict(alpha=-0.1), ValueError, "alpha=-0.1"),
    (dict(alpha=1e6), ValueError, "alpha"),
    (dict(alpha="0.6"), TypeError, "alpha"),
    (dict(beam_size=0), ValueError, "beam_size=0"),
    (dict(beam_size=2.0), TypeError, "beam_size"),
    (dict(beam_size=10**6), ValueError, r"beam_size=1000000: must be an integer >= 1 and <= 46"),
    (dict(extra_len=0), ValueError, "extra_len"),
    (dict(extra_len=1.5), TypeError, "extra_len"),
    (dict(extra_len=10**30), ValueError, "extra_len"),
    (dict(batch_size=-3), ValueError, "batch_size"),
]


@pytest.mark.parametrize("kwargs,kind,name", BAD_TRANSLATE)
def test_translate_refuses_bad_arguments_naming_them(char_mt, kwargs, kind, name):
    with pytest.raises(kind, match=name) as e:
        inference.translate(char_mt, "ab", **kwargs)
    assert isinstance(e.value, arguments.ArgumentError)


@pytest.mark.parametrize("sentences,where", [(["three", 5], r"sentences\[1\]=5"), (5, "sentences"),
                                             ([b"x"], r"sentences\[0\]"), (None, "sentences")])
def test_translate_refuses_inputs_that_are_not_text(char_mt, sentences, where):
    with pytest.raises(TypeError, match=where):
        inference.translate(char_mt, sentences)


def test_decoding_entry_points_check_the_same_arguments(char_lm, char_mt):
    from tfm import decoding

    prompts = np.ones((1, 3), np.int32)
    with pytest.raises(arguments.ArgumentTypeError, match="max_new_tokens"):
        decoding.lm_generate(char_lm.model, char_lm.params, prompts, max_new_tokens=5.5, eos_id=EOS_ID)
    with pytest.raises(arguments.ArgumentError, match="alpha"):
        decoding.lm_beam_search(char_lm.model, char_lm.params, prompts, max_new_tokens=2, alpha=float("nan"), eos_id=EOS_ID)
    with pytest.raises(arguments.ArgumentError, match="alpha"):
        decoding.encdec_beam_search(char_mt.model, char_mt.params, prompts, alpha=-1.0, eos_id=EOS_ID, bos_id=BOS_ID)
    with pytest.raises(arguments.ArgumentError, match="extra_len"):
        decoding.encdec_greedy(char_mt.model, char_mt.params, prompts, extra_len=2.5, eos_id=EOS_ID, bos_id=BOS_ID)


@pytest.mark.parametrize("argv,name", [
    (["--alpha", "nan"], "alpha=nan"), (["--alpha", "inf"], "alpha=inf"), (["--alpha", "-1"], "alpha=-1"),
    (["--beam_size", "0"], "beam_size=0"), (["--extra_len", "-5"], "extra_len"), (["--batch_size", "0"], "batch_size"),
])
def test_cli_translate_refuses_bad_arguments_in_one_line(tmp_path, capsys, argv, name):
    assert translate_main(["--workdir", str(tmp_path / "never_read"), *argv, "one"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and name in err and err.count("\n") == 1


@pytest.mark.parametrize("argv,name", [
    (["--seed", str(10**23)], "seed"), (["--max_new_tokens", "0"], "max_new_tokens"),
    (["--temperature", "nan"], "temperature"), (["--temperature", "-1"], "temperature"),
    (["--top_p", "0"], "top_p"), (["--top_k", "-2"], "top_k"), (["--num_samples", "0"], "num_samples"),
])
def test_cli_generate_refuses_bad_arguments_in_one_line(tmp_path, capsys, argv, name):
    assert generate_main(["--workdir", str(tmp_path / "never_read"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and name in err and err.count("\n") == 1


@pytest.mark.parametrize("mb", ["0", "-1"])
def test_cli_export_refuses_non_positive_shard_sizes(tmp_path, capsys, mb):
    assert export_main(["--workdir", str(tmp_path / "never_read"), "--out", str(tmp_path / "out"),
                        "--max_shard_mb", mb]) == 2
    err = capsys.readouterr().err
    assert err == f"error: max_shard_mb={mb}: must be an integer >= 1\n"
    assert not (tmp_path / "out").exists()


def test_save_pretrained_refuses_non_positive_shard_sizes(char_lm, tmp_path):
    from tfm import interop

    with pytest.raises(arguments.ArgumentError, match="max_shard_bytes=-1"):
        interop.save_pretrained(char_lm, tmp_path / "out", max_shard_bytes=-1)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- padded embedding tables
def _padded(pretrained, padded_vocab):
    """The model with its embedding table padded to ``padded_vocab`` rows; row i past the
    tokenizer's vocabulary is 20 x row (i mod n), so it outscores every real id whenever the best
    real logit is positive: an unmasked search would choose it."""
    n = pretrained.tokenizer.vocab_size
    cfg = dataclasses.replace(pretrained.config, vocab_size=padded_vocab)
    shapes = param_shapes(cfg)

    def pad(path, x):
        target = shapes
        for k in path:
            target = target[k.key]
        if x.shape == target.shape:
            return x
        axis = next(a for a, (m, t) in enumerate(zip(x.shape, target.shape)) if m != t)
        rows = np.arange(n, padded_vocab) % n
        extra = 20.0 * np.take(np.asarray(x), rows, axis=axis)
        return jnp.asarray(np.concatenate([np.asarray(x), extra], axis=axis), x.dtype)

    params = jax.tree_util.tree_map_with_path(pad, pretrained.params)
    return inference.Pretrained(cfg, params, pretrained.tokenizer)


def test_ids_past_the_tokenizer_are_never_generated(char_lm):
    from tfm import decoding

    lm = _padded(char_lm, 64)
    n = lm.tokenizer.vocab_size
    prompts = np.asarray([lm.tokenizer.encode("ROMEO:")], np.int32)
    raw = decoding.lm_generate(lm.model, lm.params, prompts, max_new_tokens=8, eos_id=-1)
    assert max(raw.to_lists()[0]) >= n  # the reproduction: unmasked, a padded id wins
    for kw in (dict(temperature=0), dict(temperature=2.0, top_k=50, seed=1)):  # decoding ids >= n raises
        assert isinstance(inference.generate(lm, ["ROMEO:", "it is"], max_new_tokens=8, stop_at_eos=False, **kw)[0], str)
    beams = decoding.lm_beam_search(lm.model, lm.params, prompts, max_new_tokens=6, beam_size=3, vocab_limit=n, eos_id=EOS_ID)
    assert int(np.asarray(beams.tokens).max()) < n


@pytest.mark.parametrize("beam_size", [1, 3])
def test_translation_never_chooses_ids_past_the_tokenizer(char_mt, beam_size):
    from tfm import decoding

    mt = _padded(char_mt, 128)
    n = mt.tokenizer.vocab_size
    src = np.asarray([mt.tokenizer.encode("hello") + [mt.tokenizer.eos_id]], np.int32)
    raw = decoding.encdec_greedy(mt.model, mt.params, src, extra_len=5, eos_id=EOS_ID, bos_id=BOS_ID)
    assert max(raw.to_lists()[0]) >= n
    out = inference.translate(mt, ["hello", "it is"], beam_size=beam_size, extra_len=5)  # decoding ids >= n raises
    assert all(isinstance(t, str) for t in out)


def test_a_tokenizer_larger_than_the_embedding_table_is_refused_at_load(char_lm, tmp_path):
    import json
    import shutil

    from tfm import interop
    from tfm.token_ids import VocabularyError

    small = dataclasses.replace(char_lm.config, vocab_size=char_lm.tokenizer.vocab_size - 1)
    with pytest.raises(VocabularyError, match=r"tokenizer has 46 ids but the model only 45 embeddings"):
        inference.Pretrained(small, char_lm.params, char_lm.tokenizer)
    # a Hugging Face directory whose tokenizer gained an id: one line naming both sizes
    hf = shutil.copytree("tests/fixtures/hf/gpt2", tmp_path / "gpt2")
    tok = json.loads((hf / "tokenizer.json").read_text())
    tok["added_tokens"].append(dict(tok["added_tokens"][0], id=301, content="<|extra|>"))
    (hf / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(interop.HFFormatError, match=r"302 ids but the model only 301 embeddings") as e:
        interop.from_pretrained(hf)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------- unknown text, export --step
def test_generate_warns_about_characters_never_seen_like_translate(char_lm, capsys, tmp_path):
    import warnings

    with pytest.warns(inference.UnknownTextWarning, match=r"'ROMEO 7#'.*'7', '#'.*continuation is a guess"):
        inference.generate(char_lm, ["ROMEO:", "ROMEO 7#"], max_new_tokens=2, temperature=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known characters: no warning
        inference.generate(char_lm, "ROMEO:", max_new_tokens=2, temperature=0)


def test_cli_generate_prints_one_warning_line_for_unknown_characters(tmp_path, capsys):
    from test_inference import _random_params, _write_workdir

    from tfm.data.config import DataConfig

    tok = CharTokenizer(CHARS)
    cfg = get_preset("tiny_lm", vocab_size=tok.vocab_size, max_len=16, num_layers=1, positional="learned",
                     scale_embeddings=False)  # GPT-2-shaped: exportable
    data = DataConfig(dataset="tiny_shakespeare", tokenizer="char", max_len=16, max_target_len=16)
    path = _write_workdir(tmp_path / "lm", cfg, data, tok, _random_params(cfg, 1), steps=(3, 7))
    assert generate_main(["--workdir", path, "--prompt", "ROMEO 7", "--max_new_tokens", "2", "--temperature", "0"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("ROMEO 7")
    assert captured.err.count("\n") == 1 and captured.err.startswith("warning: ") and "'7'" in captured.err

    # export --step: that checkpoint (step 3 holds zeros), an absent step is one line
    from safetensors.numpy import load_file

    assert export_main(["--workdir", path, "--out", str(tmp_path / "s3"), "--step", "3"]) == 0
    capsys.readouterr()
    assert all(not v.any() for v in load_file(tmp_path / "s3" / "model.safetensors").values())
    assert export_main(["--workdir", path, "--out", str(tmp_path / "s7")]) == 0
    assert any(v.any() for v in load_file(tmp_path / "s7" / "model.safetensors").values())
    assert export_main(["--workdir", path, "--out", str(tmp_path / "s5"), "--step", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no checkpoint of step 5" in err and "[3, 7]" in err
    assert not (tmp_path / "s5").exists()
    assert export_main(["--pretrained", "tests/fixtures/hf/gpt2", "--out", str(tmp_path / "p"), "--step", "3"]) == 2
    assert "--step" in capsys.readouterr().err
