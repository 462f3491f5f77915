"""Accuracy of a trained number-words model by magnitude: greedy exact match and character
BLEU per bucket (0-99, 100-999, 1,000-9,999, 10,000-99,999, 100,000-999,999) on the held-out
validation and test numbers, and on every number below 1,000 (training numbers included).

    python benchmarks/numbers_by_magnitude.py --workdir workdirs/numbers

Prints a Markdown table (the README's) and writes benchmarks/results/numbers_by_magnitude.json.
The training loop logs the validation and below-1,000 figures itself (metrics.jsonl,
TensorBoard); this adds the test split, which training never looks at.
"""

from __future__ import annotations

import argparse
import time

import common

SETS = ("validation", "test", "below_1000")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="workdirs/numbers", help="a numbers run of train.py")
    parser.add_argument("--beam_size", type=int, default=1, help="1 = greedy (as the acceptance)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--output", default="numbers_by_magnitude", help="results/<output>.json")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from tfm import inference
    from tfm.data import numbers
    from tfm.data.pipeline import build_pipeline
    from tfm.training.eval import translation_metrics

    mt = inference.load(args.workdir, arch="encoder_decoder")
    if mt.data is None or mt.data.dataset.value != "numbers":
        raise SystemExit(f"{args.workdir} is not a run of the numbers task")
    pipe = build_pipeline(mt.data, workdir=args.workdir)  # the workdir's tokenizer
    results, seconds = {}, {}
    for split in SETS:
        start = time.perf_counter()
        results[split], _ = translation_metrics(
            mt.model, mt.params, pipe, num_examples=10**9, beam_size=args.beam_size,
            batch_size=args.batch_size, max_len=mt.data.max_target_len, split=split)
        seconds[split] = time.perf_counter() - start
        groups = pipe.eval_groups(split)
        results[split]["count"] = len(groups)
        for label in set(groups):
            results[split][f"count/{label}"] = groups.count(label)

    rows = []
    for label in (*numbers.BUCKET_LABELS, "all", "worst bucket"):
        row = {"bucket": label}
        for split in SETS:
            r = results[split]
            key = {"all": "exact_match", "worst bucket": "worst_exact_match"}.get(
                label, f"exact_match/{label}")
            if key in r:
                row[f"{split}_em"] = 100 * r[key]
            bleu = {"all": "bleu"}.get(label, f"bleu/{label}")
            if bleu in r:
                row[f"{split}_bleu"] = r[bleu]
            count = {"all": "count"}.get(label, f"count/{label}")
            if count in r:
                row[f"{split}_n"] = r[count]
        rows.append(row)
    print(f"\n{args.workdir} (step {mt.step}), {'greedy' if args.beam_size == 1 else f'beam {args.beam_size}'}:")
    columns = [("bucket", "bucket", "")]
    for split, name in zip(SETS, ("validation", "test", "below 1,000")):
        columns += [(f"{split}_n", f"{name} n", "d"), (f"{split}_em", f"{name} exact %", ".2f"),
                    (f"{split}_bleu", f"{name} BLEU", ".2f")]
    common.print_table(rows, columns)
    print("decoding seconds: " + ", ".join(f"{s} {t:.1f}" for s, t in seconds.items()),
          f"(load average {common.load_average()[0]:.1f})")
    path = common.write_json(args.output, {
        "workdir": args.workdir, "step": mt.step, "beam_size": args.beam_size,
        "metrics": results, "seconds": seconds, "machine": common.machine_info(),
        "load_average": common.load_average(),
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
