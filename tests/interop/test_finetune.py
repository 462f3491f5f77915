"""Fine-tuning from imported weights (train.init_from): configs/gpt2_shakespeare.py with the tiny
GPT-2 fixture on a few KB of the local Shakespeare text: the run starts from the imported
parameters with the imported tokenizer, and an interrupted run resumes to the same parameters."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from tfm import inference, interop
from tfm.interop.convert import flat_paths
from tfm.training.config import RunConfig
from tfm.training.loop import run

from interop_helpers import FIXTURES

SHAKESPEARE = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "tinyshakespeare.txt"


def _config(text_file, **overrides):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gpt2_shakespeare", pathlib.Path(__file__).resolve().parents[2] / "configs" / "gpt2_shakespeare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.data.text_file = str(text_file)
    c.data.max_len = 16
    c.data.max_target_len = 16
    c.data.batch_size = 4
    c.data.eval_batch_size = 4
    c.data.max_eval_examples = 8
    c.train.init_from = str(FIXTURES / "gpt2")
    c.train.num_steps = 4
    c.train.learning_rate = 1e-3
    c.train.checkpoint_every_steps = 2
    c.train.eval_every_steps = 0
    c.train.eval_at_end = False
    c.train.strategy = "single"
    c.train.async_checkpointing = False
    c.train.progress_bar = False
    c.train.log_every_steps = 1
    for k, v in overrides.items():
        section, field = k.split(".")
        setattr(getattr(c, section), field, v)
    return c


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    if SHAKESPEARE.is_file():
        text = SHAKESPEARE.read_text(encoding="utf-8")[:4000]
    else:  # the shared data is not part of the repository
        text = "ROMEO:\nBut soft, what light through yonder window breaks?\n" * 60
    path = tmp_path_factory.mktemp("text") / "shakespeare.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_config_needs_init_from_and_pretrained_tokenizer(text_file):
    with pytest.raises(ValueError, match="init_from=DIR"):
        RunConfig.from_config_dict(_config(text_file, **{"train.init_from": ""}))
    with pytest.raises(ValueError, match="tokenizer=pretrained"):
        RunConfig.from_config_dict(_config(text_file, **{"data.tokenizer": "char"}))


def test_finetune_starts_from_the_import_and_resumes(text_file, tmp_path):
    _, imported = interop.load_model(FIXTURES / "gpt2")
    full = tmp_path / "full"
    result = run(_config(text_file), full)
    assert result["step"] == 4
    saved = json.loads((full / "config.json").read_text())
    assert saved["model"]["d_model"] == 32 and saved["data"]["tokenizer"] == "pretrained"
    assert json.loads((full / "tokenizer" / "tokenizer.json").read_text())["kind"] == "byte_level_bpe"
    lm = inference.load(full)
    assert lm.tokenizer.encode("ROMEO:") == interop.load_tokenizer(FIXTURES / "gpt2").encode("ROMEO:")
    # 4 AdamW steps of lr 1e-3 move each weight by at most ~4e-3 (+ weight decay): the run
    # started from the imported parameters, not from a fresh initialisation.
    got, want = flat_paths(lm.params), flat_paths(imported)
    assert sorted(got) == sorted(want)
    assert max(float(np.abs(np.asarray(got[k]) - want[k]).max()) for k in want) < 6e-3
    assert max(float(np.abs(np.asarray(got[k]) - want[k]).max()) for k in want) > 0

    # the fine-tuned workdir exports to Hugging Face's layout (tokenizer included), bitwise
    from tfm.cli import export_main

    assert export_main(["--workdir", str(full), "--out", str(tmp_path / "hf")]) == 0
    cfg2, exported = interop.load_model(tmp_path / "hf")
    assert cfg2 == lm.config.replace(dropout_rate=cfg2.dropout_rate, attention_dropout_rate=cfg2.attention_dropout_rate)
    for k, v in flat_paths(exported).items():
        assert np.asarray(got[k]).tobytes() == v.tobytes(), k
    assert interop.load_tokenizer(tmp_path / "hf").encode("ROMEO:") == lm.tokenizer.encode("ROMEO:")

    # interrupted after step 2, then resumed: the same parameters as the uninterrupted run
    # (from a copy of the imported directory, gone by the time the run resumes: a resumed run
    # needs only its workdir)
    import shutil

    source = tmp_path / "gpt2_copy"
    shutil.copytree(FIXTURES / "gpt2", source)
    part = tmp_path / "part"
    assert run(_config(text_file, **{"train.num_steps": 2, "train.init_from": str(source)}), part)["step"] == 2
    shutil.rmtree(source)
    assert run(_config(text_file, **{"train.init_from": str(source)}), part)["step"] == 4
    resumed = flat_paths(inference.load(part).params)
    for k in got:
        np.testing.assert_array_equal(np.asarray(resumed[k]), np.asarray(got[k]), err_msg=k)
