"""tfm.run_files.restore: the newest-intact-checkpoint fallback shared by training and inference."""

import logging
import os

import pytest

from tfm.run_files.restore import CheckpointError, IncompatibleCheckpointError, move_aside, restore_newest
from tfm.run_files.layout import DAMAGED_CHECKPOINT_DIR, damaged_dir


class Damaged(Exception):
    pass


def _reader(damaged=(), incompatible=()):
    tried = []

    def attempt(step):
        tried.append(step)
        if step in incompatible:
            raise IncompatibleCheckpointError("ckpts", step, ["params/w: shape (3,) in the checkpoint, (5,) now"])
        if step in damaged:
            raise Damaged(f"truncated file of step {step}\n" + "spec " * 500)
        return f"state {step}"

    return attempt, tried


def test_newest_intact_step_is_restored_newest_first(tmp_path, caplog):
    attempt, tried = _reader(damaged={9, 7})
    moved = []
    with caplog.at_level(logging.WARNING):
        out = restore_newest(str(tmp_path / "checkpoints"), [3, 9, 5, 7], attempt, on_damaged=moved.append)
    assert out == (5, "state 5")
    assert tried == [9, 7, 5] and moved == [9, 7]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all(len(line.splitlines()) == 1 for line in lines)
    assert "step 9 cannot be restored" in lines[0] and "Damaged: truncated file of step 9" in lines[0]


def test_read_only_use_moves_nothing_and_says_so(tmp_path, caplog):
    attempt, _ = _reader(damaged={4, 2})
    with caplog.at_level(logging.WARNING), pytest.raises(CheckpointError, match="can be restored") as e:
        restore_newest(str(tmp_path / "checkpoints"), [2, 4], attempt)
    assert "step 4: Damaged" in str(e.value) and "step 2: Damaged" in str(e.value)
    assert "read-only" in caplog.text and not (tmp_path / DAMAGED_CHECKPOINT_DIR).exists()


def test_a_healthy_checkpoint_of_another_state_is_never_called_damaged(tmp_path):
    attempt, tried = _reader(incompatible={6})
    moved = []
    with pytest.raises(IncompatibleCheckpointError, match="not damaged"):
        restore_newest(str(tmp_path / "checkpoints"), [2, 4, 6], attempt, on_damaged=moved.append)
    assert tried == [6] and moved == []


def test_no_steps_is_none_but_only_damaged_ones_is_a_refusal(tmp_path):
    directory = tmp_path / "checkpoints"
    assert restore_newest(str(directory), [], _reader()[0]) is None
    (tmp_path / DAMAGED_CHECKPOINT_DIR / "6").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="refusing to start the run over"):
        restore_newest(str(directory), [], _reader()[0])


def test_move_aside_never_replaces_what_was_moved_before(tmp_path):
    directory = tmp_path / "checkpoints"
    assert damaged_dir(directory) == str(tmp_path / DAMAGED_CHECKPOINT_DIR)
    for n in range(3):
        (directory / "6").mkdir(parents=True)
        (directory / "6" / "marker").write_text(str(n))
        move_aside(str(directory), 6)
    damaged = tmp_path / DAMAGED_CHECKPOINT_DIR
    assert sorted(os.listdir(damaged)) == ["6", "6.1", "6.2"]
    assert [(damaged / d / "marker").read_text() for d in ("6", "6.1", "6.2")] == ["0", "1", "2"]
    assert move_aside(str(directory), 6) is None  # already gone: nothing to do


def test_after_a_failed_restore_only_closed_event_loop_callbacks_are_silenced(tmp_path, monkeypatch):
    """A failed orbax restore leaves TensorStore reads in flight whose callbacks find the event
    loop closed; Python reported each as an unraisable RuntimeError traceback after tfm's one
    line (FAULTS C9). Those, and only those, are dropped once a restore has failed."""
    import sys
    import types

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(str(u.exc_value)))
    for step in (1, 2):
        os.makedirs(tmp_path / str(step))

    def attempt(step):
        raise ValueError(f"OUT_OF_RANGE reading step {step}")

    with pytest.raises(CheckpointError):
        restore_newest(str(tmp_path), [1, 2], attempt)
    report = lambda exc: sys.unraisablehook(types.SimpleNamespace(exc_value=exc, exc_type=type(exc)))  # noqa: E731
    report(RuntimeError("Event loop is closed"))
    report(RuntimeError("something else"))
    report(ValueError("Event loop is closed"))
    assert seen == ["something else", "Event loop is closed"]  # the second: a ValueError, kept
    installed = sys.unraisablehook
    with pytest.raises(CheckpointError):  # a second failure does not stack another filter
        restore_newest(str(tmp_path), [1, 2], attempt)
    assert sys.unraisablehook is installed
