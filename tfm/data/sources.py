"""Raw-example sources: the numbers task, a local text file, local classification files
(:mod:`tfm.data.labeled_files`), and TFDS data sets.

A source gives the untokenized examples of one split. Two shapes:

* :class:`ExampleSource` -- a sequence of examples (translation: ``(source, target)`` strings;
  sentence LM: a string; classification: ``(sentence, label)``) with ``num_examples`` and
  ``read(start, stop)``; ``random_access`` sources (in memory or generated) also ``take``
  arbitrary indices, which lets the training order permute the whole split.
* a text stream -- one string (tiny_shakespeare, a text file): language-model windows are cut
  from its token stream.

TensorFlow and TFDS are imported lazily, only when a TFDS source is used, so the default numbers
task and text files run without TensorFlow, which the default install does not pull: the TFDS
data sets (wmt14_ende, lm1b, sst2, tiny_shakespeare) need ``pip install 'tfm[tfds]'`` and say so
(:class:`MissingExtraError`) when it is missing. Splits are "train", "validation", "test"; where a data set lacks
one the documented stand-in is used (:data:`SPLIT_ALIASES`). Bad data raises ValueError naming
the file or data set and the cause.
"""

from __future__ import annotations

import abc
import logging
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfm.data import labeled_files
from tfm.data import numbers as numbers_lib
from tfm.data.config import STREAM_DATASETS, DataConfig, Dataset

SPLITS = ("train", "validation", "test")

# Evaluation-only sets of a data set, beside its splits (they may overlap training):
# "below_1000" is every number 0..999 -- what people type first -- of the numbers task.
EXTRA_EVAL_SETS = {Dataset.NUMBERS: ("below_1000",)}

# TFDS name, and per split the TFDS split actually read.
TFDS_NAMES = {
    Dataset.TINY_SHAKESPEARE: "tiny_shakespeare",
    Dataset.WMT14_ENDE: "wmt14_translate/de-en",
    Dataset.LM1B: "lm1b",
    Dataset.SST2: "glue/sst2",
}
SPLIT_ALIASES = {
    Dataset.LM1B: {"validation": "test"},  # lm1b has only train and test
    Dataset.SST2: {"test": "validation"},  # sst2's test labels are hidden (-1)
}

# TFDS splits larger than this are read in slices (blocks) instead of into memory.
MAX_IN_MEMORY = 500_000


class ExampleSource(abc.ABC):
    """The examples of one split, in a fixed order."""

    random_access: bool = False

    @property
    @abc.abstractmethod
    def num_examples(self) -> int: ...

    @abc.abstractmethod
    def read(self, start: int, stop: int) -> list[Any]:
        """Examples ``[start, stop)`` in the split's fixed order."""

    def take(self, indices: np.ndarray) -> list[Any]:
        """Examples at ``indices`` (random-access sources only)."""
        raise NotImplementedError(f"{type(self).__name__} is read sequentially")


class ListSource(ExampleSource):
    """Examples held in memory."""

    random_access = True

    def __init__(self, examples: Sequence[Any]):
        self.examples = list(examples)

    @property
    def num_examples(self) -> int:
        return len(self.examples)

    def read(self, start: int, stop: int) -> list[Any]:
        return self.examples[start:stop]

    def take(self, indices: np.ndarray) -> list[Any]:
        return [self.examples[int(i)] for i in indices]


class NumbersSource(ExampleSource):
    """(English words, German words) of a set of numbers, generated on demand."""

    random_access = True

    def __init__(self, numbers: np.ndarray):
        self.numbers = np.asarray(numbers)

    @property
    def num_examples(self) -> int:
        return len(self.numbers)

    def read(self, start: int, stop: int) -> list[tuple[str, str]]:
        return self.take(np.arange(start, min(stop, len(self.numbers))))

    def take(self, indices: np.ndarray) -> list[tuple[str, str]]:
        return [(numbers_lib.english(int(n)), numbers_lib.german(int(n)))
                for n in self.numbers[np.asarray(indices, dtype=np.int64)]]

    def tokenizer_sample(self, cap: int) -> list[tuple[str, str]]:
        """What the tokenizer is built from: every distinct number below 1,000 here (they hold
        every English word but "thousand", some of them -- "zero" -- nowhere else), then a
        fixed-seed sample of the others, ``cap`` numbers in all (at least those below 1,000)."""
        distinct = np.unique(self.numbers)
        small, rest = distinct[distinct < 1000], distinct[distinct >= 1000]
        k = min(max(cap - len(small), 0), len(rest))
        pick = np.random.default_rng(0).choice(rest, k, replace=False)
        return NumbersSource(np.sort(np.concatenate([small, pick]))).read(0, len(small) + k)


class TFDSSliceSource(ExampleSource):
    """A large TFDS split read by slices ``split[start:stop]`` (never held in memory whole)."""

    def __init__(self, builder, split: str, num_examples: int, convert, name: str):
        self._builder, self._split, self._n, self._convert, self._name = (
            builder, split, num_examples, convert, name)

    @property
    def num_examples(self) -> int:
        return self._n

    def read(self, start: int, stop: int) -> list[Any]:
        stop = min(stop, self._n)
        if start >= stop:
            return []
        ds = self._builder.as_dataset(split=f"{self._split}[{start}:{stop}]", shuffle_files=False)
        return [self._convert(ex) for ex in _as_numpy(ds)]


# ---------------------------------------------------------------------------------- loading
def is_stream(cfg: DataConfig) -> bool:
    """Whether the data set is one long text per split (LM windows) rather than examples."""
    return cfg.dataset in STREAM_DATASETS


def load_examples(cfg: DataConfig, split: str) -> ExampleSource:
    """The examples of ``split`` for a non-stream data set (numbers, wmt14, lm1b, sst2)."""
    if cfg.dataset is Dataset.NUMBERS and split == "below_1000":
        return NumbersSource(numbers_lib.below(1000, cfg.numbers.max))
    _check_split(split)
    if cfg.dataset is Dataset.NUMBERS:
        spec = cfg.numbers
        parts = numbers_lib.split_numbers(spec.max, spec.valid_size, spec.test_size, spec.split_seed,
                                          spec.held_out_fraction)
        if split == "train":  # every magnitude gets its share (see NumbersSpec)
            return NumbersSource(numbers_lib.training_numbers(
                parts["train"], spec.sampling_temperature, spec.split_seed))
        return NumbersSource(parts[split])
    if cfg.dataset in STREAM_DATASETS:
        raise ValueError(f"dataset {cfg.dataset.value!r} is a text stream: use load_text()")
    if cfg.dataset is Dataset.CLASSIFICATION_FILE:
        return ListSource(labeled_files.load_split(cfg, split))
    return _load_tfds_examples(cfg, split)


def load_text(cfg: DataConfig, split: str) -> str:
    """The text of ``split`` for a stream data set (tiny_shakespeare, text_file)."""
    _check_split(split)
    if cfg.dataset is Dataset.TEXT_FILE:
        text = read_text_file(cfg.text_file)
        cut = int(len(text) * (1.0 - cfg.valid_fraction))
        part = text[:cut] if split == "train" else text[cut:]
        if not part:
            raise ValueError(
                f"text_file {cfg.text_file}: its {split} part is empty ({len(text)} characters, "
                f"valid_fraction={cfg.valid_fraction}); use a longer file"
            )
        return part
    if cfg.dataset is Dataset.TINY_SHAKESPEARE:
        source = _load_tfds_examples(cfg, split)
        return "".join(source.read(0, source.num_examples))
    raise ValueError(f"dataset {cfg.dataset.value!r} is not a text stream: use load_examples()")


def read_text_file(path: str | pathlib.Path) -> str:
    """The UTF-8 text of ``path``; ValueError naming the file for missing, empty or bad bytes."""
    p = pathlib.Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"text_file {path}: no such file")
    if not p.is_file():
        raise ValueError(f"text_file {path}: not a regular file")
    data = p.read_bytes()
    if not data.strip():
        raise ValueError(f"text_file {path}: the file is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"text_file {path}: not valid UTF-8 text (undecodable bytes {data[e.start:e.end]!r} "
            f"at byte offset {e.start}: {e.reason})"
        ) from None


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


# ---------------------------------------------------------------------------------- TFDS
class MissingExtraError(ImportError):
    """A data set needs an optional dependency that is not installed (the message names the extra)."""


def _tfds(name: str):
    """``tensorflow_datasets``, once TensorFlow imports: tfds imports without it, but has no
    builders then (everything tfm reads from TFDS needs TensorFlow)."""
    try:
        import tensorflow  # noqa: F401
    except ImportError as e:
        raise MissingExtraError(
            f"dataset {name!r} is read with TensorFlow Datasets, which needs TensorFlow ({e}); "
            "install it with: pip install 'tfm[tfds]'") from e
    import tensorflow_datasets as tfds

    return tfds


def _decode(value: Any, name: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"TFDS dataset {name}: an example is not valid UTF-8 ({e})") from None
    return str(value)


def _converter(dataset: Dataset, name: str):
    """TFDS feature dict (NumPy) -> the raw example of the task."""
    if dataset is Dataset.WMT14_ENDE:
        return lambda ex: (_decode(ex["en"], name), _decode(ex["de"], name))
    if dataset is Dataset.SST2:
        return lambda ex: (_decode(ex["sentence"], name), int(ex["label"]))
    return lambda ex: _decode(ex["text"], name)


def _as_numpy(ds):
    import tensorflow_datasets as tfds  # a dataset exists: _tfds() has imported it

    return tfds.as_numpy(ds)


def _tfds_builder(cfg: DataConfig):
    name = TFDS_NAMES[cfg.dataset]
    tfds = _tfds(cfg.dataset.value)
    data_dir = cfg.tfds_data_dir or None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001 -- re-raised with the cause named
        raise ValueError(f"TFDS dataset {name}: cannot create its builder: {e}") from e
    if not cfg.tfds_manual_dir and _downloads(builder) and not _is_prepared(builder):
        offline = network_unreachable()  # TFDS would retry for minutes before failing
        if offline:
            raise ValueError(
                f"TFDS dataset {name} is not prepared in {builder.data_dir} and the network "
                f"cannot be reached ({offline}). Prepare it elsewhere and point "
                "--config.data.tfds_data_dir at it, or put the source files under the names "
                "TFDS expects into --config.data.tfds_manual_dir")
    download_config = tfds.download.DownloadConfig(manual_dir=cfg.tfds_manual_dir or None)
    try:
        builder.download_and_prepare(download_config=download_config)
    except Exception as e:  # noqa: BLE001
        raise ValueError(
            f"TFDS dataset {name}: could not prepare it in {builder.data_dir} ({type(e).__name__}: "
            f"{e}). Without network access, prepare it elsewhere and point "
            "--config.data.tfds_data_dir at it, or put the source files under the names TFDS "
            "expects into --config.data.tfds_manual_dir"
        ) from e
    return builder


def _downloads(builder) -> bool:
    """Whether preparing runs TFDS's own downloader (not a test double such as
    ``tfds.testing.mock_data``'s, which needs no network)."""
    prepare = getattr(type(builder), "download_and_prepare", None)
    return getattr(prepare, "__module__", "").startswith("tensorflow_datasets.core")


def _is_prepared(builder) -> bool:
    try:
        return bool(builder.is_prepared())
    except Exception:  # noqa: BLE001 - unknown: let TFDS decide
        return True


# Where TFDS downloads from first (its GCS mirror); a proxy in the environment is trusted.
NETWORK_PROBE = ("storage.googleapis.com", 443)


def network_unreachable(probe: tuple[str, int] = NETWORK_PROBE, timeout: float = 5.0) -> str:
    """"" if ``probe`` answers a TCP connection within ``timeout`` seconds (or a proxy is set),
    else the reason (for the error message)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return ""
    import socket

    try:
        socket.create_connection(probe, timeout=timeout).close()
    except OSError as e:
        return f"{probe[0]}:{probe[1]}: {e.strerror or e}"
    return ""


def _load_tfds_examples(cfg: DataConfig, split: str) -> ExampleSource:
    name = TFDS_NAMES[cfg.dataset]
    tfds_split = SPLIT_ALIASES.get(cfg.dataset, {}).get(split, split)
    builder = _tfds_builder(cfg)
    convert = _converter(cfg.dataset, name)
    splits = builder.info.splits
    num = splits[tfds_split].num_examples if tfds_split in splits else None
    if num is not None and num > MAX_IN_MEMORY:
        logging.info("TFDS %s[%s]: %d examples, read in slices", name, tfds_split, num)
        return TFDSSliceSource(builder, tfds_split, num, convert, name)
    ds = builder.as_dataset(split=tfds_split, shuffle_files=False)
    examples = [convert(ex) for ex in _as_numpy(ds)]
    if not examples:
        raise ValueError(f"TFDS dataset {name}: split {tfds_split!r} is empty")
    logging.info("TFDS %s[%s]: %d examples in memory", name, tfds_split, len(examples))
    return ListSource(examples)
