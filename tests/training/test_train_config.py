"""Configuration: one source of defaults, validation naming the field, every config file loads."""

import ast
import re
import pathlib
import subprocess
import sys

import jax
import ml_collections
import pytest
from absl import flags
from conftest import REPO
from ml_collections import config_flags

from tfm.config import ModelConfig
from tfm.data.config import DataConfig
from tfm.training import parallel
from tfm.training.config import RunConfig, Strategy, TrainConfig, default_config_dict, override_error

CONFIG_FILES = sorted((REPO / "configs").glob("*.py"))
CONFIG_FILES = [p for p in CONFIG_FILES if p.name != "__init__.py"]


def load(path: pathlib.Path, *overrides: str) -> ml_collections.ConfigDict:
    """Loads a config file the way train.py does (absl + config_flags), with overrides."""
    argv = ["train.py", f"--config={path}", *overrides]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", str(path), flag_values=fv, lock_config=True,
                                    sys_argv=argv)
    fv(argv)
    return fv.config


def test_defaults_are_the_dataclass_defaults():
    run = RunConfig.from_config_dict(default_config_dict())
    assert run == RunConfig(ModelConfig(), DataConfig(), TrainConfig())
    # the paper's optimiser and schedule are the training defaults
    t = run.train
    assert (t.b1, t.b2, t.eps, t.warmup_steps, t.label_smoothing) == (0.9, 0.98, 1e-9, 4000, 0.1)
    assert t.optimizer.value == "adam" and t.schedule.value == "rsqrt"


def test_default_file_writes_no_default_itself():
    """configs/default.py assigns nothing: every default lives in its dataclass only."""
    tree = ast.parse((REPO / "configs" / "default.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign))]
    assert "default_config_dict()" in ast.unparse(tree)


# Config files that need a command-line value to validate (and the value the test gives).
REQUIRED_FLAGS = {"gpt2_shakespeare": [f"--config.train.init_from={REPO / 'tests' / 'fixtures' / 'hf' / 'gpt2'}"],
                  "llama_shakespeare": [f"--config.train.init_from={REPO / 'tests' / 'fixtures' / 'hf' / 'llama'}"],
                  "bert_classify": [f"--config.train.init_from={REPO / 'tests' / 'fixtures' / 'hf' / 'bert_base'}",
                                    "--config.data.classification_file=reviews.tsv"]}


@pytest.mark.parametrize("path", CONFIG_FILES, ids=[p.stem for p in CONFIG_FILES])
def test_every_config_file_loads_and_validates(path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    if path.stem in REQUIRED_FLAGS:
        with pytest.raises(ValueError, match="init_from|classification_file"):  # refused without them, by name
            RunConfig.from_config_dict(load(path))
    run = RunConfig.from_config_dict(load(path, *REQUIRED_FLAGS.get(path.stem, [])))
    assert run.model.arch is run.data.arch
    assert RunConfig.from_config_dict(run.to_dict()) == run  # JSON round trip (config.json)


def test_command_line_overrides_reach_the_dataclasses(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    cfg = load(REPO / "configs" / "numbers.py", "--config.train.strategy=pmap",
               "--config.model.num_decoder_layers=3", "--config.train.learning_rate=2",
               "--config.model.dtype=bfloat16", "--config.data.numbers.max=99999")
    run = RunConfig.from_config_dict(cfg)
    assert run.data.numbers.max == 99_999 and run.data.numbers.valid_size == 2000
    assert run.train.strategy is Strategy.PMAP
    assert run.model.num_decoder_layers == 3  # a None default still parses (typed placeholder)
    assert run.train.learning_rate == 2.0
    assert run.model.dtype == "bfloat16" and run.model.param_dtype == "float32"
    with pytest.raises(Exception, match="nonexistent"):
        load(REPO / "configs" / "numbers.py", "--config.train.nonexistent=1")


@pytest.mark.parametrize(
    "name, error",
    [("--config.data.numbers.max", None), ("--config.model.d_model", None),
     ("--config.train.num_steps", None),
     ("--config.data.numbers_max", "--config.data.numbers_max: renamed --config.data.numbers.max"),
     ("--config.data.numbers_sampling_temperature", "renamed --config.data.numbers.sampling_temperature"),
     ("--config.data.numbers", "data.numbers holds several settings; .*FIELD one of: max, valid_size"),
     ("--config.data.numbers.maxx", "data.numbers has no field 'maxx'; its fields are: max, valid_size"),
     ("--config.data.max_len.x", "DataConfig has no field 'max_len.x'"),
     ("--config.data.nope", "DataConfig has no field 'nope'"),
     ("--config.trian.num_steps", "unknown section 'trian'; the sections are model, data, train")],
)
def test_override_names_are_checked_in_one_line(name, error):
    if error is None:
        assert override_error(name) is None
    else:
        assert re.search(error, override_error(name)) and "\n" not in override_error(name)


def test_the_flat_numbers_flag_exits_2_naming_the_new_one():
    done = subprocess.run([sys.executable, str(REPO / "train.py"), "--config.data.numbers_max=999"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: --config.data.numbers_max: renamed "
                                   "--config.data.numbers.max")


def test_a_config_file_setting_a_flat_name_is_refused_naming_both():
    cd = default_config_dict()
    cd.data.numbers_max = 999  # a config file written for an older tfm
    with pytest.raises(ValueError, match="data.numbers_max and data.numbers.max are both given"):
        RunConfig.from_config_dict(cd)


@pytest.mark.parametrize(
    "field, value",
    [("num_steps", 0), ("grad_accum_steps", -1), ("learning_rate", 0.0), ("b2", 1.0),
     ("label_smoothing", 1.0), ("strategy", "ring"), ("mesh_fsdp", 0), ("eps", 0.0),
     ("weight_decay", 0.1), ("warmup_steps", -5), ("progress_bar", "yes"),
     ("max_steps_in_flight", 0)],
)
def test_invalid_train_fields_are_named(field, value):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}"):
        TrainConfig(**{field: value})


def test_cross_checks_name_the_fields():
    with pytest.raises(ValueError, match="arch"):
        RunConfig(ModelConfig(arch="decoder_lm"), DataConfig(), TrainConfig())
    with pytest.raises(ValueError, match="max_len"):
        RunConfig(ModelConfig(max_len=8), DataConfig(max_len=16), TrainConfig())
    with pytest.raises(ValueError, match="grad_accum_steps"):
        RunConfig(ModelConfig(), DataConfig(batch_size=12), TrainConfig(grad_accum_steps=5))
    with pytest.raises(ValueError, match="unknown section"):
        RunConfig.from_config_dict({"model": {}, "trian": {}})


def test_per_device_batch_is_derived_and_checked():
    assert jax.device_count() == 8
    p = parallel.Pmap()
    assert parallel.check_batch_sizes(p, batch_size=64, grad_accum_steps=2, eval_batch_size=16) == 4
    with pytest.raises(ValueError, match=r"DataConfig.batch_size=12 does not divide evenly over 8"):
        parallel.check_batch_sizes(p, batch_size=12, grad_accum_steps=1, eval_batch_size=16)
    with pytest.raises(ValueError, match="grad_accum_steps"):
        parallel.check_batch_sizes(p, batch_size=16, grad_accum_steps=4, eval_batch_size=16)
    with pytest.raises(ValueError, match="eval_batch_size"):
        parallel.check_batch_sizes(p, batch_size=16, grad_accum_steps=1, eval_batch_size=12)
    with pytest.raises(ValueError, match="mesh_data"):
        parallel.Sharded(mesh_data=3, mesh_fsdp=2)
