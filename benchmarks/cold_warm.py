"""Cold and warm start: what JAX's persistent compilation cache saves a new process.

    python benchmarks/cold_warm.py                       # translate, generate, train; 3 rounds
    python benchmarks/cold_warm.py --cases translate --repeats 5 --workdir workdirs/numbers

Each case is a whole new process, timed from start to exit (wall and CPU seconds of the child):

* ``translate``: ``python -m tfm.cli translate --workdir W "three"`` (the ``tfm translate``
  command). Without ``--workdir`` a numbers-task workdir (configs/numbers.py's model, 2 steps)
  is trained first into a temporary directory;
* ``generate``: ``python -m tfm.cli generate --pretrained tests/fixtures/hf/gpt2`` (the
  committed tiny GPT-2), 20 greedy tokens;
* ``train``: ``python train.py`` (configs/numbers.py) for one step into a new workdir, no
  evaluation: start-up, data, the first compile and the first step, and the final checkpoint.

Three ways per round, in this order: ``off`` (``TFM_COMPILATION_CACHE=off``), ``cold`` (a new,
empty cache directory) and ``warm`` (the same directory again, now filled by the cold run).
The table gives medians over the rounds and how much faster warm is than cold. Writes
benchmarks/results/cold_warm.json (every time, the machine and its load).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CASES = ("translate", "generate", "train")
MODES = ("off", "cold", "warm")
# the child decides its cache from TFM_COMPILATION_CACHE alone (a test run sets JAX's own)
_JAX_CACHE_VARS = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
                   "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (each: off, cold, warm)")
    parser.add_argument("--workdir", default=None, help="a trained numbers workdir for translate")
    parser.add_argument("--max_new_tokens", type=int, default=20, help="generate's tokens")
    parser.add_argument("--output", default="cold_warm", help="results/<output>.json")
    parser.add_argument("--out-dir", default=None, help="directory of the JSON (default benchmarks/results)")
    args = parser.parse_args(argv)
    args.cases = [c for c in args.cases.split(",") if c]
    unknown = set(args.cases) - set(CASES)
    if unknown or args.repeats < 1:
        parser.error(f"--cases: unknown {sorted(unknown)}; --repeats >= 1")
    return args


def child_env(cache: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _JAX_CACHE_VARS}
    env["TFM_COMPILATION_CACHE"] = cache
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def timed(command: list[str], env: dict[str, str], cwd: str) -> dict[str, float]:
    """Runs ``command`` to completion: its wall seconds and CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "stdout": done.stdout.strip()[-200:]}


def numbers_run_flags(workdir: str, steps: int) -> list[str]:
    return [os.path.join(REPO, "train.py"), f"--workdir={workdir}", f"--config.train.num_steps={steps}",
            "--config.train.eval_every_steps=0", "--config.train.eval_at_end=false",
            "--config.train.progress_bar=false"]


def commands(case: str, scratch: str, workdir: str | None, max_new_tokens: int):
    """The command of ``case``; a function of the round (train needs a new workdir each time)."""
    py = sys.executable
    if case == "translate":
        return lambda tag: [py, "-m", "tfm.cli", "translate", "--workdir", workdir, "three"]
    if case == "generate":
        fixture = os.path.join(REPO, "tests", "fixtures", "hf", "gpt2")
        return lambda tag: [py, "-m", "tfm.cli", "generate", "--pretrained", fixture, "--prompt", "Hello",
                            "--max_new_tokens", str(max_new_tokens), "--temperature", "0"]
    return lambda tag: [py, *numbers_run_flags(os.path.join(scratch, f"train_{tag}"), 1)]


def main(argv=None) -> dict:
    args = parse_args(argv)
    scratch = tempfile.mkdtemp(prefix="tfm-cold-warm-")
    try:
        return _measure(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _measure(args, scratch: str) -> dict:
    workdir = args.workdir
    if "translate" in args.cases and workdir is None:
        workdir = os.path.join(scratch, "numbers")
        print(f"training a 2-step numbers workdir for translate: {workdir}", flush=True)
        timed([sys.executable, *numbers_run_flags(workdir, 2)], child_env("off"), scratch)

    runs: dict[str, dict[str, list[dict]]] = {c: {m: [] for m in MODES} for c in args.cases}
    for r in range(args.repeats):
        for case in args.cases:
            command = commands(case, scratch, workdir, args.max_new_tokens)
            cache = os.path.join(scratch, f"cache_{case}_{r}")
            for mode in MODES:
                env = child_env("off" if mode == "off" else cache)
                result = timed(command(f"{r}_{mode}"), env, scratch)
                runs[case][mode].append(result)
                print(f"round {r + 1}/{args.repeats} {case:9s} {mode:4s} {result['wall_s']:6.2f} s wall "
                      f"{result['cpu_s']:6.2f} s CPU", flush=True)

    rows = []
    for case in args.cases:
        row = {"case": case}
        for mode in MODES:
            row[f"{mode}_wall_s"] = statistics.median(x["wall_s"] for x in runs[case][mode])
            row[f"{mode}_cpu_s"] = statistics.median(x["cpu_s"] for x in runs[case][mode])
        row["warm_faster_wall"] = 1 - row["warm_wall_s"] / row["cold_wall_s"]
        row["warm_faster_cpu"] = 1 - row["warm_cpu_s"] / row["cold_cpu_s"]
        rows.append(row)

    from benchmarks import common  # imports jax: only now, for the machine's description

    print()
    table = common.print_table(rows, [
        ("case", "case", "s"), ("off_wall_s", "off s", ".2f"), ("cold_wall_s", "cold s", ".2f"),
        ("warm_wall_s", "warm s", ".2f"), ("warm_faster_wall", "warm faster (wall)", ".0%"),
        ("cold_cpu_s", "cold CPU s", ".2f"), ("warm_cpu_s", "warm CPU s", ".2f"),
        ("warm_faster_cpu", "warm faster (CPU)", ".0%"),
    ])
    payload = {"rows": rows, "runs": runs, "repeats": args.repeats, "table": table,
               "machine": common.machine_info()}
    path = common.write_json(args.output, payload, args.out_dir)
    print(f"\nwrote {path}")
    return payload


if __name__ == "__main__":
    main()
