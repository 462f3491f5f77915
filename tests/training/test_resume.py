"""Exact resume: the losses of steps N+1..2N of an uninterrupted 2N-step run are identical to
those of (a) a run sent SIGTERM at step N and restarted, (b) a run killed with SIGKILL after its
step-N checkpoint and restarted, and (c) a restart whose newest checkpoint is damaged.
Identical means bitwise: same parameters, optimiser state, data position and dropout key
(dropout is on here, so a wrong key would show).
"""

import json
import logging
import os
import shutil
import signal

import pytest
from conftest import driver_command, start, subprocess_env, tiny_config, train_losses, wait_for_line

from tfm.training.checkpointer import CheckpointError
from tfm.training.loop import run

N = 4


def config(**overrides):
    return tiny_config(**{"train.num_steps": 2 * N, "train.checkpoint_every_steps": N,
                          "model.dropout_rate": 0.1, **overrides})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    result = run(config(), workdir)
    assert result["step"] == 2 * N and not result["preempted"]
    losses = train_losses(workdir)
    assert sorted(losses) == list(range(1, 2 * N + 1))
    return workdir, losses


def assert_identical_after_n(workdir, reference):
    losses = train_losses(workdir)
    assert [losses[s] for s in range(N + 1, 2 * N + 1)] == [reference[s] for s in range(N + 1, 2 * N + 1)]


def test_sigterm_saves_the_current_step_and_the_restart_continues_exactly(uninterrupted, tmp_path):
    _, reference = uninterrupted
    previous = signal.getsignal(signal.SIGTERM)

    def send_sigterm(step):
        if step == N:
            os.kill(os.getpid(), signal.SIGTERM)

    result = run(config(**{"train.checkpoint_every_steps": 100}), tmp_path, hooks=[send_sigterm])
    assert result == {**result, "step": N, "preempted": True}
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored
    assert sorted(os.listdir(tmp_path / "checkpoints")) == [str(N)]  # saved at the signal's step
    with open(tmp_path / "checkpoints" / str(N) / "meta" / "metadata") as f:
        meta = json.load(f)
    assert meta["step"] == N and meta["data"]["kind"] and len(meta["rng"]) == 2

    result = run(config(), tmp_path)
    assert result["step"] == 2 * N and not result["preempted"]
    assert_identical_after_n(tmp_path, reference)


def test_sigkill_after_the_step_n_checkpoint_then_restart_continues_exactly(
    uninterrupted, tmp_path, jax_cache_dir
):
    _, reference = uninterrupted
    # the driver stops inside step N + 1 until checkpoint N is on disk, then waits to be killed
    proc = start(driver_command(config(), tmp_path, "--hang_at_step", str(N + 1),
                                "--wait_for_checkpoint", str(N)), subprocess_env(jax_cache_dir))
    try:
        wait_for_line(proc, "READY")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert str(N) in os.listdir(tmp_path / "checkpoints")

    result = run(config(), tmp_path)
    assert result["step"] == 2 * N
    assert_identical_after_n(tmp_path, reference)


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def test_damaged_newest_checkpoint_restores_the_previous_step(uninterrupted, tmp_path, caplog):
    workdir, reference = uninterrupted
    # a copy of the finished run whose newest checkpoint (2N) is truncated
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    truncate(copy / "checkpoints" / str(2 * N) / "state" / "manifest.ocdbt")  # the array index
    with caplog.at_level(logging.WARNING):
        result = run(config(), copy)
    assert f"checkpoint at step {2 * N} cannot be restored" in caplog.text
    assert result["step"] == 2 * N  # resumed from N, trained N+1..2N again
    assert_identical_after_n(copy, reference)
    assert (copy / "checkpoints_damaged" / str(2 * N)).is_dir()

    # every checkpoint damaged: an error, never a silent fresh start
    for step in os.listdir(copy / "checkpoints"):
        truncate(copy / "checkpoints" / step / "state" / "_METADATA")  # the tree's structure
    with pytest.raises(CheckpointError, match="refusing to start the run over"):
        run(config(), copy)
