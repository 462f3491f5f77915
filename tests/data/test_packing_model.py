"""A packed batch gives the same per-example losses as the same examples unpacked."""

import jax
import jax.numpy as jnp
import numpy as np

from tfm import losses
from tfm.config import get_preset
from tfm.data import batching, examples, plans
from tfm.data.config import DataConfig
from tfm.data.numbers import NumbersSpec
from tfm.data.pipeline import build_pipeline
from tfm.models import build_model


def _nll(logits, targets) -> np.ndarray:
    _, nll = losses.smoothed_cross_entropy(logits, jnp.asarray(targets))
    return np.asarray(nll, np.float64)


def _unpack(ids, seg, length):
    """Rows of a packed array -> one padded row per segment, in (row, segment) order."""
    out = []
    for r in range(ids.shape[0]):
        for s in range(1, seg[r].max() + 1):
            x = ids[r][seg[r] == s]
            out.append(np.pad(x, (0, length - len(x))))
    return np.stack(out).astype(np.int32)


def _per_example(nll, seg):
    """Per-segment summed nll of packed rows, in (row, segment) order."""
    return np.array([nll[r][seg[r] == s].sum()
                     for r in range(seg.shape[0]) for s in range(1, seg[r].max() + 1)])


def test_packed_translation_equals_unpacked():
    cfg = DataConfig(numbers=NumbersSpec(max=9_999, valid_size=10, test_size=10), tokenizer="char",
                     max_len=96, max_target_len=96, batch_size=4, pack=True)
    pipe = build_pipeline(cfg)
    b = next(pipe.train_iter)
    assert b["inputs_segment_ids"].max() >= 2
    model = build_model(get_preset("tiny_encdec", vocab_size=pipe.vocab_size, max_len=96))
    packed_kw = dict(inputs_segment_ids=jnp.asarray(b["inputs_segment_ids"]),
                     inputs_positions=jnp.asarray(b["inputs_positions"]),
                     decoder_segment_ids=jnp.asarray(b["targets_segment_ids"]),
                     decoder_positions=jnp.asarray(b["targets_positions"]))
    params = model.init(jax.random.key(1), jnp.asarray(b["inputs"]), jnp.asarray(b["decoder_inputs"]),
                        **packed_kw)["params"]
    logits = model.apply({"params": params}, jnp.asarray(b["inputs"]),
                         jnp.asarray(b["decoder_inputs"]), **packed_kw)
    packed = _per_example(_nll(logits, b["targets"]), b["targets_segment_ids"])

    x = _unpack(b["inputs"], b["inputs_segment_ids"], 48)
    x_seg = _unpack(b["inputs_segment_ids"] > 0, b["inputs_segment_ids"], 48)
    y = _unpack(b["targets"], b["targets_segment_ids"], 48)
    y_seg = _unpack(b["targets_segment_ids"] > 0, b["targets_segment_ids"], 48)
    d = _unpack(b["decoder_inputs"], b["targets_segment_ids"], 48)
    inside = y_seg[:, 1:] > 0
    np.testing.assert_array_equal(d[:, 1:][inside], y[:, :-1][inside])
    np.testing.assert_array_equal(d[:, 0], 1)
    logits_u = model.apply({"params": params}, jnp.asarray(x), jnp.asarray(d),
                           inputs_segment_ids=jnp.asarray(x_seg), decoder_segment_ids=jnp.asarray(y_seg))
    unpacked = (_nll(logits_u, y) * y_seg).sum(1)
    assert len(packed) == len(unpacked) > 4
    np.testing.assert_allclose(packed, unpacked, rtol=1e-4, atol=1e-4)


def test_packed_lm_equals_unpacked():
    rng = np.random.default_rng(0)
    sentences = [rng.integers(4, 50, size=n).astype(np.int32) for n in (5, 9, 3, 12, 7, 4, 6, 2)]
    enc = examples.encode_lm_sentences(sentences, 32, drop=False)
    plan = plans.plan_packed(enc.lengths("inputs"), [32], batch_rows=2)
    b = batching.assemble_lm(enc, plan[0].rows, 32)
    assert b["segment_ids"].max() >= 3
    model = build_model(get_preset("tiny_lm", vocab_size=50, max_len=32))
    kw = dict(segment_ids=jnp.asarray(b["segment_ids"]), positions=jnp.asarray(b["positions"]))
    params = model.init(jax.random.key(2), jnp.asarray(b["inputs"]), **kw)["params"]
    logits = model.apply({"params": params}, jnp.asarray(b["inputs"]), **kw)
    packed = _per_example(_nll(logits, b["targets"]), b["segment_ids"])

    x = _unpack(b["inputs"], b["segment_ids"], 16)
    y = _unpack(b["targets"], b["segment_ids"], 16)
    y_seg = _unpack(b["segment_ids"] > 0, b["segment_ids"], 16)
    logits_u = model.apply({"params": params}, jnp.asarray(x))  # causal: the right padding is unseen
    unpacked = (_nll(logits_u, y) * y_seg).sum(1)
    np.testing.assert_allclose(packed, unpacked, rtol=1e-4, atol=1e-4)
