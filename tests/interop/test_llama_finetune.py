"""Fine-tuning an imported Llama-family model (train.init_from, configs/llama_shakespeare.py)
with the tiny llama fixture on a few KB of text: the run starts from the imported parameters
and tokenizer, exports as a Llama directory, and an interrupted run resumes from its workdir
alone to the same parameters."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import shutil

import numpy as np
import pytest

from tfm import inference, interop
from tfm.interop.convert import flat_paths
from tfm.training.loop import run

from interop_helpers import FIXTURES
from test_finetune import text_file  # noqa: F401  (the module fixture: a few KB of Shakespeare)


def _config(text_file, init_from, num_steps=4):
    spec = importlib.util.spec_from_file_location(
        "llama_shakespeare", pathlib.Path(__file__).resolve().parents[2] / "configs" / "llama_shakespeare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.data.text_file = str(text_file)
    c.data.max_len = c.data.max_target_len = 16
    c.data.batch_size = c.data.eval_batch_size = 4
    c.data.max_eval_examples = 8
    c.train.init_from = str(init_from)
    c.train.num_steps = num_steps
    c.train.learning_rate = 1e-3
    c.train.checkpoint_every_steps = 2
    c.train.eval_every_steps = 0
    c.train.eval_at_end = False
    c.train.strategy = "single"
    c.train.async_checkpointing = False
    c.train.progress_bar = False
    return c


@pytest.mark.slow  # ~55 s on 2 contended cores: three short runs
def test_llama_finetune_exports_and_resumes_from_its_workdir(text_file, tmp_path):  # noqa: F811
    source = tmp_path / "llama_copy"
    shutil.copytree(FIXTURES / "llama", source)
    _, imported = interop.load_model(source)
    full = tmp_path / "full"
    assert run(_config(text_file, source), full)["step"] == 4
    assert json.loads((full / "tokenizer" / "tokenizer.json").read_text())["kind"] == "tokenizer_json"
    lm = inference.load(full)
    assert lm.config.num_kv_heads == 2 and lm.config.rope_scaling == (4.0, 1.0, 4.0, 16)
    assert lm.tokenizer.encode("ROMEO:") == interop.load_tokenizer(source).encode("ROMEO:")
    got, want = flat_paths(lm.params), flat_paths(imported)
    moved = max(float(np.abs(np.asarray(got[k]) - want[k]).max()) for k in want)
    assert 0 < moved < 6e-3  # 4 small AdamW steps from the imported parameters

    interop.save_pretrained(lm, tmp_path / "hf")
    assert interop.read_config(tmp_path / "hf")["model_type"] == "llama"
    cfg2, exported = interop.load_model(tmp_path / "hf")
    assert cfg2 == lm.config
    for k, v in flat_paths(exported).items():
        assert np.asarray(got[k]).tobytes() == v.tobytes(), k

    part = tmp_path / "part"
    assert run(_config(text_file, source, num_steps=2), part)["step"] == 2
    shutil.rmtree(source)  # a resumed run needs only its workdir
    assert run(_config(text_file, source), part)["step"] == 4
    resumed = flat_paths(inference.load(part).params)
    for k in got:
        np.testing.assert_array_equal(np.asarray(resumed[k]), np.asarray(got[k]), err_msg=k)
