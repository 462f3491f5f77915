"""Data configuration: one frozen, validated dataclass passed down whole.

Every knob of the data layer (which data set, which tokenizer, sequence lengths, batching) lives
in :class:`DataConfig`. Its dataclass defaults ARE the project's defaults: ``configs/default.py``
is built from them, so the default run (``python train.py``) trains on the embedded synthetic
English-to-German number-words task with a small shared SentencePiece vocabulary.

A data set's own settings live in its spec, one nested frozen dataclass per data set
(``DataConfig.numbers``: :class:`tfm.data.numbers.NumbersSpec`, ``--config.data.numbers.max``);
a config.json of an older tfm, which held them flat (``numbers_max``), still reads
(:data:`FLAT_NAMES`).

Validation runs on construction and every error names the offending field.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar

from tfm.config import Arch, ConfigBase
from tfm.data.numbers import NumbersSpec


class Dataset(str, enum.Enum):
    """Where the examples come from (see :mod:`tfm.data.sources`)."""

    NUMBERS = "numbers"  # embedded: English number words -> German number words (translation)
    TINY_SHAKESPEARE = "tiny_shakespeare"  # TFDS; one long string per split (character LM)
    WMT14_ENDE = "wmt14_ende"  # TFDS wmt14_translate/de-en, English -> German (the paper)
    LM1B = "lm1b"  # TFDS; one billion word benchmark sentences (subword LM)
    SST2 = "sst2"  # TFDS glue/sst2; sentence sentiment (encoder-only classification)
    TEXT_FILE = "text_file"  # a local UTF-8 text file (language modelling on anything)
    CLASSIFICATION_FILE = "classification_file"  # a local CSV / TSV / JSONL file of (text, label) rows


class Task(str, enum.Enum):
    """What a data set is used for; decides the batch format (see :mod:`tfm.data.pipeline`)."""

    TRANSLATION = "translation"  # -> Arch.ENCODER_DECODER
    LM = "lm"  # -> Arch.DECODER_LM
    CLASSIFICATION = "classification"  # -> Arch.ENCODER_CLASSIFIER


class TokenizerKind(str, enum.Enum):
    CHAR = "char"  # one id per Unicode character seen in the training text
    SENTENCEPIECE = "sentencepiece"  # unigram SentencePiece trained on the training split
    PRETRAINED = "pretrained"  # the tokenizer of the imported model (TrainConfig.init_from)


class Overlong(str, enum.Enum):
    """What to do with an example longer than its maximum length (counted in the logs)."""

    TRUNCATE = "truncate"  # keep the first max_len tokens (a truncated sequence loses its eos)
    DROP = "drop"  # leave the example out


TASK_OF_DATASET: dict[Dataset, Task] = {
    Dataset.NUMBERS: Task.TRANSLATION,
    Dataset.WMT14_ENDE: Task.TRANSLATION,
    Dataset.TINY_SHAKESPEARE: Task.LM,
    Dataset.LM1B: Task.LM,
    Dataset.TEXT_FILE: Task.LM,
    Dataset.SST2: Task.CLASSIFICATION,
    Dataset.CLASSIFICATION_FILE: Task.CLASSIFICATION,
}

# Data sets read as one long string per split (character / token stream language models: LM
# windows are cut from the token stream; no BOS, and SentencePiece puts EOS between lines).
STREAM_DATASETS = (Dataset.TINY_SHAKESPEARE, Dataset.TEXT_FILE)

# The model architecture each task trains.
ARCH_OF_TASK: dict[Task, Arch] = {
    Task.TRANSLATION: Arch.ENCODER_DECODER,
    Task.LM: Arch.DECODER_LM,
    Task.CLASSIFICATION: Arch.ENCODER_CLASSIFIER,
}


@dataclasses.dataclass(frozen=True)
class DataConfig(ConfigBase):
    """Everything that defines the data a model is trained and evaluated on.

    Attributes:
      dataset: which data set (see :class:`Dataset`). Its task (translation, language
        modelling, classification) decides the model architecture: see :meth:`task` and
        :meth:`arch`.
      text_file: path of the UTF-8 text for ``dataset="text_file"`` (required there, unused
        elsewhere). The first ``1 - valid_fraction`` of its characters train, the rest evaluate.
      valid_fraction: held-out tail fraction of ``text_file`` (validation and test are the same
        text there).
      tokenizer: character level or SentencePiece (one vocabulary shared by source and target,
        as in the paper). Either is built from the training split only and saved in
        ``WORKDIR/tokenizer/``, from where resume and generation reload it.
      vocab_size: SentencePiece vocabulary size, including pad/bos/eos/unk. A soft limit: on a
        small corpus the trained vocabulary may come out smaller (the model's vocab_size must
        be taken from ``tokenizer.vocab_size``, never from here). Unused for ``char``.
      tokenizer_character_coverage: SentencePiece's character_coverage: the fraction of the
        training text's characters that get their own piece; the rarest rest become unk. 1.0
        (SentencePiece's advice for alphabetic languages) keeps every character: at 0.9995 the
        numbers task lost its only rare letter, the "ö" of "zwölf", and could never produce it.
        Below 1 only for large-alphabet text (0.9995 for Chinese or Japanese). Unused for ``char``.
      tokenizer_max_examples: at most this many training examples (the first ones of a large
        TFDS split, else a fixed-seed sample) build the tokenizer; a streamed LM text is split
        into lines for SentencePiece and used whole for the character vocabulary.
      chunk_size: the training order is built chunk by chunk: a data set that fits in memory
        (or is generated, like numbers) is permuted whole each epoch and tokenized
        ``chunk_size`` examples at a time; a large TFDS split is read in blocks of
        ``chunk_size`` consecutive examples, visited in a shuffled order and shuffled inside.
        Batches (padded, packed or bucketed) are planned inside a chunk.
      max_len: maximum length in tokens of the source / classifier input / language-model
        context (inputs of an LM batch are exactly max_len long).
      max_target_len: maximum target length in tokens for translation (including eos).
      overlong: truncate or drop training examples longer than the maximum lengths (always
        truncated in evaluation, where every example must be scored). Counted in the logs and
        in ``pipeline.stats``.
      batch_size: GLOBAL number of examples (rows) per training step, summed over all hosts
        and devices. Must be divisible by the number of hosts (processes).
      tokens_per_batch: translation only: when > 0, token-count batching replaces
        ``batch_size``: examples are bucketed by length and each batch holds about this many
        tokens (rows = tokens_per_batch // bucket length, rounded down to a multiple of the
        device count). 0 = fixed batch_size rows.
      pack: pack several variable-length examples into each row (segment ids and positions
        keep packed examples from attending to each other). Translation and sentence LMs
        (lm1b); streamed LMs (tiny_shakespeare, text_file) are contiguous windows anyway and
        classification cannot be packed.
      shuffle_seed: seed of the training order (and of LM window positions). The training
        stream is a pure function of this seed and the step, which is what makes it resumable.
      eval_batch_size: GLOBAL rows per evaluation batch (the last batch is padded with rows of
        weight 0).
      max_eval_examples: evaluate on at most this many examples (LM: windows) per split;
        0 = all.
      tfds_data_dir: TFDS data directory; "" = the TFDS default (``~/tensorflow_datasets`` or
        ``$TFDS_DATA_DIR``).
      tfds_manual_dir: a directory holding already-downloaded source files under the names
        TFDS expects (e.g. ``input.txt`` for tiny_shakespeare): preparation then needs no
        network. "" = none.
      numbers: the numbers task's settings (range, held-out sizes, split seed, sampling
        temperature): :class:`tfm.data.numbers.NumbersSpec`, ``--config.data.numbers.max=99999``.

      Local classification files (``dataset="classification_file"``, :mod:`tfm.data.labeled_files`):
      classification_file: path of the training rows: ``.csv``, ``.tsv`` (a header row names
        the columns) or ``.jsonl`` (one JSON object per line). Required there, unused elsewhere.
      classification_valid_file: the validation rows (same format); "" = a fixed-seed
        ``valid_fraction`` of ``classification_file`` is held out (and never trained on).
      text_column: the column (key) holding the text.
      text_pair_column: the column holding the second text of a sentence pair ("" = single
        texts); pairs are encoded [CLS] a [SEP] b [SEP] with token types 0 / 1 (the model needs
        ``type_vocab_size`` >= 2, as BERT has).
      label_column: the column holding the label: a name from ``label_names`` or an integer id.
      label_names: the classes, in id order (the model's ``class_names``); () = the distinct
        labels of the training file: ids 0..max when all are integers, else the names sorted.
        A row with a missing column, an empty text or an unknown label is counted and named
        (file:line) in the log, and left out.
    """

    dataset: Dataset = Dataset.NUMBERS
    text_file: str = ""
    valid_fraction: float = 0.1
    tokenizer: TokenizerKind = TokenizerKind.SENTENCEPIECE
    vocab_size: int = 256
    tokenizer_character_coverage: float = 1.0
    tokenizer_max_examples: int = 10_000
    chunk_size: int = 100_000
    max_len: int = 16
    max_target_len: int = 16
    overlong: Overlong = Overlong.TRUNCATE
    batch_size: int = 64
    tokens_per_batch: int = 0
    pack: bool = False
    shuffle_seed: int = 0
    eval_batch_size: int = 128
    max_eval_examples: int = 0
    tfds_data_dir: str = ""
    tfds_manual_dir: str = ""
    numbers: NumbersSpec = NumbersSpec()
    # local classification files
    classification_file: str = ""
    classification_valid_file: str = ""
    text_column: str = "text"
    text_pair_column: str = ""
    label_column: str = "label"
    label_names: tuple[str, ...] = ()

    _ENUMS: ClassVar[dict[str, type[enum.Enum]]] = {
        "dataset": Dataset,
        "tokenizer": TokenizerKind,
        "overlong": Overlong,
    }
    # per-data-set specs: field -> its frozen dataclass (a next data set's spec is one entry)
    _SPECS: ClassVar[dict[str, type[ConfigBase]]] = {"numbers": NumbersSpec}

    def __post_init__(self):
        if isinstance(self.label_names, list):  # from JSON or a config file
            object.__setattr__(self, "label_names", tuple(self.label_names))
        super().__post_init__()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        """From a plain dict; an older tfm's flat names (``numbers_max``) are read into their
        spec (see :func:`nest_flat_names`)."""
        return super().from_dict(nest_flat_names(d))

    # ------------------------------------------------------------------ derived
    @property
    def task(self) -> Task:
        """The task of the data set: translation, lm or classification."""
        return TASK_OF_DATASET[self.dataset]

    @property
    def arch(self) -> Arch:
        """The :class:`tfm.config.Arch` that trains on this data."""
        return ARCH_OF_TASK[self.task]

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raises ValueError naming the first offending field."""

        def fail(field: str, msg: str):
            raise ValueError(f"DataConfig.{field}={getattr(self, field)!r}: {msg}")

        def is_int(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        for field in ("max_len", "max_target_len", "batch_size", "eval_batch_size",
                      "tokenizer_max_examples", "chunk_size"):
            value = getattr(self, field)
            if not is_int(value) or value <= 0:
                fail(field, "must be a positive integer")
        for field in ("tokens_per_batch", "max_eval_examples", "shuffle_seed"):
            value = getattr(self, field)
            if not is_int(value) or value < 0:
                fail(field, "must be a non-negative integer")
        if not isinstance(self.pack, bool):
            fail("pack", "must be a bool")
        if self.max_len < 2:
            fail("max_len", "must be at least 2 (a token and eos)")
        if self.max_target_len < 2:
            fail("max_target_len", "must be at least 2 (a token and eos)")
        if not is_int(self.vocab_size) or self.vocab_size < 8:
            fail("vocab_size", "must be an integer >= 8 (4 ids are reserved: pad, bos, eos, unk)")
        coverage = self.tokenizer_character_coverage
        if isinstance(coverage, bool) or not isinstance(coverage, (int, float)) or not 0.9 <= coverage <= 1.0:
            fail("tokenizer_character_coverage", "must be in [0.9, 1] (1.0 keeps every character)")
        if not isinstance(self.valid_fraction, (int, float)) or not 0.0 < self.valid_fraction < 1.0:
            fail("valid_fraction", "must be in (0, 1)")
        if self.dataset is Dataset.TEXT_FILE and not self.text_file:
            fail("text_file", "dataset='text_file' needs --config.data.text_file=PATH")
        if self.dataset is not Dataset.TEXT_FILE and self.text_file:
            fail("text_file", f"is only used with dataset='text_file', not {self.dataset.value!r}")
        if self.tokens_per_batch:
            if self.task is not Task.TRANSLATION:
                fail("tokens_per_batch", "token-count batching is for translation data sets only")
            if self.tokens_per_batch < max(self.max_len, self.max_target_len):
                fail("tokens_per_batch", "must hold at least one example of the maximum length")
        is_file = self.dataset is Dataset.CLASSIFICATION_FILE
        if is_file and not self.classification_file:
            fail("classification_file", "dataset='classification_file' needs --config.data.classification_file=PATH")
        for field in ("classification_file", "classification_valid_file"):
            if not isinstance(getattr(self, field), str):
                fail(field, "must be a path (a string) or ''")
            if getattr(self, field) and not is_file:
                fail(field, f"is only used with dataset='classification_file', not {self.dataset.value!r}")
        for field in ("text_column", "label_column"):
            if not isinstance(getattr(self, field), str) or not getattr(self, field):
                fail(field, "must be a non-empty column name")
        if not isinstance(self.text_pair_column, str):
            fail("text_pair_column", "must be a column name or '' (single texts)")
        names = self.label_names
        if not isinstance(names, tuple) or not all(isinstance(n, str) and n for n in names):
            fail("label_names", "must be a tuple of non-empty strings (or () to take them from the file)")
        if len(set(names)) != len(names) or len(names) == 1:
            fail("label_names", "needs two or more distinct names")
        if self.pack and self.task is Task.CLASSIFICATION:
            fail("pack", "classification examples cannot be packed (one label per row)")


# ---------------------------------------------------------------------- older config files
# The fields an older tfm held flat in DataConfig -> their dotted name now (spec.field).
FLAT_NAMES: dict[str, str] = {
    "numbers_max": "numbers.max",
    "numbers_valid_size": "numbers.valid_size",
    "numbers_test_size": "numbers.test_size",
    "numbers_split_seed": "numbers.split_seed",
    "numbers_held_out_fraction": "numbers.held_out_fraction",
    "numbers_sampling_temperature": "numbers.sampling_temperature",
}


def nest_flat_names(d: dict[str, Any]) -> dict[str, Any]:
    """A "data" dict with the flat names of :data:`FLAT_NAMES` moved into their spec's dict
    (``{"numbers_max": 9}`` -> ``{"numbers": {"max": 9}}``); a field given both ways is a
    ValueError naming both."""
    out = dict(d)
    for old in [k for k in d if k in FLAT_NAMES]:
        spec, field = FLAT_NAMES[old].split(".")
        nested = out.get(spec, {})
        nested = dict(nested.to_dict() if isinstance(nested, ConfigBase) else nested)
        if field in nested:
            raise ValueError(f"data.{old} and data.{spec}.{field} are both given: {old} is the older "
                             f"name of {spec}.{field}; keep data.{spec}.{field} only")
        nested[field] = out.pop(old)
        out[spec] = nested
    return out
