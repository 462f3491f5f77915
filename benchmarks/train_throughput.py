"""Training throughput and MFU of tfm's real training step.

    python benchmarks/train_throughput.py --config cpu_small
    python benchmarks/train_throughput.py --config cpu_base --set scan_layers=true --steps 30
    python benchmarks/train_throughput.py --config gpu_gpt2_small          # on a GPU
    python benchmarks/train_throughput.py --config cpu_small --xla-flags=none   # XLA defaults

What is timed is the step the training loop runs: ``tfm.training.steps.make_train_step`` (model
forward, label-smoothed loss, gradients, clipping, Adam(W) update) jitted with the state donated,
as ``tfm.training.parallel.SingleDevice`` does. The batch is synthetic (uniform random token ids,
no padding) and is put on the device once, before timing (the prefetched case); ``--feed host``
passes a NumPy batch every step instead.

Reported: compile time (lower + compile, separately); the median step time over ``--steps``
steps after ``--warmup`` steps, each step timed to completion; tokens/s from that median; the
pipelined step time (the same steps dispatched without waiting for each, at most 2 outstanding as
in the training loop); MFU = model FLOPs/s / peak, with model FLOPs from PaLM appendix B
(:func:`benchmarks.common.flop_breakdown`: 6 N + 12 L T D per token); the peak is the float32
2048^3 ``jnp.matmul`` FLOP/s measured in the same run on CPU (best of the timings taken before
and after the steps), the datasheet dense bf16 peak on GPU (H100: 989 TFLOP/s); peak memory
(CPU: process max RSS; GPU: the allocator's peak). A table is printed and everything is written
to ``benchmarks/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import os
import sys

# XLA flags recommended per platform, applied unless --xla-flags says otherwise. Measured on
# the machines named in benchmarks/README.md; each was kept only because it helped there.
CPU_XLA_FLAGS = ""
GPU_XLA_FLAGS = " ".join(
    [
        # From JAX's GPU performance tips (docs/gpu_performance_tips.md): schedule to overlap
        # independent work, and cuBLAS rather than Triton for the large bf16 GEMMs.
        # NOT yet measured on a GPU (no GPU in the sessions so far): compare with
        # `sweep.py --config gpu_gpt2_small --variants baseline,recommended` before trusting them.
        "--xla_gpu_enable_latency_hiding_scheduler=true",
        "--xla_gpu_enable_triton_gemm=false",
    ]
)

CONFIGS = ("cpu_small", "cpu_base", "gpu_gpt2_small", "gpu_transformer_base", "tiny")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=CONFIGS, default="cpu_small")
    p.add_argument("--steps", type=int, default=30, help="timed steps (>= 20 for the headline median)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps after compilation")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a ModelConfig field, e.g. scan_layers=true, remat=dots, dtype=bfloat16")
    p.add_argument("--batch", type=int, default=None, help="override the batch size (rows)")
    p.add_argument("--xla-flags", default="recommended",
                   help="'recommended' (the platform's flags above), 'none', or a flag string "
                        "appended to the recommended ones")
    p.add_argument("--feed", choices=("device", "host"), default="device",
                   help="device: the batch is put on the device once (prefetched); host: a NumPy "
                        "batch is passed every step")
    p.add_argument("--strategy", choices=("single", "pmap", "sharded"), default="single",
                   help="tfm.training.parallel strategy that compiles the step (as the loop does)")
    p.add_argument("--devices", type=int, default=None,
                   help="CPU only: split the host into this many XLA devices "
                        "(--xla_force_host_platform_device_count), for --strategy pmap/sharded")
    p.add_argument("--mesh-fsdp", type=int, default=1,
                   help="--strategy sharded: devices the parameters and optimiser state are "
                        "sharded over (TrainConfig.mesh_fsdp; the rest is data parallel)")
    p.add_argument("--no-donate", action="store_true", help="do not donate the state to the step")
    p.add_argument("--no-peak", action="store_true", help="skip the matmul peak measurement")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="then trace N more steps with jax.profiler and print where the time goes, "
                        "per HLO op and per category (benchmarks/op_profile.py)")
    p.add_argument("--name", default=None, help="JSON file name (default: the config name)")
    p.add_argument("--out-dir", default=None, help="directory of the JSON (default benchmarks/results)")
    return p.parse_args(argv)


def set_xla_flags(args: argparse.Namespace) -> None:
    """Sets XLA_FLAGS before jax is imported (XLA reads them when the backend starts)."""
    gpu = args.config.startswith("gpu")
    recommended = GPU_XLA_FLAGS if gpu else CPU_XLA_FLAGS
    if args.xla_flags == "none":
        extra = ""
    elif args.xla_flags == "recommended":
        extra = recommended
    else:
        extra = f"{recommended} {args.xla_flags}"
    if args.devices:
        extra += f" --xla_force_host_platform_device_count={args.devices}"
    flags = f"{os.environ.get('XLA_FLAGS', '')} {extra}".strip()
    if flags:
        os.environ["XLA_FLAGS"] = flags


def main(argv=None) -> dict:
    args = parse_args(argv)
    set_xla_flags(args)

    import statistics

    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import common
    import op_profile
    from bench_configs import get_bench_config

    from tfm.training import parallel as parallel_lib

    bench = get_bench_config(args.config, args.set, args.batch)
    cfg = bench.model
    device = jax.devices()[0]
    if args.feed == "host" and args.strategy != "single":
        raise SystemExit("--feed host is only for --strategy single")
    if args.mesh_fsdp != 1 and args.strategy != "sharded":
        raise SystemExit("--mesh-fsdp is only for --strategy sharded")
    if args.no_donate and args.strategy != "single":
        raise SystemExit("--no-donate is only for --strategy single")

    if args.strategy == "single":
        strategy = parallel_lib.SingleDevice()
    elif args.strategy == "pmap":
        strategy = parallel_lib.Pmap()
    else:
        strategy = parallel_lib.Sharded(mesh_data=-1, mesh_fsdp=args.mesh_fsdp)
    built = common.build_train_step(bench, strategy, donate=not args.no_donate)
    train_step, state, rng, host_batch = built.step_fn, built.state, built.rng, built.host_batch
    batch = built.batch if args.feed == "device" else host_batch
    tokens_per_step = int(host_batch["targets"].size)

    peak_before = None if args.no_peak or device.platform != "cpu" else common.matmul_peak()
    compiled, compile_s = common.time_compile(train_step, state, batch, rng)

    def step(st):
        return compiled(st, batch, rng)

    state, times, cpu_times = common.time_steps(step, state, n_warmup=args.warmup, n_steps=args.steps)
    state, pipelined_s = common.time_pipelined(step, state, n_steps=args.steps)
    profile = None
    if args.profile:
        state, events, wall_s = op_profile.trace_ops(step, state, args.profile)
        profile = op_profile.summarize(events, compiled.as_text(), args.profile)
        profile["wall_ms"] = wall_s * 1e3
    _, metrics = step(state)
    metrics = jax.tree.map(lambda x: np.asarray(x).reshape(-1)[0], metrics)  # pmap: per device
    loss = float(metrics["loss_sum"] / metrics["weight_sum"])
    peak_after = None if args.no_peak or device.platform != "cpu" else common.matmul_peak()

    timing = common.summarize(times)
    flop = common.flop_breakdown(cfg, bench.length, bench.source_length)
    flops_per_step = flop["flops_per_token"] * tokens_per_step
    cpu_s = statistics.median(cpu_times)
    mfu_cpu_time = None
    if device.platform == "cpu":
        peaks = [p for p in (peak_before, peak_after) if p]
        peak = max(p["flops_best"] for p in peaks) if peaks else None
        if peaks:  # FLOPs per CPU-second of the step over those of the matmul
            mfu_cpu_time = flops_per_step / cpu_s / max(p["flops_per_cpu_s"] for p in peaks)
        peak_kind = "measured float32 2048^3 jnp.matmul, best of the run"
    else:
        peak = common.device_peak(device)
        peak_kind = f"datasheet dense bf16 peak of {device.device_kind}"
    achieved = flops_per_step / timing["median_s"]
    memory = common.peak_memory_bytes(device)
    result = {
        "name": args.name or args.config,
        "config": args.config,
        "overrides": args.set,
        "batch": bench.batch,
        "length": bench.length,
        "tokens_per_step": tokens_per_step,
        "feed": args.feed,
        "donate": not args.no_donate,
        "strategy": args.strategy,
        "mesh_fsdp": args.mesh_fsdp if args.strategy == "sharded" else None,
        "devices": jax.device_count(),
        "compile_s": compile_s,
        "step": timing,
        "step_times_s": times,
        "pipelined_step_s": pipelined_s,
        "tokens_per_s": tokens_per_step / timing["median_s"],
        "tokens_per_s_pipelined": tokens_per_step / pipelined_s,
        "model_flops_per_step": flops_per_step,
        "flops": flop,
        "achieved_flops_per_s": achieved,
        "peak_flops_per_s": peak,
        "peak_kind": peak_kind,
        "matmul_peak_before": peak_before,
        "matmul_peak_after": peak_after,
        "mfu": achieved / peak if peak else None,
        "cpu_s_per_step": cpu_s,
        "mfu_cpu_time": mfu_cpu_time,
        "mfu_pipelined": flops_per_step / pipelined_s / peak if peak else None,
        "peak_memory": memory,
        "final_loss": loss,
        "model_config": cfg.to_dict(),
        "profile": profile,
        "machine": common.machine_info(),
    }
    row = dict(
        name=result["name"],
        tok_s=result["tokens_per_s"],
        step_ms=timing["median_s"] * 1e3,
        iqr_ms=timing["iqr_s"] * 1e3,
        pipe_ms=pipelined_s * 1e3,
        compile_s=compile_s,
        gflops=achieved / 1e9,
        peak=(peak or float("nan")) / 1e9,
        mfu=(result["mfu"] or float("nan")) * 100,
        mfu_cpu=(mfu_cpu_time or float("nan")) * 100,
        mem=memory["bytes"] / 2**20,
    )
    common.print_table(
        [row],
        [
            ("name", "config", "s"),
            ("tok_s", "tokens/s", ".0f"),
            ("step_ms", "step ms (median)", ".1f"),
            ("iqr_ms", "IQR ms", ".1f"),
            ("pipe_ms", "pipelined ms", ".1f"),
            ("compile_s", "compile s", ".1f"),
            ("gflops", "model GFLOP/s", ".1f"),
            ("peak", "peak GFLOP/s", ".1f"),
            ("mfu", "MFU %", ".1f"),
            ("mfu_cpu", "CPU-time MFU %", ".1f"),
            ("mem", "peak mem MiB", ".0f"),
        ],
    )
    if profile:
        op_profile.print_summary(profile, timing["median_s"] * 1e3)
    path = common.write_json(result["name"], result, args.out_dir)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
