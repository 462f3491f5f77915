"""Fault class 3 of issue 15: a checkpoint's parameters are checked, not only the step's loss.

The loss of step N is computed from the parameters *before* update N; checkpoint N holds them
*after* it. With an infinite learning rate (1e39 overflows float32) the loss of step 1 is
finite but the parameters after it are not: nothing may be saved, and the error must say what
was non-finite and that no checkpoint is good.
"""

import os

import pytest
from conftest import tiny_config

from tfm.training.loop import NonFiniteLossError, run


def config(lr, **overrides):
    return tiny_config(**{"train.schedule": "constant", "train.warmup_steps": 0,
                          "train.learning_rate": lr, "train.checkpoint_every_steps": 1,
                          "train.num_steps": 3, **overrides})


def test_nonfinite_parameters_are_never_checkpointed(tmp_path):
    with pytest.raises(NonFiniteLossError) as info:
        run(config(1e39), tmp_path)
    message = str(info.value)
    assert "parameters" in message and "after step 1" in message
    assert "no checkpoint" in message.lower()
    assert not [s for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()]


def test_nonfinite_loss_names_the_newest_good_checkpoint(tmp_path):
    # 1e30: the parameters after step 1 are huge but finite (checkpoint 1 is good), the loss of
    # step 2 overflows
    with pytest.raises(NonFiniteLossError) as info:
        run(config(1e30), tmp_path)
    message = str(info.value)
    assert "step 2" in message and "newest checkpoint is step 1" in message
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_nan_or_infinite_learning_rate_is_refused_by_validation(value):
    from tfm.training.config import RunConfig

    with pytest.raises(ValueError, match="TrainConfig.learning_rate"):
        RunConfig.from_config_dict(config(value))
