"""train.py itself: with no arguments it trains the numbers task into workdirs/numbers; SIGTERM
saves the current step and exits 0; running it again resumes."""

import os
import re
import signal
import subprocess
import sys

import pytest
from conftest import REPO, start, subprocess_env

FAST_CPU = "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0"


@pytest.mark.slow
def test_no_arguments_trains_the_default_and_sigterm_exits_0(tmp_path, jax_cache_dir):
    env = subprocess_env(jax_cache_dir, XLA_FLAGS=FAST_CPU)
    proc = start([sys.executable, str(REPO / "train.py")], env, cwd=str(tmp_path))
    output = []
    try:
        for line in proc.stdout:  # tqdm's carriage returns arrive as newlines (text mode)
            output.append(line)
            match = re.search(r"\b(\d+)/\d+ \[", line)  # tqdm's "step/num_steps [elapsed"
            if match and int(match.group(1)) >= 3:
                proc.send_signal(signal.SIGTERM)
                break
        rest, _ = proc.communicate(timeout=300)
        output.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(output)
    assert proc.returncode == 0, text[-3000:]
    assert "SIGTERM received" in text

    workdir = tmp_path / "workdirs" / "numbers"
    saved = [int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()]
    assert len(saved) == 1 and saved[0] >= 3
    assert (workdir / "config.json").is_file() and (workdir / "tokenizer").is_dir()

    # again, with a nearby end: it resumes from the saved step rather than starting over
    end = saved[0] + 2
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), f"--config.train.num_steps={end}",
         "--config.train.eval_at_end=False"],
        env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"restored step {saved[0]}" in done.stderr
    assert f"finished at step {end}" in done.stderr


@pytest.mark.slow
def test_cpu_devices_splits_the_host_into_data_parallel_devices(tmp_path, jax_cache_dir):
    env = subprocess_env(jax_cache_dir, XLA_FLAGS=FAST_CPU)  # 1 device unless --cpu_devices
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--cpu_devices=2", "--workdir=wd",
         "--config.train.num_steps=2", "--config.train.eval_at_end=False"],
        env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mesh data=2 x fsdp=1 (2 devices)" in done.stderr
    assert "finished at step 2" in done.stderr
