"""The model-family contract (tfm.interop.convert): every ModelConfig field is, for every
registered family, exactly one of mapped, pinned or execution-only; export checks the pins and
picks the family (by model_type, or the first of the architecture that fits)."""

from __future__ import annotations

import dataclasses
import types

import pytest

import tfm
from tfm.config import ModelConfig
from tfm import interop
from tfm.interop import HFFormatError, convert

FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}


@pytest.mark.parametrize("family", interop.FAMILY_MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_field_is_mapped_pinned_or_execution_only(family):
    groups = {"MAPPED": set(family.MAPPED), "PINNED": set(family.PINNED), "EXECUTION": set(convert.EXECUTION_FIELDS)}
    for field in sorted(FIELDS):
        homes = [name for name, fields in groups.items() if field in fields]
        assert len(homes) == 1, f"{family.__name__}: ModelConfig.{field} is in {homes or 'none'} of MAPPED/PINNED/EXECUTION"
    for name, fields in groups.items():
        assert fields <= FIELDS, f"{family.__name__}.{name} names unknown fields {sorted(fields - FIELDS)}"
    assert family.PINNED["arch"] is family.ARCH
    for attr in ("MODEL_TYPES", "IGNORE", "config_from_hf", "read_params", "load_tokenizer", "config_to_hf",
                 "params_to_hf"):
        assert hasattr(family, attr), f"{family.__name__} lacks {attr}"
    # the pins are valid values of a ModelConfig of this architecture
    ModelConfig(**{k: v for k, v in family.PINNED.items()}, vocab_size=8)


def test_registry_maps_every_model_type_to_its_module():
    for module in interop.FAMILY_MODULES:
        for model_type in module.MODEL_TYPES:
            assert interop.FAMILIES[model_type] is module
    assert len(interop.FAMILIES) == sum(len(m.MODEL_TYPES) for m in interop.FAMILY_MODULES)


def test_export_problems_names_each_pinned_field_and_the_checks():
    fake = types.SimpleNamespace(PINNED={"norm": tfm.config.NormPosition.PRE, "use_bias": False},
                                 export_checks=lambda cfg: ["cross-field reason"])
    cfg = tfm.get_preset("tiny_encdec")  # post-LN, biases
    problems = convert.export_problems(fake, cfg)
    assert problems == ["ModelConfig.norm='pre' is needed (it is 'post')",
                        "ModelConfig.use_bias=False is needed (it is True)", "cross-field reason"]
    assert convert.export_problems(types.SimpleNamespace(PINNED={}), cfg) == []


def test_export_family_by_model_type_and_by_architecture(monkeypatch):
    gpt2_like = tfm.get_preset("tiny_lm", positional="learned", activation="gelu", scale_embeddings=False)
    assert interop.export_family(gpt2_like)[0] == "gpt2"
    assert interop.export_family(gpt2_like, "gpt2")[0] == "gpt2"
    with pytest.raises(HFFormatError, match=r"as marian: ModelConfig.arch='encoder_decoder' is needed"):
        interop.export_family(gpt2_like, "marian")
    with pytest.raises(HFFormatError, match=r"model_type='bogus' cannot be exported"):
        interop.export_family(gpt2_like, "bogus")
    rope_lm = gpt2_like.replace(positional="rope")  # fits no decoder family: every candidate says why
    with pytest.raises(HFFormatError, match=r"as gpt2: ModelConfig.positional='learned' is needed"):
        interop.export_family(rope_lm)
    with pytest.raises(HFFormatError, match=r"as bert: ModelConfig.positional='learned' is needed"):
        interop.export_family(tfm.get_preset("tiny_classifier"))
    monkeypatch.setattr(interop, "FAMILY_MODULES", tuple(m for m in interop.FAMILY_MODULES if m.MODEL_TYPES != ("bert",)))
    with pytest.raises(HFFormatError, match="no Hugging Face family"):
        interop.export_family(tfm.get_preset("tiny_classifier"))


def test_pretrained_remembers_its_model_type_and_export_keeps_it(tmp_path):
    from interop_helpers import FIXTURES

    pre = interop.from_pretrained(FIXTURES / "gpt2")
    assert pre.model_type == "gpt2"
    with pytest.raises(HFFormatError, match="cannot be exported as marian"):
        interop.save_pretrained(pre, tmp_path / "x", model_type="marian")
    assert not (tmp_path / "x").exists()
    interop.save_pretrained(pre, tmp_path / "y")
    assert interop.read_config(tmp_path / "y")["model_type"] == "gpt2"
