"""The GPU check: one script for the day a GPU is lent (under 8 minutes on one GPU).

    python benchmarks/gpu_check.py              # on a GPU host: the full check
    python benchmarks/gpu_check.py --reduced    # tiny sizes, no cuDNN (what the tests run on CPU)

Four parts, each printed as it finishes, then one table; everything goes to
benchmarks/results/gpu_check.json (with the machine):

1. **train step vs CPU**: the ``tiny`` benchmark model (float32), the same initial state and
   the same batch, ``--steps`` steps of tfm's real train step on the accelerator and on the
   host CPU (matmuls at "highest" precision on both, so TF32 does not blur the comparison);
   the losses side by side and their largest absolute difference.
2. **cuDNN vs XLA attention**: :func:`tfm.attention.scaled_dot_product_attention` in bfloat16
   (B 4, T 512, N 8, H 64, causal, plus a padding mask) with ``implementation="cudnn"`` against
   ``"xla"``: the outputs and the gradients with respect to q, k and v, as the largest absolute
   difference over the largest magnitude (float32 arithmetic on bfloat16 values). GPU only.
3. **MFU**: the bfloat16 train step of the ``gpu_gpt2_small`` and ``gpu_transformer_base``
   benchmark configs (benchmarks/bench_configs.py), compiled once, median step time;
   MFU = model FLOPs (benchmarks/common.py ``flop_breakdown``, PaLM appendix B, the same as
   tfm.training.flops) per second over the device's datasheet bf16 peak.
4. **decoding**: greedy decoding with the key/value cache of a GPT-2-small-shaped DecoderLM
   (random weights, bfloat16), batch 8, 32-token prompts, 256 new tokens: tokens/s.

``--reduced`` (the default on a host without a GPU) runs the same code on the ``tiny`` config
for parts 1, 3 and 4 and skips part 2: the numbers mean nothing there, but the script cannot
rot (tests/test_benchmarks.py runs it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

FULL_MFU_CONFIGS = ("gpu_gpt2_small", "gpu_transformer_base")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reduced", action="store_true",
                        help="tiny sizes and no cuDNN (default when no GPU is present)")
    parser.add_argument("--steps", type=int, default=5, help="part 1: train steps compared with the CPU")
    parser.add_argument("--mfu_steps", type=int, default=10, help="part 3: timed steps per config")
    parser.add_argument("--new_tokens", type=int, default=256, help="part 4: tokens per row")
    parser.add_argument("--output", default="gpu_check", help="results/<output>.json")
    parser.add_argument("--out-dir", default=None, help="directory of the JSON (default benchmarks/results)")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------- 1. train step vs CPU
def train_vs_cpu(steps: int) -> dict:
    """Losses of ``steps`` train steps from one initial state on one batch, on the default
    device and on the host CPU."""
    import jax
    import numpy as np

    import common
    from bench_configs import get_bench_config
    from tfm.training import parallel as parallel_lib

    bench = get_bench_config("tiny")
    # the donating step (as training and part 3 compile it): each device gets its own copy
    built = common.build_train_step(bench, parallel_lib.SingleDevice())
    host_state = jax.device_get(built.state)
    host_rng = jax.random.key_data(built.rng)
    devices = {"accelerator": jax.devices()[0], "cpu": jax.devices("cpu")[0]}
    losses = {}
    with jax.default_matmul_precision("highest"):
        for name, device in devices.items():
            state = jax.device_put(host_state, device)
            batch = jax.device_put(built.host_batch, device)
            rng = jax.random.wrap_key_data(jax.device_put(host_rng, device))
            run = []
            for _ in range(steps):
                state, metrics = built.step_fn(state, batch, rng)
                run.append(float(metrics["loss_sum"] / metrics["weight_sum"]))
            losses[name] = run
    diff = float(np.max(np.abs(np.subtract(losses["accelerator"], losses["cpu"]))))
    return {"device": devices["accelerator"].device_kind, "losses": losses, "max_abs_diff": diff,
            "ok": diff <= 1e-4 * max(1.0, max(abs(x) for x in losses["cpu"]))}


# ---------------------------------------------------------------------- 2. cuDNN vs XLA attention
def cudnn_vs_xla(batch: int = 4, length: int = 512, heads: int = 8, head_dim: int = 64,
                 implementation: str = "cudnn") -> dict:
    """Forward and gradients of bf16 causal attention with a padding mask: ``implementation``
    (cuDNN; the tests pass "xla" to run the comparison itself on CPU) against XLA."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from tfm.attention import padding_mask, scaled_dot_product_attention

    keys = jax.random.split(jax.random.key(0), 4)
    shape = (batch, length, heads, head_dim)
    q, k, v, cot = (jax.random.normal(key, shape, jnp.float32).astype(jnp.bfloat16) for key in keys)
    lengths = jnp.array([length - (length // 8) * i for i in range(batch)])  # padded rows too
    mask = padding_mask(jnp.arange(length)[None, :] < lengths[:, None])  # (B, 1, 1, S)

    def loss(impl):
        def f(q, k, v):
            out = scaled_dot_product_attention(q, k, v, mask, implementation=impl, causal=True)
            return jnp.sum(out.astype(jnp.float32) * cot.astype(jnp.float32)), out
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))

    (_, out_x), grads_x = loss("xla")(q, k, v)
    (_, out_c), grads_c = loss(implementation)(q, k, v)
    rel = lambda a, b: float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)))  # noqa: E731
                             / max(float(np.max(np.abs(np.asarray(b, np.float32)))), 1e-30))
    result = {"forward": rel(out_c, out_x),
              **{f"grad_{n}": rel(gc, gx) for n, gc, gx in zip("qkv", grads_c, grads_x)}}
    result["ok"] = all(x <= 2e-2 for x in result.values())  # bf16 has 8 bits of mantissa
    return result


# ---------------------------------------------------------------------- 3. MFU
def train_mfu(name: str, steps: int) -> dict:
    """The bf16 train step of benchmark config ``name``: compile time, median step, MFU."""
    import statistics

    import jax

    import common
    from bench_configs import get_bench_config
    from tfm.training import parallel as parallel_lib

    bench = get_bench_config(name)
    built = common.build_train_step(bench, parallel_lib.SingleDevice())
    compiled, compile_s = common.time_compile(built.step_fn, built.state, built.batch, built.rng)
    state, times, _ = common.time_steps(lambda st: compiled(st, built.batch, built.rng), built.state,
                                        n_warmup=2, n_steps=steps)
    del state
    step_s = statistics.median(times)
    tokens = int(built.host_batch["targets"].size)
    flops = common.flop_breakdown(bench.model, bench.length, bench.source_length)["flops_per_token"] * tokens
    peak = common.device_peak(jax.devices()[0])
    return {"config": name, "compile_s": compile_s, "step_s": step_s, "tokens_per_step": tokens,
            "flops_per_step": flops, "peak_flops_per_s": peak,
            "mfu": flops / step_s / peak if peak else None}


# ---------------------------------------------------------------------- 4. decoding
def decoding_speed(reduced: bool, new_tokens: int, batch: int = 8, prompt_len: int = 32) -> dict:
    """Greedy decoding with the key/value cache: generated tokens per second (median of 3)."""
    import statistics

    import jax
    import jax.numpy as jnp
    import numpy as np

    import common
    from tfm import decoding
    from tfm.config import ModelConfig, get_preset
    from tfm.models import build_model, param_shapes

    max_len = prompt_len + new_tokens
    if reduced:
        cfg = ModelConfig(arch="decoder_lm", vocab_size=65, d_model=32, num_heads=2, num_layers=2, d_ff=64,
                          max_len=max_len, dropout_rate=0.0, norm="pre", positional="learned")
    else:
        cfg = get_preset("gpt2_small", vocab_size=50304, dropout_rate=0.0, dtype="bfloat16", max_len=max_len)
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(0.02 * rng.standard_normal(s.shape), s.dtype), param_shapes(cfg))
    prompts = jnp.asarray(rng.integers(0, cfg.vocab_size, (batch, prompt_len)), jnp.int32)

    @jax.jit
    def greedy(params, prompts):
        step_fn, start = decoding.lm_decoder(model, params, prompts, prompt_len - 1 + new_tokens)
        return decoding.greedy_search(step_fn, start.state, start.first_tokens, max_len=new_tokens, eos_id=-1)

    compiled, compile_s = common.time_compile(greedy, params, prompts)
    jax.block_until_ready(compiled(params, prompts))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(params, prompts))
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"model": "tiny" if reduced else "gpt2_small (bf16, random weights)", "batch": batch,
            "prompt_len": prompt_len, "new_tokens": new_tokens, "compile_s": compile_s,
            "median_s": median, "tokens_per_s": batch * new_tokens / median}


# ---------------------------------------------------------------------- main
def main(argv=None) -> dict:
    args = parse_args(argv)
    import jax

    import common

    on_gpu = jax.default_backend() == "gpu"
    reduced = args.reduced or not on_gpu
    print(f"backend {jax.default_backend()}: {jax.devices()[0].device_kind}"
          f"{' (reduced: tiny sizes, no cuDNN)' if reduced else ''}", flush=True)
    started = time.perf_counter()
    result: dict = {"reduced": reduced}

    result["train_vs_cpu"] = train_vs_cpu(args.steps)
    print("1. train step vs CPU:", result["train_vs_cpu"], flush=True)

    if reduced:
        result["cudnn_vs_xla"] = None
        print("2. cuDNN vs XLA attention: skipped (needs a GPU)", flush=True)
    else:
        result["cudnn_vs_xla"] = cudnn_vs_xla()
        print("2. cuDNN vs XLA attention:", result["cudnn_vs_xla"], flush=True)

    result["mfu"] = []
    for name in ("tiny",) if reduced else FULL_MFU_CONFIGS:
        result["mfu"].append(train_mfu(name, 2 if reduced else args.mfu_steps))
        print("3. MFU:", result["mfu"][-1], flush=True)

    result["decoding"] = decoding_speed(reduced, 8 if reduced else args.new_tokens)
    print("4. decoding:", result["decoding"], flush=True)
    result["wall_s"] = time.perf_counter() - started

    rows = [{"check": "train step: max abs loss diff vs CPU", "value": result["train_vs_cpu"]["max_abs_diff"],
             "ok": str(result["train_vs_cpu"]["ok"])}]
    if result["cudnn_vs_xla"]:
        rows += [{"check": f"cuDNN vs XLA attention: rel. max diff, {k}", "value": v, "ok": ""}
                 for k, v in result["cudnn_vs_xla"].items() if k != "ok"]
        rows[-1]["ok"] = str(result["cudnn_vs_xla"]["ok"])
    for m in result["mfu"]:
        rows.append({"check": f"{m['config']}: step ms", "value": 1e3 * m["step_s"], "ok": ""})
        rows.append({"check": f"{m['config']}: MFU", "value": m["mfu"], "ok": ""})
    rows.append({"check": "decoding tokens/s", "value": result["decoding"]["tokens_per_s"], "ok": ""})
    print()
    result["table"] = common.print_table(rows, [("check", "check", "s"), ("value", "value", ".4g"),
                                                ("ok", "ok", "s")])
    result["machine"] = common.machine_info()
    path = common.write_json(args.output, result, args.out_dir)
    print(f"\n{result['wall_s']:.0f} s; wrote {path}")
    return result


if __name__ == "__main__":
    main()
