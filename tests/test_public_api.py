"""``import tfm``: the exact public names, each resolving, and a light import (PEP 562)."""

import inspect
import json
import pathlib
import subprocess
import sys

import pytest

import tfm

PUBLIC = {
    # configuration
    "ModelConfig", "get_preset", "Activation", "Arch", "AttentionImpl", "GradKernels",
    "NormPosition", "Pooling", "PositionalKind", "Remat", "SinusoidalLayout", "EncoderHead",
    # pure functions
    "scaled_dot_product_attention", "attention_weights", "causal_mask", "padding_mask",
    "segment_mask", "combine_masks", "sinusoidal_encoding", "apply_rope",
    # models
    "build_model", "dummy_inputs", "param_count", "EncoderDecoder", "DecoderLM",
    "EncoderClassifier", "MultiHeadAttention",
    # inference and interop
    "generate", "translate", "Pretrained", "from_pretrained", "save_pretrained",
    "classify", "fill_mask", "embed",
    # subpackages
    "training", "data", "decoding", "inference", "interop", "metrics",
}


def test_the_public_names_are_exactly_these():
    assert len(tfm.__all__) == len(set(tfm.__all__))
    assert set(tfm.__all__) == PUBLIC
    assert PUBLIC <= set(dir(tfm))


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_each_public_name_resolves_to_its_definition(name):
    value = getattr(tfm, name)
    if name in {"training", "data", "decoding", "inference", "interop", "metrics"}:
        assert inspect.ismodule(value) and value.__name__ == f"tfm.{name}"
    else:
        assert value.__name__ == name and value.__module__.startswith("tfm.")
        assert getattr(sys.modules[value.__module__], name) is value
    assert getattr(tfm, name) is value  # cached, the same object


@pytest.mark.parametrize("name", ["dense_dot_general", "EncoderBlock", "DecoderBlock",
                                  "RotaryPositions", "Block", "no_such_name"])
def test_private_or_removed_names_are_not_attributes(name):
    assert not hasattr(tfm, name)
    with pytest.raises(AttributeError, match=f"module 'tfm' has no attribute '{name}'"):
        getattr(tfm, name)


def test_a_module_by_its_own_name_still_resolves():
    from tfm.layers import Block

    assert tfm.layers.Block is Block


def _modules_after(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=pathlib.Path(__file__).resolve().parents[1])  # this tree's tfm
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_import_tfm_alone_loads_no_jax_flax_data_inference_or_tensorflow():
    loaded = _modules_after("import tfm")
    for heavy in ("jax", "flax", "numpy", "tensorflow", "tensorflow_datasets", "tfm.data",
                  "tfm.inference", "tfm.models"):
        assert heavy not in loaded, heavy
    # the first use of a model name loads the models, still not the data or inference layers
    loaded = _modules_after("import tfm\ntfm.build_model")
    assert "tfm.models" in loaded and "flax" in loaded
    assert not {"tfm.data", "tfm.inference", "tensorflow"} & loaded
