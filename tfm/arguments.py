"""The arguments of generation, translation and export, checked once for the library functions
(``tfm.generate``, ``tfm.translate``, :mod:`tfm.decoding`, ``save_pretrained``) and the command
lines alike: types and ranges, before anything is compiled.

An integer argument takes a Python or NumPy integer (not a bool, not 5.5 or 5.0); a real one
any finite int or float in its range (NaN and infinities are refused). Every error is an
:class:`ArgumentError` (a ValueError; :class:`ArgumentTypeError` is also a TypeError) whose
one-line message names the argument, the value and what it must be. Pure Python (no JAX), so
the command lines refuse bad arguments before loading anything.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from tfm.files import TfmError

SEED_RANGE = (-(2**63), 2**63 - 1)  # what jax.random.key takes (a 64-bit integer)
MAX_ALPHA = 10.0  # ((5 + |Y|) / 6) ** alpha overflows float32 beyond this for long outputs
INT32_MAX = 2**31 - 1  # counts that reach the compiled code as int32 (top_k, extra_len)
FLOAT32_MAX = 3.4e38  # reals that reach it as float32 (temperature)


class ArgumentError(TfmError, ValueError):
    """A generation, translation or export argument is out of range (the message names it)."""


class ArgumentTypeError(ArgumentError, TypeError):
    """A generation, translation or export argument has the wrong type (the message names it)."""


def integer(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum] (None: unbounded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name}={value!r}: must be an integer")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        lo = "" if minimum is None else f">= {minimum}"
        hi = "" if maximum is None else f"<= {maximum}"
        raise ArgumentError(f"{name}={value}: must be an integer {' and '.join(p for p in (lo, hi) if p)}")
    return value


def real(name: str, value, minimum: float, maximum: float = math.inf, *,
         above_minimum: bool = False) -> float:
    """``value`` as a finite float in [minimum, maximum] ((minimum, maximum] if ``above_minimum``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name}={value!r}: must be a number")
    value = float(value)
    low_ok = value > minimum if above_minimum else value >= minimum
    if not (math.isfinite(value) and low_ok and value <= maximum):  # NaN fails every comparison
        bounds = f"{'>' if above_minimum else '>='} {minimum:g}"
        bounds += f" and <= {maximum:g}" if maximum < math.inf else ""
        raise ArgumentError(f"{name}={value!r}: must be a finite number {bounds}")
    return value


def optional_bool(name: str, value) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ArgumentTypeError(f"{name}={value!r}: must be True, False or None")
    return value


def texts(name: str, value) -> tuple[list[str], bool]:
    """(the strings, whether ``value`` was one string): a str or a sequence of str."""
    if isinstance(value, str):
        return [value], True
    if not isinstance(value, Sequence) or isinstance(value, (bytes, bytearray)):
        raise ArgumentTypeError(f"{name}: expected a string or a list of strings, got {type(value).__name__}")
    out = list(value)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise ArgumentTypeError(f"{name}[{i}]={text!r}: expected a string, got {type(text).__name__}")
    return out, False


def sampling(temperature, top_k, top_p) -> tuple[float, int, float]:
    """temperature >= 0 (0 = greedy), top_k >= 0 (0 = off), 0 < top_p <= 1 (1 = off)."""
    return (real("temperature", temperature, 0.0, FLOAT32_MAX), integer("top_k", top_k, 0, INT32_MAX),
            real("top_p", top_p, 0.0, 1.0, above_minimum=True))


def generation(*, max_new_tokens, temperature, top_k, top_p, seed, num_samples=1) -> dict:
    """The checked arguments of :func:`tfm.generate` (and ``tfm generate``), as a dict."""
    temperature, top_k, top_p = sampling(temperature, top_k, top_p)
    return dict(
        max_new_tokens=integer("max_new_tokens", max_new_tokens, 1), temperature=temperature,
        top_k=top_k, top_p=top_p, seed=integer("seed", seed, *SEED_RANGE),
        num_samples=integer("num_samples", num_samples, 1),
    )


def length_alpha(value) -> float:
    """The length penalty's exponent: 0 (raw log-probabilities) to :data:`MAX_ALPHA`."""
    return real("alpha", value, 0.0, MAX_ALPHA)


def translation(*, batch_size, **search) -> dict:
    """The checked arguments of :func:`tfm.translate` (and ``tfm translate``), as a dict:
    ``batch_size`` and those of ``beam_size``, ``alpha``, ``extra_len`` that are given (the
    command leaves a flag it was not given to translate's default). Translate also refuses more
    beams than the tokenizer has ids: that needs the model."""
    checks = {
        "beam_size": lambda v: integer("beam_size", v, 1),
        "alpha": length_alpha,
        "extra_len": lambda v: integer("extra_len", v, 1, INT32_MAX // 2),
    }
    unknown = sorted(set(search) - set(checks))
    if unknown:
        raise ArgumentTypeError(f"translate: unknown argument(s) {unknown}; known: {sorted(checks)}")
    return {**{k: checks[k](v) for k, v in search.items()}, "batch_size": integer("batch_size", batch_size, 1)}


def max_shard_mb(value) -> int | None:
    """``--max_shard_mb`` of ``tfm export``: None (one file) or a size >= 1 MB."""
    return None if value is None else integer("max_shard_mb", value, 1)
