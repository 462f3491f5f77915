"""Evaluation metrics on detokenized text and on summed losses.

* :func:`bleu`: corpus BLEU (Papineni et al. 2002) computed by sacrebleu on detokenized text,
  the way the paper's Table 2 numbers are reported today ("13a" tokenization, exp smoothing).
* :func:`exact_match`: fraction of hypotheses equal to their reference.
* :func:`text_metrics_by_group`: exact match and BLEU overall and per group of sentences (the
  numbers task groups by magnitude), with the worst group's exact match as the headline.
* :func:`perplexity`: exp of the mean per-token negative log likelihood (nats).
* :func:`bits_per_char`: summed negative log likelihood (nats) in bits per character of text; for
  a character-level tokenizer that is simply ``mean_nll / ln 2``.
* :func:`accuracy`: (weighted) fraction of correct predictions.
* :func:`summarize`: the training and evaluation steps' summed statistics -> mean loss, nll,
  perplexity, bits per token, accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def bleu(hypotheses: Sequence[str], references: Sequence[str], *, tokenize: str = "13a") -> float:
    """Corpus BLEU in [0, 100] of detokenized ``hypotheses`` against one reference each.

    ``tokenize`` is sacrebleu's tokenizer: "13a" (the WMT standard), "intl", "char" (for
    outputs that are single words, like the German number words), "none".
    """
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"bleu: {len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("bleu: no sentences to score")
    metric = sacrebleu.BLEU(tokenize=tokenize)
    return float(metric.corpus_score(list(hypotheses), [list(references)]).score)


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of hypotheses equal to their reference (after stripping outer whitespace)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"exact_match: {len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("exact_match: no sentences to score")
    return sum(h.strip() == r.strip() for h, r in zip(hypotheses, references, strict=True)) / len(hypotheses)


def text_metrics_by_group(
    hypotheses: Sequence[str],
    references: Sequence[str],
    groups: Sequence[str] | None = None,
    *,
    tokenize: str = "13a",
) -> dict[str, float]:
    """Exact match and BLEU of all sentences and of each group.

    Returns ``{"exact_match", "bleu"}`` over everything and, when ``groups`` (one label per
    sentence) is given, ``"exact_match/<group>"`` and ``"bleu/<group>"`` for each group (in
    order of first appearance) and ``"worst_exact_match"``: the lowest per-group exact match, the
    figure to report when an average would hide a group the model gets wrong.
    """
    metrics = {
        "bleu": bleu(hypotheses, references, tokenize=tokenize),
        "exact_match": exact_match(hypotheses, references),
    }
    if groups is None:
        return metrics
    if len(groups) != len(hypotheses):
        raise ValueError(f"text_metrics_by_group: {len(groups)} group labels but "
                         f"{len(hypotheses)} hypotheses")
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(str(g), []).append(i)
    for g, idx in members.items():
        hyps, refs = [hypotheses[i] for i in idx], [references[i] for i in idx]
        metrics[f"exact_match/{g}"] = exact_match(hyps, refs)
        metrics[f"bleu/{g}"] = bleu(hyps, refs, tokenize=tokenize)
    metrics["worst_exact_match"] = min(metrics[f"exact_match/{g}"] for g in members)
    return metrics


def perplexity(mean_nll: float) -> float:
    """exp(mean negative log likelihood per token, in nats)."""
    return math.exp(mean_nll) if mean_nll < 700 else math.inf


def bits_per_char(total_nll: float, num_chars: int) -> float:
    """Summed negative log likelihood (nats) over a text -> bits per character of that text."""
    if num_chars <= 0:
        raise ValueError(f"bits_per_char: num_chars must be positive, got {num_chars}")
    return total_nll / (num_chars * math.log(2))


def accuracy(predictions, labels, weights=None) -> float:
    """Weighted fraction of ``predictions == labels`` (weights default to 1)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"accuracy: predictions {predictions.shape} vs labels {labels.shape}")
    w = np.ones(labels.shape, np.float64) if weights is None else np.asarray(weights, np.float64)
    total = w.sum()
    if total <= 0:
        raise ValueError("accuracy: the weights sum to zero")
    return float(((predictions == labels) * w).sum() / total)


def summarize(sums: dict[str, Any], class_names: Sequence[str] = ()) -> dict[str, float]:
    """Summed step statistics -> means: loss, nll, perplexity, bits per token, accuracy; with a
    classifier's per-class counts (:func:`tfm.losses.class_counts`) also the F1 of each class
    (``f1_<name>``, the names ``class_names`` or the class ids) and their mean, ``macro_f1``."""
    weight = max(float(sums["weight_sum"]), 1e-9)
    nll = float(sums["nll_sum"]) / weight
    out = {
        "loss": float(sums["loss_sum"]) / weight,
        "nll": nll,
        "perplexity": perplexity(nll),
        "bits_per_token": nll / math.log(2),
        "accuracy": float(sums["correct_sum"]) / weight,
        "weight": float(sums["weight_sum"]),
    }
    if "class_true_positive_sum" in sums:
        tp, predicted, actual = (np.asarray(sums[k], np.float64) for k in
                                 ("class_true_positive_sum", "class_predicted_sum", "class_actual_sum"))
        # F1 = 2 TP / (predicted + actual); a class neither predicted nor present scores 0
        f1 = np.where(predicted + actual > 0, 2 * tp / np.maximum(predicted + actual, 1e-12), 0.0)
        names = list(class_names) or [str(i) for i in range(len(f1))]
        out.update({f"f1_{n}": float(v) for n, v in zip(names, f1)})
        out["macro_f1"] = float(f1.mean())
    return out
