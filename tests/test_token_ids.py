"""Fault class 6 of issue 15: token ids outside [0, vocab) are refused where tfm can see them.

``jnp.take`` fills an out-of-range row with NaN (and negative ids wrap around), so such ids gave
NaN logits and empty generations silently. Eager model calls, tokenizer decoding, generation
and translation inputs now raise a ValueError naming the bad id and the range; a NaN or
negative temperature is refused too.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tfm import decoding, inference
from tfm.cli import generate_main
from tfm.config import get_preset
from tfm.data.tokenizers import CharTokenizer
from tfm.models import build_model
from tfm.token_ids import EOS_ID, check_token_ids

TOK = CharTokenizer("abcdefgh ")


@pytest.fixture(scope="module")
def lm():
    cfg = get_preset("tiny_lm", vocab_size=TOK.vocab_size, max_len=16, num_layers=1)
    model = build_model(cfg)
    params = model.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))["params"]
    return inference.Pretrained(cfg, params, TOK)


@pytest.mark.parametrize("bad", [-1, 13, 1000])
def test_eager_model_call_refuses_out_of_range_ids(lm, bad):
    tokens = jnp.array([[1, 5, bad, 2]], jnp.int32)
    with pytest.raises(ValueError, match=rf"token id {bad} .*\[0, {lm.config.vocab_size}\)"):
        lm.model.apply({"params": lm.params}, tokens)
    ok = lm.model.apply({"params": lm.params}, jnp.array([[1, 5, 6, 2]], jnp.int32))
    assert np.isfinite(np.asarray(ok)).all()


def test_jitted_calls_are_not_slowed_or_broken(lm):
    out = jax.jit(lambda p, t: lm.model.apply({"params": p}, t))(lm.params, jnp.ones((2, 4), jnp.int32))
    assert out.shape == (2, 4, lm.config.vocab_size)


def test_generate_and_tokenizer_refuse_out_of_range_ids(lm):
    with pytest.raises(ValueError, match=r"token id 99"):
        inference.generate_ids(lm, [[1, 99]], max_new_tokens=2)
    with pytest.raises(ValueError, match=r"token id -3"):
        inference.generate_ids(lm, [[1, -3]], max_new_tokens=2)
    with pytest.raises(ValueError, match=r"token id 40"):
        TOK.decode([4, 40])


@pytest.mark.parametrize("temperature", [float("nan"), -0.5, float("inf")])
def test_nan_inf_or_negative_temperature_is_refused(lm, temperature):
    with pytest.raises(ValueError, match="temperature"):
        inference.generate(lm, "ab", max_new_tokens=2, temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        decoding.lm_generate(lm.model, lm.params, np.ones((1, 2), np.int32), max_new_tokens=2,
                             rng=jax.random.key(0), temperature=temperature, eos_id=EOS_ID)


def test_cli_refuses_a_nan_temperature(capsys):
    # refused in one line, exit 2, before the (missing) workdir is even looked at
    assert generate_main(["--workdir", "/nonexistent", "--temperature", "nan"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: temperature=nan") and len(err.strip().splitlines()) == 1


def test_check_token_ids_against_numpy():
    ids = np.array([[0, 3], [4, 1]])
    check_token_ids(ids, 5)
    with pytest.raises(ValueError, match=r"token id 5 at \(1, 0\)"):
        check_token_ids(ids + 1, 5)
