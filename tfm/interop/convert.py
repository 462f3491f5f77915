"""What the family converters share: building and checking tfm parameter trees, and the
generic export check of the family contract.

Every family module (``tfm/interop/<family>.py``) states its complete mapping: each
:class:`~tfm.config.ModelConfig` field is in exactly one of its ``MAPPED`` (carried by
``config_from_hf``/``config_to_hf``), its ``PINNED`` (must hold exactly that value) or
:data:`EXECUTION_FIELDS` (never change the function). :func:`export_problems` checks the pins,
so a new ModelConfig option cannot slip through an export (a test walks every field).

Parameter paths are written "decoder/stack/layer_0/self_attention/query/kernel" (tfm's Flax
tree, see ``tfm.models.param_shapes``). Attention projections are stored by tfm per head:
query/key/value kernels (D, N, H), biases (N, H), the output kernel (N, H, D); Hugging Face
stores them flat, input dimension first for GPT-2's Conv1D and output first for torch Linear.
"""

from __future__ import annotations

import dataclasses
import enum
import types
from typing import Any

import jax
import numpy as np

from tfm.config import ModelConfig
from tfm.interop.hf_io import HFFormatError


# Fields that never change the function a model computes: free for every family.
EXECUTION_FIELDS = frozenset({"dtype", "param_dtype", "scan_layers", "remat", "attention_impl", "grad_kernels"})


def _show(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def export_problems(family: types.ModuleType, cfg: ModelConfig) -> list[str]:
    """Why ``cfg`` cannot be written as ``family`` (empty when it can): one message per pinned
    field that does not hold the family's value, then the family's ``export_checks``."""
    problems = [
        f"ModelConfig.{field}={_show(want)!r} is needed (it is {_show(getattr(cfg, field))!r})"
        for field, want in family.PINNED.items() if getattr(cfg, field) != want
    ]
    checks = getattr(family, "export_checks", None)
    return problems + (list(checks(cfg)) if checks is not None else [])


def set_path(tree: dict, path: str, value: np.ndarray) -> None:
    node = tree
    *parents, leaf = path.split("/")
    for key in parents:
        node = node.setdefault(key, {})
    if leaf in node:
        raise ValueError(f"parameter {path} set twice")
    node[leaf] = value


def get_path(tree: Any, path: str) -> np.ndarray:
    node = tree
    for key in path.split("/"):
        node = node[key]
    return np.asarray(jax.device_get(node))


def flat_paths(tree: Any) -> dict[str, Any]:
    """{"a/b/c": leaf} of a nested dict of arrays."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out["/".join(str(getattr(k, "key", k)) for k in path)] = leaf
    return out


def check_against_model(params: dict, cfg: ModelConfig, source: str) -> None:
    """The converted tree must be exactly the model's: same paths, same shapes."""
    from tfm.models import param_shapes

    want = {k: tuple(v.shape) for k, v in flat_paths(param_shapes(cfg)).items()}
    got = {k: tuple(np.shape(v)) for k, v in flat_paths(params).items()}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    if missing or extra or wrong:
        raise HFFormatError(
            f"{source}: the converted parameters do not fit the model: missing {missing[:4]}, "
            f"unexpected {extra[:4]}, mis-shaped {[(k, got[k], want[k]) for k in wrong[:4]]}")


# ---------------------------------------------------------------------- attention layouts
def heads_in(w: np.ndarray, num_heads: int) -> np.ndarray:
    """(D, N*H) input-major projection -> tfm's (D, N, H)."""
    return w.reshape(w.shape[0], num_heads, -1)


def heads_bias(b: np.ndarray, num_heads: int) -> np.ndarray:
    """(N*H,) -> (N, H)."""
    return b.reshape(num_heads, -1)


def heads_out(w: np.ndarray, num_heads: int) -> np.ndarray:
    """(N*H, D) input-major output projection -> tfm's (N, H, D)."""
    return w.reshape(num_heads, -1, w.shape[-1])


def flat_in(w: np.ndarray) -> np.ndarray:
    """tfm's (D, N, H) -> (D, N*H)."""
    return w.reshape(w.shape[0], -1)


def flat_out(w: np.ndarray) -> np.ndarray:
    """tfm's (N, H, D) -> (N*H, D)."""
    return w.reshape(-1, w.shape[-1])


def require(condition: bool, source: str, message: str) -> None:
    """HFFormatError("{source}: {message}") unless ``condition``."""
    if not condition:
        raise HFFormatError(f"{source}: {message}")


def read_activation(hf: dict, where: str, required: tuple[str, ...], default: str, table: dict):
    """Checks that config.json has the ``required`` keys; its activation_function mapped by
    ``table`` (HFFormatError naming the file otherwise)."""
    for key in required:
        require(key in hf, where, f"has no {key!r}")
    act = hf.get("activation_function", default)
    require(act in table, where, f"activation_function={act!r} is not supported; supported: {sorted(table)}")
    return table[act]


def pinned_to_defaults(*fields: str) -> dict[str, Any]:
    """{field: ModelConfig's default}: the options a family does not have, pinned off."""
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    return {field: defaults[field] for field in fields}


# The option blocks of the other families (what a family without them pins to the defaults).
ENCODER_ONLY_OPTIONS = ("type_vocab_size", "embedding_norm", "pooler", "head", "class_names")
LLAMA_OPTIONS = ("norm_kind", "gated_ffn", "num_kv_heads", "rope_layout", "rope_scaling", "qkv_bias", "output_bias")


def unaccounted_fields(family) -> list[str]:
    """ModelConfig fields that ``family`` neither maps nor pins (nor are execution-only), or
    claims twice: each must be in exactly one of MAPPED, PINNED, EXECUTION_FIELDS."""
    out = []
    for f in dataclasses.fields(ModelConfig):
        n = (f.name in family.MAPPED) + (f.name in family.PINNED) + (f.name in EXECUTION_FIELDS)
        if n != 1:
            out.append(f"{f.name} ({n} times)")
    return out
