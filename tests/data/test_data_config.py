"""DataConfig: defaults, validation naming the field, dict round trip."""

import pytest

from tfm.config import Arch
from tfm.data.config import DataConfig, Dataset, Overlong, Task, TokenizerKind


def test_defaults_are_the_numbers_task():
    cfg = DataConfig()
    assert cfg.dataset is Dataset.NUMBERS and cfg.task is Task.TRANSLATION
    assert cfg.arch is Arch.ENCODER_DECODER
    assert cfg.tokenizer is TokenizerKind.SENTENCEPIECE


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
        ({"numbers_max": 1_000_000}, "numbers_max"),
        ({"numbers_max": 100, "numbers_valid_size": 50, "numbers_test_size": 51}, "numbers_valid_size"),
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
