"""Issue 22 (generation, translation and command arguments): each fault found by trying tfm as
an adversarial user, reproduced first, then fixed. The table is docs/FAULTS.md."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tfm import inference
from tfm.config import get_preset
from tfm.data.tokenizers import CharTokenizer
from tfm.models import param_shapes

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
    """Property: prompts of lengths 1 .. past max_len, continued past the context (restarts),
    batched together == each generated alone (greedy)."""
    rng = np.random.default_rng(0)
    lengths = [1, 20, 40]
    rows = [rng.integers(0, char_lm.tokenizer.vocab_size, n).tolist() for n in lengths]
    kw = dict(max_new_tokens=24, top_k=1, eos_id=-1)
    together = inference.generate_ids(char_lm, rows, **kw)
    assert [len(r) for r in together] == [24] * len(rows)
    for row, out in zip(rows, together):
        assert out == inference.generate_ids(char_lm, [row], **kw)[0], len(row)
    assert together == inference.generate_ids(char_lm, rows[::-1], **kw)[::-1]  # order does not matter


@pytest.mark.parametrize("beam_size", [1, 3])
def test_each_sentence_translates_as_alone(char_mt, beam_size):
    sentences = ["a", "hello there my friend, how are you", "ROMEO", "it is"]
    kw = dict(beam_size=beam_size, extra_len=5, batch_size=4)
    together = inference.translate(char_mt, sentences, **kw)
    assert together == [inference.translate(char_mt, s, **kw) for s in sentences]
