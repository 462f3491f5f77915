"""Fault class 4 of issue 15: a checkpoint that cannot be written stops the run at once with one
line naming the cause and the path; earlier checkpoints stay intact and nothing hangs.

A read-only ``checkpoints/`` (a read-only bind mount) and a full file system (a small tmpfs,
filled) are real file systems here, so these tests need mount(8) rights (root in a container);
they skip elsewhere.
"""

import os
import subprocess
import time

import pytest
from conftest import driver_command, start, subprocess_env, tiny_config

from tfm.training.checkpointer import CheckpointWriteError
from tfm.training.loop import run


def config(steps):
    return tiny_config(**{"train.num_steps": steps, "train.checkpoint_every_steps": 2})


@pytest.fixture
def small_fs(tmp_path):
    """A 16 MiB tmpfs at tmp_path/fs (unmounted afterwards, with any bind mount inside)."""
    root = tmp_path / "fs"
    root.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16M", "tmpfs", str(root)],
                      capture_output=True, check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield root
    subprocess.run(["umount", "-R", "-l", str(root)], capture_output=True, check=False)


def test_read_only_checkpoints_stop_the_run_promptly_and_keep_the_earlier_ones(small_fs, jax_cache_dir):
    workdir = small_fs / "run"
    assert run(config(2), workdir)["step"] == 2
    ckpts = str(workdir / "checkpoints")
    for args in (["--bind", ckpts, ckpts], ["-o", "remount,ro,bind", ckpts]):
        subprocess.run(["mount", *args], check=True)
    began = time.time()
    proc = start(driver_command(config(4), workdir), subprocess_env(jax_cache_dir))
    try:
        out, _ = proc.communicate(timeout=120)  # before the fix: orbax's threads never let go
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and time.time() - began < 120
    assert f"CheckpointWriteError: cannot write step 4 to {ckpts}: Read-only file system" in out
    assert "the newest complete checkpoint, step 2, is intact" in out
    assert os.listdir(ckpts) == ["2"]


def test_a_full_disk_is_one_clear_error_and_the_earlier_checkpoints_stay(small_fs):
    workdir = small_fs / "run"
    assert run(config(2), workdir)["step"] == 2
    with open(small_fs / "filler", "wb") as f:  # leave ~150 KiB: logs fit, a checkpoint does not
        free = os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize
        f.write(b"\0" * (free - 150 * 1024))
    with pytest.raises(CheckpointWriteError, match=rf"cannot write step 4 to {workdir}/checkpoints: "
                       r"No space left on device.*step 2, is intact"):
        run(config(4), workdir)
    os.remove(small_fs / "filler")
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]
    assert run(config(4), workdir)["step"] == 4  # with room again, it resumes
