"""Decoding speed: the key/value cache against recomputing the prefix, greedy and beam search.

    python benchmarks/decoding.py                      # CPU, the defaults below
    python benchmarks/decoding.py --batch_sizes 1 8 --new_tokens 256 --repeats 5

A small DecoderLM (the shape of configs/shakespeare_char.py: 4 layers, d_model 128, 4 heads,
d_ff 512, learned positions, pre-LN; vocabulary 65) with random weights continues a 16-token
prompt by 256 tokens (EOS disabled, so every run makes exactly 256 tokens per row):

* ``cached``: :func:`tfm.decoding.greedy_search` over :func:`tfm.decoding.lm_decoder` -- the
  prompt prefilled in one pass, then one token per step against the key/value cache;
* ``recompute``: the same compiled greedy loop whose step runs the whole model over the whole
  (prompt + 256)-token buffer and reads the logits at the current position (causal masking
  makes the unwritten tail irrelevant). Static shapes under jit force the full buffer; a
  shape-exact recompute would process on average (P + N/2) instead of (P + N) tokens per step,
  so ``speedup_vs_exact_recompute`` divides the measured speed-up by (P + N) / (P + N/2);
* ``beam4``: :func:`tfm.decoding.beam_search`, K = 4, alpha = 0.6, over the same cache.

Each variant is compiled once (compile time reported on its own) and run ``--repeats`` times;
the table gives medians. tokens/s counts generated tokens of the output (B x N; beam search:
the best hypothesis of each row). Writes benchmarks/results/decoding.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt_len", type=int, default=16)
    parser.add_argument("--new_tokens", type=int, default=256)
    parser.add_argument("--beam_size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip_recompute", action="store_true", help="cached and beam only")
    parser.add_argument("--output", default="decoding", help="results/<output>.json")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks import common
    from tfm import decoding
    from tfm.config import ModelConfig
    from tfm.models import build_model, param_shapes

    prompt_len, new = args.prompt_len, args.new_tokens
    cfg = ModelConfig(
        arch="decoder_lm", vocab_size=65, d_model=128, num_heads=4, num_layers=4, d_ff=512,
        max_len=prompt_len + new, dropout_rate=0.0, activation="gelu", norm="pre",
        positional="learned", scale_embeddings=False, layer_norm_eps=1e-5,
    )
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(0.05 * rng.standard_normal(s.shape), s.dtype), param_shapes(cfg))
    no_eos = -1  # never stop early: every run makes exactly `new` tokens per row

    @jax.jit
    def cached(params, prompts):
        step_fn, start = decoding.lm_decoder(model, params, prompts, prompt_len - 1 + new)
        return decoding.greedy_search(step_fn, start.state, start.first_tokens, max_len=new, eos_id=no_eos)

    @jax.jit
    def recompute(params, prompts):
        batch = prompts.shape[0]
        seq = jnp.concatenate([prompts, jnp.zeros((batch, new), jnp.int32)], 1)  # (B, P + N)

        def step_fn(token, state):
            seq, pos = state  # pos: where `token` goes (the prompt's last token is already there)
            seq = jax.lax.dynamic_update_slice(seq, token[:, None], (0, pos))
            logits = model.apply({"params": params}, seq)  # (B, P + N, V): the whole buffer
            return jax.lax.dynamic_index_in_dim(logits, pos, 1, keepdims=False), (seq, pos + 1)

        state = (seq, jnp.int32(prompt_len - 1))
        return decoding.greedy_search(step_fn, state, prompts[:, -1], max_len=new, eos_id=no_eos)

    @jax.jit
    def beam(params, prompts):
        step_fn, start = decoding.lm_decoder(model, params, prompts, prompt_len - 1 + new)
        return decoding.beam_search(
            step_fn, start.state, start.first_tokens, beam_size=args.beam_size, alpha=0.6,
            max_len=new, eos_id=no_eos, state_axes=start.state_axes,
        )

    variants = {"cached": cached, "beam4": beam}
    if not args.skip_recompute:
        variants["recompute"] = recompute

    rows = []
    for batch in args.batch_sizes:
        prompts = jnp.asarray(rng.integers(3, cfg.vocab_size, (batch, prompt_len)), jnp.int32)
        outputs = {}
        for name, fn in variants.items():
            compiled, compile_s = common.time_compile(fn, params, prompts)
            jax.block_until_ready(compiled(params, prompts))  # warm-up
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                out = jax.block_until_ready(compiled(params, prompts))
                times.append(time.perf_counter() - t0)
            outputs[name] = out
            stats = common.summarize(times)
            rows.append({
                "variant": name, "batch": batch, "new_tokens": new, "compile_s": compile_s,
                **stats, "tokens_per_s": batch * new / stats["median_s"],
                "ms_per_step": 1e3 * stats["median_s"] / new,
            })
            print(f"batch {batch:3d} {name:10s} compile {compile_s:6.2f} s   median {stats['median_s']:8.3f} s",
                  flush=True)
        if "recompute" in outputs:  # the cache changes the speed, not the tokens
            np.testing.assert_array_equal(outputs["cached"].tokens, outputs["recompute"].tokens)
            by = {r["variant"]: r for r in rows if r["batch"] == batch}
            speedup = by["recompute"]["median_s"] / by["cached"]["median_s"]
            exact = speedup / ((prompt_len + new) / (prompt_len + new / 2))
            by["cached"]["speedup_vs_recompute"] = speedup
            by["cached"]["speedup_vs_exact_recompute"] = exact

    print()
    table = common.print_table(rows, [
        ("variant", "variant", "s"), ("batch", "B", "d"), ("new_tokens", "new tokens", "d"),
        ("compile_s", "compile s", ".2f"), ("median_s", "median s", ".3f"), ("iqr_s", "IQR s", ".3f"),
        ("ms_per_step", "ms/step", ".2f"), ("tokens_per_s", "tokens/s", ",.0f"),
        ("speedup_vs_recompute", "speed-up vs recompute", ".1f"),
        ("speedup_vs_exact_recompute", "vs shape-exact recompute (est.)", ".1f"),
    ])
    path = common.write_json(args.output, {
        "description": "DecoderLM decoding: KV cache vs recomputing the prefix; greedy and beam search",
        "model": cfg.to_dict(),
        "prompt_len": prompt_len,
        "new_tokens": new,
        "beam_size": args.beam_size,
        "repeats": args.repeats,
        "rows": rows,
        "table": table,
        "machine": common.machine_info(),
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
