"""In-process A/B of two ModelConfig settings: the same training step built twice, timed in turns.

    python benchmarks/ab_settings.py --config cpu_small --a grad_kernels=auto --b grad_kernels=autodiff
    python benchmarks/ab_settings.py --config cpu_base --rounds 5 --steps 5 --strategy sharded --devices 2

Both steps (``benchmarks.common.build_train_step``: the training loop's step, state donated) are
compiled in one process and then run in alternating rounds, ``--steps`` timed steps
each after one untimed step (A B, then B A, ...), so that load from other processes on a shared machine hits both
alike. Reported per variant: the median step time over all its timed steps; and the median over
rounds of the per-round ratio B / A (the number to read on a busy machine). Settings that need a
new process (XLA flags, the device count) are out of its reach: use ``sweep.py`` for those.
Results: ``benchmarks/results/ab_<config>.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="cpu_small")
    p.add_argument("--a", action="append", default=None, metavar="FIELD=VALUE",
                   help="ModelConfig overrides of variant A (default grad_kernels=auto)")
    p.add_argument("--b", action="append", default=None, metavar="FIELD=VALUE",
                   help="ModelConfig overrides of variant B (default grad_kernels=autodiff)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant and round")
    p.add_argument("--strategy", choices=("single", "pmap", "sharded"), default="single")
    p.add_argument("--devices", type=int, default=None, help="split the CPU into this many devices")
    args = p.parse_args(argv)
    a = args.a or ["grad_kernels=auto"]
    b = args.b or ["grad_kernels=autodiff"]
    if args.devices:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={args.devices}").strip()

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import common
    import jax
    from bench_configs import get_bench_config

    from tfm.training import parallel

    def strategy():
        return {"single": parallel.SingleDevice, "pmap": parallel.Pmap, "sharded": parallel.Sharded}[args.strategy]()

    variants = {}
    for name, overrides in (("A", a), ("B", b)):
        bench = get_bench_config(args.config, overrides)
        ts = common.build_train_step(bench, strategy())
        compiled, compile_s = common.time_compile(ts.step_fn, ts.state, ts.batch, ts.rng)
        variants[name] = {"overrides": overrides, "compile_s": compile_s, "fn": compiled,
                          "carry": ts.state, "batch": ts.batch, "rng": ts.rng, "times": [],
                          "round_medians": []}

    for r in range(args.rounds):
        order = list(variants.values())
        for v in order if r % 2 == 0 else order[::-1]:  # A B, B A, ...: no side always goes first
            step = lambda state, v=v: v["fn"](state, v["batch"], v["rng"])  # noqa: E731
            v["carry"], times, _ = common.time_steps(step, v["carry"], n_warmup=1, n_steps=args.steps)
            v["times"] += times
            v["round_medians"].append(statistics.median(times))

    ratios = [rb / ra for ra, rb in zip(variants["A"]["round_medians"], variants["B"]["round_medians"])]
    rows = [{"variant": f"{k}: {' '.join(v['overrides'])}", "median_ms": 1e3 * statistics.median(v["times"]),
             "compile_s": v["compile_s"]} for k, v in variants.items()]
    print(f"{args.config}, {args.strategy}" + (f", {args.devices} devices" if args.devices else "")
          + f", {args.rounds} rounds x {args.steps} steps, load {common.load_average()}")
    common.print_table(rows, [("variant", "variant", "s"), ("median_ms", "median ms/step", ".1f"),
                              ("compile_s", "compile s", ".1f")])
    print(f"B / A, median of per-round ratios: {statistics.median(ratios):.3f} "
          f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)})")
    payload = {
        "config": args.config, "strategy": args.strategy, "devices": args.devices or jax.device_count(),
        "rounds": args.rounds, "steps": args.steps, "ratio_b_over_a": statistics.median(ratios),
        "ratios": ratios, "machine": common.machine_info(),
        "variants": {k: {"overrides": v["overrides"], "compile_s": v["compile_s"],
                         "round_median_s": v["round_medians"], **common.summarize(v["times"])}
                     for k, v in variants.items()},
    }
    path = common.write_json(f"ab_{args.config}", payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
