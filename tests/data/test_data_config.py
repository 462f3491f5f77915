"""DataConfig: defaults, validation naming the field, dict round trip, the numbers task's spec
(``data.numbers``) and the flat names (``numbers_max``) of config files written by an older tfm."""

import json

import pytest

from tfm.config import Arch
from tfm.data.config import FLAT_NAMES, DataConfig, Dataset, Overlong, Task, TokenizerKind
from tfm.data.numbers import NumbersSpec


def test_defaults_are_the_numbers_task():
    cfg = DataConfig()
    assert cfg.dataset is Dataset.NUMBERS and cfg.task is Task.TRANSLATION
    assert cfg.arch is Arch.ENCODER_DECODER
    assert cfg.tokenizer is TokenizerKind.SENTENCEPIECE
    assert cfg.numbers == NumbersSpec() and cfg.numbers.max == 999_999


def test_round_trip_and_strings():
    cfg = DataConfig(dataset="lm1b", tokenizer="sentencepiece", overlong="drop", pack=True)
    assert cfg.dataset is Dataset.LM1B and cfg.overlong is Overlong.DROP
    d = cfg.to_dict()
    assert d["dataset"] == "lm1b" and isinstance(d["overlong"], str)
    assert DataConfig.from_dict(d) == cfg


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"dataset": "imagenet"}, "dataset"),
        ({"tokenizer": "bpe"}, "tokenizer"),
        ({"max_len": 0}, "max_len"),
        ({"batch_size": -2}, "batch_size"),
        ({"vocab_size": 3}, "vocab_size"),
        ({"dataset": "text_file"}, "text_file"),
        ({"text_file": "x.txt"}, "text_file"),
        ({"tokens_per_batch": 4096, "dataset": "lm1b"}, "tokens_per_batch"),
        ({"pack": True, "dataset": "sst2"}, "pack"),
        ({"valid_fraction": 1.0}, "valid_fraction"),
    ],
)
def test_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"DataConfig.{field}"):
        DataConfig(**kwargs)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="'tiny_shakespeare'.*'sst2'"):
        DataConfig(dataset="nope")


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown field"):
        DataConfig.from_dict({"batchsize": 3})


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"max": 1_000_000}, "max"),
        ({"max": True}, "max"),
        ({"max": 100, "valid_size": 50, "test_size": 51}, "valid_size"),
        ({"test_size": 0}, "test_size"),
        ({"split_seed": -1}, "split_seed"),
        ({"held_out_fraction": 0.6}, "held_out_fraction"),
        ({"sampling_temperature": 0.5}, "sampling_temperature"),
        ({"sampling_temperature": float("inf")}, "sampling_temperature"),
    ],
)
def test_numbers_spec_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^data\.numbers\.{field}="):
        NumbersSpec(**kwargs)
    with pytest.raises(ValueError, match=rf"^data\.numbers\.{field}="):  # from a config file
        DataConfig.from_dict({"numbers": kwargs})


def test_numbers_spec_round_trips_as_a_nested_dict():
    cfg = DataConfig(numbers=NumbersSpec(max=99_999, valid_size=32, sampling_temperature=1.0))
    d = json.loads(json.dumps(cfg.to_dict()))  # what config.json holds
    assert d["numbers"] == {"max": 99_999, "valid_size": 32, "test_size": 2000, "split_seed": 0,
                            "held_out_fraction": 0.1, "sampling_temperature": 1.0}
    assert DataConfig.from_dict(d) == cfg
    assert DataConfig(numbers={"max": 99_999, "valid_size": 32, "sampling_temperature": 1.0}) == cfg
    with pytest.raises(ValueError, match=r"data\.numbers: unknown field\(s\) \['maxx'\]"):
        DataConfig.from_dict({"numbers": {"maxx": 3}})
    with pytest.raises(ValueError, match="DataConfig.numbers=5: must be a NumbersSpec"):
        DataConfig(numbers=5)


def test_flat_names_of_an_older_config_are_read_into_the_spec():
    old = {"dataset": "numbers", "numbers_max": 999, "numbers_valid_size": 32, "numbers_test_size": 30,
           "numbers_split_seed": 7, "numbers_held_out_fraction": 0.2, "numbers_sampling_temperature": 1.0}
    assert sorted(FLAT_NAMES) == sorted(k for k in old if k.startswith("numbers_"))
    assert DataConfig.from_dict(old).numbers == NumbersSpec(
        max=999, valid_size=32, test_size=30, split_seed=7, held_out_fraction=0.2, sampling_temperature=1.0)
    assert DataConfig.from_dict({"numbers_max": 99_999}).numbers == NumbersSpec(max=99_999)


def test_a_field_given_flat_and_nested_is_one_line_naming_both():
    with pytest.raises(ValueError) as e:
        DataConfig.from_dict({"numbers_max": 999, "numbers": {"max": 999}})
    assert "data.numbers_max and data.numbers.max" in str(e.value) and "\n" not in str(e.value)
