"""Fault class 8 of issue 15 (workdir side): a workdir path that is a file, a corrupt
config.json, and a metrics.jsonl whose last line was cut by a kill are each handled with a
clear message or transparently -- never a bare traceback, never data lost."""

import json

import pytest
from conftest import tiny_config, train_losses

from tfm.training.loop import WorkdirMismatchError, run
from tfm.training.writer import MetricWriter, read_metrics


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("precious")
    with pytest.raises(WorkdirMismatchError, match="not a directory"):
        run(tiny_config(), path)
    assert path.read_text() == "precious"


def test_a_corrupt_config_json_is_named_and_left_alone(tmp_path):
    (tmp_path / "config.json").write_text('{"model": {"d_model": 1')
    with pytest.raises(WorkdirMismatchError, match=str(tmp_path / "config.json")):
        run(tiny_config(), tmp_path)
    assert (tmp_path / "config.json").read_text() == '{"model": {"d_model": 1'


def test_a_truncated_last_metrics_line_is_skipped_and_appending_starts_a_new_line(tmp_path):
    writer = MetricWriter(str(tmp_path))
    writer.write(1, "train", {"loss": 2.0})
    writer.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "split": "train", "lo')  # a kill in the middle of a write
    assert sorted(read_metrics(str(tmp_path))) == [1]
    writer = MetricWriter(str(tmp_path))
    writer.write(2, "train", {"loss": 1.5})
    writer.close()
    assert {s: r["loss"] for s, r in read_metrics(str(tmp_path)).items()} == {1: 2.0, 2: 1.5}
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 2


def test_train_losses_helper_still_reads_a_workdir(tmp_path):
    assert run(tiny_config(**{"train.num_steps": 2}), tmp_path)["step"] == 2
    assert sorted(train_losses(tmp_path)) == [1, 2]
