"""Before/after comparisons: runs train_throughput.py for several variants, interleaved.

    python benchmarks/sweep.py --config cpu_small --variants baseline,scan,bf16 --rounds 3

Each variant runs in its own process (XLA flags are fixed when a process starts) and the
variants take turns, ``--rounds`` times (A B C A B C ...), so that a burst of load from other
processes on a shared machine hits every variant alike. The table reports, per variant, the
median over rounds of: step time, tokens/s, MFU (each run against the matmul peak it measured
itself), pipelined step time, compile time, and the CPU-time MFU (FLOPs per process
CPU-second over the matmul's: the number least disturbed by other processes). Results: benchmarks/results/sweep_<config>.json.

``--trees old=/path/to/checkout,new=.`` runs every variant once per source tree (that tree's
train_throughput.py and tfm, by PYTHONPATH), turn by turn in the same rounds: an A/B of two
commits on the same machine. The last column is then each run's step time over the first
tree's in the same round and variant, median over rounds (< 1: faster than the first tree).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent

# name -> extra command-line arguments of train_throughput.py
VARIANTS: dict[str, list[str]] = {
    "baseline": ["--xla-flags=none"],
    "recommended": [],
    "scan": ["--xla-flags=none", "--set", "scan_layers=true"],
    "remat_dots": ["--xla-flags=none", "--set", "remat=dots"],
    "remat_full": ["--xla-flags=none", "--set", "remat=full"],
    "bf16": ["--xla-flags=none", "--set", "dtype=bfloat16"],
    "no_donate": ["--xla-flags=none", "--no-donate"],
    "feed_host": ["--xla-flags=none", "--feed", "host"],
    "fast_math": ["--xla-flags=--xla_cpu_enable_fast_math=true"],
    "no_ynn": ["--xla-flags=--xla_cpu_experimental_ynn_fusion_type="],
    "ynn_all": ["--xla-flags=--xla_cpu_experimental_ynn_fusion_type=individual_dot,dot,eltwise,reduce"],
    "no_xnn": ["--xla-flags=--xla_cpu_use_xnnpack=false"],
    "onednn": ["--xla-flags=--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true"],
    "one_thread": ["--xla-flags=--xla_cpu_multi_thread_eigen=false"],
    # data parallelism over the cores: the host split into 2 XLA CPU devices
    "pmap2": ["--xla-flags=none", "--strategy", "pmap", "--devices", "2"],
    "sharded2": ["--xla-flags=none", "--strategy", "sharded", "--devices", "2"],
    "sharded2_1t": ["--xla-flags=--xla_cpu_multi_thread_eigen=false", "--strategy", "sharded", "--devices", "2"],
    "scan_sharded2": ["--xla-flags=none", "--strategy", "sharded", "--devices", "2", "--set", "scan_layers=true"],
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="cpu_small")
    p.add_argument("--variants", default="baseline,recommended",
                   help=f"comma-separated names of {sorted(VARIANTS)}, or NAME=ARGS (quoted args)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--trees", default=None, metavar="LABEL=PATH,...",
                   help="source trees to A/B (default: this one); the first is the reference")
    args = p.parse_args(argv)

    base = {}
    for item in args.variants.split(","):
        name, sep, extra = item.partition("=")
        base[name] = extra.split() if sep else VARIANTS[name]
    trees = {"": HERE.parent}
    if args.trees:
        trees = {}
        for item in args.trees.split(","):
            label, sep, path = item.partition("=")
            root = pathlib.Path(path).resolve()
            if not sep or not (root / "benchmarks" / "train_throughput.py").is_file():
                p.error(f"--trees: {item!r} is not LABEL=PATH of a tfm checkout")
            trees[label] = root
    variants = {(f"{label}:{name}" if label else name): (extra, root, name, label)
                for name, extra in base.items() for label, root in trees.items()}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, (extra, root, _, _) in variants.items():
                cmd = [sys.executable, str(root / "benchmarks" / "train_throughput.py"), "--config", args.config,
                       "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--name", f"{name}_{r}", "--out-dir", tmp, *extra]
                env = dict(os.environ)
                if args.trees:
                    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if proc.returncode:
                    print(f"{name} round {r} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                    continue
                runs[name].append(json.loads(pathlib.Path(tmp, f"{name}_{r}.json").read_text()))
                print(f"round {r} {name}: {runs[name][-1]['step']['median_s'] * 1e3:.1f} ms/step", flush=True)

    sys.path.insert(0, str(HERE))
    import common  # noqa: E402 (jax is imported only now, with the caller's XLA_FLAGS)

    def med(rs, f):
        vals = [f(r) for r in rs if f(r) is not None]
        return statistics.median(vals) if vals else None

    def vs_first_tree(name):
        extra, _, variant, label = variants[name]
        first = next(iter(trees))
        ref = {r["name"].rsplit("_", 1)[-1]: r for r in runs[f"{first}:{variant}" if first else variant]}
        ratios = [r["step"]["median_s"] / ref[k]["step"]["median_s"]
                  for r in runs[name] if (k := r["name"].rsplit("_", 1)[-1]) in ref]
        return statistics.median(ratios) if ratios else None

    rows = []
    for name, rs in runs.items():
        if not rs:
            continue
        rows.append(dict(
            name=name,
            args=" ".join(variants[name][0]),
            vs_first=vs_first_tree(name) if args.trees else None,
            step_ms=med(rs, lambda r: r["step"]["median_s"] * 1e3),
            tok_s=med(rs, lambda r: r["tokens_per_s"]),
            pipe_ms=med(rs, lambda r: r["pipelined_step_s"] * 1e3),
            compile_s=med(rs, lambda r: r["compile_s"]),
            mfu=med(rs, lambda r: r["mfu"] and r["mfu"] * 100),
            mfu_cpu=med(rs, lambda r: r.get("mfu_cpu_time") and r["mfu_cpu_time"] * 100),
            cpu_ms=med(rs, lambda r: r.get("cpu_s_per_step") and r["cpu_s_per_step"] * 1e3),
            peak=med(rs, lambda r: r["peak_flops_per_s"] and r["peak_flops_per_s"] / 1e9),
            mem=med(rs, lambda r: r["peak_memory"]["bytes"] / 2**20),
            loss=med(rs, lambda r: r["final_loss"]),
            n=len(rs),
        ))
    common.print_table(rows, [
        ("name", "variant", "s"), ("tok_s", "tokens/s", ".0f"), ("step_ms", "step ms", ".1f"),
        ("pipe_ms", "pipelined ms", ".1f"), ("compile_s", "compile s", ".1f"), ("mfu", "MFU %", ".1f"),
        ("cpu_ms", "CPU ms/step", ".0f"), ("mfu_cpu", "CPU-time MFU %", ".1f"), ("peak", "peak GFLOP/s", ".0f"), ("mem", "peak MiB", ".0f"), ("n", "runs", "d"),
        *([("vs_first", "step / first tree's", ".3f")] if args.trees else []),
    ])
    path = common.write_json(f"sweep_{args.config}", {
        "config": args.config, "rounds": args.rounds, "rows": rows, "runs": runs,
        "trees": {label: str(root) for label, root in trees.items()},
        "machine": common.machine_info(),
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
