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

Magnitudes. A uniform sample of 0..999,999 is 90% six-digit numbers and 0.1% numbers below
1,000 -- the numbers people actually type. Everything here is therefore organised by magnitude
bucket (:data:`BUCKETS`: 0-99, 100-999, 1,000-9,999, 10,000-99,999, 100,000-999,999):

* The split (:func:`split_numbers`) is stratified: validation and test each take an equal share
  of their size from every bucket, but at most ``held_out_fraction`` of a bucket (so 10 of the
  100 numbers below 100, 90 of the 900 three-digit ones); what a small bucket cannot take goes
  to the larger ones. 0 is never held out: "zero"/"null" occur in no other number, so no model
  could learn them from the rest. Held-out sets are ordered round-robin over the buckets, so that
  any prefix (``eval_decode_examples``) covers every magnitude. The three parts are disjoint,
  together hold every number once, and depend only on the arguments.
* Training samples by number of digits with temperature ``T`` (:func:`training_numbers`, as
  languages are sampled in multilingual MT, Arivazhagan et al. 2019): the ``d``-digit numbers,
  ``n_d`` of them in training, get a share proportional to ``n_d ** (1/T)``. T = 1 is uniform
  over the numbers (six digits dominate), larger T flattens towards equal shares per digit
  count. (Sampling separates 1 and 2 digits: a lone "three" -> "drei" is its own pattern, and
  only 10 numbers have it.)
* :func:`bucket_of` / :func:`bucket_labels` name the bucket of a number, for evaluation by
  magnitude (:func:`tfm.metrics.text_metrics_by_group`).

:class:`NumbersSpec` holds the task's settings (``DataConfig.numbers``, ``--config.data.numbers.*``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from tfm.config import ConfigBase

MAX_NUMBER = 999_999


@dataclasses.dataclass(frozen=True)
class NumbersSpec(ConfigBase):
    """The numbers task's settings: ``DataConfig.numbers`` (read only with ``dataset="numbers"``).

    Attributes:
      max: the task covers the integers 0..max (at most 999,999).
      valid_size: numbers held out for validation, stratified by magnitude bucket (0-99,
        100-999, ..., 100,000-999,999): an equal share from every bucket, at most
        ``held_out_fraction`` of any one (see :func:`split_numbers`).
      test_size: numbers held out for test (disjoint from validation and training), stratified
        the same way.
      split_seed: seed of the fixed permutation that splits the numbers (deliberately separate
        from ``DataConfig.shuffle_seed``, so the test set never moves).
      held_out_fraction: the largest fraction of a magnitude bucket that validation (and,
        separately, test) may take: 0.1 holds out 10 of the 100 numbers below 100 for each.
      sampling_temperature: training samples the numbers of ``d`` digits (``n_d`` training
        numbers; 1 and 2 digits are separate groups) in proportion to ``n_d ** (1 / T)``: 1 =
        uniform over the numbers (then 90% of the examples have six digits and 0.01% are below
        100); larger values flatten towards equal shares per digit count (see
        :func:`training_numbers`).
    """

    max: int = MAX_NUMBER
    valid_size: int = 2000
    test_size: int = 2000
    split_seed: int = 0
    held_out_fraction: float = 0.1
    sampling_temperature: float = 3.0

    _NAME = "data.numbers"

    def validate(self) -> None:
        """Raises ValueError naming the first offending field (``data.numbers.<field>``)."""

        def fail(field: str, msg: str):
            raise ValueError(f"data.numbers.{field}={getattr(self, field)!r}: {msg}")

        def is_int(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_number(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        if not is_int(self.max) or not 0 < self.max <= MAX_NUMBER:
            fail("max", f"must be in 1..{MAX_NUMBER} (the number words stop below a million)")
        for field in ("valid_size", "test_size"):
            if not is_int(getattr(self, field)) or getattr(self, field) <= 0:
                fail(field, "must be a positive integer")
        if not is_int(self.split_seed) or self.split_seed < 0:
            fail("split_seed", "must be a non-negative integer")
        if not is_number(self.held_out_fraction) or not 0 < self.held_out_fraction <= 0.5:
            fail("held_out_fraction", "must be in (0, 0.5]")
        temperature = self.sampling_temperature
        if not is_number(temperature) or not 1 <= temperature < math.inf:
            fail("sampling_temperature", "must be a finite number >= 1 (1 = uniform)")
        for field in ("valid_size", "test_size"):
            try:
                held_out_sizes(self.max, getattr(self, field), self.held_out_fraction)
            except ValueError as e:
                fail(field, str(e))

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


# Magnitude buckets (inclusive bounds): the numbers of each number of digits, 1-2 digits together.
BUCKETS: tuple[tuple[int, int], ...] = (
    (0, 99), (100, 999), (1_000, 9_999), (10_000, 99_999), (100_000, 999_999),
)
BUCKET_LABELS: tuple[str, ...] = ("0-99", "100-999", "1000-9999", "10000-99999", "100000-999999")


def bucket_of(n: int) -> str:
    """The magnitude bucket label of ``n``: "0-99", "100-999", ..., "100000-999999"."""
    n = _check(n)
    return BUCKET_LABELS[_bucket_index(np.asarray([n]))[0]]


def bucket_labels(numbers: Sequence[int] | np.ndarray) -> list[str]:
    """:func:`bucket_of` of each number (vectorised)."""
    return [BUCKET_LABELS[i] for i in _bucket_index(np.asarray(numbers, dtype=np.int64))]


def buckets_up_to(max_number: int) -> list[tuple[str, int, int]]:
    """(label, low, high) of the buckets that 0..max_number reaches, the last one cut at
    max_number."""
    max_number = _check(max_number)
    return [(label, lo, min(hi, max_number))
            for label, (lo, hi) in zip(BUCKET_LABELS, BUCKETS) if lo <= max_number]


def held_out_sizes(max_number: int, size: int, held_out_fraction: float) -> list[int]:
    """How many numbers of each bucket (:func:`buckets_up_to`) a held-out set of ``size`` takes.

    Equal shares per bucket, each capped at ``held_out_fraction`` of its bucket (0 excluded);
    what a capped bucket cannot take is shared among the others ("water filling"). Raises
    ValueError when the caps together hold fewer than ``size`` numbers.
    """
    if not 0.0 < held_out_fraction <= 0.5:
        raise ValueError(f"held_out_fraction={held_out_fraction!r} must be in (0, 0.5]")
    buckets = buckets_up_to(max_number)
    # a fraction of the bucket's size (epsilon: 0.1 * 900 is 90.00000000000001), 0 never
    caps = [min(int(held_out_fraction * (hi - lo + 1) + 1e-9), hi - max(lo, 1) + 1)
            for _, lo, hi in buckets]
    if size < 0 or size > sum(caps):
        raise ValueError(
            f"a held-out set of {size} numbers does not fit 0..{max_number}: at most "
            f"held_out_fraction={held_out_fraction} of each magnitude bucket is held out, "
            f"{sum(caps)} numbers in all"
        )
    sizes = [0] * len(caps)
    left, open_ = size, [i for i, c in enumerate(caps) if c > 0]
    while left and open_:
        share, extra = divmod(left, len(open_))
        for rank, i in enumerate(sorted(open_, key=lambda i: -caps[i])):  # remainder to big ones
            take = min(caps[i] - sizes[i], share + (rank < extra))
            sizes[i] += take
            left -= take
        open_ = [i for i in open_ if sizes[i] < caps[i]]
    return sizes


def split_numbers(
    max_number: int = MAX_NUMBER, valid_size: int = 2000, test_size: int = 2000, seed: int = 0,
    held_out_fraction: float = 0.1,
) -> dict[str, np.ndarray]:
    """Disjoint, deterministic train / validation / test split of 0..max_number, stratified by
    magnitude (see the module docstring).

    Returns ``{"train", "validation", "test"}`` -> int64 arrays that together hold every number
    once: "train" sorted, the held-out sets ordered round-robin over the magnitude buckets
    (their ``k`` first numbers cover every bucket as evenly as ``k`` allows). Depends only on
    the arguments. ``held_out_fraction`` caps the share of each bucket in each held-out set.
    """
    max_number = _check(max_number)
    try:
        valid_sizes = held_out_sizes(max_number, valid_size, held_out_fraction)
        test_sizes = held_out_sizes(max_number, test_size, held_out_fraction)
    except ValueError as e:
        raise ValueError(f"split_numbers: valid_size={valid_size}, test_size={test_size}: {e}") from None
    rng = np.random.default_rng(seed)
    train, valid, test = [], [], []
    for (_, lo, hi), n_valid, n_test in zip(buckets_up_to(max_number), valid_sizes, test_sizes):
        perm = rng.permutation(np.arange(max(lo, 1), hi + 1))  # 0 always trains
        test.append(perm[:n_test])
        valid.append(perm[n_test:n_test + n_valid])
        train.append(perm[n_test + n_valid:])
    return {
        "test": _round_robin(test),
        "validation": _round_robin(valid),
        "train": np.sort(np.concatenate([np.zeros(1, np.int64)] + train)).astype(np.int64),
    }


def below(limit: int, max_number: int = MAX_NUMBER, seed: int = 0) -> np.ndarray:
    """Every number below ``limit`` (and at most ``max_number``), in a fixed-seed round-robin
    order over the magnitude buckets like the held-out sets: any prefix covers every bucket."""
    top = min(limit - 1, _check(max_number))
    rng = np.random.default_rng(seed)
    return _round_robin([rng.permutation(np.arange(lo, hi + 1))
                         for _, lo, hi in buckets_up_to(top)])


def num_digits(numbers: Sequence[int] | np.ndarray) -> np.ndarray:
    """Number of decimal digits of each number (0 has one)."""
    return 1 + np.searchsorted(10 ** np.arange(1, 6), np.asarray(numbers, np.int64), side="right")


def training_numbers(train: np.ndarray, temperature: float = 1.0, seed: int = 0) -> np.ndarray:
    """The training numbers, repeated so that the ``d``-digit numbers (``n_d`` of them) have the
    share ``n_d ** (1/temperature) / sum_e n_e ** (1/temperature)`` of every epoch.

    Each number of the digit count with the smallest per-number weight (the largest) appears
    once; a digit count whose numbers need ``r`` appearances each gives every number
    ``floor(r)`` of them and a fixed-seed ``r - floor(r)`` fraction one more. Temperature 1
    returns ``train`` itself (uniform over the numbers). Sorted, deterministic in the arguments.
    """
    if isinstance(temperature, bool) or not temperature >= 1.0 or not np.isfinite(temperature):
        raise ValueError(f"sampling temperature must be a finite number >= 1, got {temperature!r}")
    train = np.sort(np.asarray(train, dtype=np.int64))
    index = num_digits(train) - 1
    counts = np.bincount(index, minlength=6).astype(np.float64)
    present = counts > 0
    share = np.zeros_like(counts)
    share[present] = counts[present] ** (1.0 / temperature)
    share /= share.sum()
    per_number = np.zeros_like(counts)
    per_number[present] = share[present] / counts[present]
    repeats = per_number / per_number[present].min()  # >= 1
    rng = np.random.default_rng(seed)
    parts = []
    for b in np.flatnonzero(present):
        members = train[index == b]
        whole, frac = divmod(repeats[b], 1.0)
        extra = rng.permutation(members)[: int(round(frac * len(members)))]
        parts.append(np.repeat(members, int(whole)))
        parts.append(extra)
    return np.sort(np.concatenate(parts))


def _bucket_index(numbers: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.array([lo for lo, _ in BUCKETS[1:]]), numbers, side="right")


def _round_robin(parts: list[np.ndarray]) -> np.ndarray:
    """Interleaves the arrays: one of each (while it lasts), then again."""
    out, width = [], max((len(p) for p in parts), default=0)
    for k in range(width):
        out.extend(int(p[k]) for p in parts if k < len(p))
    return np.asarray(out, dtype=np.int64)


def number_pairs(numbers: Sequence[int] | np.ndarray) -> tuple[list[str], list[str]]:
    """(English sources, German targets) for the given numbers."""
    return [english(int(n)) for n in numbers], [german(int(n)) for n in numbers]
