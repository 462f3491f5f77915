"""Loading a workdir, tfm.inference.generate / translate, the command lines, attention maps.

Fast tests write a workdir the way the training loop does (RunConfig JSON, a saved tokenizer and
an orbax checkpoint through tfm.training.checkpointer.Checkpointer) around tiny random models; a
slow test runs the real training loop for two steps and decodes from its workdir.
"""

import io
import json
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tfm.run_files import layout
from tfm import decoding, inference
from tfm.cli import generate_main, translate_main
from tfm.config import get_preset
from tfm.data.config import DataConfig
from tfm.data.tokenizers import CharTokenizer
from tfm.models import param_shapes
from tfm.training.checkpointer import Checkpointer
from tfm.training.config import RunConfig, TrainConfig
from tfm.training.state import TrainState
from tfm.token_ids import BOS_ID, EOS_ID

CHARS = "abcdefghijklmnopqrstuvwxyz ,.:!?\n"


def _random_params(cfg, seed=0):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), param_shapes(cfg))


def _write_workdir(path, model_cfg, data_cfg, tokenizer, params, steps=(3, 7)):
    """A workdir laid out as tfm.training.loop writes it."""
    os.makedirs(path, exist_ok=True)
    run = RunConfig(model=model_cfg, data=data_cfg, train=TrainConfig(warmup_steps=10))
    with open(os.path.join(path, layout.CONFIG_FILE), "w") as f:
        json.dump(run.to_dict(), f)
    tokenizer.save(os.path.join(path, layout.TOKENIZER_DIR))
    ckpt = Checkpointer(os.path.join(path, layout.CHECKPOINT_DIR), async_save=False)
    for step in steps:  # the newest must win: older steps hold other params
        p = params if step == max(steps) else jax.tree.map(jnp.zeros_like, params)
        state = TrainState(step=jnp.int32(step), params=p, opt_state=optax.adam(1e-3).init(p))
        ckpt.save(step, state, {"step": step, "data": {}, "rng": [0, 0]})
    ckpt.close()
    return str(path)


@pytest.fixture(scope="module")
def lm_workdir(tmp_path_factory):
    tok = CharTokenizer(CHARS)
    cfg = get_preset("tiny_lm", vocab_size=tok.vocab_size, max_len=24, positional="learned", num_layers=1)
    data = DataConfig(dataset="tiny_shakespeare", tokenizer="char", max_len=24, max_target_len=24)
    params = _random_params(cfg, seed=1)
    path = _write_workdir(tmp_path_factory.mktemp("lm"), cfg, data, tok, params)
    return path, inference.Pretrained(cfg, params, tok, data=data)


@pytest.fixture(scope="module")
def mt_workdir(tmp_path_factory):
    tok = CharTokenizer(CHARS + "äöüß")
    cfg = get_preset("tiny_encdec", vocab_size=tok.vocab_size, max_len=40, num_layers=1)
    params = _random_params(cfg, seed=2)
    data = DataConfig(max_len=16, max_target_len=16)  # the numbers task
    path = _write_workdir(tmp_path_factory.mktemp("mt"), cfg, data, tok, params)
    return path, inference.Pretrained(cfg, params, tok, data=data)


def test_load_restores_params_of_the_newest_checkpoint(lm_workdir):
    path, expected = lm_workdir
    lm = inference.load(path)
    assert lm.step == 7 and lm.config == expected.config and lm.data == expected.data
    assert lm.tokenizer.vocab_size == expected.tokenizer.vocab_size
    jax.tree.map(np.testing.assert_array_equal, lm.params, expected.params)
    older = inference.load(path, step=3)
    assert float(jnp.abs(older.params["embedder"]["embedding"]).max()) == 0.0


def _truncate_arrays(step_dir):
    """Halves the biggest file of a checkpoint's state item (the one holding the arrays)."""
    files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs]
    biggest = max(files, key=os.path.getsize)
    with open(biggest, "r+b") as f:
        f.truncate(os.path.getsize(biggest) // 2)


def test_load_falls_back_past_a_damaged_newest_checkpoint_and_moves_nothing(tmp_path, lm_workdir, caplog):
    """The fallback of tfm.run_files.restore (shared with training's Checkpointer), read-only: the damaged
    step is named in one warning line and stays where it is (a run may be training there)."""
    import logging
    import shutil

    copy = shutil.copytree(lm_workdir[0], tmp_path / "copy")
    _truncate_arrays(copy / layout.CHECKPOINT_DIR / "7")
    before = sorted(os.listdir(copy))
    with caplog.at_level(logging.WARNING, logger="tfm.run_files.restore"):
        lm = inference.load(copy)
    assert lm.step == 3
    assert float(jnp.abs(lm.params["embedder"]["embedding"]).max()) == 0.0  # step 3's params
    assert "step 7 cannot be restored" in caplog.text
    assert sorted(os.listdir(copy)) == before and (copy / layout.CHECKPOINT_DIR / "7").is_dir()
    _truncate_arrays(copy / layout.CHECKPOINT_DIR / "3")
    with pytest.raises(inference.WorkdirError, match=r"no checkpoint in .* can be restored(.|\n)*step 7(.|\n)*step 3"):
        inference.load(copy)


def test_clear_errors_for_unusable_workdirs(tmp_path, lm_workdir, mt_workdir):
    with pytest.raises(inference.WorkdirError, match="does not exist"):
        inference.load(tmp_path / "nope")
    with pytest.raises(inference.WorkdirError, match="config.json is missing"):
        inference.load(tmp_path)
    # a run that wrote its config and tokenizer but no checkpoint yet
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with open(os.path.join(lm_workdir[0], layout.CONFIG_FILE)) as f:
        (fresh / layout.CONFIG_FILE).write_text(f.read())
    CharTokenizer(CHARS).save(fresh / layout.TOKENIZER_DIR)
    with pytest.raises(inference.WorkdirError, match="no checkpoint"):
        inference.load(fresh)
    (fresh / layout.CHECKPOINT_DIR).mkdir()
    with pytest.raises(inference.WorkdirError, match="no checkpoint"):
        inference.load(fresh)
    with pytest.raises(inference.WorkdirError, match="'decoder_lm'.*needs 'encoder_decoder'"):
        inference.translate(lm_workdir[0], "one")
    with pytest.raises(inference.WorkdirError, match="'encoder_decoder'.*needs 'decoder_lm'"):
        inference.generate(mt_workdir[1], "one")


def test_generate_from_workdir_equals_in_memory_and_decoding(lm_workdir):
    path, lm = lm_workdir
    text = inference.generate(path, "to be", max_new_tokens=8, temperature=0.0)
    assert text == inference.generate(lm, "to be", max_new_tokens=8, temperature=0.0)
    assert text == inference.generate((lm.config, lm.params, lm.tokenizer), "to be", max_new_tokens=8,
                                      temperature=0.0, stop_at_eos=False)
    # as generate pads it (rows, width to multiples of 8); streamed text: no BOS
    prompts = np.zeros((8, 8), np.int32)
    mask = np.ones((8, 8), bool)
    mask[0, :-5] = False  # left padding: only the mask says so
    prompts[0, -5:] = lm.tokenizer.encode("to be")
    out = decoding.lm_generate(lm.model, lm.params, prompts, prompt_mask=mask, max_new_tokens=8, eos_id=-1)
    assert text == lm.tokenizer.decode(out.to_lists()[0])


def test_generate_batches_samples_and_goes_past_the_context(lm_workdir):
    _, lm = lm_workdir
    # 30 new tokens do not fit a 24-token context: decoding restarts from the newest 12 tokens
    kw = {"max_new_tokens": 30, "temperature": 0.8, "top_k": 10, "eos_id": -1}
    a = inference.generate_ids(lm, [[5], [6, 7, 8]], seed=3, **kw)
    assert [len(r) for r in a] == [30, 30]
    assert a == inference.generate_ids(lm, [[5], [6, 7, 8]], seed=3, **kw)  # same seed, same text
    assert a != inference.generate_ids(lm, [[5], [6, 7, 8]], seed=4, **kw)
    # top_k=1 (greedy; the compiled sampler is reused), longer than the context: the first
    # segment is plain cached decoding
    kw = {"top_k": 1, "eos_id": -1}
    long = inference.generate_ids(lm, [[5, 6]], max_new_tokens=40, **kw)[0]
    short = inference.generate_ids(lm, [[5, 6]], max_new_tokens=17, **kw)[0]
    assert len(long) == 40 and long[:17] == short
    # prompts of different lengths, left-padded in one batch, continue as each alone (greedy);
    # token 0 in a prompt is a real token
    rows = [[5], [0, 7, 8], [6, 0]]
    together = inference.generate_ids(lm, rows, max_new_tokens=9, **kw)
    assert together == [inference.generate_ids(lm, [r], max_new_tokens=9, **kw)[0] for r in rows]
    assert together[1] != inference.generate_ids(lm, [[7, 8]], max_new_tokens=9, **kw)[0]
    samples = inference.generate(lm, "x", max_new_tokens=17, num_samples=3, seed=0)
    assert isinstance(samples, list) and len(samples) == 3
    texts = inference.generate(lm, ["x", "hello"], max_new_tokens=17, num_samples=2)
    assert len(texts) == 2 and all(len(t) == 2 for t in texts)


def test_translate_from_workdir(mt_workdir):
    path, mt = mt_workdir
    out = inference.translate(path, ["one", "five", "ten"], extra_len=6)  # beam 4, alpha 0.6
    assert isinstance(out, list) and len(out) == 3
    assert out[1] == inference.translate(mt, "five", extra_len=6)  # batching does not change it
    src, mask = _sources(mt, ["one", "five", "ten"])
    beams = decoding.encdec_beam_search(mt.model, mt.params, src, inputs_mask=mask, extra_len=6, eos_id=EOS_ID, bos_id=BOS_ID)
    assert out == mt.tokenizer.decode_batch(beams.best().to_lists()[:3])


def _sources(mt, sentences):
    """Source ids + eos and their mask, padded as translate pads them: rows and width to
    multiples of 8 (filler rows: one EOS)."""
    src = np.zeros((8, 8), np.int32)
    mask = np.zeros((8, 8), bool)
    src[len(sentences):, 0] = mt.tokenizer.eos_id
    mask[len(sentences):, 0] = True
    for i, s in enumerate(sentences):
        ids = mt.tokenizer.encode(s) + [mt.tokenizer.eos_id]
        src[i, : len(ids)] = ids
        mask[i, : len(ids)] = True
    return src, mask


def test_cli_generate_and_translate(lm_workdir, mt_workdir, capsys, monkeypatch):
    assert generate_main(["--workdir", lm_workdir[0], "--prompt", "ab", "--max_new_tokens", "6",
                          "--temperature", "0"]) == 0
    expected = "ab" + inference.generate(lm_workdir[1], "ab", max_new_tokens=6, temperature=0.0)
    assert capsys.readouterr().out == expected + "\n"
    assert generate_main(["--workdir", lm_workdir[0], "--prompt", "ab", "--max_new_tokens", "17",
                          "--temperature", "0.9", "--top_k", "5", "--top_p", "0.9", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("ab")

    args = ["--workdir", mt_workdir[0], "--extra_len", "6", "--beam_size", "1"]  # greedy
    assert translate_main([*args, "five", "ten"]) == 0
    src, mask = _sources(mt_workdir[1], ["five", "ten"])
    greedy = decoding.encdec_greedy(mt_workdir[1].model, mt_workdir[1].params, src, inputs_mask=mask, extra_len=6, eos_id=EOS_ID, bos_id=BOS_ID)
    expected = mt_workdir[1].tokenizer.decode_batch(greedy.to_lists()[:2])
    assert capsys.readouterr().out == "\n".join(expected) + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("five\nten\n"))
    assert translate_main(args) == 0
    assert capsys.readouterr().out == "\n".join(expected) + "\n"

    assert translate_main(["--workdir", lm_workdir[0], "five"]) == 2
    assert "needs 'encoder_decoder'" in capsys.readouterr().err
    assert generate_main(["--workdir", os.path.join(lm_workdir[0], "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_translate_warns_about_text_never_seen_in_training(mt_workdir, tmp_path, capsys):
    path, mt = mt_workdir  # a character tokenizer without a word list: characters only
    with pytest.warns(inference.UnknownTextWarning, match=r"'five 7'.*'7'"):
        out = inference.translate(mt, ["five", "five 7"], beam_size=1, extra_len=6)
    assert len(out) == 2
    assert inference.unknown_text(mt, "five 7") == ["7"] and inference.unknown_text(mt, "five") == []

    # with the words of its training text recorded, unseen words are named too
    tok = CharTokenizer(CHARS + "äöüß", known_words=["one", "five", "hundred"])
    words_dir = _write_workdir(tmp_path / "words", mt.config, mt.data, tok, mt.params, steps=(1,))
    with pytest.warns(inference.UnknownTextWarning, match=r"'and'"):
        inference.translate(words_dir, "one hundred and five", beam_size=1, extra_len=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known text: no warning
        inference.translate(words_dir, "one hundred five", beam_size=1, extra_len=6)

    # the command line: one "warning:" line on stderr per such input, translations unchanged
    args = ["--workdir", words_dir, "--extra_len", "6", "--beam_size", "1"]
    inputs = ["one hundred five", "one hundred and five", "eleven"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = inference.translate(words_dir, inputs, beam_size=1, extra_len=6)
    assert translate_main([*args, *inputs]) == 0
    captured = capsys.readouterr()
    assert captured.out == "\n".join(expected) + "\n"
    lines = captured.err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("warning: ") for line in lines)
    assert "'one hundred and five'" in lines[0] and "'and'" in lines[0]
    assert "'eleven'" in lines[1]


def test_attention_maps(mt_workdir):
    _, mt = mt_workdir
    src = jnp.asarray([[5, 6, 7, 2, 0]], jnp.int32)
    dec = jnp.asarray([[1, 8, 9]], jnp.int32)
    maps = inference.attention_maps(mt, src, dec)
    cfg = mt.config
    assert maps["decoder/stack/layer_0/cross_attention"].shape == (1, cfg.num_heads, 3, 5)
    assert maps["encoder/stack/layer_0/self_attention"].shape == (1, cfg.num_heads, 5, 5)
    assert len(maps) == cfg.num_layers + 2 * cfg.decoder_layers
    np.testing.assert_allclose(maps["decoder/stack/layer_0/self_attention"].sum(-1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_workdir_of_the_real_training_loop(tmp_path, capsys):
    """train.py's loop for two steps, then the command lines on its workdir."""
    from tfm.training.loop import run

    text = tmp_path / "text.txt"
    text.write_text("to be or not to be, that is the question.\n" * 50)
    lm_dir = str(tmp_path / "lm")
    config = {
        "model": dict(get_preset("tiny_lm", vocab_size=0, max_len=32).to_dict()),
        "data": {"dataset": "text_file", "text_file": str(text), "tokenizer": "char", "max_len": 32,
                     "max_target_len": 32, "batch_size": 8, "eval_batch_size": 8},
        "train": {"num_steps": 2, "strategy": "single", "warmup_steps": 1, "eval_every_steps": 0,
                      "eval_decode_examples": 0, "checkpoint_every_steps": 2, "log_every_steps": 1,
                      "progress_bar": False, "async_checkpointing": False},
    }
    run(RunConfig.from_config_dict(config), lm_dir)
    assert generate_main(["--workdir", lm_dir, "--prompt", "to be", "--max_new_tokens", "50"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("to be") and len(out) > 20

    mt_dir = str(tmp_path / "mt")
    config["model"] = dict(get_preset("tiny_encdec", vocab_size=0, max_len=32).to_dict())
    config["data"] = {"batch_size": 8, "eval_batch_size": 8, "max_len": 16, "max_target_len": 16, "tokenizer": "char"}
    run(RunConfig.from_config_dict(config), mt_dir)
    assert translate_main(["--workdir", mt_dir, "three hundred twenty-one"]) == 0
    assert capsys.readouterr().out.count("\n") == 1


def test_cli_dispatches_commands_and_tfm_generate_stays_a_function(tmp_path, capsys):
    """``python -m tfm.cli COMMAND``: one module of commands, so no module shadows the library
    functions ``tfm.generate`` / ``tfm.translate``."""
    import inspect
    import subprocess
    import sys

    import tfm
    from tfm import cli

    assert inspect.isfunction(tfm.generate) and inspect.isfunction(tfm.translate)
    assert set(cli.COMMANDS) == {"generate", "translate", "export", "classify", "fill-mask"}
    missing = str(tmp_path / "nothing")
    assert cli.main(["generate", "--workdir", missing]) == 2
    assert missing in capsys.readouterr().err
    assert cli.main(["bogus"]) == 2
    assert "unknown command 'bogus'" in capsys.readouterr().err
    assert cli.main([]) == 2
    done = subprocess.run([sys.executable, "-m", "tfm.cli", "translate", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: python -m tfm.cli translate" in done.stdout
