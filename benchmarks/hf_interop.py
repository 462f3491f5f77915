"""Hugging Face interop: import time of a 124M GPT-2 checkpoint, and decoding speed of that model.

    python benchmarks/hf_interop.py                         # CPU, the defaults below
    python benchmarks/hf_interop.py --checkpoint ~/models/gpt2 --new_tokens 64

Without ``--checkpoint`` a GPT-2 small (124M parameters, random weights: nothing is downloaded)
is made once by transformers (``GPT2LMHeadModel(GPT2Config()).save_pretrained``, safetensors)
in /tmp/tfm_bench_gpt2_124m; that needs torch and transformers, the measurement itself not.

* ``import``: :func:`tfm.interop.load_model` with ``on_device=True``, what
  :func:`tfm.from_pretrained` does besides the tokenizer (config.json -> ModelConfig; the
  safetensors memory-mapped, every tensor checked by name and shape, converted and copied once
  onto the device); median of ``--repeats`` runs after one warm-up (the file is then in the page
  cache, as on any second load). transformers' own ``from_pretrained`` of the same directory is
  timed alongside when it is installed (it memory-maps the tensors without copying them).
* decoding: the imported model continues a ``--prompt_len``-token prompt by ``--new_tokens``
  tokens (EOS disabled), at batch 1 and 8: greedy (:func:`tfm.decoding.lm_generate`,
  temperature 0) and beam search with 4 beams (:func:`tfm.decoding.lm_beam_search`). Compile
  time is reported on its own; tokens/s counts B x new tokens (beam: the best hypothesis).

Writes benchmarks/results/hf_interop.json.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_DIR = pathlib.Path("/tmp/tfm_bench_gpt2_124m")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="", help="a GPT-2 directory (default: make one in /tmp)")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt_len", type=int, default=16)
    parser.add_argument("--new_tokens", type=int, default=32)
    parser.add_argument("--beam_size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default="hf_interop", help="results/<output>.json")
    parser.add_argument("--skip_decoding", action="store_true", help="import time only")
    return parser.parse_args(argv)


def make_checkpoint(directory: pathlib.Path) -> None:
    if (directory / "model.safetensors").is_file():
        return
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(directory, safe_serialization=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    import jax
    import numpy as np

    from benchmarks import common
    from tfm import decoding, interop
    from tfm.models import build_model, param_count

    directory = pathlib.Path(args.checkpoint).expanduser() if args.checkpoint else DEFAULT_DIR
    if not args.checkpoint:
        make_checkpoint(directory)
    size_mb = sum(p.stat().st_size for p in directory.glob("*.safetensors")) / 2**20

    def load():  # what tfm.from_pretrained does, less the tokenizer
        cfg, params = interop.load_model(directory, on_device=True)
        return cfg, jax.block_until_ready(params)

    cfg, params = load()  # warm-up (page cache)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        cfg, params = load()
        times.append(time.perf_counter() - t0)
    rows = [{"what": "tfm.interop.load_model(on_device=True)", **common.summarize(times)}]
    try:
        from transformers import GPT2LMHeadModel

        GPT2LMHeadModel.from_pretrained(directory)
        hf_times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            GPT2LMHeadModel.from_pretrained(directory)
            hf_times.append(time.perf_counter() - t0)
        rows.append({"what": "transformers GPT2LMHeadModel.from_pretrained", **common.summarize(hf_times)})
    except ImportError:
        pass
    n_params = param_count(cfg)
    print(f"{directory}: {n_params:,} parameters, {size_mb:.0f} MiB of safetensors")
    import_table = common.print_table(rows, [("what", "import", "s"), ("median_s", "median s", ".3f"),
                                             ("min_s", "min s", ".3f"), ("max_s", "max s", ".3f")])

    model = build_model(cfg)
    rng = np.random.default_rng(0)
    no_eos = -1
    decode_rows = []
    for batch in [] if args.skip_decoding else args.batch_sizes:
        prompts = rng.integers(1, cfg.vocab_size, (batch, args.prompt_len)).astype(np.int32)
        variants = {
            "greedy": lambda: decoding.lm_generate(model, params, prompts, max_new_tokens=args.new_tokens,
                                                   temperature=0.0, eos_id=no_eos).tokens,
            f"beam{args.beam_size}": lambda: decoding.lm_beam_search(
                model, params, prompts, max_new_tokens=args.new_tokens, beam_size=args.beam_size,
                eos_id=no_eos).tokens,
        }
        for name, fn in variants.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            first = time.perf_counter() - t0
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                jax.block_until_ready(fn())
                times.append(time.perf_counter() - t0)
            stats = common.summarize(times)
            decode_rows.append({
                "variant": name, "batch": batch, "new_tokens": args.new_tokens,
                "compile_s": first - stats["median_s"], **stats,
                "tokens_per_s": batch * args.new_tokens / stats["median_s"],
                "ms_per_step": 1e3 * stats["median_s"] / args.new_tokens,
            })
            print(f"batch {batch} {name}: median {stats['median_s']:.2f} s", flush=True)
    print()
    decode_table = common.print_table(decode_rows, [
        ("variant", "variant", "s"), ("batch", "B", "d"), ("new_tokens", "new tokens", "d"),
        ("compile_s", "compile s (approx.)", ".1f"), ("median_s", "median s", ".2f"),
        ("ms_per_step", "ms/step", ".1f"), ("tokens_per_s", "tokens/s", ",.1f"),
    ])
    path = common.write_json(args.output, {
        "description": "GPT-2 small (124M) from Hugging Face layout: import time; decoding tokens/s",
        "checkpoint": str(directory), "checkpoint_mib": size_mb, "parameters": n_params,
        "model": cfg.to_dict(), "prompt_len": args.prompt_len, "repeats": args.repeats,
        "import_rows": rows, "import_table": import_table,
        "decode_rows": decode_rows, "decode_table": decode_table,
        "machine": common.machine_info(),
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
