"""Fault class 7 of issue 15 (loop side): SIGTERM / SIGINT during set-up (data download, tokenizer
training -- long, and with nothing to save yet) stop the run at once, cleanly."""

import os
import signal
import time

import pytest
from conftest import tiny_config

from tfm.training import setup
from tfm.training.loop import run


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_setup_stops_at_once(sig, tmp_path, monkeypatch):
    real = setup.build_pipeline

    def slow_build(*args, **kwargs):  # a data set whose download retries for minutes
        os.kill(os.getpid(), sig)
        deadline = time.time() + 30
        while time.time() < deadline:
            time.sleep(0.1)
        raise AssertionError("the signal was not honoured during set-up")

    monkeypatch.setattr(setup, "build_pipeline", slow_build)
    previous = signal.getsignal(sig)
    result = run(tiny_config(), tmp_path)
    assert result["preempted"] and result["step"] == 0
    assert signal.getsignal(sig) is previous
    monkeypatch.setattr(setup, "build_pipeline", real)
    assert run(tiny_config(**{"train.num_steps": 2}), tmp_path)["step"] == 2  # lock released
