"""The CPU device split (tfm.training.devices): the automatic default, overrides, explicit
settings left alone, non-CPU hosts untouched, and the hint when JAX started too early.

The policy is tested with the host mocked (cores, platform, whether the backends started), since
this test process's JAX already runs with 8 devices; one subprocess checks the real thing.
"""

import logging
import os
import subprocess
import sys

import pytest

from tfm.training import devices
from tfm.training.config import RunConfig, default_config_dict


@pytest.fixture
def host(monkeypatch):
    """A fresh 2-core CPU-only host whose JAX backends have not started; records what is set."""
    applied = []
    monkeypatch.setattr(devices, "_set_count", applied.append)
    monkeypatch.setenv(devices.DECIDED_VAR, "")  # nothing decided yet in this process
    monkeypatch.setattr(devices, "backends_initialized", lambda: False)
    monkeypatch.setattr(devices, "host_platform", lambda: "cpu")
    monkeypatch.setattr(devices, "physical_cores", lambda: 2)
    monkeypatch.setattr(devices, "_jax_num_cpu_devices", lambda: -1)
    for var in ("XLA_FLAGS", devices.ENV_VAR, "JAX_NUM_PROCESSES", "SLURM_NTASKS", "TFM_DISTRIBUTED"):
        monkeypatch.delenv(var, raising=False)
    return applied


def test_default_is_one_device_per_core_on_a_cpu_host(host, caplog):
    with caplog.at_level(logging.INFO, logger=devices.__name__):
        split = devices.configure_cpu_devices(batch_sizes=(12, 12))
    assert (split.devices, split.source, split.changed) == (2, "auto", True)
    assert host == [2]
    assert "2 XLA CPU device(s)" in caplog.text and "--cpu_devices" in caplog.text


def test_batch_that_does_not_divide_keeps_the_split_small_and_says_why(host):
    assert devices.pick_split(4, (12, 6)) == (3, devices.pick_split(4, (12, 6))[1])
    n, why = devices.pick_split(4, (12, 6))
    assert n == 3 and "12 and 6" in why and "multiples of 4" in why
    assert devices.pick_split(4, (16, 16), grad_accum_steps=8)[0] == 2  # 16 / 2 = 8 micro-batches
    assert devices.pick_split(2, (7,))[0] == 1
    assert devices.pick_split(64, (64,)) == (devices.MAX_AUTO_DEVICES, devices.pick_split(64, (64,))[1])
    split = devices.configure_cpu_devices(batch_sizes=(7,))
    assert (split.devices, split.changed) == (1, False) and host == []
    assert "only split evenly over 1" in split.message


def test_config_and_env_override(host, monkeypatch):
    split = devices.configure_cpu_devices(1, batch_sizes=(12,))
    assert (split.devices, split.source, split.changed) == (1, "config", True) and host == [1]
    monkeypatch.setenv(devices.ENV_VAR, "3")
    assert devices.configure_cpu_devices(batch_sizes=(12,)).source == "env" and host[-1] == 3
    assert devices.configure_cpu_devices(4).source == "config" and host[-1] == 4  # config wins
    monkeypatch.setenv(devices.ENV_VAR, "auto")
    assert devices.configure_cpu_devices(batch_sizes=(12,)).source == "auto"
    monkeypatch.setenv(devices.ENV_VAR, "two")
    with pytest.raises(ValueError, match="TFM_CPU_DEVICES='two'"):
        devices.configure_cpu_devices()


def test_explicit_xla_flags_or_jax_config_are_left_alone(host, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    split = devices.configure_cpu_devices(batch_sizes=(12,))
    assert (split.devices, split.source, split.changed) == (1, "XLA_FLAGS", False) and host == []
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setattr(devices, "_jax_num_cpu_devices", lambda: 1)
    split = devices.configure_cpu_devices(batch_sizes=(12,))
    assert (split.devices, split.source, split.changed) == (1, "jax_num_cpu_devices", False) and host == []


@pytest.mark.parametrize("platform", ["gpu", "cuda", "tpu", None])
def test_no_op_on_accelerator_hosts(host, monkeypatch, platform):
    monkeypatch.setattr(devices, "host_platform", lambda: platform)
    split = devices.configure_cpu_devices(batch_sizes=(12,))
    assert (split.devices, split.source, split.changed) == (None, "not_cpu", False) and host == []


def test_no_auto_split_for_several_processes_or_fsdp(host, monkeypatch):
    cfg = RunConfig.from_config_dict(default_config_dict())
    fsdp = cfg.train.replace(mesh_data=1, mesh_fsdp=-1)
    assert devices.configure_for_run(fsdp, cfg.data).source == "strategy" and host == []
    assert devices.configure_for_run(cfg.train, cfg.data).source == "auto" and host == [2]
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    assert devices.configure_cpu_devices(batch_sizes=(12,)).source == "multiprocess"


def test_hint_when_jax_already_started_with_one_device(host, monkeypatch, caplog):
    monkeypatch.setattr(devices, "backends_initialized", lambda: True)
    monkeypatch.setattr(devices.jax, "default_backend", lambda: "cpu")
    monkeypatch.setattr(devices, "_cpu_device_count", lambda: 1)
    with caplog.at_level(logging.INFO, logger=devices.__name__):
        split = devices.configure_cpu_devices(batch_sizes=(12,))
        explicit = devices.configure_cpu_devices(2)
    assert (split.devices, split.source, split.changed) == (1, "initialized", False) and host == []
    assert "jax_num_cpu_devices', 2" in caplog.text
    assert explicit.devices == 1 and "cannot be applied" in explicit.message  # warns, no failure


def test_a_count_tfm_set_is_not_taken_for_the_users(host, monkeypatch):
    monkeypatch.setattr(devices, "_jax_num_cpu_devices", lambda: 2)
    assert devices.user_device_count() == (2, "jax_num_cpu_devices")  # set by someone else
    devices._remember(2, None)  # set by tfm in this process
    assert devices.user_device_count() is None
    monkeypatch.setenv(devices.DECIDED_VAR, f"{os.getpid() + 1} 2 -")  # a parent process's record
    assert devices.user_device_count() == (2, "jax_num_cpu_devices")


def test_each_decision_is_logged_once(host, caplog):
    with caplog.at_level(logging.INFO, logger=devices.__name__):
        for sizes in ((12, 12), (12, 12), (7,), (12, 12)):
            devices.configure_cpu_devices(batch_sizes=sizes)
    assert caplog.text.count("2 XLA CPU device(s)") == 2  # again after a different decision
    assert caplog.text.count("only split evenly over 1") == 1


def test_physical_cores_is_at_least_one_and_at_most_the_cpus():
    assert 1 <= devices.physical_cores() <= (os.cpu_count() or 1)


def test_fresh_process_gets_the_split(jax_cache_dir):
    """A real process: no XLA_FLAGS, JAX not started -> as many CPU devices as the policy picks."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", devices.ENV_VAR)}
    env["JAX_PLATFORMS"] = "cpu"
    code = (
        "import jax; from tfm.training import devices;"
        "s = devices.configure_cpu_devices(batch_sizes=(12,));"
        "print(s.devices, jax.device_count(), devices.pick_split(devices.physical_cores(), (12,))[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out[0] == out[1] == out[2]


def test_run_applies_the_split_before_anything_else(monkeypatch, tmp_path):
    """tfm.training.run (train.py, notebooks, the library) decides the split first thing."""
    from tfm.training import loop

    seen = []

    class Stop(Exception):
        pass

    def record(train, data):
        seen.append((train.cpu_devices, data.batch_size))
        raise Stop

    monkeypatch.setattr(loop.devices_lib, "configure_for_run", record)
    cd = default_config_dict()
    cd.train.cpu_devices = 2
    with pytest.raises(Stop):
        loop.run(cd, str(tmp_path / "wd"))
    assert seen == [(2, cd.data.batch_size)] and not (tmp_path / "wd").exists()


def test_train_config_cpu_devices_is_validated():
    cd = default_config_dict()
    cd.train.cpu_devices = -1
    with pytest.raises(ValueError, match="cpu_devices"):
        RunConfig.from_config_dict(cd)
