"""Where a compiled step's time goes: per-HLO-op times from a ``jax.profiler`` trace.

Used by ``train_throughput.py --profile N`` (traces N more steps after the timed ones). The trace
is written in Perfetto's JSON form, so nothing beyond jax is needed to read it: each XLA thunk
(a fusion, a dot, a copy...) is one event named after its HLO instruction. The instruction names
are joined with the compiled HLO (``compiled.as_text()``) for their output shape, their
``op_name`` (which model line made them) and, for matrix products, their FLOPs, so the table
says both how long each op took and how fast its matmul ran.

The per-op times are thread times: ops that XLA runs concurrently on different threads add up
to more than the step's wall time. Two caveats, both visible in the GFLOP/s column: the profiler
itself slows the step (compare the wall time with the un-profiled median), and on XLA:CPU a
plain ``dot`` op (Eigen, not a YNNPACK ``ynn_fusion``) may hand its work to the intra-op thread
pool and end its event early, so its time can be undercounted (a rate above the machine's peak
means exactly that). An op inside a loop (``scan_layers``) is counted once per iteration.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import math
import re
import tempfile
from collections.abc import Callable
from typing import Any

import jax

# Events that wrap thunks (the executor, the host side of the call) rather than being ops.
_WRAPPERS = ("ThunkExecutor", "$", "PjitFunction", "SlinkyThreadPool", "PjRt", "CommonPjRt",
             "ParseArguments", "AllocateOutputBuffers")

_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\w+\[[\d,]*\]|\([^=]*?\)|\w+\[\])\S* ([\w\-]+)\(")
_PARAM = re.compile(r"%?([\w.\-]+): (\w+\[[\d,]*\])")


def _dims(shape: str) -> list[int]:
    inner = shape[shape.index("[") + 1: shape.index("]")]
    return [int(d) for d in inner.split(",") if d]


def parse_hlo(text: str) -> dict[str, Any]:
    """Instruction name -> (shape, opcode, line), fused computation name -> body lines."""
    instructions: dict[str, tuple[str, str, str]] = {}
    computations: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.rstrip().endswith("{"):
            name = line.split()[0].lstrip("%")
            if name == "ENTRY":
                name = line.split()[1].lstrip("%")
            current = computations.setdefault(name, [])
            for pname, pshape in _PARAM.findall(line[: line.find("->")] if "->" in line else line):
                instructions.setdefault(pname, (pshape, "parameter", ""))
            continue
        m = _INSTR.match(line)
        if m:
            instructions[m.group(1)] = (m.group(2), m.group(3), line)
            if current is not None:
                current.append(line)
    return {"instructions": instructions, "computations": computations}


def dot_flops(line: str, instructions: dict[str, tuple[str, str, str]]) -> float:
    """2 x output elements x contracted size of one ``dot`` instruction line."""
    m = _INSTR.match(line)
    if not m or m.group(3) != "dot":
        return 0.0
    out = math.prod(_dims(m.group(2)))
    operands = re.search(r" dot\((?:\w+\[[\d,]*\]\S* )?%([\w.\-]+)", line)  # shapes may be printed
    lhs = instructions.get(operands.group(1)) if operands else None
    contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line)
    if lhs is None or contracting is None:
        return 0.0
    lhs_dims = _dims(lhs[0])
    k = math.prod(lhs_dims[int(d)] for d in contracting.group(1).split(",") if d)
    return 2.0 * out * k


def op_flops(name: str, hlo: dict[str, Any]) -> float:
    """FLOPs of the matrix products inside one top-level op (a dot or a fusion around dots)."""
    shape, opcode, line = hlo["instructions"].get(name, ("", "", ""))
    if opcode == "dot":
        return dot_flops(line, hlo["instructions"])
    calls = re.search(r"calls=%([\w.\-]+)", line)
    if not calls:
        return 0.0
    body = hlo["computations"].get(calls.group(1), [])
    return sum(dot_flops(b, hlo["instructions"]) for b in body)


def category(name: str, flops: float) -> str:
    if flops:
        return "matmul"
    return re.sub(r"\.\d+$", "", name)


def trace_ops(step: Callable[[Any], tuple[Any, Any]], carry: Any, n_steps: int) -> tuple[Any, list[dict], float]:
    """Runs ``n_steps`` steps under the profiler; returns (carry, events, wall seconds/step)."""
    import time

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(n_steps):
                carry, out = step(carry)
                jax.block_until_ready((carry, out))
        wall = (time.perf_counter() - t0) / n_steps
        files = glob.glob(f"{tmp}/**/*.trace.json.gz", recursive=True)
        if not files:
            raise RuntimeError(f"jax.profiler wrote no Perfetto trace under {tmp}")
        with gzip.open(files[0]) as f:
            events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
    return carry, events, wall


def summarize(events: list[dict], hlo_text: str, n_steps: int) -> dict[str, Any]:
    """Per-op and per-category milliseconds per step, with matmul GFLOP/s."""
    hlo = parse_hlo(hlo_text)
    per_op: dict[str, float] = collections.defaultdict(float)
    count: dict[str, int] = collections.Counter()
    for e in events:
        name = e["name"]
        if name.startswith(_WRAPPERS) or " " in name:
            continue
        per_op[name] += e["dur"] / 1e3 / n_steps  # microseconds -> ms per step
        count[name] += 1
    ops = []
    for name, ms in per_op.items():
        shape, opcode, line = hlo["instructions"].get(name, ("?", "?", ""))
        flops = op_flops(name, hlo)
        op_name = re.search(r'op_name="([^"]*)"', line)
        flops *= count[name] / n_steps  # per step: an op in a while loop runs once per iteration
        ops.append(dict(
            op=name, ms=ms, calls=count[name] / n_steps, shape=shape, flops=flops,
            gflops_s=flops / (ms * 1e6) if flops and ms else None,
            source=op_name.group(1) if op_name else "",
        ))
    ops.sort(key=lambda r: -r["ms"])
    cats: dict[str, dict[str, float]] = {}
    for r in ops:
        c = cats.setdefault(category(r["op"], r["flops"]), dict(ms=0.0, ops=0, flops=0.0))
        c["ms"] += r["ms"]
        c["ops"] += 1
        c["flops"] += r["flops"]
    table = [dict(category=k, **v, gflops_s=v["flops"] / (v["ms"] * 1e6) if v["flops"] else None)
             for k, v in sorted(cats.items(), key=lambda kv: -kv[1]["ms"])]
    return {"busy_ms": sum(r["ms"] for r in ops), "categories": table, "ops": ops}


def print_summary(summary: dict[str, Any], step_ms: float, top: int = 25) -> None:
    """``step_ms``: the un-profiled median step time, for the average parallelism."""
    busy = summary["busy_ms"]
    print(f"\nops: {busy:.1f} ms of thread time per step; the step takes {step_ms:.1f} ms "
          f"(average parallelism {busy / step_ms:.2f}; {summary['wall_ms']:.1f} ms under the profiler)")
    print("| category | ms/step | share % | ops | GFLOP/s |\n| --- | --- | --- | --- | --- |")
    for c in summary["categories"][:15]:
        rate = f"{c['gflops_s']:.1f}" if c["gflops_s"] else ""
        print(f"| {c['category']} | {c['ms']:.2f} | {100 * c['ms'] / busy:.1f} | {c['ops']} | {rate} |")
    print(f"\n| op | ms/step | shape | GFLOP/s | from |\n| --- | --- | --- | --- | --- |")
    for r in summary["ops"][:top]:
        rate = f"{r['gflops_s']:.1f}" if r["gflops_s"] else ""
        print(f"| {r['op']} | {r['ms']:.2f} | {r['shape']} | {rate} | {r['source'][-80:]} |")
