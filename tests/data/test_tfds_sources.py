"""Every TFDS source through the real pipeline (``tfds.testing.mock_data``) into model-ready
batches and through a model forward pass + loss; the real tiny_shakespeare builder offline."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the TFDS data sets need the tfds extra")
tfds = pytest.importorskip("tensorflow_datasets")

from tfm import losses  # noqa: E402
from tfm.config import get_preset  # noqa: E402
from tfm.data import sources  # noqa: E402
from tfm.data.config import DataConfig  # noqa: E402
from tfm.data.pipeline import build_pipeline  # noqa: E402
from tfm.models import build_model  # noqa: E402

PRESET = {"encoder_decoder": "tiny_encdec", "decoder_lm": "tiny_lm",
          "encoder_classifier": "tiny_classifier"}


def forward_loss(pipe, batch) -> float:
    """A tiny model of the pipeline's arch, sized by its tokenizer: forward pass + loss."""
    cfg = get_preset(PRESET[pipe.arch.value], vocab_size=pipe.vocab_size,
                     max_len=max(pipe.config.max_len, pipe.config.max_target_len))
    model = build_model(cfg)
    b = {k: jnp.asarray(v) for k, v in batch.items()}
    if pipe.arch == "encoder_decoder":
        args = (b["inputs"], b["decoder_inputs"])
        kwargs = {k: b[k] for k in ("inputs_segment_ids", "inputs_positions") if k in b}
        if "targets_segment_ids" in b:
            kwargs.update(decoder_segment_ids=b["targets_segment_ids"],
                          decoder_positions=b["targets_positions"])
        targets = b["targets"]
    elif pipe.arch == "decoder_lm":
        args = (b["inputs"],)
        kwargs = {k: b[k] for k in ("segment_ids", "positions") if k in b}
        targets = b["targets"]
    else:
        args, targets = (b["inputs"],), b["label"]
        kwargs = {k: b[k] for k in ("segment_ids", "positions") if k in b}
    params = model.init(jax.random.key(0), *args, **kwargs)["params"]
    logits = model.apply({"params": params}, *args, **kwargs)
    out = losses.weighted_cross_entropy(logits, targets, b.get("weights"))
    loss = float(out["loss_sum"] / out["weight_sum"])
    assert np.isfinite(loss) and loss > 0
    return loss


def _cfg(tmp_path, **kw):
    return DataConfig(tfds_data_dir=str(tmp_path / "tfds"), eval_batch_size=8, batch_size=4, **kw)


def _check_ids(batch, vocab):
    for k, v in batch.items():
        if k != "weights":
            assert v.dtype == np.int32, k
            assert v.min() >= 0
    for k in ("inputs", "targets", "decoder_inputs"):
        if k in batch:
            assert batch[k].max() < vocab


def test_tiny_shakespeare_mock(tmp_path):
    with tfds.testing.mock_data(num_examples=20):
        cfg = _cfg(tmp_path, dataset="tiny_shakespeare", tokenizer="char", max_len=16)
        pipe = build_pipeline(cfg, "decoder_lm")
        b = next(pipe.train_iter)
        ev = next(iter(pipe.eval_batches("test")))
    assert set(b) == {"inputs", "targets", "segment_ids", "positions", "weights"} and b["inputs"].shape == (4, 16)
    np.testing.assert_array_equal(b["targets"][:, :-1], b["inputs"][:, 1:])
    _check_ids(b, pipe.vocab_size)
    assert (b["inputs"] >= 4).all()  # a character stream: no pad / bos / eos inside
    assert ev["weights"].shape == (8, 16) and ev["weights"].dtype == np.float32
    forward_loss(pipe, b)
    forward_loss(pipe, ev)


@pytest.mark.parametrize("pack,tokens_per_batch", [(False, 0), (True, 0), (False, 256)])
def test_wmt14_mock(tmp_path, pack, tokens_per_batch):
    with tfds.testing.mock_data(num_examples=40):
        cfg = _cfg(tmp_path, dataset="wmt14_ende", tokenizer="sentencepiece", vocab_size=40,
                   max_len=24, max_target_len=24, pack=pack, tokens_per_batch=tokens_per_batch)
        pipe = build_pipeline(cfg, "encoder_decoder", workdir=tmp_path / "wd")
        b = next(pipe.train_iter)
        ev = next(iter(pipe.eval_batches("validation")))
        pairs = pipe.eval_pairs("test")
    assert (tmp_path / "wd" / "tokenizer" / "spm.model").is_file()
    _check_ids(b, pipe.vocab_size)
    assert b["inputs"].shape[1] <= 24 and b["decoder_inputs"].shape == b["targets"].shape
    assert (b["decoder_inputs"][:, 0] == 1).all()
    if pack:
        assert "inputs_segment_ids" in b and "targets_positions" in b
    else:
        rows = np.arange(len(b["targets"]))
        n = (b["targets"] != 0).sum(1)
        assert (b["targets"][rows, n - 1] == 2).all()
        n = (b["inputs"] != 0).sum(1)
        assert (b["inputs"][rows, n - 1] == 2).all()
    if tokens_per_batch:
        assert b["inputs"].size <= tokens_per_batch
    assert len(pairs) == 40 and all(isinstance(s, str) and isinstance(t, str) for s, t in pairs)
    # the en side is the source: the mock's "en" strings decode from the eval inputs
    assert pipe.decode(ev["inputs"][:1])[0] == " ".join(pipe.eval_pairs("validation")[0][0].split())
    forward_loss(pipe, b)


@pytest.mark.parametrize("pack", [False, True])
def test_lm1b_mock(tmp_path, pack):
    with tfds.testing.mock_data(num_examples=30):
        cfg = _cfg(tmp_path, dataset="lm1b", tokenizer="sentencepiece", vocab_size=40,
                   max_len=32, pack=pack)
        pipe = build_pipeline(cfg)
        b = next(pipe.train_iter)
        ev = list(pipe.eval_batches("validation"))  # lm1b has no validation split: test
    assert pipe.arch == "decoder_lm"
    _check_ids(b, pipe.vocab_size)
    assert b["inputs"].shape == (4, 32)
    if pack:
        assert set(b) == {"inputs", "targets", "segment_ids", "positions", "weights"}
        starts = b["positions"] == 0
        assert (b["inputs"][starts & (b["segment_ids"] > 0)] == 1).all()  # bos opens each segment
    else:
        assert (b["inputs"][:, 0] == 1).all()
        n = (b["targets"] != 0).sum(1)
        assert (b["targets"][np.arange(4), n - 1] == 2).all()
        inside = b["inputs"][:, 1:] != 0
        np.testing.assert_array_equal(b["targets"][:, :-1][inside], b["inputs"][:, 1:][inside])
    assert sum(float(e["weights"].max(1).astype(bool).sum()) for e in ev) == 30
    forward_loss(pipe, b)


def test_sst2_mock(tmp_path):
    with tfds.testing.mock_data(num_examples=12):
        cfg = _cfg(tmp_path, dataset="sst2", tokenizer="char", max_len=24)
        pipe = build_pipeline(cfg, "encoder_classifier")
        b = next(pipe.train_iter)
        ev = list(pipe.eval_batches("test"))  # sst2's test labels are hidden: validation
    assert pipe.num_classes == 2
    assert set(b) == {"inputs", "segment_ids", "positions", "label", "weights"} and b["inputs"].shape == (4, 24) and b["label"].shape == (4,)
    _check_ids(b, pipe.vocab_size)
    assert set(b["label"].tolist()) <= {0, 1} and (b["inputs"][:, 0] == 1).all()
    n = (b["inputs"] != 0).sum(1)
    assert (b["inputs"][np.arange(4), n - 1] == 2).all()
    assert [e["weights"].tolist() for e in ev] == [[1.0] * 8, [1.0] * 4 + [0.0] * 4]
    forward_loss(pipe, b)
    forward_loss(pipe, ev[-1])


def test_unknown_split():
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        sources.load_examples(DataConfig(), "dev")


def test_tfds_prepare_failure_is_clear(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds_lib

    def offline(self, *a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds_lib.core.DatasetBuilder, "download_and_prepare", offline)
    cfg = _cfg(tmp_path, dataset="lm1b")
    with pytest.raises(ValueError, match="TFDS dataset lm1b: could not prepare.*no network.*tfds_data_dir"):
        build_pipeline(cfg)


def test_real_tiny_shakespeare_offline(tinyshakespeare, tmp_path):
    """The real TFDS builder, its download pre-seeded through the manual dir (no network)."""
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "input.txt").symlink_to(tinyshakespeare)  # the file name TFDS's checksums expect
    cfg = DataConfig(dataset="tiny_shakespeare", tokenizer="char", max_len=64, batch_size=4,
                     tfds_data_dir=str(tmp_path / "tfds"), tfds_manual_dir=str(manual))
    sizes = {split: len(sources.load_text(cfg, split)) for split in ("train", "validation", "test")}
    assert sizes == {"train": 1_003_854, "validation": 55_770, "test": 55_770}
    pipe = build_pipeline(cfg)
    assert pipe.vocab_size == 65 + 4  # nanoGPT's 65 characters + pad/bos/eos/unk
    b = next(pipe.train_iter)
    assert b["inputs"].shape == (4, 64)
    assert all(s in tinyshakespeare.read_text() for s in pipe.decode(b["inputs"]))
    assert pipe.num_eval_examples("validation") == -(-(55_770 - 1) // 64)


class TfmTestSentences(tfds.core.GeneratorBasedBuilder):
    """A real (not mocked) 100-example TFDS data set, for the sliced reading of large splits."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(100)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"text": f"sentence {i}"}


def test_large_split_read_in_slices(tmp_path):
    """Splits too big for memory are read as split[start:stop] blocks; order and resume hold."""
    from tfm.data import batching, examples, plans

    builder = TfmTestSentences(data_dir=str(tmp_path))
    builder.download_and_prepare()
    convert = sources._converter(sources.Dataset.LM1B, "sentences")
    src = sources.TFDSSliceSource(builder, "train", 100, convert, "sentences")
    everything = src.read(0, 100)
    assert sorted(everything) == sorted(f"sentence {i}" for i in range(100))
    assert src.read(30, 47) == everything[30:47] and src.read(95, 200) == everything[95:]

    def make():
        def encode(raw):
            seqs = [np.array([int(t.split()[1]) + 4], np.int32) for t in raw]
            return examples.Encoded({"inputs": seqs, "targets": seqs})

        return batching.ChunkedIterator(
            src, encode, lambda enc: plans.plan_padded(len(enc), 5),
            lambda enc, rows, planned: batching.assemble_lm(enc, rows, 1),
            chunk_size=25, seed=0)

    it = make()
    epoch = np.concatenate([next(it)["inputs"][:, 0] for _ in range(20)]) - 4
    assert sorted(epoch.tolist()) == list(range(100))  # each example once per epoch
    blocks = [set(everything.index(f"sentence {i}") // 25 for i in epoch[k:k + 25]) for k in (0, 25)]
    assert all(len(b) == 1 for b in blocks)  # a chunk is one block of consecutive examples
    state = it.get_state()
    ref = [next(it)["inputs"] for _ in range(7)]
    again = make()
    again.set_state(state)
    for r in ref:
        np.testing.assert_array_equal(next(again)["inputs"], r)


def test_load_examples_switches_to_slices_for_large_splits(tmp_path, monkeypatch):
    builder = TfmTestSentences(data_dir=str(tmp_path))
    builder.download_and_prepare()
    monkeypatch.setitem(sources.TFDS_NAMES, sources.Dataset.LM1B, builder.name)
    cfg = DataConfig(dataset="lm1b", tfds_data_dir=str(tmp_path))
    assert isinstance(sources.load_examples(cfg, "train"), sources.ListSource)
    monkeypatch.setattr(sources, "MAX_IN_MEMORY", 50)
    src = sources.load_examples(cfg, "train")
    assert isinstance(src, sources.TFDSSliceSource) and src.num_examples == 100
    pipe = build_pipeline(cfg.replace(tokenizer="char", max_len=16, batch_size=4))
    assert next(pipe.train_iter)["inputs"].shape == (4, 16)
