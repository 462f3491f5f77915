"""Issue 15's soak: SIGKILL a training process at random moments, many times -- during saves
too -- and resume each time. The final state must equal an uninterrupted run's, bit for bit,
no checkpoint may ever be declared damaged, and no restart may start the run over."""

import os
import random
import signal
import time

import jax
import numpy as np
import pytest
from conftest import driver_command, start, subprocess_env, tiny_config, train_losses

from tfm.training.checkpointer import Checkpointer
from tfm.training.loop import run

STEPS = 80


def config():
    # dropout on (a wrong RNG after a resume would show); a checkpoint every 2 steps, written
    # asynchronously, so that many kills land in the middle of a save
    return tiny_config(**{"train.num_steps": STEPS, "train.checkpoint_every_steps": 2,
                          "model.dropout_rate": 0.1, "train.keep_checkpoints": 2})


def _steps(workdir):
    path = workdir / "checkpoints"
    return [int(s) for s in os.listdir(path) if s.isdigit()] if path.is_dir() else []


def final_state(workdir):
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
        assert ckpt.all_steps()[-1] == STEPS
        return ckpt.manager.restore(STEPS)["state"]
    finally:
        ckpt.close()


@pytest.mark.slow
def test_random_sigkills_then_resume_equal_an_uninterrupted_run(tmp_path, jax_cache_dir):
    reference = tmp_path / "reference"
    assert run(config(), reference)["step"] == STEPS
    workdir = tmp_path / "killed"
    rng = random.Random(15)
    env = subprocess_env(jax_cache_dir)
    kills, outputs = 0, []
    while kills < 15:
        before = _steps(workdir)
        proc = start(driver_command(config(), workdir, "--print_first_step"), env)
        head = []
        for line in proc.stdout:  # start-up (seconds) is not what this is about: wait for training
            head.append(line)
            if line.startswith("FIRST_STEP") or line.startswith("RESULT"):
                break
        time.sleep(rng.uniform(0.0, 1.5))  # then a random moment: a step, a save, a restore
        finished = proc.poll() is not None
        if not finished:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        out = "".join(head) + proc.stdout.read()
        outputs.append(out)
        # every restart continues right after the newest complete checkpoint: never from 0
        first = [int(line.split()[1]) for line in out.splitlines() if line.startswith("FIRST_STEP")]
        if first:
            assert first[0] == max(before, default=0) + 1, out[-2000:]
        if finished or max(_steps(workdir), default=0) == STEPS:
            break
    text = "".join(outputs)
    assert kills >= 5, text[-3000:]
    assert "cannot be restored" not in text and not (workdir / "checkpoints_damaged").exists()
    assert run(config(), workdir)["step"] == STEPS  # finishes what is left, if anything
    # bit for bit: parameters, optimiser state, step; and every logged loss
    a, b = final_state(reference), final_state(workdir)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert train_losses(workdir) == train_losses(reference)
