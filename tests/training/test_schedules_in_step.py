"""Every optimizer/schedule pair runs through the real train loop under strict dtype promotion
(optax's schedules mix int32 steps and floats; the step must allow that for them)."""

import math

import pytest
from conftest import tiny_config, train_losses

from tfm.training.loop import run


@pytest.mark.parametrize("optimizer, schedule", [("adam", "rsqrt"), ("adamw", "warmup_cosine"), ("adam", "constant")])
def test_each_schedule_trains_under_strict_promotion(optimizer, schedule, tmp_path):
    overrides = {"train.optimizer": optimizer, "train.schedule": schedule, "train.num_steps": 3}
    if schedule != "rsqrt":
        overrides["train.learning_rate"] = 1e-3
    run(tiny_config(**overrides), tmp_path)
    losses = train_losses(tmp_path)
    assert sorted(losses) == [1, 2, 3] and all(math.isfinite(v) for v in losses.values())
