"""Offline parity with transformers: the committed tiny GPT-2 and Marian checkpoints
(tools/make_hf_fixtures.py) and the outputs transformers computed for them. No torch needed.

Rows whose inputs contain token id 0 (GPT-2's "!", Marian's EOS) check that id 0 is an ordinary
token (padding travels as a mask, never as an id): they fail if it is ever treated as padding.
"""

from __future__ import annotations

import numpy as np
import pytest

import tfm
from tfm import decoding, interop

from interop_helpers import FIXTURES, reference, rel_err, strip


@pytest.fixture(scope="module")
def gpt2():
    return interop.from_pretrained(FIXTURES / "gpt2")


@pytest.fixture(scope="module")
def marian():
    return interop.from_pretrained(FIXTURES / "marian")


# ---------------------------------------------------------------------- GPT-2
def _gpt2_logits(gpt2, row):
    ref, _ = reference("gpt2")
    out = gpt2.model.apply({"params": gpt2.params}, ref["inputs"][row:row + 1])
    return out[0], ref["logits"][row]


def test_gpt2_config_is_tfm_gpt2_structure(gpt2):
    cfg = gpt2.config
    assert (cfg.arch, cfg.norm, cfg.positional, cfg.activation) == (
        tfm.Arch.DECODER_LM, tfm.NormPosition.PRE, tfm.PositionalKind.LEARNED, tfm.Activation.GELU)
    assert (cfg.d_model, cfg.num_heads, cfg.num_layers, cfg.d_ff, cfg.max_len) == (32, 4, 2, 128, 64)
    assert cfg.layer_norm_eps == 1e-5 and not cfg.scale_embeddings and cfg.tie_output


def test_gpt2_logits_match_transformers(gpt2):
    got, want = _gpt2_logits(gpt2, 0)
    assert rel_err(got, want) < 1e-5


def test_gpt2_logits_match_transformers_with_token_0(gpt2):
    got, want = _gpt2_logits(gpt2, 1)
    assert rel_err(got, want) < 1e-5


def _gpt2_greedy(gpt2, row):
    ref, meta = reference("gpt2")
    out = decoding.lm_generate(gpt2.model, gpt2.params, ref["inputs"][row:row + 1],
                               max_new_tokens=meta["max_new_tokens"], temperature=0.0, eos_id=meta["eos_id"])
    got = np.asarray(out.tokens)[0, : int(out.lengths[0])]
    return got.tolist(), strip(ref["greedy"][row], meta["eos_id"])


def test_gpt2_greedy_matches_transformers(gpt2):
    got, want = _gpt2_greedy(gpt2, 0)
    assert got == want


def test_gpt2_greedy_matches_transformers_with_token_0(gpt2):
    got, want = _gpt2_greedy(gpt2, 1)
    assert got == want


def test_generate_ids_stops_at_the_models_own_end_of_sequence_id(gpt2, monkeypatch):
    """Without eos_id, generate_ids ends rows at the model's tokenizer's id (300 in this
    fixture), never at tfm's own tokenizers' 2 (a real GPT-2 token)."""
    ref, meta = reference("gpt2")
    seen, real = [], decoding.lm_generate
    monkeypatch.setattr(decoding, "lm_generate", lambda *a, **kw: seen.append(kw["eos_id"]) or real(*a, **kw))
    got = tfm.inference.generate_ids(gpt2, [ref["inputs"][0].tolist()], max_new_tokens=meta["max_new_tokens"],
                                     temperature=0.0)
    assert seen and set(seen) == {gpt2.tokenizer.eos_id} == {meta["eos_id"]} != {decoding.EOS_ID}
    assert got[0] == strip(ref["greedy"][0], meta["eos_id"])


def test_gpt2_tokenizer_matches_transformers(gpt2):
    _, meta = reference("gpt2")
    tok = gpt2.tokenizer
    assert tok.vocab_size == meta["vocab_size"] and tok.eos_id == tok.bos_id == meta["eos_id"]
    assert tok.encode("!") == [0]  # as in GPT-2: id 0 is an ordinary token
    for text, ids in meta["token_ids"].items():
        assert tok.encode(text) == ids, text
        assert tok.decode(ids) == meta["decoded"][text] == text


def test_gpt2_tokenizer_from_vocab_and_merges_only(tmp_path):
    """Without tokenizer.json, vocab.json + merges.txt give the same ids."""
    import shutil

    from tfm.data.hf_tokenizers import ByteLevelBPETokenizer

    for name in ("vocab.json", "merges.txt"):
        shutil.copy(FIXTURES / "gpt2" / name, tmp_path / name)
    tok = ByteLevelBPETokenizer.from_hf_dir(tmp_path)
    _, meta = reference("gpt2")
    for text, ids in meta["token_ids"].items():
        assert tok.encode(text) == ids, text


def test_gpt2_generate_from_pretrained_end_to_end(gpt2):
    """tfm.generate on text: the prompt of reference row 0 continues as transformers' greedy."""
    ref, meta = reference("gpt2")
    prompt = gpt2.tokenizer.decode(ref["inputs"][0])
    text = tfm.generate(gpt2, prompt, max_new_tokens=meta["max_new_tokens"], temperature=0.0)
    want = [t for t in strip(ref["greedy"][0], meta["eos_id"]) if t != meta["eos_id"]]
    assert text == gpt2.tokenizer.decode(want)


# ---------------------------------------------------------------------- Marian
def test_marian_config_is_post_ln_split_sinusoidal(marian):
    cfg = marian.config
    assert (cfg.arch, cfg.norm, cfg.positional, cfg.sinusoidal_layout, cfg.activation) == (
        tfm.Arch.ENCODER_DECODER, tfm.NormPosition.POST, tfm.PositionalKind.SINUSOIDAL,
        tfm.SinusoidalLayout.SPLIT, tfm.Activation.SILU)
    assert cfg.scale_embeddings and cfg.share_embeddings and cfg.tie_output and cfg.logits_bias
    assert cfg.layer_norm_eps == 1e-5
    tok = marian.tokenizer
    _, meta = reference("marian")
    assert (tok.eos_id, tok.pad_id, tok.bos_id) == (0, meta["pad_id"], meta["pad_id"])


def _marian_logits(marian, which):
    ref, _ = reference("marian")
    got = marian.model.apply({"params": marian.params}, ref[f"{which}_inputs"], ref["decoder_inputs"])
    return got, ref[f"{which}_logits"]


def test_marian_logits_match_transformers(marian):
    assert rel_err(*_marian_logits(marian, "no_zero")) < 1e-5


def test_marian_logits_match_transformers_with_eos_0(marian):
    assert rel_err(*_marian_logits(marian, "with_eos")) < 1e-5


def _marian_search(marian, which, beam):
    ref, meta = reference("marian")
    tok, n = marian.tokenizer, meta["max_new_tokens"]
    common = dict(max_len=n, eos_id=tok.eos_id, bos_id=tok.bos_id)
    if beam:  # transformers with length_penalty=0 ranks by log-probability: tfm's alpha=0
        out = decoding.encdec_beam_search(marian.model, marian.params, ref[f"{which}_inputs"], beam_size=4,
                                          alpha=0.0, **common)
        got = [np.asarray(out.tokens)[b, 0, : int(out.lengths[b, 0])].tolist() for b in range(2)]
        want = [strip(r, tok.eos_id) for r in ref[f"{which}_beam4"]]
    else:
        out = decoding.encdec_greedy(marian.model, marian.params, ref[f"{which}_inputs"], **common)
        got = [np.asarray(out.tokens)[b, : int(out.lengths[b])].tolist() for b in range(2)]
        want = [strip(r, tok.eos_id) for r in ref[f"{which}_greedy"]]
    return got, want


@pytest.mark.parametrize("beam", [False, True], ids=["greedy", "beam4"])
def test_marian_decoding_matches_transformers(marian, beam):
    got, want = _marian_search(marian, "no_zero", beam)
    assert got == want


@pytest.mark.parametrize("beam", [False, True], ids=["greedy", "beam4"])
def test_marian_decoding_matches_transformers_with_eos_0(marian, beam):
    got, want = _marian_search(marian, "with_eos", beam)
    assert got == want


def test_marian_tokenizer_matches_transformers(marian):
    _, meta = reference("marian")
    tok = marian.tokenizer
    assert tok.vocab_size == meta["vocab_size"]
    for text, ids in meta["token_ids"].items():
        assert tok.encode(text) + [tok.eos_id] == ids, text  # MarianTokenizer appends </s>
        assert tok.decode(ids) == meta["decoded"][text]
    for text, ids in meta["target_token_ids"].items():
        assert tok.decode(ids) == meta["decoded"][text]


def test_marian_translate_from_pretrained_end_to_end(marian):
    """tfm.translate on an imported model: the tokenizer's start/end ids reach the search."""
    out = tfm.translate(marian, ["How are you today?"], beam_size=1, extra_len=5)
    assert isinstance(out[0], str)
