"""Issue 22: damaged, hand-edited and crafted model directories and workdirs, as loaded for
inference (``tfm.interop``, ``tfm.inference.load``) and by the commands: one line of tfm's own
error naming the file (or the config.json key), never a traceback, never a hang, never a read or
write outside the given folder. The ids in the comments are the rows of docs/FAULTS.md.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct

import pytest
from test_file_safety import no_hang, one_line, outside  # noqa: F401 - outside is a fixture

from tfm import interop
from tfm.files import TfmError
from tfm.interop import HFFormatError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "hf")


def copy_fixture(tmp_path, family) -> str:
    dst = tmp_path / family
    shutil.copytree(os.path.join(FIXTURES, family), dst,
                    ignore=shutil.ignore_patterns("reference.*"))
    return str(dst)


def edit_config(directory, **changes):
    path = os.path.join(directory, "config.json")
    with open(path) as f:
        config = json.load(f)
    config.update(changes)
    with open(path, "w") as f:
        json.dump(config, f)


# ====================================================================== HF config.json
@pytest.mark.parametrize("family, changes, message", [
    ("gpt2", {"n_head": 5}, "config.json: n_embd=32: must be divisible by n_head=5"),  # H1
    ("gpt2", {"n_positions": 0}, "config.json: n_positions=0 must be a positive integer"),  # H2
    ("gpt2", {"n_layer": -1}, "config.json: n_layer=-1 must be a positive integer"),  # H3
    ("gpt2", {"n_embd": "32"}, "config.json: n_embd='32' must be a positive integer"),  # H4
    ("gpt2", {"vocab_size": 1e12}, "config.json: vocab_size=1000000000000.0 must be a positive integer"),  # H5
    ("gpt2", {"n_layer": True}, "config.json: n_layer=True must be a positive integer"),  # H6
    ("gpt2", {"resid_pdrop": "0.1"}, "config.json: resid_pdrop='0.1' must be a number"),  # H7
    ("gpt2", {"resid_pdrop": 1.5}, "config.json: resid_pdrop=1.5: must be in [0, 1)"),  # H8
    ("gpt2", {"layer_norm_epsilon": -1}, "config.json: layer_norm_epsilon=-1"),  # H9
    ("gpt2", {"n_inner": 2**40}, "config.json: n_inner=1099511627776 must be a positive integer"),  # H10
    ("gpt2", {"model_type": ["gpt2"]}, "model_type=['gpt2'] is not supported"),  # H11
    ("gpt2", {"activation_function": 5}, "activation_function=5 is not supported"),  # H12
    ("marian", {"d_model": 0}, "config.json: d_model=0 must be a positive integer"),  # H13
    ("marian", {"encoder_attention_heads": 3, "decoder_attention_heads": 3},
     "config.json: d_model=32: must be divisible by encoder_attention_heads=3"),  # H14
    ("marian", {"decoder_layers": "2"}, "config.json: decoder_layers='2' must be a positive integer"),  # H15
    ("marian", {"max_position_embeddings": -5}, "max_position_embeddings=-5 must be a positive integer"),  # H16
])
def test_config_values_that_do_not_fit_name_the_config_json_key(tmp_path, family, changes, message):
    directory = copy_fixture(tmp_path, family)
    edit_config(directory, **changes)
    for load in (interop.read_model_config, interop.load_model):
        with pytest.raises(HFFormatError) as e:
            load(directory)
        assert message in one_line(e.value)


def test_config_json_that_is_not_utf8_json_an_object_or_a_file(tmp_path):  # H17-H21
    directory = copy_fixture(tmp_path, "gpt2")
    config = os.path.join(directory, "config.json")
    for content, message in ((b'{"n_embd": "\xe9"}', "is not UTF-8"), (b"{", "is not valid JSON"),
                             (b"[1]", "does not hold a JSON object"), (b"", "is not valid JSON")):
        with open(config, "wb") as f:
            f.write(content)
        with pytest.raises(HFFormatError, match=message):
            interop.load_model(directory)
    os.remove(config)
    os.mkfifo(config)
    with pytest.raises(HFFormatError, match="config.json is a FIFO"):
        no_hang(interop.from_pretrained, directory)


# ====================================================================== safetensors files
def _rewrite_header(path, header: dict | None = None, length: int | None = None, keep_data=True):
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        old = json.loads(f.read(size))
        data = f.read()
    raw = json.dumps(old if header is None else header(old)).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw) if length is None else length) + raw + (data if keep_data else b""))


def _first_tensor(header):
    return next(k for k in header if k != "__metadata__")


@pytest.mark.parametrize("damage, message", [
    (lambda p: os.truncate(p, os.path.getsize(p) - 100), "the file is truncated"),  # S1 (issue 22)
    (lambda p: os.truncate(p, 5), "shorter than its 8-byte header length"),  # S2
    (lambda p: os.truncate(p, 0), "shorter than its 8-byte header length"),  # S3
    (lambda p: _rewrite_header(p, length=2**62), "header length 4,611,686,018,427,387,904 exceeds"),  # S4 (issue 22)
    (lambda p: _rewrite_header(p, length=20), "is not a safetensors file: JSONDecodeError"),  # S5
    (lambda p: _rewrite_header(p, header=lambda h: [1, 2]), "header is not a JSON object"),  # S6
    (lambda p: _rewrite_header(p, header=lambda h: {**h, _first_tensor(h): {**h[_first_tensor(h)], "data_offsets": [0, 2**50]}}),
     "the file is truncated"),  # S7
    (lambda p: _rewrite_header(p, header=lambda h: {**h, _first_tensor(h): {**h[_first_tensor(h)], "data_offsets": [9, 3]}}),
     "are not \\[start, end\\]"),  # S8
    (lambda p: _rewrite_header(p, header=lambda h: {**h, _first_tensor(h): {**h[_first_tensor(h)], "shape": [-1, 4]}}),
     "is not a list of sizes"),  # S9
    (lambda p: _rewrite_header(p, header=lambda h: {**h, _first_tensor(h): {**h[_first_tensor(h)], "shape": "big"}}),
     "is not a list of sizes"),  # S10
    (lambda p: _rewrite_header(p, header=lambda h: {**h, _first_tensor(h): {**h[_first_tensor(h)], "dtype": "F8_E4M3"}}),
     "dtype F8_E4M3, which tfm does not read"),  # S11
    (lambda p: _rewrite_header(p, header=lambda h: {**h, _first_tensor(h): 7}), "header entry is not an object"),  # S12
    (lambda p: _rewrite_header(p, header=lambda h: {**h, _first_tensor(h): {**h[_first_tensor(h)], "dtype": None}}),
     "no dtype"),  # S13
    (lambda p: (os.remove(p), os.mkfifo(p)), "model.safetensors is a FIFO"),  # S14
    (lambda p: (os.remove(p), os.mkdir(p)), "model.safetensors is a directory"),  # S15
    (lambda p: (os.remove(p), os.symlink("/dev/zero", p)), "model.safetensors is a character device"),  # S16
    (lambda p: (os.remove(p), os.symlink("nowhere", p)), "model.safetensors cannot be read: No such file"),  # S17
])
def test_damaged_safetensors_are_one_line_naming_the_file(tmp_path, damage, message):
    directory = copy_fixture(tmp_path, "gpt2")
    damage(os.path.join(directory, "model.safetensors"))
    with pytest.raises(HFFormatError) as e:
        no_hang(interop.load_model, directory)
    assert "model.safetensors" in one_line(e.value)
    assert e.match(message)


def _sharded(tmp_path):
    """The gpt2 fixture as one shard + index (what save_pretrained writes with a size limit)."""
    directory = copy_fixture(tmp_path, "gpt2")
    os.rename(os.path.join(directory, "model.safetensors"), os.path.join(directory, "shard-1.safetensors"))
    from tfm.interop.hf_io import _header

    header, _ = _header(os.path.join(directory, "shard-1.safetensors"))
    index = {"metadata": {}, "weight_map": {name: "shard-1.safetensors" for name in header}}
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f)
    return directory, index


def _set_shard(directory, index, shard):
    index = {**index, "weight_map": {k: shard for k in index["weight_map"]}}
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f)


def test_shard_maps_never_lead_out_of_the_model_directory(tmp_path, outside):  # I1-I7
    directory, index = _sharded(tmp_path)
    interop.load_model(directory)  # the healthy sharded copy loads
    shutil.copy(os.path.join(directory, "shard-1.safetensors"), tmp_path / "elsewhere.safetensors")
    os.symlink(tmp_path / "elsewhere.safetensors", os.path.join(directory, "link.safetensors"))
    for shard, message in (("../elsewhere.safetensors", "leads out of"),
                           (str(tmp_path / "elsewhere.safetensors"), "an absolute path"),
                           ("link.safetensors", "outside"),
                           ("missing.safetensors", "missing.safetensors is missing"),
                           ("", "not a file name")):
        _set_shard(directory, index, shard)
        with pytest.raises(HFFormatError, match=message) as e:
            interop.load_model(directory)
        one_line(e.value)
    for weight_map in ([1, 2], {"wte.weight": 5}, None):
        with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
            json.dump({"weight_map": weight_map}, f)
        with pytest.raises(HFFormatError, match="weight_map must map tensor names to file names"):
            interop.load_model(directory)


def test_the_hub_cache_layout_of_symlinks_into_blobs_still_loads(tmp_path):  # I8
    repo = tmp_path / "models--tiny--gpt2"
    blobs, snapshot = repo / "blobs", repo / "snapshots" / "abc123"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    source, index = _sharded(tmp_path)
    for name in os.listdir(source):
        shutil.move(os.path.join(source, name), blobs / f"blob-{name}")
        os.symlink(f"../../blobs/blob-{name}", snapshot / name)
    cfg, params = interop.load_model(snapshot)
    assert cfg.d_model == 32


# ====================================================================== HF tokenizer files
@pytest.mark.parametrize("family, name, content, message", [
    ("gpt2", "tokenizer.json", b"{not json", "tokenizer files cannot be used"),  # T1 (issue 22)
    ("gpt2", "tokenizer.json", b"\xff\xfe", "tokenizer files cannot be used"),  # T2
    ("gpt2", "tokenizer.json", None, "tokenizer.json is a FIFO"),  # T3
    ("marian", "vocab.json", b"[1, 2]", "vocab.json must map pieces to ids"),  # T4
    ("marian", "vocab.json", b'{"</s>": "zero"}', "vocab.json must map pieces to ids"),  # T5
    ("marian", "source.spm", b"not a sentencepiece model", "tokenizer files cannot be used"),  # T6
    ("marian", "source.spm", None, "source.spm is a FIFO"),  # T7
])
def test_corrupt_tokenizer_files_are_one_line(tmp_path, family, name, content, message):
    directory = copy_fixture(tmp_path, family)
    path = os.path.join(directory, name)
    os.remove(path)
    if content is None:
        os.mkfifo(path)
    else:
        with open(path, "wb") as f:
            f.write(content)
    with pytest.raises(HFFormatError) as e:
        no_hang(interop.from_pretrained, directory)
    assert message in one_line(e.value)


def test_corrupt_merges_txt_without_tokenizer_json(tmp_path):  # T8 (issue 22), T9
    directory = copy_fixture(tmp_path, "gpt2")
    os.remove(os.path.join(directory, "tokenizer.json"))
    interop.load_tokenizer(directory)  # vocab.json + merges.txt alone load
    with open(os.path.join(directory, "merges.txt"), "w") as f:
        f.write("#version: 0.2\na b c\n")
    with pytest.raises(HFFormatError, match="tokenizer files cannot be used") as e:
        interop.load_tokenizer(directory)
    one_line(e.value)
    edit_config(directory, eos_token_id="300")
    with pytest.raises(HFFormatError, match="eos_id '300' is not a token id"):
        interop.load_tokenizer(directory)


# ====================================================================== export
def test_export_onto_a_full_or_read_only_file_system_is_one_line(tmp_path, monkeypatch, capsys):  # X1, X2 (issue 22)
    from tfm.cli import export_main

    source = copy_fixture(tmp_path, "gpt2")
    real_replace = os.replace
    for code, text in ((errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system")):
        out = tmp_path / f"out-{code}"

        def failing_replace(src, dst, code=code):
            if str(out) in str(dst):
                raise OSError(code, os.strerror(code))
            return real_replace(src, dst)

        # As root, chmod 0555 does not stop writes: the OS error comes from the write layer.
        monkeypatch.setattr(os, "replace", failing_replace)
        assert export_main(["--pretrained", source, "--out", str(out)]) == 2
        monkeypatch.undo()
        err = capsys.readouterr().err
        assert err.startswith(f"error: cannot write {out}/model.safetensors: {text}") and err.count("\n") == 1
        assert os.listdir(out) == []  # no temporary file left


def test_export_into_a_file_or_a_non_empty_directory_is_refused(tmp_path, capsys):  # X3, X4
    from tfm.cli import export_main

    source = copy_fixture(tmp_path, "gpt2")
    (tmp_path / "file").write_text("x")
    assert export_main(["--pretrained", source, "--out", str(tmp_path / "file")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert export_main(["--pretrained", source, "--out", source]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "x"


def test_export_and_reimport_still_round_trip(tmp_path):  # X5
    import numpy as np

    source = copy_fixture(tmp_path, "gpt2")
    model = interop.from_pretrained(source)
    written = interop.save_pretrained(model, tmp_path / "out", max_shard_bytes=40_000)
    assert "model.safetensors.index.json" in written and not [n for n in os.listdir(tmp_path / "out") if n.endswith(".tmp")]
    cfg, params = interop.load_model(tmp_path / "out")
    a, b = interop.load_model(source)[1], params
    assert all(np.array_equal(x, y) for x, y in zip(__import__("jax").tree.leaves(a), __import__("jax").tree.leaves(b)))
    assert cfg.d_model == 32
    assert isinstance(HFFormatError("x"), TfmError)


# ====================================================================== training workdirs, as inference loads them
def _tiny_workdir(path, tokenizer, *, arch="tiny_lm"):
    """A workdir as the training loop writes it (config.json, tokenizer/, one orbax checkpoint)
    around a tiny random model, through tfm's own writers."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from tfm.config import get_preset
    from tfm.data.config import DataConfig
    from tfm.models import param_shapes
    from tfm.training import workdir_guard as workdir_lib
    from tfm.training.checkpointer import Checkpointer
    from tfm.training.config import RunConfig, TrainConfig
    from tfm.training.state import TrainState

    cfg = get_preset(arch, vocab_size=max(tokenizer.vocab_size, 8), max_len=16, num_layers=1, d_model=16,
                     num_heads=2, d_ff=32)
    data = DataConfig(dataset="tiny_shakespeare", tokenizer="char", max_len=16, max_target_len=16)
    os.makedirs(path, exist_ok=True)
    workdir_lib.write_config(str(path), RunConfig(model=cfg, data=data, train=TrainConfig(warmup_steps=10)))
    tokenizer.save(os.path.join(path, "tokenizer"))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(0.1 * rng.standard_normal(s.shape), s.dtype), param_shapes(cfg))
    ckpt = Checkpointer(os.path.join(path, "checkpoints"), async_save=False)
    ckpt.save(1, TrainState(step=jnp.int32(1), params=params, opt_state=optax.sgd(1e-3).init(params)),
              {"step": 1, "data": {}, "rng": [0, 0]})
    ckpt.close()
    return str(path)


@pytest.fixture(scope="session")
def char_workdir(tmp_path_factory):
    from tfm.data.tokenizers import CharTokenizer

    return _tiny_workdir(tmp_path_factory.mktemp("wd") / "char", CharTokenizer("abcdefgh \n"))


@pytest.fixture(scope="session")
def bpe_workdir(tmp_path_factory):
    from tfm.data.hf_tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer.from_hf_dir(os.path.join(FIXTURES, "gpt2"))
    return _tiny_workdir(tmp_path_factory.mktemp("wd") / "bpe", tok)


def _copy(workdir, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(workdir, dst, symlinks=True)
    return str(dst)


def _edit_json(path, edit):
    with open(path) as f:
        value = json.load(f)
    value = edit(value)
    with open(path, "w") as f:
        json.dump(value, f)


def test_a_tokenizer_file_list_never_leads_out_of_the_workdir(bpe_workdir, tmp_path, outside, capsys):  # W15-W18 (issue 22)
    from tfm import inference
    from tfm.cli import export_main

    run = _copy(bpe_workdir, tmp_path)
    assert inference.load(run).tokenizer.kind == "byte_level_bpe"
    payload = tmp_path / "payload.txt"
    payload.write_text("attacker")
    meta = os.path.join(run, "tokenizer", "tokenizer.json")
    os.symlink(outside, os.path.join(run, "tokenizer", "link.txt"))
    for name, message in (("../../payload.txt", "leads out of"), (str(outside), "an absolute path"),
                          ("link.txt", "outside")):
        _edit_json(meta, lambda m, name=name: {**m, "files": m["files"] + [name]})
        with pytest.raises(inference.WorkdirError, match=message):
            inference.load(run)
        out = tmp_path / "export" / "a" / "b"
        assert export_main(["--workdir", run, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
        assert not (tmp_path / "export" / "payload.txt").exists() and not out.exists()
        _edit_json(meta, lambda m, name=name: {**m, "files": [f for f in m["files"] if f != name]})


@pytest.mark.parametrize("file, edit, message", [
    ("tokenizer/tokenizer.json", lambda m: {k: v for k, v in m.items() if k != "chars"}, "'chars' must be a list"),  # W19 (issue 22)
    ("tokenizer/tokenizer.json", lambda m: {**m, "chars": "abc"}, "'chars' must be a list"),  # W20
    ("tokenizer/tokenizer.json", lambda m: {**m, "chars": ["ab"]}, "single characters"),  # W21
    ("tokenizer/tokenizer.json", lambda m: {**m, "vocab_size": 1e12}, "says vocab_size=1000000000000.0"),  # W22 (issue 22)
    ("tokenizer/tokenizer.json", lambda m: {**m, "kind": ["char"]}, "unknown kind"),  # W23
    ("tokenizer/tokenizer.json", lambda m: {**m, "known_words": 5}, "'known_words' must be a list"),  # W24
    ("tokenizer/tokenizer.json", lambda m: [m], "does not hold a JSON object"),  # W25
    ("tokenizer/tokenizer.json", lambda m: {**m, "kind": "sentencepiece", "model_file": "/etc/passwd"},
     "an absolute path"),  # W26
    ("tokenizer/tokenizer.json", lambda m: {**m, "kind": "sentencepiece", "model_file": "../config.json"},
     "leads out of"),  # W27
    ("tokenizer/tokenizer.json", lambda m: {**m, "kind": "sentencepiece"}, "spm.model is missing"),  # W28
    ("config.json", lambda c: {**c, "model": {**c["model"], "d_model": "abc"}},
     "('model' section): ModelConfig.d_model='abc': must be a positive integer"),  # W29 (issue 22)
    ("config.json", lambda c: {**c, "model": {**c["model"], "vocab_size": 1e12}},
     "ModelConfig.vocab_size=1000000000000.0"),  # W30 (issue 22)
    ("config.json", lambda c: {**c, "model": list(c["model"].items())}, "the 'model' section must be a JSON object"),  # W31 (issue 22)
    ("config.json", lambda c: {**c, "model": {**c["model"], "arch": "gpt"}}, "ModelConfig.arch"),  # W32
    ("config.json", lambda c: {**c, "model": {**c["model"], "colour": 1}}, "unknown field(s) ['colour']"),  # W33
    ("config.json", lambda c: {**c, "data": "x"}, "the 'data' section must be a JSON object"),  # W34
    ("config.json", lambda c: {**c, "data": {**c["data"], "max_len": -1}}, "('data' section)"),  # W35
    ("config.json", lambda c: {k: v for k, v in c.items() if k != "model"}, "has no 'model' section"),  # W36
    ("config.json", lambda c: 5, "does not hold a JSON object"),  # W37
])
def test_hand_edited_workdir_files_are_one_line(char_workdir, tmp_path, file, edit, message):
    from tfm import inference

    run = _copy(char_workdir, tmp_path)
    _edit_json(os.path.join(run, file), edit)
    with pytest.raises(inference.WorkdirError) as e:
        inference.load(run)
    assert message in one_line(e.value)


@pytest.mark.parametrize("file, damage, message", [
    ("config.json", lambda p: (os.remove(p), os.mkfifo(p)), "config.json is a FIFO"),  # W38 (issue 22)
    ("config.json", lambda p: (os.remove(p), os.mkdir(p)), "config.json is a directory"),  # W39
    ("config.json", lambda p: open(p, "wb").write(b'{"model": "\xe9"}'), "is not UTF-8"),  # W40
    ("config.json", lambda p: os.truncate(p, 10), "is not valid JSON"),  # W41
    ("config.json", lambda p: (os.remove(p), os.symlink("/dev/zero", p)), "character device"),  # W42
    ("tokenizer/tokenizer.json", lambda p: (os.remove(p), os.mkfifo(p)), "tokenizer.json is a FIFO"),  # W43
    ("tokenizer/tokenizer.json", lambda p: os.truncate(p, 3), "is not valid JSON"),  # W44
    ("tokenizer/tokenizer.json", lambda p: os.remove(p), "tokenizer.json is missing"),  # W45
])
def test_damaged_or_replaced_workdir_files_are_one_line_and_never_block(char_workdir, tmp_path, file, damage, message):
    from tfm import inference

    run = _copy(char_workdir, tmp_path)
    damage(os.path.join(run, file))
    with pytest.raises(inference.WorkdirError) as e:
        no_hang(inference.load, run)
    assert message in one_line(e.value)


def test_the_commands_print_one_line_for_a_fifo_config(char_workdir, tmp_path, capsys):  # W46
    from tfm.cli import generate_main

    run = _copy(char_workdir, tmp_path)
    os.remove(os.path.join(run, "config.json"))
    os.mkfifo(os.path.join(run, "config.json"))
    assert no_hang(generate_main, ["--workdir", run, "--max_new_tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "config.json is a FIFO" in err and err.count("\n") == 1
