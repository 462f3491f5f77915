"""The benchmark helpers: the FLOP formula against a hand count, the configurations, and a
seconds-long run of the throughput script on a tiny model (no timing is asserted)."""

import json
import os
import pathlib
import sys

import jax
import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_configs  # noqa: E402
import common  # noqa: E402


def test_flops_cpu_small_by_hand():
    # nanoGPT's baby GPT: L=4, D=128, F=512, V=65, T=64.
    cfg = bench_configs.get_bench_config("cpu_small").model
    f = common.flop_breakdown(cfg, 64)
    n = 4 * (4 * 128 * 128 + 2 * 128 * 512) + 128 * 65  # matmul weights (tied head included)
    assert f["n_matmul_params"] == n == 794_752
    assert f["attention_flops_per_token"] == 12 * 4 * 64 * 128
    assert f["flops_per_token"] == 6 * n + 12 * 4 * 64 * 128
    # All parameters: matmul weights + biases + LayerNorms + token and position tables.
    biases = 4 * (4 * 128 + 512 + 128)
    norms = (4 * 2 + 1) * 2 * 128
    assert f["n_embedding_params"] == 65 * 128 + 64 * 128
    assert f["n_params"] == n - 128 * 65 + biases + norms + f["n_embedding_params"]


def test_flops_gpt2_small_matches_palm():
    cfg = bench_configs.get_bench_config("gpu_gpt2_small").model
    f = common.flop_breakdown(cfg, 1024)
    assert f["n_matmul_params"] == 12 * 12 * 768**2 + 768 * 50304
    assert f["flops_per_token"] == 6 * f["n_matmul_params"] + 12 * 12 * 1024 * 768


@pytest.mark.parametrize("name", ["cpu_small", "cpu_base", "gpu_gpt2_small", "gpu_transformer_base"])
def test_configs_build(name):
    """Every configuration builds and its step's shapes check out (eval_shape: no memory)."""
    from tfm.models import build_model

    bench = bench_configs.get_bench_config(name)
    model = build_model(bench.model)
    batch = bench.synthetic_batch(__import__("numpy").random.default_rng(0))
    args = [batch["inputs"]] + ([batch["decoder_inputs"]] if "decoder_inputs" in batch else [])
    out = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), *args)[0])
    assert out.shape == (bench.batch, bench.length, bench.model.vocab_size)


def test_set_overrides():
    bench = bench_configs.get_bench_config("cpu_small", ["scan_layers=true", "remat=dots", "dtype=bfloat16"])
    assert bench.model.scan_layers and bench.model.remat.value == "dots" and bench.model.dtype == "bfloat16"
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        bench_configs.get_bench_config("cpu_small", ["no_such_field=1"])


def test_train_throughput_runs(tmp_path):
    import train_throughput

    # optax's warm-up/cosine schedule mixes Python floats and int32 steps: not strict-clean
    with jax.numpy_dtype_promotion("standard"):
        result = train_throughput.main(
            ["--config", "tiny", "--steps", "2", "--warmup", "1", "--no-peak", "--out-dir", str(tmp_path)]
        )
    saved = json.loads((tmp_path / "tiny.json").read_text())
    assert saved["tokens_per_step"] == 4 * 16 and len(saved["step_times_s"]) == 2
    assert result["compile_s"] > 0 and result["peak_memory"]["bytes"] > 0
    assert saved["flops"]["flops_per_token"] > 0


def test_gpu_check_reduced_runs(tmp_path):
    """benchmarks/gpu_check.py's reduced form (what runs without a GPU): every part but cuDNN,
    which is then compared by the same code with XLA standing in for it."""
    import gpu_check

    # optax's warm-up/cosine schedule mixes Python floats and int32 steps: not strict-clean
    with jax.numpy_dtype_promotion("standard"):
        result = gpu_check.main(["--reduced", "--steps", "2", "--out-dir", str(tmp_path)])
        same = gpu_check.cudnn_vs_xla(batch=2, length=16, heads=2, head_dim=8, implementation="xla")
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    losses = saved["train_vs_cpu"]["losses"]
    assert len(losses["cpu"]) == 2 and losses["accelerator"] == losses["cpu"]  # both the CPU here
    assert saved["train_vs_cpu"]["ok"] and saved["cudnn_vs_xla"] is None
    assert result["mfu"][0]["config"] == "tiny" and result["mfu"][0]["step_s"] > 0
    assert result["decoding"]["tokens_per_s"] > 0
    assert same == {"forward": 0.0, "grad_q": 0.0, "grad_k": 0.0, "grad_v": 0.0, "ok": True}


def test_op_profile_times_every_op_and_counts_matmul_flops():
    import jax.numpy as jnp
    import numpy as np
    import op_profile

    m, k, n, p = 48, 32, 24, 16
    f = jax.jit(lambda a, b, c: jnp.maximum(a @ b, 0.0) @ c)
    args = [jnp.asarray(np.random.default_rng(i).standard_normal(s), jnp.float32)
            for i, s in enumerate([(m, k), (k, n), (n, p)])]
    compiled = f.lower(*args).compile()
    _, events, wall = op_profile.trace_ops(lambda c: (c, compiled(*args)), None, 3)
    summary = op_profile.summarize(events, compiled.as_text(), 3)
    assert wall > 0 and summary["busy_ms"] > 0
    # Both products ran (as dots or inside fusions) and their FLOPs are read off the HLO.
    assert sum(r["flops"] for r in summary["ops"]) == 2 * m * k * n + 2 * m * n * p
    assert summary["categories"][0]["ms"] == max(c["ms"] for c in summary["categories"])


def test_train_throughput_profile(tmp_path):
    import train_throughput

    with jax.numpy_dtype_promotion("standard"):
        train_throughput.main(["--config", "tiny", "--steps", "1", "--warmup", "0", "--no-peak",
                               "--profile", "2", "--out-dir", str(tmp_path)])
    profile = json.loads((tmp_path / "tiny.json").read_text())["profile"]
    assert profile["wall_ms"] > 0 and profile["ops"]
    matmul = [c for c in profile["categories"] if c["category"] == "matmul"]
    assert matmul and matmul[0]["flops"] > 0


def test_matmul_peak_small():
    peak = common.matmul_peak(n=64, repeats=2)
    assert peak["flops_best"] >= peak["flops_median"] > 0


# ---------------------------------------------------------------------- vs_pytorch.py
def test_vs_pytorch_arguments():
    import vs_pytorch

    args = vs_pytorch.parse_args([])
    assert args.configs == ["cpu_small", "cpu_base"] and args.cpu_devices == "auto" and args.threads == 2
    args = vs_pytorch.parse_args(["--configs", "none", "--decode", "--cpu-devices", "2"])
    assert args.configs == [] and args.decode and args.cpu_devices == 2
    for bad in (["--configs", "cpu_huge"], ["--cpu-devices", "0"], ["--cpu-devices", "two"],
                ["--configs", "none"], ["--rounds", "0"], ["--decode-shapes", "gpt5"]):
        with pytest.raises(SystemExit):
            vs_pytorch.parse_args(bad)


def test_vs_pytorch_skips_without_torch(monkeypatch, capsys):
    import importlib.util

    import vs_pytorch

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("torch", "transformers") else find_spec(name, *a))
    assert vs_pytorch.main(["--configs", "tiny"]) is None
    assert "skipped, torch is not installed" in capsys.readouterr().out


def test_vs_pytorch_interleaves_and_takes_the_median_of_round_ratios():
    import vs_pytorch

    calls = []
    vs_pytorch.interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                          rounds=2, steps=2)
    assert "".join(calls) == "aaabbb" + "bbbaaa"  # one untimed step after each switch
    times = {"ref": [[0.002, 0.002, 9.0], [0.004, 0.004, 0.0]], "x": [[0.001] * 3, [0.001] * 3]}
    out = vs_pytorch.summarize_rounds(times, "ref")
    assert out["ratio"]["x"] == pytest.approx(3.0)  # median of 2 and 4
    assert out["ms"]["ref"] == pytest.approx(3.0) and out["ms"]["x"] == pytest.approx(1.0)


def test_torch_reference_schedule_matches_optax():
    pytest.importorskip("torch")
    import numpy as np
    import torch_reference

    schedule = bench_configs.get_bench_config("cpu_small").schedule()
    for step in (0, 1, 50, 100, 101, 1000, 1999, 2000, 2500):
        np.testing.assert_allclose(torch_reference.warmup_cosine(step), float(schedule(step)), rtol=1e-5)


@pytest.mark.slow  # ~15-35 s: imports torch, compiles, times both
def test_vs_pytorch_tiny_end_to_end(tmp_path):
    """A fresh process (JAX gets tfm's default CPU split): same sizes and FLOPs, a ratio, JSON."""
    pytest.importorskip("torch")
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH.parent), env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, str(BENCH / "vs_pytorch.py"), "--configs", "tiny", "--rounds", "1",
                    "--steps", "1", "--warmup", "0", "--threads", "1", "--out-dir", str(tmp_path)],
                   env=env, check=True, timeout=300, capture_output=True)
    saved = json.loads((tmp_path / "vs_pytorch.json").read_text())
    (run,) = saved["training"]
    assert run["params_tfm"] == run["params_torch"]
    assert run["flops_torch_counted"] == pytest.approx(run["flops_tfm_formula"])
    assert all(r > 0 for r in run["ratio"].values()) and "pytorch" in run["final_loss"]


def test_cold_warm_children_decide_their_cache_by_tfm_setting_alone(monkeypatch):
    """benchmarks/cold_warm.py's children: JAX's own cache variables (set by this test run)
    removed, so that TFM_COMPILATION_CACHE alone makes a run off, cold or warm."""
    import cold_warm

    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/somewhere")
    env = cold_warm.child_env("off")
    assert env["TFM_COMPILATION_CACHE"] == "off"
    assert not any(k.startswith("JAX_COMPILATION_CACHE") or k.startswith("JAX_PERSISTENT_CACHE") for k in env)
    assert env["PYTHONPATH"].split(os.pathsep)[0] == cold_warm.REPO
    assert cold_warm.parse_args(["--cases", "translate"]).cases == ["translate"]
    with pytest.raises(SystemExit):
        cold_warm.parse_args(["--cases", "nothing"])
