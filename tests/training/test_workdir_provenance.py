"""Fault class 2 of issue 15: what a failed run left in the workdir is never trusted blindly.

A run on a text file too short for its context fails before its first checkpoint, after it has
written WORKDIR/tokenizer. A later run on the right file must build its own tokenizer (not the
dozen characters of the short file); once the workdir has checkpoints, a run on a different
file is refused naming the file's fingerprint.
"""

import json
import os
import shutil

import pytest
from conftest import tiny_config

from tfm.training.loop import WorkdirMismatchError, run

LONG = "".join(f"line {i}: the quick brown fox jumps over the lazy dog, {i * 7919 % 1000}!\n"
               for i in range(200))


def lm_config(path, **overrides):
    return tiny_config(**{
        "data.dataset": "text_file", "data.text_file": str(path), "data.valid_fraction": 0.1,
        "data.max_len": 16, "model.arch": "decoder_lm",
        "train.num_steps": 2, "train.checkpoint_every_steps": 2, **overrides,
    })


def vocab_in(workdir):
    with open(workdir / "config.json") as f:
        return json.load(f)["model"]["vocab_size"]


def test_a_failed_runs_tokenizer_is_not_reused_and_a_changed_file_is_refused(tmp_path):
    text = tmp_path / "data.txt"
    text.write_text("abcabc\nabc\n")  # too short for a 16-token context
    workdir = tmp_path / "run"
    with pytest.raises(ValueError):
        run(lm_config(text), workdir)
    text.write_text(LONG)
    assert run(lm_config(text), workdir)["step"] == 2
    assert vocab_in(workdir) == len(set(LONG)) + 4  # the characters of the long text + specials
    aside = [p for p in os.listdir(workdir) if p.startswith("superseded")]
    assert aside, "the failed run's tokenizer is kept, moved aside"

    # with checkpoints, different data is refused by name
    text.write_text(LONG.replace("fox", "cat"))
    with pytest.raises(WorkdirMismatchError, match="data.text_file.*sha256"):
        run(lm_config(text, **{"train.num_steps": 4}), workdir)
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]


def test_a_replaced_tokenizer_is_refused_and_a_rebuilt_identical_one_accepted(tmp_path, monkeypatch):
    from tfm import files
    from tfm.data.tokenizers import CharTokenizer, load_tokenizer

    text = tmp_path / "data.txt"
    text.write_text(LONG)
    workdir = tmp_path / "run"
    assert run(lm_config(text), workdir)["step"] == 2
    saved = load_tokenizer(workdir / "tokenizer")
    shutil.rmtree(workdir / "tokenizer")  # deleted: rebuilt from the same data, identical
    reads, read_json = [], files.read_json
    monkeypatch.setattr(files, "read_json",
                        lambda path, **kw: reads.append(os.path.basename(path)) or read_json(path, **kw))
    assert run(lm_config(text, **{"train.num_steps": 3}), workdir)["step"] == 3
    assert reads.count("config.json") == reads.count("provenance.json") == 1  # once per start
    shutil.rmtree(workdir / "tokenizer")
    CharTokenizer(saved.chars[:-1] + ["é"]).save(workdir / "tokenizer")  # same size, other text
    with pytest.raises(WorkdirMismatchError, match="not the tokenizer this workdir's checkpoints"):
        run(lm_config(text, **{"train.num_steps": 4}), workdir)


def test_a_different_init_from_is_a_mismatch(tmp_path):
    """train.init_from decides a pretrained run's tokenizer: a tokenizer left by a run started
    from model A is moved aside for a run from model B, and refused once there are checkpoints."""
    from tfm.training import workdir_guard as workdir_lib
    from tfm.training.config import RunConfig

    data = RunConfig.from_config_dict(tiny_config()).data
    a, b = tmp_path / "model_a", tmp_path / "model_b"
    workdir = tmp_path / "run"
    record = workdir_lib.check_provenance(data, str(workdir), init_from=str(a))  # a fresh workdir
    (workdir / "tokenizer").mkdir(parents=True)
    assert record["train.init_from"] == str(a.resolve())
    assert workdir_lib.provenance(data)["train.init_from"] is None
    workdir_lib.record_provenance(str(workdir), record)
    # the same directory: the tokenizer is kept
    workdir_lib.check_provenance(data, str(workdir), init_from=str(a))
    assert (workdir / "tokenizer").is_dir()
    # another one, without checkpoints: moved aside
    workdir_lib.check_provenance(data, str(workdir), init_from=str(b))
    assert not (workdir / "tokenizer").exists()
    assert list((workdir / "superseded").glob("*/tokenizer"))
    # with checkpoints: refused by name
    (workdir / "tokenizer").mkdir()
    workdir_lib.record_provenance(str(workdir), record)
    (workdir / "checkpoints" / "2").mkdir(parents=True)
    with pytest.raises(WorkdirMismatchError, match="train.init_from"):
        workdir_lib.check_provenance(data, str(workdir), init_from=str(b))
    assert (workdir / "tokenizer").is_dir()


# provenance.json of tiny_config()'s data as an older tfm wrote it: the numbers task's fields flat
OLD_RECORD = {
    "data.dataset": "numbers", "data.text_file": "", "data.valid_fraction": 0.1, "data.tokenizer": "char",
    "data.vocab_size": 256, "data.tokenizer_character_coverage": 1.0, "data.tokenizer_max_examples": 10000,
    "data.tfds_data_dir": "", "data.numbers_max": 999, "data.numbers_valid_size": 32,
    "data.numbers_test_size": 32, "data.numbers_split_seed": 0, "train.init_from": None,
}


def older_workdir(tmp_path, numbers_max=999):
    """A workdir as an older tfm left it (a checkpoint, a tokenizer, and config.json and
    provenance.json with the flat data.numbers_* names), its run on 0..numbers_max."""
    from tfm.data.tokenizers import CharTokenizer
    from tfm.training import workdir_guard
    from tfm.training.config import RunConfig

    workdir = tmp_path / "run"
    (workdir / "checkpoints" / "4").mkdir(parents=True)
    CharTokenizer("abcdefghijklmnopqrstuvwxyz -").save(workdir / "tokenizer")
    config = RunConfig.from_config_dict(tiny_config()).to_dict()
    numbers = config["data"].pop("numbers")
    config["data"].update({f"numbers_{k}": v for k, v in numbers.items()}, numbers_max=numbers_max)
    (workdir / "config.json").write_text(json.dumps(config))
    record = {**OLD_RECORD, "data.numbers_max": numbers_max,
              "tokenizer files sha256": workdir_guard.tokenizer_fingerprint(str(workdir))}
    (workdir / "provenance.json").write_text(json.dumps(record))
    return workdir


def test_an_older_workdirs_flat_names_match_the_same_data(tmp_path):
    """config.json and provenance.json of an older tfm name the numbers task's fields flat
    (numbers_max): the same run resumes, its tokenizer kept, and the record is rewritten with
    the current names."""
    from tfm.training import workdir_guard
    from tfm.training.config import RunConfig

    workdir = older_workdir(tmp_path)
    config = RunConfig.from_config_dict(tiny_config())
    saved = workdir_guard.saved_run(str(workdir))
    assert saved == config and workdir_guard.setting_differences(saved, config) == []
    workdir_guard.check_saved_model(saved, config, str(workdir))
    fingerprint = workdir_guard.tokenizer_fingerprint(str(workdir))
    record = workdir_guard.check_provenance(config.data, str(workdir))
    workdir_guard.check_and_record_tokenizer(str(workdir), record)
    assert not (workdir / "superseded").exists()  # the tokenizer is kept, not rebuilt
    assert workdir_guard.tokenizer_fingerprint(str(workdir)) == fingerprint
    rewritten = json.loads((workdir / "provenance.json").read_text())
    assert rewritten["data.numbers.max"] == 999 and "data.numbers_max" not in rewritten
    workdir_guard.check_provenance(config.data, str(workdir))  # and matches again


def test_an_older_workdir_on_other_numbers_is_refused_by_the_current_name(tmp_path):
    from tfm.training import workdir_guard
    from tfm.training.config import RunConfig

    workdir = older_workdir(tmp_path, numbers_max=9999)
    config = RunConfig.from_config_dict(tiny_config())  # 0..999
    saved = workdir_guard.saved_run(str(workdir))
    workdir_guard.check_saved_model(saved, config, str(workdir))  # the same model: accepted
    assert workdir_guard.setting_differences(saved, config) == [
        "data.numbers.max: 9999 in the workdir, 999 now"]
    with pytest.raises(WorkdirMismatchError, match=r"data\.numbers\.max: 9999 in the workdir, 999 now"):
        workdir_guard.check_provenance(config.data, str(workdir))
    assert (workdir / "tokenizer").is_dir() and not (workdir / "superseded").exists()
