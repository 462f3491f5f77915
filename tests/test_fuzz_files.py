"""Issue 22: seeded random corruptions of a tiny workdir and of the tiny Hugging Face model
directories, fed to the loaders. Each case must load or raise one of tfm's own errors
(:class:`tfm.files.TfmError`): never another exception, never a hang (each case runs in a thread
with a deadline; FIFOs must be refused before an open could block), and nothing outside the
corrupted folder is read into the model or changed.

Corruptions: truncation, flipped bytes, appended garbage, deletion, replacement by a FIFO, a
directory or a symlink (pointing out, to a device, dangling), and JSON values of the wrong type
(including names that lead out of the folder). Loading compiles nothing, so a case costs
milliseconds; the seeds are fixed, so a failure reproduces with its case id.
"""

from __future__ import annotations

import json
import os
import random
import shutil

import pytest
from test_file_safety import no_hang
from test_untrusted_dirs import FIXTURES, bpe_workdir, char_workdir  # noqa: F401 - fixtures

from tfm import inference, interop
from tfm.files import TfmError

HF_CASES = 200  # per model directory (gpt2, marian)
WORKDIR_CASES = 60  # per workdir (char, byte-level BPE): 520 cases in all; a workdir load costs
# ~0.1 s (the model's shapes are traced), a model directory's ~0.02 s

ODD_VALUES = [None, "abc", -1, 0, 1e12, 10**12, [], {}, True, "../../payload.txt", "/etc/passwd",
              ["../x"], {"a": "../../x"}, 2**63, "", 3.5, "\u00e9" * 3]


def _files(root: str) -> list[str]:
    """The regular files under ``root`` (what an earlier corruption replaced is left alone: the
    test itself must never open a FIFO it made)."""
    out = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        out += [p for n in sorted(names) if os.path.isfile(p := os.path.join(folder, n)) and not os.path.islink(p)]
    return out


def _json_paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k in sorted(value, key=str)[:50]:
            yield from _json_paths(value[k], prefix + (k,))
    elif isinstance(value, list):
        for i in range(min(len(value), 5)):
            yield from _json_paths(value[i], prefix + (i,))


def _set(value, path, new):
    if not path:
        return new
    value[path[0]] = _set(value[path[0]], path[1:], new)
    return value


def corrupt(root: str, rng: random.Random, outside: str) -> str:
    """One random corruption of a file under ``root``; returns what was done (for the message)."""
    candidates = _files(root)
    if not candidates:
        return "nothing left to corrupt"
    path = rng.choice(candidates)
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    op = rng.choice(["truncate", "flip", "append", "delete", "fifo", "dir", "symlink_out", "device",
                     "dangling", "json", "json", "json"])
    if op == "json":
        try:
            with open(path, encoding="utf-8") as f:
                value = json.load(f)
        except (ValueError, UnicodeDecodeError):
            op = "flip"
        else:
            key = rng.choice(list(_json_paths(value)))
            new = rng.choice(ODD_VALUES)
            value = _set(value, key, new)
            with open(path, "w", encoding="utf-8") as f:
                json.dump(value, f)
            return f"json {path}: {list(key)} = {new!r}"
    if op == "truncate":
        os.truncate(path, rng.randrange(size + 1) if size else 0)
    elif op == "flip":
        if size:
            with open(path, "r+b") as f:
                for _ in range(rng.randint(1, 8)):
                    where = rng.randrange(size)
                    f.seek(where)
                    byte = f.read(1)[0]
                    f.seek(where)
                    f.write(bytes([byte ^ (1 << rng.randrange(8))]))
    elif op == "append":
        with open(path, "ab") as f:
            f.write(rng.randbytes(rng.randint(1, 64)))
    else:
        os.remove(path)
        if op == "fifo":
            os.mkfifo(path)
        elif op == "dir":
            os.mkdir(path)
        elif op == "symlink_out":
            os.symlink(outside, path)
        elif op == "device":
            os.symlink("/dev/zero", path)
        elif op == "dangling":
            os.symlink(os.path.join(root, "no-such-file"), path)
    return f"{op} {path}"


def _run_cases(tmp_path, source: str, load, seed_base: int, outside: str, cases: int) -> dict[str, int]:
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(cases):
        rng = random.Random(seed_base + case)
        root = str(tmp_path / f"case{case}")
        shutil.copytree(source, root, symlinks=True, ignore=shutil.ignore_patterns("reference.*"))
        done = [corrupt(root, rng, outside) for _ in range(rng.choice([1, 1, 2]))]
        try:
            no_hang(load, root, timeout=20)
            outcomes["loaded"] += 1
        except TfmError as e:
            assert "Traceback" not in str(e), (case, done)
            outcomes["refused"] += 1
        except BaseException as e:  # noqa: BLE001 - the point of the test
            raise AssertionError(f"case {seed_base + case} ({'; '.join(done)}): "
                                 f"{type(e).__name__}: {e}") from e
        shutil.rmtree(root)
    return outcomes


@pytest.fixture
def outside(tmp_path):
    path = tmp_path / "outside.json"
    path.write_text('{"secret": 1}\n')
    yield str(path)
    assert path.read_text() == '{"secret": 1}\n'


def _load_hf(directory):
    interop.read_model_config(directory)
    interop.load_model(directory)
    return interop.load_tokenizer(directory)


@pytest.mark.parametrize("family, seed", [("gpt2", 10_000), ("marian", 20_000)])
def test_random_corruptions_of_a_model_directory(tmp_path, outside, family, seed):
    outcomes = _run_cases(tmp_path, os.path.join(FIXTURES, family), _load_hf, seed, outside, HF_CASES)
    assert outcomes["refused"] > HF_CASES // 2 and outcomes["loaded"] > 0, outcomes


@pytest.mark.parametrize("which, seed", [("char_workdir", 30_000), ("bpe_workdir", 40_000)])
def test_random_corruptions_of_a_workdir(tmp_path, outside, request, which, seed):
    outcomes = _run_cases(tmp_path, request.getfixturevalue(which), inference.load, seed, outside,
                          WORKDIR_CASES)
    assert outcomes["refused"] > WORKDIR_CASES // 3 and outcomes["loaded"] > 0, outcomes
