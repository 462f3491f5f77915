"""Batching: packing, buckets, shifting, host sharding, resumable iteration, eval padding."""

import json

import numpy as np
import pytest

from tfm.data import batching, examples, plans
from tfm.data.examples import Encoded
from tfm.data.sources import ListSource


def _seqs(lengths, start=10):
    """Distinct recognisable sequences: example i is [start+i] * length."""
    return [np.full(n, start + i, np.int32) for i, n in enumerate(lengths)]


def test_plan_packed_greedy_in_order():
    plan = plans.plan_packed(np.array([3, 4, 2, 5, 1]), [8], batch_rows=2)
    assert [b.rows for b in plan] == [[[0, 1], [2, 3, 4]]]
    # two capacities (source, target): example 2 fits the source row but not the target row
    lengths = np.array([[2, 5], [2, 3], [2, 1]])
    plan = plans.plan_packed(lengths, [8, 8], batch_rows=1)
    assert [b.rows for b in plan] == [[[0, 1]], [[2]]]


def test_plan_completes_last_batch_cyclically():
    plan = plans.plan_padded(5, batch_rows=4)
    assert [b.rows for b in plan] == [[[0], [1], [2], [3]], [[4], [0], [1], [2]]]
    assert [b.rows for b in plans.plan_padded(2, 4)] == [[[0], [1], [0], [1]]]


def test_pack_rows_segments_and_positions():
    ids, seg, pos = batching._pack_rows(_seqs([3, 2, 4]), [[0, 1], [2]], 6)
    np.testing.assert_array_equal(ids, [[10, 10, 10, 11, 11, 0], [12, 12, 12, 12, 0, 0]])
    np.testing.assert_array_equal(seg, [[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(pos, [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0]])


def _translation(src_lens, tgt_lens):
    src = [np.concatenate([np.arange(5, 5 + n - 1), [2]]).astype(np.int32) for n in src_lens]
    tgt = [np.concatenate([np.arange(20, 20 + n - 1), [2]]).astype(np.int32) for n in tgt_lens]
    return Encoded({"inputs": src, "targets": tgt})


def test_assemble_translation_packed():
    enc = _translation([3, 2], [2, 3])
    b = batching.assemble_translation(enc, [[0, 1]], 6, 7)
    np.testing.assert_array_equal(b["inputs"], [[5, 6, 2, 5, 2, 0]])
    np.testing.assert_array_equal(b["targets"], [[20, 2, 20, 21, 2, 0, 0]])
    # decoder inputs restart with bos at the second segment
    np.testing.assert_array_equal(b["decoder_inputs"], [[1, 20, 1, 20, 21, 0, 0]])
    np.testing.assert_array_equal(b["inputs_segment_ids"], [[1, 1, 1, 2, 2, 0]])
    np.testing.assert_array_equal(b["targets_segment_ids"], [[1, 1, 2, 2, 2, 0, 0]])
    np.testing.assert_array_equal(b["targets_positions"], [[0, 1, 0, 1, 2, 0, 0]])
    np.testing.assert_array_equal(b["weights"], [[1, 1, 1, 1, 1, 0, 0]])
    assert b["weights"].dtype == np.float32
    assert all(v.dtype == np.int32 for k, v in b.items() if k != "weights")


TRANSLATION_KEYS = {"inputs", "decoder_inputs", "targets", "inputs_segment_ids", "inputs_positions",
                    "targets_segment_ids", "targets_positions", "weights"}


def test_assemble_translation_padded():
    """An unpacked batch has the packed format: segment id 1 on real tokens, 0 on padding."""
    b = batching.assemble_translation(_translation([3], [4]), [[0]], 5, 5)
    assert set(b) == TRANSLATION_KEYS
    np.testing.assert_array_equal(b["targets"], [[20, 21, 22, 2, 0]])
    np.testing.assert_array_equal(b["decoder_inputs"], [[1, 20, 21, 22, 0]])
    np.testing.assert_array_equal(b["inputs_segment_ids"], [[1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(b["targets_segment_ids"], [[1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(b["weights"], [[1, 1, 1, 1, 0]])


def test_token_id_0_in_the_data_is_a_real_token():
    """Regression (issue 14): a token 0 inside an example (GPT-2's '!') counts as a token: it
    gets segment id 1 and weight 1; only positions past the example are padding."""
    seq = np.array([7, 0, 9, 0], np.int32)
    lm = batching.assemble_lm(Encoded({"inputs": [seq], "targets": [seq]}), [[0]], 6)
    np.testing.assert_array_equal(lm["segment_ids"], [[1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(lm["weights"], [[1, 1, 1, 1, 0, 0]])
    mt = batching.assemble_translation(Encoded({"inputs": [seq], "targets": [seq]}), [[0]], 6, 6)
    np.testing.assert_array_equal(mt["weights"], [[1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(mt["decoder_inputs"], [[1, 7, 0, 9, 0, 0]])
    np.testing.assert_array_equal(mt["targets_segment_ids"], [[1, 1, 1, 1, 0, 0]])
    cls = batching.assemble_classification(Encoded({"inputs": [seq]}, np.array([1], np.int32)), [[0]], 6)
    np.testing.assert_array_equal(cls["segment_ids"], [[1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(cls["weights"], [1])


def test_encode_lm_and_overlong():
    enc = examples.encode_lm_sentences([np.array([7, 8, 9], np.int32)], 8, drop=False)
    np.testing.assert_array_equal(enc.seqs["inputs"][0], [1, 7, 8, 9])
    np.testing.assert_array_equal(enc.seqs["targets"][0], [7, 8, 9, 2])
    long = [np.arange(4, 14, dtype=np.int32), np.array([5], np.int32)]
    cut = examples.encode_lm_sentences(long, 4, drop=False)
    assert cut.truncated == 1 and len(cut) == 2
    np.testing.assert_array_equal(cut.seqs["inputs"][0], [1, 4, 5, 6])
    np.testing.assert_array_equal(cut.seqs["targets"][0], [4, 5, 6, 7])  # no eos: it was cut
    dropped = examples.encode_lm_sentences(long, 4, drop=True)
    assert dropped.dropped == 1 and len(dropped) == 1
    tr = examples.encode_translation(long, long[::-1], 5, 20, drop=True)
    assert tr.dropped == 1 and len(tr) == 1


def test_buckets():
    assert plans.bucket_boundaries(64) == [8, 12, 16, 24, 32, 48, 64]
    assert plans.bucket_boundaries(70)[-2:] == [64, 70]
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 65, size=3000)
    bounds = plans.bucket_boundaries(64)
    plan = plans.plan_buckets(lengths, bounds, tokens_per_batch=512, batch_multiple=4)
    assert plan
    for b in plan:
        assert len(b.rows) == plans.rows_for_tokens(512, b.length, 4)
        assert len(b.rows) % 4 == 0 and len(b.rows) * b.length <= 512
        assert all(lengths[r[0]] <= b.length for r in b.rows)
        smaller = [x for x in bounds if x < b.length]
        assert not smaller or all(lengths[r[0]] > smaller[-1] for r in b.rows)
    used = [r[0] for b in plan for r in b.rows]
    assert len(used) == len(set(used))  # no example twice
    # a tiny data set still yields one (cyclically completed) batch
    tiny = plans.plan_buckets(np.array([3, 5]), bounds, 512, 4)
    assert len(tiny) == 1 and len(tiny[0].rows) == 64


def _iterator(n=23, chunk=10, batch=4, seed=1, process_index=0, process_count=1, pack=False,
              prefetch=True):
    source = ListSource([list(range(100 + i, 100 + i + 1 + i % 4)) for i in range(n)])

    def encode(raw):
        seqs = [np.asarray(r, np.int32) for r in raw]
        return Encoded({"inputs": seqs, "targets": seqs})

    def plan(enc):
        if pack:
            return plans.plan_packed(enc.lengths("inputs"), [8], batch)
        return plans.plan_padded(len(enc), batch)

    def assemble(enc, rows, planned):
        return batching.assemble_lm(enc, rows, 8)

    return batching.ChunkedIterator(source, encode, plan, assemble, chunk_size=chunk, seed=seed,
                                    process_index=process_index, process_count=process_count,
                                    prefetch=prefetch)


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("pack", [False, True])
def test_chunked_iterator_resumes_exactly(pack):
    ref = _iterator(pack=pack)
    ref_batches = [next(ref) for _ in range(30)]  # crosses chunks (10) and epochs (23)
    for k in (0, 1, 2, 3, 7, 13):
        it = _iterator(pack=pack)
        for _ in range(k):
            next(it)
        state = json.loads(json.dumps(it.get_state()))  # JSON-able
        fresh = _iterator(pack=pack)
        fresh.set_state(state)
        for j in range(k, min(k + 6, 30)):
            _same(next(fresh), ref_batches[j])


def test_prefetch_does_not_change_the_stream():
    a, b = _iterator(prefetch=True), _iterator(prefetch=False)
    for _ in range(25):
        _same(next(a), next(b))


def test_chunked_iterator_covers_each_epoch():
    it = _iterator(n=20, chunk=10, batch=5)
    first_ids = np.concatenate([next(it)["inputs"][:, 0] for _ in range(4)]).tolist()
    assert sorted(first_ids) == list(range(100, 120))  # every example once in epoch 0
    second = np.concatenate([next(it)["inputs"][:, 0] for _ in range(4)]).tolist()
    assert sorted(second) == list(range(100, 120)) and second != first_ids  # reshuffled


def test_chunked_iterator_seed_matters_and_state_checks_seed():
    a, b = _iterator(seed=1), _iterator(seed=2)
    assert not np.array_equal(next(a)["inputs"], next(b)["inputs"])
    with pytest.raises(ValueError, match="seed"):
        b.set_state(a.get_state())


@pytest.mark.parametrize("pack", [False, True])
def test_hosts_together_equal_one_host(pack):
    one = _iterator(batch=4, pack=pack)
    hosts = [_iterator(batch=4, process_index=i, process_count=2, pack=pack) for i in range(2)]
    for _ in range(9):
        full = next(one)
        parts = [next(h) for h in hosts]
        assert parts[0]["inputs"].shape[0] == 2
        _same(full, {k: np.concatenate([p[k] for p in parts]) for k in full})


def test_window_iterator():
    tokens = np.arange(4, 104, dtype=np.int32)
    it = batching.WindowIterator(tokens, context=8, batch_size=6, seed=3)
    b = next(it)
    assert b["inputs"].shape == b["targets"].shape == (6, 8)
    np.testing.assert_array_equal(b["targets"][:, :-1], b["inputs"][:, 1:])
    np.testing.assert_array_equal(b["targets"][:, -1], b["inputs"][:, -1] + 1)
    np.testing.assert_array_equal(b["segment_ids"], np.ones((6, 8)))  # every window token is real
    np.testing.assert_array_equal(b["positions"], np.broadcast_to(np.arange(8), (6, 8)))
    np.testing.assert_array_equal(b["weights"], np.ones((6, 8)))
    ref = [next(it) for _ in range(5)]
    fresh = batching.WindowIterator(tokens, context=8, batch_size=6, seed=3)
    fresh.set_state({"kind": "windows", "seed": 3, "step": 1})
    for r in ref:
        _same(next(fresh), r)
    hosts = [batching.WindowIterator(tokens, 8, 6, 3, process_index=i, process_count=3) for i in range(3)]
    full = batching.WindowIterator(tokens, 8, 6, 3)
    parts = [next(h) for h in hosts]
    np.testing.assert_array_equal(np.concatenate([p["inputs"] for p in parts]), next(full)["inputs"])
    with pytest.raises(ValueError, match="max_len"):
        batching.WindowIterator(tokens[:5], context=8, batch_size=2, seed=0)


def test_eval_batches_pad_last_batch_with_zero_weights():
    enc = _translation([3, 2, 4, 2, 3], [2, 3, 2, 2, 4])
    assemble = lambda e, rows: batching.assemble_translation(e, rows, 6, 6)  # noqa: E731
    batches = list(batching.eval_batches(enc, 4, assemble))
    assert len(batches) == 2
    assert batches[1]["inputs"].shape == (4, 6)
    np.testing.assert_array_equal(batches[1]["weights"].sum(1), [4, 0, 0, 0])
    np.testing.assert_array_equal(batches[1]["targets"][1:], 0)
    np.testing.assert_array_equal(batches[0]["weights"], batches[0]["targets_segment_ids"] > 0)
    # two hosts: host 1's share of the last batch is all padding
    h1 = list(batching.eval_batches(enc, 4, assemble, process_index=1, process_count=2))
    assert h1[1]["inputs"].shape == (2, 6) and h1[1]["weights"].sum() == 0
    h0 = list(batching.eval_batches(enc, 4, assemble, process_index=0, process_count=2))
    np.testing.assert_array_equal(np.concatenate([h0[0]["inputs"], h1[0]["inputs"]]), batches[0]["inputs"])


def test_eval_windows_score_every_token_once():
    tokens = (np.arange(50) % 7).astype(np.int32)  # token 0 is a real token (issue 14)
    batches = list(batching.eval_windows(tokens, context=8, batch_rows=4))
    assert batching.num_windows(50, 8) == 7
    targets = np.concatenate([b["targets"] for b in batches]).ravel()
    weights = np.concatenate([b["weights"] for b in batches]).ravel()
    np.testing.assert_array_equal(targets[weights > 0], tokens[1:])
    for b in batches:
        real = b["weights"] > 0
        np.testing.assert_array_equal(b["segment_ids"] > 0, real)
        np.testing.assert_array_equal(b["targets"][real], (b["inputs"][real] + 1) % 7)


def test_imported_tokenizers_special_ids_reach_the_batches():
    """A tokenizer with its own special ids (Marian: eos 0, decoder start = pad) gets them in
    every encoded example and in the decoder inputs, not tfm's 1 and 2."""
    from tfm.data.config import DataConfig, Task
    from tfm.data.pipeline import encode_examples
    from tfm.data.tokenizers import CharTokenizer

    tok = CharTokenizer("abcdef")
    tok.bos_id, tok.eos_id = 5, 0  # instance attributes, as an imported tokenizer sets them
    cfg = DataConfig(max_len=8, max_target_len=8)
    enc = encode_examples(Task.TRANSLATION, tok, [("ab", "cde")], cfg, drop=False)
    b = batching.assemble_translation(enc, [[0]], 8, 8, bos_id=tok.bos_id)
    n_src, n_tgt = len(tok.encode("ab")) + 1, len(tok.encode("cde")) + 1
    assert b["inputs"][0, n_src - 1] == 0 and b["targets"][0, n_tgt - 1] == 0  # eos 0
    assert b["decoder_inputs"][0, 0] == 5  # the tokenizer's start token
    np.testing.assert_array_equal(b["decoder_inputs"][0, 1:n_tgt], b["targets"][0, :n_tgt - 1])
    lm = encode_examples(Task.LM, tok, ["abc"], cfg, drop=False)
    assert lm.seqs["inputs"][0][0] == 5 and lm.seqs["targets"][0][-1] == 0
    cls = encode_examples(Task.CLASSIFICATION, tok, [("abc", 1)], cfg, drop=False)
    assert cls.seqs["inputs"][0][0] == 5 and cls.seqs["inputs"][0][-1] == 0
