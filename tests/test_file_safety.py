"""Issue 22, file safety: every file tfm reads is untrusted (ARCHITECTURE.md, principle 9).

Each test is a reproduction of a case of docs/FAULTS.md (the ids in the comments are its rows):
names read from inside a file never resolve outside its folder; FIFOs, devices and directories
are refused before anything could block; nothing is written through a symlink or into a
non-regular file; a bad file is one error of tfm's own (:class:`tfm.files.TfmError`) naming it.
Anything that could block runs under :func:`no_hang` (a thread with a deadline).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading

import pytest

from tfm import files
from tfm.files import FileError, TfmError


def no_hang(fn, *args, timeout=10.0, **kwargs):
    """``fn(*args)``'s result or exception; the test fails if it has not returned in ``timeout``
    seconds (the thread is a daemon, so a hang cannot keep pytest from exiting)."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{getattr(fn, '__name__', fn)} blocked for {timeout} s"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text.strip() and "Traceback" not in text, text
    return text


@pytest.fixture
def outside(tmp_path):
    """A file outside the folder under test, whose content and mode must never change."""
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir()
    path.write_text("keep me\n")
    os.chmod(path, 0o600)
    yield path
    assert path.read_text() == "keep me\n" and (os.stat(path).st_mode & 0o777) == 0o600


# ====================================================================== tfm.files itself
@pytest.mark.parametrize("name, why", [
    ("/etc/passwd", "absolute"), ("../x", r"'\.\.'"), ("a/../../x", r"'\.\.'"), ("~/x", "absolute"),
    ("", "not a file name"), (None, "not a file name"), (5, "not a file name"), (["a"], "not a file name"),
    ("a\0b", "not a file name"),
])
def test_inside_refuses_names_leading_out(tmp_path, name, why):  # F1-F9
    with pytest.raises(FileError, match=why):
        files.inside(tmp_path, name, named_by=tmp_path / "index.json")


def test_inside_refuses_a_symlink_pointing_out_and_accepts_one_pointing_in(tmp_path, outside):  # F10, F11
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "out").symlink_to(outside)
    (folder / "real").write_text("x")
    (folder / "in").symlink_to("real")
    with pytest.raises(FileError, match="outside"):
        files.inside(folder, "out", named_by="index.json")
    assert files.inside(folder, "in", named_by="index.json") == str(folder / "in")
    assert files.inside(folder, "sub/x", named_by="index.json") == str(folder / "sub" / "x")


def test_reading_a_fifo_a_directory_or_a_device_is_refused_without_blocking(tmp_path):  # F12-F14
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dev").symlink_to("/dev/zero")
    for name, kind in (("fifo", "FIFO"), ("dir", "directory"), ("dev", "character device")):
        for read in (files.read_bytes, files.read_text, files.read_json, files.open_read):
            with pytest.raises(FileError, match=kind):
                no_hang(read, tmp_path / name)


def test_reading_limits_and_contents(tmp_path):  # F15-F19
    big, latin, bad, deep, listed = (tmp_path / n for n in ("big", "latin", "bad", "deep", "listed"))
    big.write_bytes(b"x" * 100)
    latin.write_bytes(b'{"a": "\xe9"}')
    bad.write_text("{not json")
    deep.write_text("[" * 100_000)
    listed.write_text("[1, 2]")
    with pytest.raises(FileError, match="100 bytes, more than the 10"):
        files.read_bytes(big, limit=10)
    with pytest.raises(FileError, match="not UTF-8"):
        files.read_json(latin)
    with pytest.raises(FileError, match="not valid JSON"):
        files.read_json(bad)
    with pytest.raises(FileError, match="not valid JSON"):
        files.read_json(deep)
    with pytest.raises(FileError, match="does not hold a JSON object"):
        files.read_json(listed)
    assert files.read_json(listed, expect=list) == [1, 2]
    with pytest.raises(FileError, match="No such file"):
        files.read_bytes(tmp_path / "missing")


def test_writing_never_goes_through_a_symlink_or_into_a_non_regular_file(tmp_path, outside):  # F20-F25
    (tmp_path / "link").symlink_to(outside)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    for name, why in (("link", "symlink"), ("fifo", "FIFO"), ("dir", "directory")):
        with pytest.raises(FileError, match=why):
            no_hang(files.write_bytes, tmp_path / name, b"attack")
        with pytest.raises(FileError, match=why):
            no_hang(files.open_append, tmp_path / name)
        with pytest.raises(FileError, match=why):
            no_hang(files.open_lock, tmp_path / name)
    assert sorted(os.listdir(tmp_path)) == ["dir", "fifo", "link", "outside"]  # no temporary left


def test_atomic_write_replaces_and_sets_an_ordinary_mode(tmp_path):  # F26
    target = tmp_path / "config.json"
    target.write_text("old")
    files.write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert os.stat(target).st_mode & 0o777 == 0o644 & ~files._UMASK
    assert os.listdir(tmp_path) == ["config.json"]


@pytest.mark.parametrize("code, text", [(errno.ENOSPC, "No space left on device"),
                                        (errno.EROFS, "Read-only file system")])
def test_a_failed_write_is_one_line_naming_the_file_and_leaves_no_temporary(tmp_path, monkeypatch, code, text):
    # F27, F28. Tests run as root, where chmod 0555 does not stop a write: the OS error is raised
    # by the write layer instead (a real full tmpfs: tests/training/test_checkpoint_write_failure.py).
    target = tmp_path / "spm.model"
    target.write_bytes(b"old")

    def failing_write(fd, data):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(FileError) as e:
        files.write_bytes(target, b"new")
    assert one_line(e.value) == f"cannot write {target}: {text}"
    monkeypatch.undo()
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["spm.model"]


def test_make_dirs_and_plain_names(tmp_path):  # F29, F30
    (tmp_path / "file").write_text("")
    with pytest.raises(FileError, match="exists and is not a directory"):
        files.make_dirs(tmp_path / "file")
    for name in ("../x", "a/b", "..", ".", "", None, "a\\b"):
        with pytest.raises(FileError, match="not a plain file name"):
            files.plain_name(name, named_by="tokenizer")
    assert files.plain_name("vocab.json", named_by="t") == "vocab.json"


def test_tfm_errors_share_one_base():
    from tfm.data.hf_tokenizers import TokenizerFilesError
    from tfm.data.tokenizers import TokenizerError
    from tfm.inference import WorkdirError
    from tfm.interop import HFFormatError
    from tfm.run_files.restore import CheckpointError
    from tfm.training.checkpointer import CheckpointWriteError
    from tfm.training.workdir_guard import WorkdirLockedError, WorkdirMismatchError

    for cls in (HFFormatError, WorkdirError, CheckpointError, CheckpointWriteError, WorkdirLockedError,
                WorkdirMismatchError, TokenizerError, TokenizerFilesError, FileError):
        assert issubclass(cls, TfmError), cls
    assert issubclass(HFFormatError, ValueError) and issubclass(CheckpointError, RuntimeError)


# ====================================================================== training workdir files
def test_a_symlinked_lock_never_empties_the_file_it_points_to(tmp_path, outside):  # W1 (issue 22)
    from tfm.training.workdir_guard import WorkdirLock

    (tmp_path / "tfm.lock").symlink_to(outside)
    with pytest.raises(FileError, match="tfm.lock is a symlink"):
        WorkdirLock(str(tmp_path)).acquire()


def test_a_fifo_lock_is_refused_without_blocking(tmp_path):  # W2
    from tfm.training.workdir_guard import WorkdirLock

    os.mkfifo(tmp_path / "tfm.lock")
    with pytest.raises(FileError, match="FIFO"):
        no_hang(WorkdirLock(str(tmp_path)).acquire)


def test_fifos_in_place_of_the_run_files_are_refused_without_blocking(tmp_path):  # W3-W6 (issue 22)
    from tfm.data.config import DataConfig
    from tfm.training import workdir_guard as workdir_lib
    from tfm.training.writer import MetricWriter, read_metrics

    os.mkfifo(tmp_path / "config.json")
    with pytest.raises(TfmError, match="config.json is a FIFO"):
        no_hang(workdir_lib.saved_run, str(tmp_path))
    os.mkfifo(tmp_path / "provenance.json")
    with pytest.raises(TfmError, match="provenance.json is a FIFO"):
        no_hang(workdir_lib.check_provenance, DataConfig(), str(tmp_path))
    os.mkfifo(tmp_path / "metrics.jsonl")
    with pytest.raises(TfmError, match="metrics.jsonl is a FIFO"):
        no_hang(MetricWriter, str(tmp_path))
    with pytest.raises(TfmError, match="metrics.jsonl is a FIFO"):
        no_hang(read_metrics, str(tmp_path))


def test_run_files_are_never_written_through_symlinks(tmp_path, outside):  # W7-W9
    from tfm.data.tokenizers import CharTokenizer
    from tfm.training import workdir_guard as workdir_lib
    from tfm.training.config import RunConfig
    from tfm.training.writer import MetricWriter

    for name in ("config.json", "provenance.json", "metrics.jsonl"):
        (tmp_path / name).symlink_to(outside)
    with pytest.raises(FileError, match="config.json is a symlink"):
        workdir_lib.write_config(str(tmp_path), RunConfig.from_config_dict({}))
    with pytest.raises(FileError, match="provenance.json is a symlink"):
        workdir_lib.record_provenance(str(tmp_path), {"a": 1})
    with pytest.raises(FileError, match="metrics.jsonl is a symlink"):
        MetricWriter(str(tmp_path))
    tok_dir = tmp_path / "tokenizer"
    tok_dir.mkdir()
    (tok_dir / "tokenizer.json").symlink_to(outside)
    with pytest.raises(FileError, match="tokenizer.json is a symlink"):
        CharTokenizer("abc").save(tok_dir)


def test_a_fifo_in_the_tokenizer_directory_stops_the_fingerprint_not_the_run(tmp_path):  # W10
    from tfm.data.tokenizers import CharTokenizer
    from tfm.training.workdir_guard import tokenizer_fingerprint

    CharTokenizer("abc").save(tmp_path / "tokenizer")
    os.mkfifo(tmp_path / "tokenizer" / "extra")
    with pytest.raises(FileError, match="FIFO"):
        no_hang(tokenizer_fingerprint, str(tmp_path))


def test_a_full_disk_while_saving_a_tokenizer_leaves_no_temporary(tmp_path, monkeypatch):  # W11 (issue 22)
    from tfm.data.tokenizers import SentencePieceTokenizer

    tok = SentencePieceTokenizer.train(["hello world", "the quick brown fox"] * 20, vocab_size=30)
    monkeypatch.setattr(os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(FileError, match=r"cannot write .*spm.model: No space left on device"):
        tok.save(tmp_path / "tok")
    monkeypatch.undo()
    assert os.listdir(tmp_path / "tok") == []


def test_saved_configs_of_wrong_types_are_one_line(tmp_path):  # W12-W14
    from tfm.training import workdir_guard as workdir_lib

    for saved in ({"model": [1, 2]}, {"model": {"d_model": "abc"}}, {"train": "x"}, [1]):
        (tmp_path / "config.json").write_text(json.dumps(saved))
        with pytest.raises(workdir_lib.WorkdirMismatchError) as e:
            workdir_lib.saved_run(str(tmp_path))
        assert "config.json cannot be read" in one_line(e.value)


# ====================================================================== export writes
def test_save_hf_refuses_file_names_that_leave_the_export_directory(tmp_path, outside):  # E1 (issue 22)
    from tfm.data.hf_tokenizers import ByteLevelBPETokenizer

    src = "tests/fixtures/hf/gpt2"
    tok = ByteLevelBPETokenizer.from_hf_dir(src)
    out = tmp_path / "export"
    out.mkdir()
    for name in ("../../payload.txt", str(outside)):
        tok.files = {**tok.files, name: b"attack"}
        with pytest.raises(FileError, match="not a plain file name"):
            tok.save_hf(out)
        del tok.files[name]
    assert not (tmp_path / "payload.txt").exists() and not (tmp_path.parent / "payload.txt").exists()
    shutil.rmtree(out)


# ====================================================================== checkpoints
def test_a_step_holding_a_fifo_or_a_device_is_refused_by_inference_and_set_aside_by_training(tmp_path):  # C1-C3
    import jax.numpy as jnp

    from tfm import inference
    from tfm.run_files.restore import unreadable_steps
    from tfm.training.checkpointer import Checkpointer

    directory = tmp_path / "checkpoints"
    ckpt = Checkpointer(directory, async_save=False)
    for step in (1, 2):
        ckpt.save(step, {"w": jnp.ones(3) * step}, {"step": step})
    ckpt.close()
    meta = directory / "2" / "_CHECKPOINT_METADATA"
    os.remove(meta)
    os.symlink("/dev/zero", meta)  # before: orbax read it forever while listing the steps
    assert list(unreadable_steps(str(directory))) == [2]
    with pytest.raises(inference.WorkdirError, match=r"step 2 cannot be read: .*_CHECKPOINT_METADATA is a symlink"):
        no_hang(inference.restore_params, str(tmp_path), None)
    assert os.path.islink(meta)  # read-only: nothing moved
    os.remove(meta)
    os.mkfifo(meta)
    ckpt = no_hang(Checkpointer, directory, async_save=False)  # training: moved aside, kept
    assert ckpt.all_steps() == [1] and os.path.exists(tmp_path / "checkpoints_damaged" / "2" / "_CHECKPOINT_METADATA")
    ckpt.close()


def test_the_checkpoint_write_probe_never_goes_through_a_symlink(tmp_path, outside):  # C10
    import socket

    import jax.numpy as jnp

    from tfm.training.checkpointer import Checkpointer, CheckpointWriteError

    ckpt = Checkpointer(tmp_path / "checkpoints", async_save=False)
    probe = tmp_path / "checkpoints" / f".tfm_write_probe.{socket.gethostname()}.{os.getpid()}"
    probe.symlink_to(outside)
    with pytest.raises(CheckpointWriteError, match="Too many levels of symbolic links"):
        ckpt.save(1, {"w": jnp.ones(3)}, {"step": 1})
    ckpt.close()
