"""Fault class 5 of issue 15: one run per workdir. A second run is refused naming the holder;
after the holder is killed (SIGKILL: no clean-up), the stale lock is taken over."""

import os
import re
import signal
import socket

import pytest
from conftest import driver_command, start, subprocess_env, tiny_config, wait_for_line

from tfm.training.loop import run
from tfm.training.workdir_guard import WorkdirLockedError


def test_second_run_is_refused_and_a_killed_holders_lock_is_stale(tmp_path, jax_cache_dir):
    config = tiny_config(**{"train.num_steps": 4, "train.checkpoint_every_steps": 2})
    proc = start(driver_command(config, tmp_path, "--hang_at_step", "1"), subprocess_env(jax_cache_dir))
    try:
        wait_for_line(proc, "READY")
        with pytest.raises(WorkdirLockedError, match=rf"pid {proc.pid} on {socket.gethostname()}"):
            run(config, tmp_path)
        assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert run(config, tmp_path)["step"] == 4
    # and released at the end: a third run is not refused
    assert run(config, tmp_path)["step"] == 4


@pytest.mark.parametrize("code", ["EWOULDBLOCK", "ENOLCK"])
def test_only_a_held_lock_is_reported_as_in_use(tmp_path, monkeypatch, code):
    import errno
    import fcntl

    from tfm.training.workdir_guard import WorkdirLock

    def flock(fd, op):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))

    monkeypatch.setattr(fcntl, "flock", flock)
    lock = WorkdirLock(str(tmp_path))
    if code == "EWOULDBLOCK":
        with pytest.raises(WorkdirLockedError, match="in use by another run"):
            lock.acquire()
    else:
        with pytest.raises(OSError, match=re.escape(f"cannot lock {tmp_path / 'tfm.lock'}: ")) as e:
            lock.acquire()
        assert not isinstance(e.value, WorkdirLockedError) and e.value.errno == errno.ENOLCK
