"""Llama family: GQA decoding speed against transformers, KV-cache bytes, and the import of a
~1B-shaped bfloat16 checkpoint (time and peak host memory).

    python benchmarks/llama_interop.py                  # everything, CPU
    python benchmarks/llama_interop.py --skip_import    # decoding and cache bytes only

* decoding: a Llama-shaped model of ~100M parameters with grouped-query attention (D=768,
  12 layers, 12 query heads sharing 4 key/value heads, SwiGLU F=2048, V=16384, untied, random
  weights) is made once by transformers (``LlamaForCausalLM(...).save_pretrained``) in
  /tmp/tfm_bench_llama_100m and imported by :func:`tfm.interop.load_model`. Greedy decoding of
  ``--new_tokens`` tokens after a ``--prompt_len``-token prompt (EOS disabled), batch 1 and 8:
  :func:`tfm.decoding.lm_generate` against ``model.generate(do_sample=False)`` of transformers
  (torch on the same CPU threads); median of ``--repeats`` runs after a warm-up (tfm's compile
  reported apart). tokens/s counts B x new tokens.
* KV-cache bytes of that model's decode cache (float32, batch 1, its max_len) with GQA and with
  every head keeping its own keys/values (num_kv_heads=None), from ``jax.eval_shape``.
* import: a ~1.1B-parameter TinyLlama-shaped checkpoint (D=2048, 22 layers, 32 heads / 4 kv
  heads, F=5632, V=32000) written locally in bfloat16 with random weights (2.2 GB, in
  /tmp/tfm_bench_llama_1b); a fresh Python process runs ``load_model(dtype="bfloat16",
  on_device=True)`` and reports its wall time and peak resident memory (VmHWM), next to the
  resident memory of the same process before the load (Python + JAX + tfm imported).

Writes benchmarks/results/llama_interop.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DECODE_DIR = pathlib.Path("/tmp/tfm_bench_llama_100m")
IMPORT_DIR = pathlib.Path("/tmp/tfm_bench_llama_1b")
DECODE_SHAPE = dict(vocab_size=16384, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                    num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=512,
                    tie_word_embeddings=False, rope_theta=10000.0, bos_token_id=1, eos_token_id=2)
IMPORT_SHAPE = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                    num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt_len", type=int, default=16)
    parser.add_argument("--new_tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch_threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    parser.add_argument("--skip_import", action="store_true")
    parser.add_argument("--skip_decoding", action="store_true")
    parser.add_argument("--output", default="llama_interop", help="results/<output>.json")
    return parser.parse_args(argv)


def make_decode_checkpoint() -> None:
    if (DECODE_DIR / "model.safetensors").is_file():
        return
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**DECODE_SHAPE)).save_pretrained(DECODE_DIR, safe_serialization=True)


def make_import_checkpoint() -> int:
    """Writes the 1B-shaped bfloat16 checkpoint tensor by tensor (little memory); returns its bytes."""
    path = IMPORT_DIR / "model.safetensors"
    if path.is_file():
        return path.stat().st_size
    import ml_dtypes
    import numpy as np

    s = IMPORT_SHAPE
    D, F, V, H = s["hidden_size"], s["intermediate_size"], s["vocab_size"], s["hidden_size"] // s["num_attention_heads"]
    K = s["num_key_value_heads"] * H
    shapes = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,), "lm_head.weight": (V, D)}
    for i in range(s["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (D,), p + "post_attention_layernorm.weight": (D,),
                       p + "self_attn.q_proj.weight": (D, D), p + "self_attn.k_proj.weight": (K, D),
                       p + "self_attn.v_proj.weight": (K, D), p + "self_attn.o_proj.weight": (D, D),
                       p + "mlp.gate_proj.weight": (F, D), p + "mlp.up_proj.weight": (F, D),
                       p + "mlp.down_proj.weight": (D, F)})
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes.items():
        n = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    IMPORT_DIR.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name, shape in shapes.items():
            x = rng.standard_normal(shape, np.float32) * (0.02 if len(shape) == 2 else 1.0)
            f.write(x.astype(ml_dtypes.bfloat16).tobytes())
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu",
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False, "bos_token_id": 1,
              "eos_token_id": 2, "torch_dtype": "bfloat16", **IMPORT_SHAPE}
    (IMPORT_DIR / "config.json").write_text(json.dumps(config, indent=2))
    return path.stat().st_size


_CHILD = r"""
import json, sys, time
import jax, tfm
from tfm import interop

def status(key):  # bytes; VmHWM is this process's peak resident set (ru_maxrss would include the parent's)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

before = status("VmRSS")
t0 = time.perf_counter()
cfg, params = interop.load_model(sys.argv[1], dtype="bfloat16", on_device=True)
jax.block_until_ready(params)
seconds = time.perf_counter() - t0
n = sum(x.size for x in jax.tree.leaves(params))
print(json.dumps({"seconds": seconds, "rss_before": before, "parameters": int(n),
                  "peak_rss": status("VmHWM")}))
"""


def measure_import() -> dict:
    size = make_import_checkpoint()
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    runs = []
    for _ in range(2):  # the first warms the page cache
        out = subprocess.run([sys.executable, "-c", _CHILD, str(IMPORT_DIR)], capture_output=True, text=True,
                             env=env, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    r = runs[-1]
    return {"checkpoint_bytes": size, **r, "peak_rss_over_checkpoint": r["peak_rss"] / size,
            "cold_seconds": runs[0]["seconds"]}


def cache_bytes(cfg) -> int:
    import jax
    import jax.numpy as jnp

    from tfm.models import build_model

    model = build_model(cfg)
    tokens = jnp.ones((1, cfg.max_len), jnp.int32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, decode=True))
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(variables["cache"]))


def main(argv=None) -> None:
    args = parse_args(argv)
    import jax
    import numpy as np

    from benchmarks import common
    from tfm import decoding, interop
    from tfm.models import build_model, param_count

    payload = {"description": "Llama family: GQA greedy decoding vs transformers, KV-cache bytes, 1B bf16 import",
               "machine": common.machine_info()}
    make_decode_checkpoint()
    cfg, params = interop.load_model(DECODE_DIR, on_device=True)
    payload["decode_model"] = cfg.to_dict()
    payload["decode_parameters"] = n_params = param_count(cfg)
    print(f"{DECODE_DIR}: {n_params:,} parameters")

    gqa, mha = cache_bytes(cfg), cache_bytes(cfg.replace(num_kv_heads=None))
    payload["kv_cache"] = {"gqa_bytes": gqa, "mha_bytes": mha, "ratio": mha / gqa, "batch": 1, "length": cfg.max_len}
    common.print_table([{"what": f"GQA ({cfg.kv_heads} kv heads)", "bytes": gqa},
                        {"what": f"MHA ({cfg.num_heads} kv heads)", "bytes": mha}],
                       [("what", f"decode cache, B=1, L={cfg.max_len}, float32", "s"), ("bytes", "bytes", ",d")])

    rows = []
    if not args.skip_decoding:
        import torch
        from transformers import LlamaForCausalLM

        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
        payload["torch_threads"] = torch.get_num_threads()
        hf = LlamaForCausalLM.from_pretrained(DECODE_DIR, dtype=torch.float32).eval()
        model = build_model(cfg)
        rng = np.random.default_rng(0)
        for batch in args.batch_sizes:
            prompts = rng.integers(3, cfg.vocab_size, (batch, args.prompt_len)).astype(np.int32)
            tp = torch.tensor(prompts, dtype=torch.long)

            def run_tfm():
                return np.asarray(decoding.lm_generate(model, params, prompts, max_new_tokens=args.new_tokens,
                                                       temperature=0.0, eos_id=-1).tokens)

            def run_hf():
                with torch.no_grad():
                    return hf.generate(tp, attention_mask=torch.ones_like(tp), max_new_tokens=args.new_tokens,
                                       min_new_tokens=args.new_tokens, do_sample=False, eos_token_id=None,
                                       pad_token_id=0)[:, args.prompt_len:].numpy()

            for name, fn in (("tfm lm_generate", run_tfm), ("transformers generate", run_hf)):
                t0 = time.perf_counter()
                first_tokens = fn()
                first = time.perf_counter() - t0
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
                stats = common.summarize(times)
                rows.append({"impl": name, "batch": batch, "new_tokens": args.new_tokens,
                             "first_call_s": first, **stats,
                             "tokens_per_s": batch * args.new_tokens / stats["median_s"],
                             "ms_per_step": 1e3 * stats["median_s"] / args.new_tokens})
                print(f"batch {batch} {name}: median {stats['median_s']:.2f} s", flush=True)
                if name.startswith("tfm"):
                    tfm_tokens = first_tokens
                else:
                    rows[-1]["same_tokens_as_tfm"] = bool((first_tokens == tfm_tokens).all())
        payload["decode_table"] = common.print_table(rows, [
            ("impl", "implementation", "s"), ("batch", "B", "d"), ("new_tokens", "new tokens", "d"),
            ("first_call_s", "first call s", ".1f"), ("median_s", "median s", ".2f"),
            ("ms_per_step", "ms/token step", ".1f"), ("tokens_per_s", "tokens/s", ",.1f")])
    payload["decode_rows"] = rows
    payload["prompt_len"], payload["repeats"] = args.prompt_len, args.repeats

    if not args.skip_import:
        imp = measure_import()
        payload["import"] = imp
        payload["import_table"] = common.print_table([imp], [
            ("parameters", "parameters", ",d"), ("checkpoint_bytes", "checkpoint bytes", ",d"),
            ("seconds", "load s (warm)", ".1f"), ("cold_seconds", "load s (first)", ".1f"),
            ("rss_before", "RSS before load", ",d"), ("peak_rss", "peak RSS", ",d"),
            ("peak_rss_over_checkpoint", "peak RSS / checkpoint", ".2f")])
    path = common.write_json(args.output, payload)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
