"""Metrics against hand-computed values."""

import math

import numpy as np
import pytest

from tfm import metrics


def test_bleu_identical_is_100():
    refs = ["the cat sat on the mat", "a quick brown fox jumps"]
    assert metrics.bleu(refs, refs) == pytest.approx(100.0)


def test_bleu_hand_computed():
    # hyp "the cat sat on the mat" vs ref "the cat sat on a mat" (same length: no brevity penalty)
    # clipped n-gram precisions: 1-gram 5/6, 2-gram 3/5, 3-gram 2/4, 4-gram 1/3
    expected = 100 * math.exp(sum(math.log(p) for p in (5 / 6, 3 / 5, 2 / 4, 1 / 3)) / 4)
    got = metrics.bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert got == pytest.approx(expected, abs=1e-6)


def test_bleu_brevity_penalty():
    # hyp is a 4-word prefix of the 6-word ref: all precisions 1, BP = exp(1 - 6/4)
    got = metrics.bleu(["the cat sat on"], ["the cat sat on the mat"])
    assert got == pytest.approx(100 * math.exp(1 - 6 / 4), abs=1e-6)


def test_bleu_detokenized_punctuation_is_tokenized():
    # 13a splits the final period: "mat." and "mat ." score the same
    assert metrics.bleu(["the cat sat on the mat."], ["the cat sat on the mat ."]) == pytest.approx(100.0)


def test_bleu_char_tokenization_for_single_words():
    assert metrics.bleu(["einundzwanzig"], ["einundzwanzig"], tokenize="char") == pytest.approx(100.0)
    partial = metrics.bleu(["einundzwanzig"], ["zweiundzwanzig"], tokenize="char")
    assert 0 < partial < 100
    assert metrics.bleu(["einundzwanzig"], ["zweiundzwanzig"]) == 0.0  # word level: no match


def test_bleu_errors():
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        metrics.bleu(["a", "b"], ["a"])


def test_exact_match():
    assert metrics.exact_match(["a b", " c", "d"], ["a b", "c", "e"]) == pytest.approx(2 / 3)


def test_perplexity_and_bits_per_char():
    assert metrics.perplexity(0.0) == 1.0
    assert metrics.perplexity(math.log(7.0)) == pytest.approx(7.0)
    # uniform over 4 symbols: ln 4 nats per char = 2 bits
    assert metrics.bits_per_char(10 * math.log(4), 10) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        metrics.bits_per_char(1.0, 0)


def test_accuracy():
    assert metrics.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert metrics.accuracy(np.array([1, 0, 1]), np.array([1, 1, 0]), [1.0, 0.0, 0.0]) == 1.0


def test_text_metrics_by_group_hand_made():
    # group "0-99": 2 of 3 right; "100-999": 1 of 1; overall 3 of 4
    hyps = ["eins", "zwei", "dreizehn", "einhundert"]
    refs = ["eins", "zwei", "dreißig", "einhundert"]
    groups = ["0-99", "0-99", "0-99", "100-999"]
    m = metrics.text_metrics_by_group(hyps, refs, groups, tokenize="char")
    assert m["exact_match"] == pytest.approx(3 / 4)
    assert m["exact_match/0-99"] == pytest.approx(2 / 3)
    assert m["exact_match/100-999"] == 1.0
    assert m["worst_exact_match"] == pytest.approx(2 / 3)
    assert m["bleu/100-999"] == pytest.approx(100.0)
    # a group's BLEU is the corpus BLEU of its sentences only (sacrebleu on the subset)
    assert m["bleu/0-99"] == pytest.approx(metrics.bleu(hyps[:3], refs[:3], tokenize="char"))
    assert 0 < m["bleu/0-99"] < 100
    assert m["bleu"] == pytest.approx(metrics.bleu(hyps, refs, tokenize="char"))
    assert list(m)[:2] == ["bleu", "exact_match"] and "worst_exact_match" in m
    no_groups = metrics.text_metrics_by_group(hyps, refs, tokenize="char")
    assert no_groups == {k: m[k] for k in ("bleu", "exact_match")}
    with pytest.raises(ValueError, match="3 group labels but 4"):
        metrics.text_metrics_by_group(hyps, refs, groups[:3])
