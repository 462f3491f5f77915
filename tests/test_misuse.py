"""Fault class 8 of issue 15 (library side): misuse gets a ValueError saying what is wrong, not an
IndexError or ZeroDivisionError from deep inside; damaged files are named by path."""

import jax
import jax.numpy as jnp
import pytest

from tfm import inference
from tfm.config import get_preset
from tfm.data.tokenizers import CharTokenizer, load_tokenizer
from tfm.models import build_model

TOK = CharTokenizer("abcdefgh ")


@pytest.fixture(scope="module")
def lm():
    cfg = get_preset("tiny_lm", vocab_size=TOK.vocab_size, max_len=16, num_layers=1)
    params = build_model(cfg).init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))["params"]
    return inference.Pretrained(cfg, params, TOK)


@pytest.fixture(scope="module")
def mt():
    cfg = get_preset("tiny_encdec", vocab_size=TOK.vocab_size, max_len=16, num_layers=1)
    ones = jnp.ones((1, 4), jnp.int32)
    params = build_model(cfg).init(jax.random.key(0), ones, ones)["params"]
    return inference.Pretrained(cfg, params, TOK)


@pytest.mark.parametrize("shape", [(4,), (1, 0), (2, 3, 4)])
def test_model_input_must_be_a_nonempty_batch_of_sequences(lm, shape):
    with pytest.raises(ValueError, match=r"\(batch, length\)"):
        lm.model.apply({"params": lm.params}, jnp.ones(shape, jnp.int32))


def test_generate_and_translate_refuse_zero_counts(lm, mt):
    with pytest.raises(ValueError, match="num_samples"):
        inference.generate(lm, "ab", max_new_tokens=2, num_samples=0)
    with pytest.raises(ValueError, match="batch_size"):
        inference.translate(mt, ["ab"], batch_size=0)
    with pytest.raises(ValueError, match="beam_size"):
        inference.translate(mt, ["ab"], beam_size=0)
    assert inference.translate(mt, []) == []


def test_corrupt_tokenizer_and_config_files_are_named(tmp_path):
    TOK.save(tmp_path / "tok")
    meta = next(p for p in (tmp_path / "tok").iterdir() if p.suffix == ".json")
    meta.write_text('{"kind": "char", "voc')
    with pytest.raises(ValueError, match=str(meta)):
        load_tokenizer(tmp_path / "tok")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(inference.WorkdirError, match=str(tmp_path / "config.json")):
        inference.read_config(tmp_path)


def test_inference_fallback_past_a_damaged_checkpoint_logs_one_line(tmp_path, caplog):
    from tfm.run_files.restore import short_error as _short

    class Noisy(Exception):
        pass

    assert len(_short(Noisy("first line\n" + "spec " * 1000)).splitlines()) == 1
    assert len(_short(Noisy("x" * 5000))) < 400
