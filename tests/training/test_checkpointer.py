"""The orbax checkpointer alone: round trip with the meta item, keep-N, damaged checkpoints."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tfm.training.checkpointer import Checkpointer, CheckpointError
from tfm.training.state import TrainState


def state_at(step: int) -> TrainState:
    return TrainState(
        step=jnp.asarray(step, jnp.int32),
        params={"w": jnp.arange(600.0, dtype=jnp.float32) * step, "b": jnp.full((3, 5), step, jnp.float32)},
        opt_state=({"count": jnp.asarray(step, jnp.int32)},),
    )


def abstract() -> TrainState:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state_at(1))


def meta_at(step: int) -> dict:
    return {"step": step, "data": {"kind": "chunked", "epoch": 0, "batch": step}, "rng": [0, step]}


@pytest.fixture
def saved(tmp_path):
    """Checkpoints at steps 2, 4, 6 (async), kept: the newest 3 of 4 saves."""
    ckpt = Checkpointer(tmp_path / "checkpoints", keep=3)
    for step in (0, 2, 4, 6):
        ckpt.save(step, state_at(step), meta_at(step))
    ckpt.close()
    return tmp_path


def test_round_trip_keeps_the_newest_and_restores_the_latest(saved):
    ckpt = Checkpointer(saved / "checkpoints", keep=3)
    assert ckpt.all_steps() == [2, 4, 6]
    step, state, meta = ckpt.restore_latest(abstract())
    assert step == 6 and meta == meta_at(6)
    jax.tree.map(np.testing.assert_array_equal, state, state_at(6))
    assert not ckpt.save(6, state_at(6), meta_at(6))  # already there: not written twice
    ckpt.close()


def test_empty_directory_restores_nothing(tmp_path):
    assert Checkpointer(tmp_path / "checkpoints").restore_latest(abstract()) is None


def _files(step_dir):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs)


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize("which", ["array data", "array metadata", "meta json"])
def test_damaged_newest_falls_back_to_the_previous_step(saved, which, caplog):
    step_dir = saved / "checkpoints" / "6"
    if which == "meta json":
        target = step_dir / "meta" / "metadata"
    elif which == "array metadata":
        target = step_dir / "state" / "_METADATA"
    else:  # the biggest file of the state item holds the arrays
        target = max(_files(step_dir / "state"), key=os.path.getsize)
    truncate(target)
    ckpt = Checkpointer(saved / "checkpoints", keep=3)
    with caplog.at_level(logging.WARNING):
        step, state, meta = ckpt.restore_latest(abstract())
    assert step == 4 and meta["step"] == 4
    jax.tree.map(np.testing.assert_array_equal, state, state_at(4))
    assert "step 6 cannot be restored" in caplog.text
    # moved aside, so saving step 6 again later works and the evidence is kept
    assert ckpt.all_steps() == [2, 4]
    assert (saved / "checkpoints_damaged" / "6").is_dir()
    assert ckpt.save(6, state_at(6), meta_at(6))
    ckpt.close()


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(saved):
    for step in (2, 4, 6):
        truncate(saved / "checkpoints" / str(step) / "meta" / "metadata")
    ckpt = Checkpointer(saved / "checkpoints", keep=3)
    with pytest.raises(CheckpointError, match="refusing to start the run over"):
        ckpt.restore_latest(abstract())


def test_moved_aside_checkpoints_are_never_overwritten_and_never_started_over(saved):
    """Issue 15, fault 1: step 6 damaged twice keeps both copies; once every checkpoint has been
    moved aside, every later restore still refuses instead of starting over."""
    truncate(saved / "checkpoints" / "6" / "meta" / "metadata")
    ckpt = Checkpointer(saved / "checkpoints", keep=3)
    assert ckpt.restore_latest(abstract())[0] == 4
    ckpt.save(6, state_at(6), meta_at(6))
    ckpt.wait()
    truncate(saved / "checkpoints" / "6" / "meta" / "metadata")
    assert ckpt.restore_latest(abstract())[0] == 4
    assert sorted(os.listdir(saved / "checkpoints_damaged")) == ["6", "6.1"]
    for step in (2, 4):
        truncate(saved / "checkpoints" / str(step) / "meta" / "metadata")
    with pytest.raises(CheckpointError, match="refusing to start the run over"):
        ckpt.restore_latest(abstract())
    ckpt.close()
    again = Checkpointer(saved / "checkpoints", keep=3)
    with pytest.raises(CheckpointError, match="refusing to start the run over"):
        again.restore_latest(abstract())
    again.close()
    assert sorted(os.listdir(saved / "checkpoints_damaged")) == ["2", "4", "6", "6.1"]


def test_a_checkpoint_of_a_different_state_is_incompatible_not_damaged(saved):
    from tfm.training.checkpointer import IncompatibleCheckpointError

    ckpt = Checkpointer(saved / "checkpoints", keep=3)
    other = abstract().replace(opt_state=({"count": abstract().opt_state[0]["count"]}, {}),
                               params={"w": jax.ShapeDtypeStruct((601,), jnp.float32),
                                       "b": abstract().params["b"]})
    with pytest.raises(IncompatibleCheckpointError, match=r"params/w: shape \(600,\) in the checkpoint"):
        ckpt.restore_latest(other)
    assert ckpt.all_steps() == [2, 4, 6] and not (saved / "checkpoints_damaged").exists()
    ckpt.close()


def test_a_failure_to_compare_trees_is_raised_not_taken_for_damage(saved, monkeypatch):
    """Only a checkpoint that cannot be read is damaged: a bug in tfm's own comparison of a
    readable checkpoint with the model must surface and move nothing aside."""
    import tfm.training.checkpointer as checkpoint

    def broken(saved_tree, target):
        raise KeyError("an unexpected metadata key")

    monkeypatch.setattr(checkpoint, "tree_differences", broken)
    ckpt = Checkpointer(saved / "checkpoints", keep=3)
    with pytest.raises(KeyError, match="unexpected metadata key"):
        ckpt.restore_latest(abstract())
    assert ckpt.all_steps() == [2, 4, 6] and not (saved / "checkpoints_damaged").exists()
    ckpt.close()
