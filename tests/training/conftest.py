"""Shared pieces of the training tests: a tiny run config and a way to run the training loop in
a subprocess.

These tests run the same tiny programs many times (uninterrupted, interrupted, restarted, in
subprocesses); the run's persistent compilation cache (tests/conftest.py, inherited by the
subprocesses through the environment) turns every compilation after the first into a read.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
DRIVER = pathlib.Path(__file__).resolve().parent / "train_driver.py"


def tiny_config(**overrides):
    """The numbers task shrunk to seconds: 1000 numbers, a character vocabulary, a one-layer
    d_model=16 encoder-decoder, 16 rows per batch, the paper's Adam and schedule (scaled by
    0.2, warm-up 10), no evaluation, a checkpoint every 4 steps.

    ``overrides``: dotted names, e.g. ``tiny_config(**{"train.num_steps": 8, "data.numbers.max": 99})``.
    """
    from tfm.training.config import default_config_dict

    c = default_config_dict()
    c.data.numbers.max = 999
    c.data.numbers.valid_size = 32
    c.data.numbers.test_size = 32
    c.data.tokenizer = "char"
    c.data.max_len = 24
    c.data.max_target_len = 24
    c.data.batch_size = 16
    c.data.eval_batch_size = 16
    c.data.chunk_size = 256
    c.model.d_model = 16
    c.model.num_heads = 2
    c.model.num_layers = 1
    c.model.d_ff = 32
    c.model.max_len = 32
    c.model.dropout_rate = 0.0
    c.train.num_steps = 8
    c.train.warmup_steps = 10
    c.train.learning_rate = 0.2  # x the paper's formula, which peaks at 0.08 for d_model=16
    c.train.strategy = "single"
    c.train.log_every_steps = 1
    c.train.eval_every_steps = 0
    c.train.eval_at_end = False
    c.train.eval_decode_examples = 0
    c.train.checkpoint_every_steps = 4
    c.train.progress_bar = False
    for name, value in overrides.items():
        *groups, field = name.split(".")
        setattr(functools.reduce(getattr, groups, c), field, value)
    return c


def train_losses(workdir) -> dict[int, float]:
    from tfm.training.writer import read_metrics

    return {step: record["loss"] for step, record in read_metrics(str(workdir)).items()}


def driver_command(config, workdir, *extra: str) -> list[str]:
    """The command that runs ``tfm.training.loop.run(config, workdir)`` in a new process."""
    return [sys.executable, str(DRIVER), "--config_json", json.dumps(config.to_dict()),
            "--workdir", str(workdir), *extra]


def subprocess_env(jax_cache_dir, **extra: str) -> dict[str, str]:
    # XLA_FLAGS (8 CPU devices), JAX_PLATFORMS and the compilation cache come from tests/conftest.py
    env = dict(os.environ)
    env.update(
        JAX_COMPILATION_CACHE_DIR=str(jax_cache_dir),
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
    )
    env.update(extra)
    return env


def wait_for_line(proc: subprocess.Popen, prefix: str) -> list[str]:
    """Reads ``proc``'s output up to a line starting with ``prefix`` (the lines read); fails
    the test with the output's tail if the process ends first."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return lines
    pytest.fail("driver exited early:\n" + "".join(lines[-30:]))


def start(command, env, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(command, env=env, cwd=kwargs.pop("cwd", str(REPO)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
