"""Shared helpers of the interop tests: the committed fixtures and comparisons against them."""

from __future__ import annotations

import json
import pathlib

import numpy as np

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "hf"


def reference(name: str) -> tuple[dict[str, np.ndarray], dict]:
    d = FIXTURES / name
    with np.load(d / "reference.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads((d / "reference.json").read_text(encoding="utf-8"))


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def strip(tokens, eos: int, pad: int | None = None) -> list[int]:
    """Tokens up to and including the first EOS (Hugging Face pads after it)."""
    out = []
    for t in np.asarray(tokens).tolist():
        out.append(int(t))
        if t == eos:
            break
    return out
