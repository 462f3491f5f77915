"""Fault class 1 of issue 15: resuming a workdir with a changed setting must never destroy it.

A changed optimiser (adam -> adamw) changes the optimiser state's tree, so the checkpoints no
longer fit this run's state. They are healthy: they must stay where they are, the run must be
refused with a message naming the changed field, the original flags must resume them, and
``train.reset_optimizer=True`` must restore everything but the optimiser state.
"""

import json
import os

import jax
import numpy as np
import pytest
from conftest import tiny_config

from tfm.config import GradKernels
from tfm.training.checkpointer import Checkpointer
from tfm.training.config import RunConfig
from tfm.training.loop import WorkdirMismatchError, run


def config(**overrides):
    return tiny_config(**{"train.num_steps": 4, "train.checkpoint_every_steps": 2, **overrides})


def saved_params(workdir, step):
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
        state = ckpt.manager.restore(step)["state"]
    finally:
        ckpt.close()
    return state["params"]


def test_changed_optimizer_is_refused_and_the_checkpoints_stay_healthy(tmp_path):
    assert run(config(), tmp_path)["step"] == 4
    before = sorted(os.listdir(tmp_path / "checkpoints"))
    with pytest.raises(WorkdirMismatchError, match=r"train\.optimizer.*adam.*adamw"):
        run(config(**{"train.optimizer": "adamw", "train.num_steps": 6}), tmp_path)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == before
    assert not (tmp_path / "checkpoints_damaged").exists()
    # the original flags resume where the run stopped (not "initialised a new run")
    result = run(config(**{"train.num_steps": 6}), tmp_path)
    assert result["step"] == 6


def test_reset_optimizer_restores_params_data_and_rng_with_a_fresh_optimizer(tmp_path):
    assert run(config(), tmp_path)["step"] == 4
    params4 = saved_params(tmp_path, 4)
    changed = config(**{"train.optimizer": "adamw", "train.num_steps": 5,
                        "train.reset_optimizer": True, "train.checkpoint_every_steps": 1})
    result = run(changed, tmp_path)
    assert result["step"] == 5
    # step 5 started from step 4's parameters: the change is one update, not a fresh init
    params5 = saved_params(tmp_path, 5)
    delta = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                         params4, params5)
    assert 0 < max(jax.tree.leaves(delta)) < 0.5
    assert {"4", "5"} <= set(os.listdir(tmp_path / "checkpoints"))


def test_grad_kernels_is_execution_only_and_old_workdirs_without_it_resume(tmp_path):
    """A workdir written before ModelConfig.grad_kernels existed (no such key in config.json)
    reads as "auto", and resumes under "autodiff": the checkpoint fits, nothing is refused."""
    assert run(config(), tmp_path)["step"] == 4
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    assert saved["model"].pop("grad_kernels") == "auto"
    path.write_text(json.dumps(saved))
    assert RunConfig.from_config_dict(saved).model.grad_kernels is GradKernels.AUTO
    seen = []
    result = run(config(**{"model.grad_kernels": "autodiff", "train.num_steps": 6}), tmp_path,
                 hooks=[seen.append])
    assert result["step"] == 6 and seen == [5, 6]  # resumed after step 4: a fresh run would see 1..6
    delta = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                         saved_params(tmp_path, 4), saved_params(tmp_path, 6))
    assert 0 < max(jax.tree.leaves(delta)) < 0.5  # continued from step 4, not a fresh start
