"""What the GPT-2 and Marian converters share: building and checking tfm parameter trees.

Parameter paths are written "decoder/stack/layer_0/self_attention/query/kernel" (tfm's Flax
tree, see ``tfm.models.param_shapes``). Attention projections are stored by tfm per head:
query/key/value kernels (D, N, H), biases (N, H), the output kernel (N, H, D); Hugging Face
stores them flat, input dimension first for GPT-2's Conv1D and output first for torch Linear.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from tfm.config import ModelConfig
from tfm.interop.hf_io import HFFormatError


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
