"""Evaluation during training: validation loss, accuracy and perplexity over a whole split
(:func:`evaluate`), and for translation BLEU and exact match of decoded sentences
(:func:`translation_metrics`, per group where the data has groups).
"""

from __future__ import annotations

import jax

from tfm.metrics import summarize, text_metrics_by_group
from tfm.data.pipeline import Pipeline
from tfm.training import parallel as parallel_lib
from tfm.training import state as state_lib
from tfm.training.inflight import InFlight


def evaluate(
    parallel: parallel_lib.Parallel,
    state: state_lib.TrainState,
    pipe: Pipeline,
    split: str = "validation",
    max_in_flight: int = 2,
) -> dict[str, float]:
    """Loss, nll, perplexity, accuracy over the whole split with the strategy's compiled eval
    step (sums on device, one transfer)."""
    total = None
    in_flight = InFlight(max_in_flight)
    for batch in pipe.eval_batches(split):
        sums = parallel.eval_sums(state, batch)
        total = sums if total is None else jax.tree.map(lambda a, b: a + b, total, sums)
        in_flight.push(total)
    if total is None:
        return {}
    sums = parallel.to_host(total)
    return summarize(sums, class_names=pipe.class_names)


def translation_metrics(
    model, params, pipe: Pipeline, *, num_examples: int, beam_size: int, batch_size: int,
    max_len: int, split: str = "validation",
) -> tuple[dict[str, float], str]:
    """Decodes the first ``num_examples`` sources of ``split``; BLEU and exact match on text,
    also per group where the data set has groups (numbers: by magnitude; see
    :func:`tfm.metrics.text_metrics_by_group`).

    Returns the metrics and a few (source, reference, output) examples as text.
    """
    from tfm import decoding

    pairs = pipe.eval_pairs(split)[:num_examples]
    if not pairs:
        return {}, ""
    hypotheses: list[str] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        # a short last batch is padded with copies of its first source: one compiled shape
        sources = [source for source, _ in chunk]
        inputs, mask = pipe.encode_inputs(sources + sources[:1] * (batch_size - len(chunk)), return_mask=True)
        # the tokenizer's own ids, and only those: the embedding table may be padded past them
        special = dict(bos_id=pipe.tokenizer.bos_id, eos_id=pipe.tokenizer.eos_id,
                       vocab_limit=pipe.tokenizer.vocab_size)
        if beam_size > 1:
            out = decoding.encdec_beam_search(model, params, inputs, inputs_mask=mask,
                                              beam_size=beam_size, max_len=max_len, **special).best()
        else:
            out = decoding.encdec_greedy(model, params, inputs, inputs_mask=mask, max_len=max_len, **special)
        hypotheses.extend(pipe.tokenizer.decode(ids) for ids in out.to_lists()[:len(chunk)])
    references = [reference for _, reference in pairs]
    groups = pipe.eval_groups(split)
    metrics = text_metrics_by_group(
        hypotheses, references, None if groups is None else groups[:len(pairs)],
        tokenize=pipe.bleu_tokenize)
    examples = "\n\n".join(
        f"source: {s}  \nreference: {r}  \noutput: {h}"
        for (s, r), h in list(zip(pairs, hypotheses))[:4]
    )
    return metrics, examples
