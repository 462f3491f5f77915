"""At most ``limit`` dispatched steps stay outstanding: in the InFlight window itself and in the
training loop and evaluation that use it (an unbounded queue hangs XLA:CPU with several
devices; see tfm.training.inflight)."""

import jax
import jax.numpy as jnp
import pytest
from conftest import tiny_config

from tfm.training import eval as eval_lib
from tfm.training import inflight, loop


@jax.jit
def _slow(x):
    # ~10 ms of dependent matmuls on one CPU core, so queued calls are still running
    return jax.lax.fori_loop(0, 40, lambda _, y: jnp.tanh(y @ y) * 0.5, x)


@pytest.mark.parametrize("limit", [1, 3])
def test_only_the_last_limit_steps_are_outstanding_after_each_push(limit):
    window = inflight.InFlight(limit)
    x = jnp.full((256, 256), 0.01, jnp.float32)
    jax.block_until_ready(_slow(x))  # compile outside the window
    outs = []
    for _ in range(limit + 4):
        x = _slow(x)
        outs.append(x)
        window.push(x)
        assert len(window) == min(len(outs), limit)
        assert all(o.is_ready() for o in outs[:-limit])


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, None])
def test_a_limit_that_is_not_a_positive_integer_is_refused(limit):
    with pytest.raises(ValueError, match="InFlight limit must be a positive integer"):
        inflight.InFlight(limit)


class _CheckedWindow(inflight.InFlight):
    """Asserts, after every push, that everything older than the window is finished."""

    instances: list = []

    def __init__(self, limit):
        super().__init__(limit)
        self.pushed = []
        _CheckedWindow.instances.append(self)

    def push(self, outputs):
        super().push(outputs)
        self.pushed.append(outputs)
        for old in self.pushed[:-self.limit]:
            assert all(leaf.is_ready() for leaf in jax.tree.leaves(old))


def test_the_loop_and_evaluation_keep_at_most_max_steps_in_flight(tmp_path, monkeypatch):
    _CheckedWindow.instances = []
    monkeypatch.setattr(loop, "InFlight", _CheckedWindow)
    monkeypatch.setattr(eval_lib, "InFlight", _CheckedWindow)  # evaluate() lives in training/eval.py
    config = tiny_config(**{
        "train.num_steps": 6, "train.log_every_steps": 6, "train.max_steps_in_flight": 1,
        "train.eval_at_end": True,
    })
    result = loop.run(config, tmp_path)
    assert result["step"] == 6 and result["eval"]
    train_window, eval_window = _CheckedWindow.instances
    assert train_window.limit == eval_window.limit == 1
    assert len(train_window.pushed) == 6  # every step went through the window
    assert len(eval_window.pushed) >= 2  # the 32 validation examples in batches of 16
