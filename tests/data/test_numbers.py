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


def test_buckets_of_hand_picked_numbers():
    cases = {0: "0-99", 9: "0-99", 99: "0-99", 100: "100-999", 999: "100-999", 1000: "1000-9999",
             9999: "1000-9999", 10_000: "10000-99999", 99_999: "10000-99999",
             100_000: "100000-999999", 999_999: "100000-999999"}
    assert [numbers.bucket_of(n) for n in cases] == list(cases.values())
    assert numbers.bucket_labels(list(cases)) == list(cases.values())
    assert numbers.buckets_up_to(1500) == [("0-99", 0, 99), ("100-999", 100, 999), ("1000-9999", 1000, 1500)]


def test_held_out_sizes_share_equally_up_to_the_cap():
    # 2000 over 5 buckets: 0-99 and 100-999 are capped at 10% (10, 90); the other 1900 split
    # evenly over the three large buckets, the remainder going to the largest
    assert numbers.held_out_sizes(999_999, 2000, 0.1) == [10, 90, 633, 633, 634]
    assert numbers.held_out_sizes(999, 32, 0.1) == [10, 22]
    assert numbers.held_out_sizes(999_999, 5, 0.1) == [1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="at most held_out_fraction=0.1 of each magnitude bucket"):
        numbers.held_out_sizes(999, 101, 0.1)


def test_default_split_holds_out_every_magnitude_and_keeps_zero():
    parts = numbers.split_numbers()
    every = np.concatenate([parts["train"], parts["validation"], parts["test"]])
    np.testing.assert_array_equal(np.sort(every), np.arange(1_000_000))  # disjoint and complete
    for split in ("validation", "test"):
        labels = numbers.bucket_labels(parts[split])
        counts = {b: labels.count(b) for b in numbers.BUCKET_LABELS}
        assert counts == dict(zip(numbers.BUCKET_LABELS, [10, 90, 633, 633, 634])), (split, counts)
        # round-robin order: the first five numbers are one of each magnitude
        assert numbers.bucket_labels(parts[split][:5]) == list(numbers.BUCKET_LABELS)
    assert 0 in parts["train"]  # "zero"/"null" occur in no other number: never held out
    below_100 = parts["train"][parts["train"] < 100]
    assert len(below_100) == 80


def test_training_numbers_temperature():
    train = numbers.split_numbers()["train"]
    np.testing.assert_array_equal(numbers.training_numbers(train, 1.0), train)  # uniform
    stream = numbers.training_numbers(train, 3.0)
    np.testing.assert_array_equal(np.unique(stream), train)  # every training number, nothing else
    np.testing.assert_array_equal(stream, numbers.training_numbers(train, 3.0))  # deterministic
    digits = [len(str(n)) for n in train]  # independent of the code's digit count
    n = np.array([digits.count(d) for d in range(1, 7)])
    assert n.tolist() == [8, 72, 720, 9000 - 1266, 90_000 - 1266, 900_000 - 1268]
    expected = n ** (1 / 3) / (n ** (1 / 3)).sum()
    got = np.bincount([len(str(n)) for n in stream], minlength=7)[1:] / len(stream)
    np.testing.assert_allclose(got, expected, rtol=5e-3)
    assert got[0] > 0.01 and got[1] > 0.02 and got[-1] < 0.6  # uniform: 8e-6, 7e-5, 0.9
    with pytest.raises(ValueError, match="temperature"):
        numbers.training_numbers(train, 0.5)
