"""The embedded default task: English number words -> German number words, 0..999,999.

"three hundred twenty-one" -> "dreihunderteinundzwanzig". It needs no download, is exactly
checkable (exact match), and is not trivially monotonic: German says the units before the tens
("einundzwanzig" = one-and-twenty), so attention has to learn a non-monotonic alignment.

Conventions (fixed here, tested against a hand-written table):

* English: US style without "and"; hyphens join tens and units ("twenty-one"); spaces
  elsewhere ("one hundred five thousand three hundred twenty-one"); 0 is "zero".
* German: every number below a million is one word. 1 alone (or at the end) is "eins", in
  front of anything it is "ein" ("einundzwanzig", "einhundert", "eintausend",
  "einhunderteintausendeins" = 101,001). Hundreds and thousands always carry their
  multiplier: "einhundert", "eintausend" (not the colloquial bare "hundert"/"tausend").
  Spelling uses ß and umlauts: "dreißig", "fünf", "zwölf". 0 is "null".

The split (:func:`split_numbers`) is a fixed-seed permutation of 0..max_number: the first
``test_size`` numbers are the test set, the next ``valid_size`` the validation set, the rest
train. The three are disjoint and depend only on the seed and the sizes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_NUMBER = 999_999

_EN_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()

_DE_ONES = (
    "null eins zwei drei vier fünf sechs sieben acht neun zehn elf zwölf dreizehn vierzehn "
    "fünfzehn sechzehn siebzehn achtzehn neunzehn"
).split()
_DE_TENS = "_ _ zwanzig dreißig vierzig fünfzig sechzig siebzig achtzig neunzig".split()


def _en_below_thousand(n: int) -> str:
    """1..999 in English words."""
    hundreds, rest = divmod(n, 100)
    parts = []
    if hundreds:
        parts.append(f"{_EN_ONES[hundreds]} hundred")
    if rest:
        if rest < 20:
            parts.append(_EN_ONES[rest])
        else:
            tens, units = divmod(rest, 10)
            parts.append(_EN_TENS[tens] + (f"-{_EN_ONES[units]}" if units else ""))
    return " ".join(parts)


def _de_below_thousand(n: int, *, final: bool) -> str:
    """1..999 in German; ``final`` is False when "tausend" follows (then 1 is "ein")."""
    hundreds, rest = divmod(n, 100)
    out = ""
    if hundreds:
        out += ("ein" if hundreds == 1 else _DE_ONES[hundreds]) + "hundert"
    if rest == 1:
        out += "eins" if final else "ein"
    elif rest and rest < 20:
        out += _DE_ONES[rest]
    elif rest:
        tens, units = divmod(rest, 10)
        if units:
            out += ("ein" if units == 1 else _DE_ONES[units]) + "und"
        out += _DE_TENS[tens]
    return out


# Tables for 0..999 (index 0 = the empty string): the full range is composed from them fast.
_EN_TABLE = [""] + [_en_below_thousand(n) for n in range(1, 1000)]
_DE_FINAL = [""] + [_de_below_thousand(n, final=True) for n in range(1, 1000)]
_DE_PREFIX = [""] + [_de_below_thousand(n, final=False) for n in range(1, 1000)]


def _check(n: int) -> int:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"number words cover the integers 0..{MAX_NUMBER}, got {n!r}")
    return int(n)


def english(n: int) -> str:
    """``n`` (0..999,999) in English words, e.g. 321 -> "three hundred twenty-one"."""
    n = _check(n)
    if n == 0:
        return "zero"
    thousands, rest = divmod(n, 1000)
    parts = []
    if thousands:
        parts.append(f"{_EN_TABLE[thousands]} thousand")
    if rest:
        parts.append(_EN_TABLE[rest])
    return " ".join(parts)


def german(n: int) -> str:
    """``n`` (0..999,999) in German words, e.g. 321 -> "dreihunderteinundzwanzig"."""
    n = _check(n)
    if n == 0:
        return "null"
    thousands, rest = divmod(n, 1000)
    return (_DE_PREFIX[thousands] + "tausend" if thousands else "") + _DE_FINAL[rest]


def split_numbers(
    max_number: int = MAX_NUMBER, valid_size: int = 2000, test_size: int = 2000, seed: int = 0
) -> dict[str, np.ndarray]:
    """Disjoint, deterministic train / validation / test split of 0..max_number.

    Returns ``{"train", "validation", "test"}`` -> sorted int64 arrays that together hold
    every number once. Depends only on the arguments (a fixed-seed NumPy permutation).
    """
    max_number = _check(max_number)
    total = max_number + 1
    if valid_size < 0 or test_size < 0 or valid_size + test_size >= total:
        raise ValueError(
            f"split_numbers: valid_size={valid_size} + test_size={test_size} must leave training "
            f"numbers out of 0..{max_number}"
        )
    perm = np.random.default_rng(seed).permutation(total)
    return {
        "test": np.sort(perm[:test_size]),
        "validation": np.sort(perm[test_size:test_size + valid_size]),
        "train": np.sort(perm[test_size + valid_size:]),
    }


def number_pairs(numbers: Sequence[int] | np.ndarray) -> tuple[list[str], list[str]]:
    """(English sources, German targets) for the given numbers."""
    return [english(int(n)) for n in numbers], [german(int(n)) for n in numbers]
