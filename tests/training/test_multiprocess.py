"""Two processes on localhost (jax.distributed with a local coordinator, gloo CPU collectives,
4 CPU devices each) train a few steps and log the same losses as one process.

Each process reads only its own half of every global batch (the data pipeline shards by
process); process 0 alone writes the logs; both write the checkpoint collectively.
"""

import json
import os
import socket

import pytest
from conftest import driver_command, start, subprocess_env, tiny_config, train_losses

from tfm.training.loop import run

STEPS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def config(strategy, **overrides):
    return tiny_config(**{"train.strategy": strategy, "train.num_steps": STEPS,
                          "train.checkpoint_every_steps": STEPS, **overrides})


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("one_process")
    run(config("single"), workdir)
    return train_losses(workdir)


def run_two_processes(cfg, workdir, jax_cache_dir, timeout=300):
    port = free_port()
    env = subprocess_env(jax_cache_dir, XLA_FLAGS="--xla_force_host_platform_device_count=4 "
                         "--xla_backend_optimization_level=0")
    procs = [
        start(driver_command(cfg, workdir, "--coordinator", f"localhost:{port}",
                             "--num_processes", "2", "--process_id", str(i)), env)
        for i in range(2)
    ]
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"process {i} failed:\n{out[-3000:]}"
    results = [json.loads(line.split(" ", 1)[1]) for out in outputs
               for line in out.splitlines() if line.startswith("RESULT ")]
    assert sorted(r["process"] for r in results) == [0, 1]
    assert all(r["step"] == STEPS for r in results)


@pytest.mark.parametrize("strategy", ["sharded", pytest.param("pmap", marks=pytest.mark.slow)])
def test_two_processes_log_the_same_losses_as_one(strategy, one_process, tmp_path, jax_cache_dir):
    run_two_processes(config(strategy), tmp_path, jax_cache_dir)
    losses = train_losses(tmp_path)
    assert sorted(losses) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert losses[step] == pytest.approx(one_process[step], rel=1e-5)
    # one metrics file (process 0 only) and one collectively written checkpoint
    assert sorted(os.listdir(tmp_path / "checkpoints")) == [str(STEPS)]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == STEPS


def test_a_single_process_does_not_start_jax_distributed(monkeypatch):
    from tfm.training.distributed import initialize_distributed

    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                "TFM_DISTRIBUTED", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    assert initialize_distributed() is False
    assert initialize_distributed("localhost:1234", num_processes=1, process_id=0) is False
    monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
    assert initialize_distributed() is False
