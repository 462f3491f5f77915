"""tfm against PyTorch eager on this CPU: the same model and training step, timed interleaved.

    python benchmarks/vs_pytorch.py                                  # cpu_small and cpu_base
    python benchmarks/vs_pytorch.py --configs cpu_small --rounds 10 --one-device
    python benchmarks/vs_pytorch.py --configs none --decode           # greedy decoding only

Training: for each config, tfm's step as ``python train.py`` would run it -- the CPU device
split of :mod:`tfm.training.devices` (one XLA device per physical core, as the batch allows)
and the default strategy (``TrainConfig()``: data parallelism, one flat all-reduce) -- and a
PyTorch reference of the same network and step (``torch_reference.py``: pre-LN GPT, fused
causal SDPA, AdamW, clipping, the same schedule, batch and length; ``torch.set_num_threads``
``--threads``, 2 by default). Both live in this one process and take turns: ``--rounds``
rounds, each of ``--steps`` timed steps per framework (plus one untimed step after the switch;
the first framework alternates between rounds), every step timed to completion. Reported per
framework: the median over rounds of each round's median step; and the speed ratio
(PyTorch ms / tfm ms, > 1: tfm is faster) as the median of the per-round ratios. Before
timing, the parameter counts of both models and the FLOPs of a step are printed: tfm's
formula (6 N + 12 L T D per token) and PyTorch's own count (torch.utils.flop_counter, the
attention counted through the math SDPA kernel).

``--one-device`` also times tfm on one device of the same process (the split's first device:
what ``--cpu_devices=1`` gives).

Decoding (``--decode``; needs ``transformers``): greedy continuation of a 16-token prompt by
``--new-tokens`` tokens with the key/value cache, tfm (``tfm.decoding.lm_generate``, compiled)
against ``GPT2LMHeadModel.generate`` (random weights, built locally from a ``GPT2Config``), for
a cpu_small-shaped and a GPT-2-small-shaped model, interleaved the same way; tokens/s.

torch and transformers are optional: without them the script says so and exits 0. On a machine
shared with other work, compare the ratio, not the milliseconds. Writes
``benchmarks/results/<--name>.json`` (default ``vs_pytorch``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN_CONFIGS = ("cpu_small", "cpu_base", "tiny")
DECODE_SHAPES = ("cpu_small", "gpt2_small", "tiny")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="cpu_small,cpu_base",
                   help=f"comma-separated training configs of {TRAIN_CONFIGS}, or 'none'")
    p.add_argument("--rounds", type=int, default=6, help="alternations of the two frameworks")
    p.add_argument("--steps", type=int, default=5, help="timed steps per framework and round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each before the rounds")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--cpu-devices", default="auto",
                   help="tfm's CPU device split: 'auto' (tfm's default, tfm.training.devices) or N")
    p.add_argument("--one-device", action="store_true",
                   help="also time tfm on one device of the same process")
    p.add_argument("--decode", action="store_true",
                   help="also greedy decoding tokens/s against transformers' generate")
    p.add_argument("--decode-shapes", default="cpu_small,gpt2_small",
                   help=f"comma-separated of {DECODE_SHAPES}")
    p.add_argument("--new-tokens", type=int, default=128, help="decoding: tokens generated per row")
    p.add_argument("--decode-batch", type=int, default=1, help="decoding: rows")
    p.add_argument("--name", default="vs_pytorch", help="JSON file name")
    p.add_argument("--out-dir", default=None, help="directory of the JSON (default benchmarks/results)")
    args = p.parse_args(argv)
    args.configs = [] if args.configs == "none" else [c for c in args.configs.split(",") if c]
    for c in args.configs:
        if c not in TRAIN_CONFIGS:
            p.error(f"--configs: unknown config {c!r}; choose from {TRAIN_CONFIGS} or 'none'")
    args.decode_shapes = [s for s in args.decode_shapes.split(",") if s]
    for s in args.decode_shapes:
        if s not in DECODE_SHAPES:
            p.error(f"--decode-shapes: unknown shape {s!r}; choose from {DECODE_SHAPES}")
    if args.cpu_devices != "auto":
        try:
            args.cpu_devices = int(args.cpu_devices)
        except ValueError:
            args.cpu_devices = 0
        if args.cpu_devices < 1:
            p.error("--cpu-devices: 'auto' or a positive device count")
    for name in ("rounds", "steps", "threads", "new_tokens", "decode_batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if not args.configs and not args.decode:
        p.error("nothing to do: --configs none without --decode")
    return args


def missing_optional(decode: bool) -> str | None:
    """The message to skip with when torch (or, for --decode, transformers) is absent."""
    import importlib.util

    for module, needed in (("torch", True), ("transformers", decode)):
        if needed and importlib.util.find_spec(module) is None:
            return (f"vs_pytorch: skipped, {module} is not installed (an optional benchmark "
                    f"dependency: pip install torch==2.13.0{' transformers' if module != 'torch' else ''})")
    return None


# ---------------------------------------------------------------------- timing
def interleave(runners: dict, *, rounds: int, steps: int, label: str = "") -> dict[str, list[list[float]]]:
    """Runs each ``runners[name]()`` (one step, returns when it is done) ``steps`` times per
    round, the frameworks taking turns (the order rotates every round); one untimed step after
    each switch. Returns name -> per-round lists of step seconds."""
    names = list(runners)
    times = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            runners[name]()  # the switch: caches and thread pools settle
            round_times = []
            for _ in range(steps):
                t0 = time.perf_counter()
                runners[name]()
                round_times.append(time.perf_counter() - t0)
            times[name].append(round_times)
        if label:
            print(f"  {label} round {r + 1}/{rounds}: " + ", ".join(
                f"{name} {1e3 * statistics.median(times[name][-1]):.1f} ms" for name in names), flush=True)
    return times


def summarize_rounds(times: dict[str, list[list[float]]], reference: str) -> dict:
    """Per framework the median of round medians (ms); per other framework the speed ratio
    reference / it, as the median of the per-round ratios."""
    medians = {name: [statistics.median(r) for r in rounds] for name, rounds in times.items()}
    out = {"ms": {name: 1e3 * statistics.median(m) for name, m in medians.items()},
           "round_ms": {name: [1e3 * x for x in m] for name, m in medians.items()}, "ratio": {}}
    for name, m in medians.items():
        if name != reference:
            out["ratio"][name] = statistics.median(a / b for a, b in zip(medians[reference], m))
    return out


# ---------------------------------------------------------------------- training
def train_comparison(args, bench, common, jax, torch, tr, strategies) -> dict:
    import numpy as np

    host = bench.synthetic_batch(np.random.default_rng(0))
    x = torch.from_numpy(host["inputs"]).long()
    y = torch.from_numpy(host["targets"]).long()
    ref = tr.from_model_config(bench.model)
    ref_step = tr.TrainStep(ref, tr.make_optimizer(ref, b2=bench.train.b2, eps=bench.train.eps,
                                                    weight_decay=bench.train.weight_decay),
                            clip=bench.train.grad_clip_norm)
    flop = common.flop_breakdown(bench.model, bench.length)
    tokens = int(host["targets"].size)
    torch_flops = tr.step_flops(ref_step, x, y)
    checks = {
        "params_tfm": flop["n_params"], "params_torch": tr.param_count(ref),
        "flops_tfm_formula": flop["flops_per_token"] * tokens, "flops_torch_counted": torch_flops,
    }
    print(f"{bench.name}: parameters tfm {checks['params_tfm']:,} / PyTorch "
          f"{checks['params_torch']:,}; GFLOP per step: tfm's formula "
          f"{checks['flops_tfm_formula'] / 1e9:.3f} / PyTorch's count {torch_flops / 1e9:.3f}", flush=True)
    if checks["params_tfm"] != checks["params_torch"]:
        raise SystemExit(f"{bench.name}: the two models differ in size; the comparison is void")

    runners, losses = {"pytorch": lambda: losses.__setitem__("pytorch", ref_step(x, y))}, {}
    compile_s = {}
    for label, strategy in strategies.items():
        built = common.build_train_step(bench, strategy)
        compiled, compile_s[label] = common.time_compile(built.step_fn, built.state, built.batch, built.rng)
        carry = {"state": built.state}

        def run(compiled=compiled, built=built, carry=carry, label=label):
            carry["state"], metrics = compiled(carry["state"], built.batch, built.rng)
            jax.block_until_ready((carry["state"], metrics))
            losses[label] = metrics

        runners[label] = run
    for _ in range(args.warmup):
        for run in runners.values():
            run()
    times = interleave(runners, rounds=args.rounds, steps=args.steps, label=bench.name)
    result = summarize_rounds(times, "pytorch")
    final = {}
    for label, value in losses.items():
        if label == "pytorch":
            final[label] = float(value)
        else:
            m = jax.tree.map(lambda a: float(np.asarray(a).reshape(-1)[0]), value)
            final[label] = m["loss_sum"] / m["weight_sum"]
    return {"config": bench.name, "batch": bench.batch, "length": bench.length, **checks,
            **result, "compile_s": compile_s, "final_loss": final, "step_times_s": times,
            "strategies": {k: s.describe() for k, s in strategies.items()}}


# ---------------------------------------------------------------------- decoding
def decode_models(shape: str):
    """(tfm ModelConfig, transformers GPT2Config) of the same shape, prompt length 16."""
    from transformers import GPT2Config

    from tfm.config import ModelConfig, get_preset

    if shape == "gpt2_small":
        cfg = get_preset("gpt2_small", dropout_rate=0.0)
    else:
        d, h, layers, ff, v = (128, 4, 4, 512, 65) if shape == "cpu_small" else (32, 2, 2, 64, 65)
        cfg = ModelConfig(arch="decoder_lm", vocab_size=v, d_model=d, num_heads=h, num_layers=layers,
                          d_ff=ff, max_len=1024, dropout_rate=0.0, activation="gelu", norm="pre",
                          positional="learned", scale_embeddings=False, tie_output=True,
                          layer_norm_eps=1e-5)
    hf = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.max_len, n_embd=cfg.d_model,
                    n_layer=cfg.num_layers, n_head=cfg.num_heads, n_inner=cfg.d_ff,
                    activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                    layer_norm_epsilon=cfg.layer_norm_eps, tie_word_embeddings=True,
                    bos_token_id=None, eos_token_id=None)
    return cfg, hf


def decode_comparison(args, shape: str, common, jax, torch) -> dict:
    import jax.numpy as jnp
    import numpy as np
    from transformers import GPT2LMHeadModel

    from tfm import decoding
    from tfm.models import build_model, param_count

    cfg, hf_cfg = decode_models(shape)
    hf = GPT2LMHeadModel(hf_cfg).eval()
    model = build_model(cfg)
    prompt_len, new, batch = 16, args.new_tokens, args.decode_batch
    prompts_np = np.random.default_rng(0).integers(3, cfg.vocab_size, (batch, prompt_len))
    prompts = jnp.asarray(prompts_np, jnp.int32)
    params = jax.jit(lambda r: model.init(r, prompts)["params"])(jax.random.key(0))
    no_eos = -1  # exactly `new` tokens per row
    generate = jax.jit(lambda p, x: decoding.lm_generate(model, p, x, max_new_tokens=new, eos_id=no_eos).tokens)
    _, compile_s = common.time_compile(generate, params, prompts)
    ids = torch.from_numpy(prompts_np).long()
    mask = torch.ones_like(ids)

    def run_hf():
        with torch.inference_mode():
            out = hf.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                              do_sample=False, use_cache=True, pad_token_id=0, eos_token_id=None)
        assert out.shape[1] == prompt_len + new

    runners = {"transformers": run_hf,
               "tfm": lambda: jax.block_until_ready(generate(params, prompts))}
    for run in runners.values():
        run()
    times = interleave(runners, rounds=args.rounds, steps=1, label=f"decode {shape}")
    result = summarize_rounds(times, "transformers")
    tokens = batch * new
    return {"shape": shape, "params_tfm": param_count(cfg),
            "params_transformers": sum(p.numel() for p in hf.parameters()),
            "batch": batch, "prompt_len": prompt_len, "new_tokens": new, "compile_s": compile_s,
            "tokens_per_s": {k: tokens / (ms / 1e3) for k, ms in result["ms"].items()}, **result}


# ---------------------------------------------------------------------- main
def main(argv=None) -> dict | None:
    args = parse_args(argv)
    skip = missing_optional(args.decode)
    if skip:
        print(skip)
        return None

    sys.path.insert(0, HERE)
    from bench_configs import get_bench_config

    from tfm.training import devices

    benches = [get_bench_config(name) for name in args.configs]
    # tfm's default split, before JAX's backends start (what train.py and run() do)
    split = devices.configure_cpu_devices(
        None if args.cpu_devices == "auto" else args.cpu_devices,
        batch_sizes=tuple(b.batch for b in benches))
    print(f"tfm CPU devices: {split.message}")

    import jax
    import torch

    import common
    import torch_reference as tr
    from tfm.training import parallel as parallel_lib
    from tfm.training.config import TrainConfig

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = common.load_average()
    if load_before[0] > (os.cpu_count() or 1):
        print(f"note: load average {load_before[0]:.1f} on {os.cpu_count()} CPUs: a busy machine; "
              "the ratios hold better than the milliseconds. PyTorch's OpenMP threads spin-wait "
              "for each other and suffer most when descheduled: compare with --threads 1 too")

    def strategies():  # a fresh one per model (a strategy keeps its model's layout)
        out = {f"tfm ({jax.device_count()} devices)": parallel_lib.make_parallel(TrainConfig())}
        if args.one_device and jax.device_count() > 1:
            out["tfm (1 device)"] = parallel_lib.SingleDevice()
        return out

    labels = list(strategies())
    training = []
    for bench in benches:
        with jax.numpy_dtype_promotion("standard"):  # optax's schedule mixes floats and int32
            training.append(train_comparison(args, bench, common, jax, torch, tr, strategies()))
    decode = [decode_comparison(args, shape, common, jax, torch) for shape in args.decode_shapes] if args.decode else []

    rows = [{"config": t["config"], "pytorch": t["ms"]["pytorch"],
             **{k: t["ms"][k] for k in labels}, **{f"x {k}": t["ratio"][k] for k in labels}}
            for t in training]
    table = ""
    if rows:
        print()
        table = common.print_table(rows, [("config", "config", "s"), ("pytorch", "PyTorch eager ms/step", ".1f")]
                                   + [(k, f"{k} ms/step", ".1f") for k in labels]
                                   + [(f"x {k}", f"speed {k} / PyTorch", ".2f") for k in labels])
    decode_rows = [{"shape": d["shape"], "hf": d["tokens_per_s"]["transformers"], "tfm": d["tokens_per_s"]["tfm"],
                    "ratio": d["ratio"]["tfm"]} for d in decode]
    decode_table = ""
    if decode_rows:
        print()
        decode_table = common.print_table(decode_rows, [
            ("shape", f"greedy, batch {args.decode_batch}, {args.new_tokens} new tokens", "s"),
            ("hf", "transformers generate tokens/s", ",.0f"), ("tfm", "tfm lm_generate tokens/s", ",.0f"),
            ("ratio", "speed tfm / transformers", ".2f")])
    result = {
        "name": args.name, "args": {k: v for k, v in vars(args).items()},
        "cpu_split": {"devices": split.devices, "source": split.source, "message": split.message},
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "training": training, "decoding": decode, "table": table, "decode_table": decode_table,
        "load_average_before": load_before, "load_average_after": common.load_average(),
        "machine": common.machine_info(),
    }
    path = common.write_json(args.name, result, args.out_dir)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
