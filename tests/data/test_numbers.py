"""Number words against a hand-written table, and the split."""

import numpy as np
import pytest

from tfm.data import numbers

CASES = [
    (0, "zero", "null"),
    (1, "one", "eins"),
    (2, "two", "zwei"),
    (6, "six", "sechs"),
    (7, "seven", "sieben"),
    (10, "ten", "zehn"),
    (11, "eleven", "elf"),
    (12, "twelve", "zwölf"),
    (13, "thirteen", "dreizehn"),
    (16, "sixteen", "sechzehn"),
    (17, "seventeen", "siebzehn"),
    (20, "twenty", "zwanzig"),
    (21, "twenty-one", "einundzwanzig"),
    (26, "twenty-six", "sechsundzwanzig"),
    (30, "thirty", "dreißig"),
    (35, "thirty-five", "fünfunddreißig"),
    (60, "sixty", "sechzig"),
    (67, "sixty-seven", "siebenundsechzig"),
    (70, "seventy", "siebzig"),
    (99, "ninety-nine", "neunundneunzig"),
    (100, "one hundred", "einhundert"),
    (101, "one hundred one", "einhunderteins"),
    (110, "one hundred ten", "einhundertzehn"),
    (121, "one hundred twenty-one", "einhunderteinundzwanzig"),
    (200, "two hundred", "zweihundert"),
    (321, "three hundred twenty-one", "dreihunderteinundzwanzig"),
    (999, "nine hundred ninety-nine", "neunhundertneunundneunzig"),
    (1000, "one thousand", "eintausend"),
    (1001, "one thousand one", "eintausendeins"),
    (1016, "one thousand sixteen", "eintausendsechzehn"),
    (2000, "two thousand", "zweitausend"),
    (11000, "eleven thousand", "elftausend"),
    (21000, "twenty-one thousand", "einundzwanzigtausend"),
    (21001, "twenty-one thousand one", "einundzwanzigtausendeins"),
    (100000, "one hundred thousand", "einhunderttausend"),
    (101001, "one hundred one thousand one", "einhunderteintausendeins"),
    (200000, "two hundred thousand", "zweihunderttausend"),
    (345678, "three hundred forty-five thousand six hundred seventy-eight",
     "dreihundertfünfundvierzigtausendsechshundertachtundsiebzig"),
    (999999, "nine hundred ninety-nine thousand nine hundred ninety-nine",
     "neunhundertneunundneunzigtausendneunhundertneunundneunzig"),
]


@pytest.mark.parametrize("n,en,de", CASES)
def test_words(n, en, de):
    assert numbers.english(n) == en
    assert numbers.german(n) == de


def test_words_are_unique_and_well_formed():
    ns = range(0, 1_000_000, 7)
    en = [numbers.english(n) for n in ns]
    de = [numbers.german(n) for n in ns]
    assert len(set(en)) == len(en) and len(set(de)) == len(de)
    assert all(" " not in d and d.islower() for d in de)  # one German word
    assert not any(" and " in e or "  " in e for e in en)


@pytest.mark.parametrize("bad", [-1, 1_000_000, 2.5, True])
def test_out_of_range(bad):
    with pytest.raises(ValueError, match="0..999999"):
        numbers.english(bad)


def test_split_disjoint_complete_deterministic():
    a = numbers.split_numbers(99_999, valid_size=500, test_size=700, seed=3)
    b = numbers.split_numbers(99_999, valid_size=500, test_size=700, seed=3)
    c = numbers.split_numbers(99_999, valid_size=500, test_size=700, seed=4)
    assert [len(a[s]) for s in ("train", "validation", "test")] == [98_800, 500, 700]
    every = np.concatenate([a["train"], a["validation"], a["test"]])
    np.testing.assert_array_equal(np.sort(every), np.arange(100_000))  # disjoint and complete
    for s in a:
        np.testing.assert_array_equal(a[s], b[s])
    assert not np.array_equal(a["test"], c["test"])


def test_split_default_sizes():
    parts = numbers.split_numbers()
    assert len(parts["validation"]) == len(parts["test"]) == 2000
    assert len(parts["train"]) == 996_000


def test_split_rejects_too_many_held_out():
    with pytest.raises(ValueError, match="valid_size"):
        numbers.split_numbers(99, valid_size=50, test_size=50)
