"""build_pipeline on the embedded numbers task and on a local text file (no TensorFlow)."""

import json
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tfm.data import numbers, pipeline
from tfm.data.config import DataConfig
from tfm.data.numbers import NumbersSpec
from tfm.data.pipeline import build_pipeline

# Numbers below 10,000 in characters: at most 42 characters + eos.
SMALL = dict(numbers=NumbersSpec(max=9_999, valid_size=150, test_size=100), tokenizer="char",
             max_len=48, max_target_len=48, batch_size=8, eval_batch_size=16, chunk_size=1000)
GERMAN_OF = {numbers.english(n): numbers.german(n) for n in range(10_000)}


def small(**kw) -> DataConfig:
    return DataConfig(**{**SMALL, **kw})


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline(small())


TRANSLATION_KEYS = {"inputs", "decoder_inputs", "targets", "inputs_segment_ids", "inputs_positions",
                    "targets_segment_ids", "targets_positions", "weights"}


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_numbers_batch_format(pipe):
    assert pipe.arch == "encoder_decoder" and pipe.vocab_size == pipe.tokenizer.vocab_size
    b = next(pipe.train_iter)
    assert set(b) == TRANSLATION_KEYS  # padded (unpacked) batches carry segment ids too
    for k, v in b.items():
        assert v.shape == (8, 48) and v.dtype == (np.float32 if k == "weights" else np.int32)
    for row in range(8):
        x, d, y = b["inputs"][row], b["decoder_inputs"][row], b["targets"][row]
        nx, ny = int((x != 0).sum()), int((y != 0).sum())
        assert x[nx - 1] == 2 and (x[:nx - 1] > 3).all() and (x[nx:] == 0).all()  # ids, eos, pad
        assert y[ny - 1] == 2 and (y[ny:] == 0).all()
        assert d[0] == 1 and (d[1:ny] == y[:ny - 1]).all() and (d[ny:] == 0).all()
        np.testing.assert_array_equal(b["inputs_segment_ids"][row], np.arange(48) < nx)
        np.testing.assert_array_equal(b["targets_segment_ids"][row], np.arange(48) < ny)
        np.testing.assert_array_equal(b["weights"][row], np.arange(48) < ny)
        source, target = pipe.tokenizer.decode(x), pipe.tokenizer.decode(y)
        assert GERMAN_OF[source] == target


def test_eval_batches_and_pairs_are_aligned(pipe):
    pairs = pipe.eval_pairs("validation")
    assert len(pairs) == pipe.num_eval_examples("validation") == 150
    batches = list(pipe.eval_batches("validation"))
    assert len(batches) == 10  # ceil(150 / 16)
    inputs = np.concatenate([b["inputs"] for b in batches])
    weights = np.concatenate([b["weights"] for b in batches])
    assert weights.dtype == np.float32 and weights[150:].sum() == 0
    assert pipe.decode(inputs[:150]) == [s for s, _ in pairs]
    assert all(GERMAN_OF[s] == t for s, t in pairs)
    test_sources = {s for s, _ in pipe.eval_pairs("test")}
    assert len(test_sources) == 100 and not test_sources & {s for s, _ in pairs}
    # fresh and deterministic
    _same(next(iter(pipe.eval_batches())), batches[0])


def test_held_out_numbers_never_in_training():
    # temperature 1: one epoch is the 800 training numbers once each
    cfg = small(numbers=NumbersSpec(max=999, valid_size=100, test_size=100, sampling_temperature=1.0),
                batch_size=8)
    p = build_pipeline(cfg)
    held = {s for s, _ in p.eval_pairs("validation") + p.eval_pairs("test")}
    seen = set()
    for _ in range(100):  # 800 rows = one epoch of the 800 training numbers
        seen.update(p.decode(next(p.train_iter)["inputs"]))
    assert len(seen) == 800 and not seen & held


def test_numbers_training_stream_oversamples_small_numbers():
    # 0..999, 10% of each bucket held out per split: 80 training numbers below 100 (1 and 2
    # digits), 720 of 100-999. At temperature 3 the d-digit numbers get a share proportional
    # to (their count) ** (1/3) of the stream (uniform sampling: below 100 would be 10%).
    cfg = small(numbers=NumbersSpec(max=999, valid_size=100, test_size=100, sampling_temperature=3.0),
                batch_size=8)
    p = build_pipeline(cfg)
    held = {s for s, _ in p.eval_pairs("validation") + p.eval_pairs("test")}
    train = numbers.split_numbers(999, 100, 100)["train"]
    counts = np.array([sum(len(str(n)) == d for n in train) for d in (1, 2, 3)])
    assert counts.sum() == 800 and counts[:2].sum() == 80
    expected = (counts[:2] ** (1 / 3)).sum() / (counts ** (1 / 3)).sum()
    rows = []
    for _ in range(200):
        rows.extend(p.decode(next(p.train_iter)["inputs"]))
    small_share = sum(" hundred" not in r for r in rows) / len(rows)
    assert expected > 0.4 and abs(small_share - expected) < 0.04, (small_share, expected)
    assert not set(rows) & held
    assert p.train_iter.source.num_examples > 800  # small numbers repeated, none left out


def test_resume_gives_the_next_batches():
    p = build_pipeline(small(chunk_size=50))
    ref = [next(p.train_iter) for _ in range(20)]  # crosses several chunks
    for k in (0, 5, 6, 13):
        a = build_pipeline(small(chunk_size=50))
        for _ in range(k):
            next(a.train_iter)
        state = json.loads(json.dumps(a.train_iter.get_state()))
        b = build_pipeline(small(chunk_size=50))
        b.train_iter.set_state(state)
        for j in range(k, k + 4):
            _same(next(b.train_iter), ref[j])


def test_two_hosts_equal_one():
    one = build_pipeline(small())
    hosts = [build_pipeline(small(), process_index=i, process_count=2, batch_multiple=2)
             for i in range(2)]
    for _ in range(3):
        full = next(one.train_iter)
        parts = [next(h.train_iter) for h in hosts]
        _same(full, {k: np.concatenate([p[k] for p in parts]) for k in full})
    e_full = next(iter(one.eval_batches()))
    e_parts = [next(iter(h.eval_batches())) for h in hosts]
    _same(e_full, {k: np.concatenate([p[k] for p in e_parts]) for k in e_full})


def test_packed_numbers():
    p = build_pipeline(small(pack=True, max_len=96, max_target_len=96))
    b = next(p.train_iter)
    keys = TRANSLATION_KEYS
    assert set(b) == keys and all(b[k].shape == (8, 96) for k in keys)
    assert (b["inputs_segment_ids"].max(1) >= 2).all()  # short examples really are packed
    np.testing.assert_array_equal(b["inputs_segment_ids"].max(1), b["targets_segment_ids"].max(1))
    for r in range(8):
        for s in range(1, b["inputs_segment_ids"][r].max() + 1):
            x = b["inputs"][r][b["inputs_segment_ids"][r] == s]
            y = b["targets"][r][b["targets_segment_ids"][r] == s]
            d = b["decoder_inputs"][r][b["targets_segment_ids"][r] == s]
            np.testing.assert_array_equal(b["inputs_positions"][r][b["inputs_segment_ids"][r] == s],
                                          np.arange(len(x)))
            assert x[-1] == 2 and y[-1] == 2 and d[0] == 1
            np.testing.assert_array_equal(d[1:], y[:-1])
            assert GERMAN_OF[p.tokenizer.decode(x)] == p.tokenizer.decode(y)
        pad = b["inputs_segment_ids"][r] == 0
        assert (b["inputs"][r][pad] == 0).all()


def test_token_count_batches():
    p = build_pipeline(small(tokens_per_batch=512, batch_size=8), batch_multiple=4)
    shapes = set()
    for _ in range(40):
        b = next(p.train_iter)
        rows, length = b["inputs"].shape
        assert b["targets"].shape == (rows, length) and rows % 4 == 0 and rows * length <= 512
        assert ((b["inputs"] != 0).sum(1) <= length).all()
        shapes.add((rows, length))
    assert len(shapes) >= 2  # several buckets


def test_overlong_truncate_and_drop(caplog):
    caplog.set_level(logging.INFO)
    cut = build_pipeline(small(max_target_len=30))
    next(cut.train_iter)
    assert cut.train_iter.stats["truncated"] > 0 and cut.train_iter.stats["dropped"] == 0
    drop = build_pipeline(small(max_target_len=30, overlong="drop"))
    for _ in range(5):
        b = next(drop.train_iter)
        ny = (b["targets"] != 0).sum(1)
        assert (b["targets"][np.arange(8), ny - 1] == 2).all()  # nothing was cut
    stats = drop.train_iter.stats
    assert stats["dropped"] > 0 and stats["truncated"] == 0
    assert f"0 truncated and {stats['dropped']} dropped as longer than the maximum length" in caplog.text


def test_encode_inputs(pipe):
    x = pipe.encode_inputs(["three hundred twenty-one", "five"])
    assert x.shape == (2, 48) and x.dtype == np.int32
    assert pipe.decode(x) == ["three hundred twenty-one", "five"]
    same, mask = pipe.encode_inputs(["three hundred twenty-one", "five"], return_mask=True)
    np.testing.assert_array_equal(same, x)
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask.sum(1), [len(pipe.tokenizer.encode(t)) + 1 for t in ["three hundred twenty-one", "five"]])


def test_tokenizer_saved_and_reused(tmp_path, monkeypatch):
    cfg = small(tokenizer="sentencepiece", vocab_size=64, max_len=24, max_target_len=24)
    first = build_pipeline(cfg, workdir=tmp_path)
    assert (tmp_path / "tokenizer" / "spm.model").is_file()

    def fail(*a, **k):
        raise AssertionError("the tokenizer should have been loaded")

    monkeypatch.setattr(pipeline, "build_tokenizer", fail)
    again = build_pipeline(cfg, workdir=tmp_path)
    assert again.tokenizer.model_proto == first.tokenizer.model_proto
    with pytest.raises(ValueError, match="holds a 'sentencepiece' tokenizer"):
        build_pipeline(small(), workdir=tmp_path)
    # only host 0 writes
    other = tmp_path / "other"
    monkeypatch.undo()
    build_pipeline(small(), workdir=other, process_index=1, process_count=2, batch_multiple=2)
    assert not (other / "tokenizer").exists()


def test_argument_errors():
    with pytest.raises(ValueError, match="trains arch='encoder_decoder', not 'decoder_lm'"):
        build_pipeline(small(), "decoder_lm")
    with pytest.raises(ValueError, match="batch_size=8 is not divisible by batch_multiple=3"):
        build_pipeline(small(), batch_multiple=3)


def test_default_task_does_not_import_tensorflow():
    code = textwrap.dedent("""
        import sys
        from tfm.data.config import DataConfig
        from tfm.data.pipeline import build_pipeline
        p = build_pipeline(DataConfig(numbers={"max": 2000, "valid_size": 10, "test_size": 10},
                                      tokenizer="char", max_len=48, max_target_len=48))
        next(p.train_iter); list(p.eval_batches())
        assert "tensorflow" not in sys.modules, "tensorflow was imported"
        assert "tensorflow_datasets" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ------------------------------------------------------------------------------ text files
TEXT = "".join(f"Line {i}: the quick brown fox.\n" for i in range(300))


def test_text_file_lm(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    cfg = DataConfig(dataset="text_file", text_file=str(path), tokenizer="char", max_len=32,
                     batch_size=4, eval_batch_size=8)
    p = build_pipeline(cfg, "decoder_lm")
    b = next(p.train_iter)
    assert set(b) == {"inputs", "targets", "segment_ids", "positions", "weights"}
    assert b["inputs"].shape == (4, 32) and (b["segment_ids"] == 1).all()
    np.testing.assert_array_equal(b["targets"][:, :-1], b["inputs"][:, 1:])
    assert all(s in TEXT for s in p.decode(b["inputs"]))
    held_out = TEXT[int(len(TEXT) * 0.9):]
    batches = list(p.eval_batches())
    w = np.concatenate([x["weights"] for x in batches])
    assert int(w.sum()) == len(held_out) - 1  # every held-out char after the first, once
    assert p.num_eval_examples() == -(-(len(held_out) - 1) // 32)


def test_text_file_sentencepiece(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    cfg = DataConfig(dataset="text_file", text_file=str(path), tokenizer="sentencepiece",
                     vocab_size=64, max_len=16, batch_size=4)
    p = build_pipeline(cfg)
    b = next(p.train_iter)
    assert b["inputs"].shape == (4, 16) and (b["inputs"] == 2).any()  # eos between lines


@pytest.mark.parametrize(
    "content,match",
    [(None, "no such file"), (b"", "the file is empty"), (b"  \n\n", "the file is empty"),
     (b"good text \xff\xfe bad", "not valid UTF-8"), ("dir", "not a regular file")],
)
def test_text_file_errors(tmp_path, content, match):
    path = tmp_path / "data.txt"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    cfg = DataConfig(dataset="text_file", text_file=str(path), tokenizer="char")
    with pytest.raises(ValueError, match=match) as e:
        build_pipeline(cfg)
    assert str(path) in str(e.value)


def test_numbers_decode_sets_and_groups_line_up_with_the_pairs():
    p = build_pipeline(small())  # 0..9,999
    assert p.decode_sets == ("validation", "below_1000")
    number_of = {numbers.english(n): n for n in range(10_000)}
    for split in p.decode_sets:
        pairs, groups = p.eval_pairs(split), p.eval_groups(split)
        assert len(groups) == len(pairs)
        assert groups == [numbers.bucket_of(number_of[src]) for src, _ in pairs]
    assert set(p.eval_groups("validation")) == {"0-99", "100-999", "1000-9999"}
    below = [number_of[s] for s, _ in p.eval_pairs("below_1000")]
    assert sorted(below) == list(range(1000))
    assert numbers.bucket_labels(below[:4]) == ["0-99", "100-999"] * 2  # any prefix: both
    limited = build_pipeline(small(max_eval_examples=7))
    assert limited.eval_groups("validation") == p.eval_groups("validation")[:7]
