"""The one entry point of the data layer: config -> tokenizer + resumable batches.

Usage (the training loop)::

    from tfm.data.pipeline import build_pipeline
    pipe = build_pipeline(cfg.data, cfg.model.arch, workdir=workdir,
                          process_index=jax.process_index(),
                          process_count=jax.process_count(),
                          batch_multiple=jax.device_count())
    model_cfg = model_cfg.replace(vocab_size=pipe.vocab_size)     # ALWAYS from the tokenizer
    it = pipe.train_iter                   # infinite iterator of host-local batches
    it.set_state(saved_state)              # on resume (a dict saved with the checkpoint)
    batch = next(it)                       # dict of NumPy arrays, see "Batches" below
    state_to_save = it.get_state()         # JSON-able dict; save it with the checkpoint
    for batch in pipe.eval_batches("validation"):   # fresh, finite, deterministic
        ...
    pairs = pipe.eval_pairs("validation")  # translation: [(source text, reference text)]

API
---
``build_pipeline(data_cfg, arch=None, *, workdir=None, process_index=0, process_count=1,
batch_multiple=1) -> Pipeline``

  * ``arch``: a ``tfm.config.Arch`` (or its string value) or None (= ``data_cfg.arch``). It
    must match the data set's task (translation -> encoder_decoder, lm -> decoder_lm,
    classification -> encoder_classifier), else ValueError.
  * ``workdir``: when given and ``WORKDIR/tokenizer/`` exists, the tokenizer is loaded from
    there (resume, generation); otherwise it is built from the training split and, when a
    workdir is given and ``process_index == 0``, saved there.
  * ``process_index`` / ``process_count``: host sharding. Every global batch is assembled in
    the same order on every host and host ``i`` keeps rows ``[i*B/P, (i+1)*B/P)``, so P hosts
    together see exactly what one host would.
  * ``batch_multiple``: token-count batches get a row count that is a multiple of this (pass
    ``jax.device_count()``); fixed ``batch_size`` batches must already be divisible by it.

``Pipeline`` attributes and methods:

  * ``config`` (DataConfig), ``task`` (Task), ``arch`` (str, the tfm.config.Arch value).
  * ``tokenizer``: a :class:`tfm.data.tokenizers.Tokenizer` (pad 0, bos 1, eos 2, unk 3; the
    pad id only fills padded positions: what is padding is said by segment ids and weights).
  * ``vocab_size``: ``tokenizer.vocab_size`` -- set the model's vocab_size from it.
  * ``num_classes``: classification only (2 for sst2), else None.
  * ``train_iter``: :class:`tfm.data.batching.BatchIterator`; infinite; ``next(it)`` gives
    the next host-local training batch; ``get_state() -> dict`` (JSON-able) and
    ``set_state(dict)``: after ``set_state(s)`` the next batch is exactly the one the
    uninterrupted run would have produced after ``s`` was taken.
  * ``eval_batches(split="validation") -> Iterator[dict]``: a fresh finite pass over the
    split (no shuffling, no packing, fixed shapes (eval_batch_size/P, max_len)); the
    ``weights`` are also 0 on the padding rows that fill the last batch. Global eval batch j holds examples ``[j*E, (j+1)*E)`` of the split in order
    (E = eval_batch_size), so row r of host i is example ``j*E + i*E/P + r``.
  * ``num_eval_examples(split="validation") -> int``: real (non-padding) rows over all batches.
  * ``eval_pairs(split="validation") -> list[tuple[str, str]]``: translation only: (source
    text, reference text) in the same order as the rows of ``eval_batches`` -- for BLEU and
    exact match on detokenized text.
  * ``decode_sets``: translation: the sets the training loop decodes for BLEU / exact match:
    "validation", plus a data set's evaluation-only sets (numbers: "below_1000", every number
    0..999, training numbers included); each works with ``eval_pairs`` and ``eval_groups``.
  * ``eval_groups(split="validation") -> list[str] | None``: one group label per example of
    ``eval_pairs(split)``, for metrics by group (numbers: the magnitude bucket, "0-99",
    "100-999", ...); None when the data set has no groups.
  * ``encode_inputs(texts, return_mask=False) -> np.ndarray``: translation / classification:
    (len(texts), max_len) int32 model inputs for new text, built exactly like the ``inputs`` of
    a batch (truncated, padded); with ``return_mask`` also the (len(texts), max_len) bool mask
    of real tokens (what :mod:`tfm.decoding` takes as ``inputs_mask``). For LM prompts use
    ``tokenizer.encode`` (no eos is added there).
  * ``decode(ids) -> list[str]``: (B, T) ids -> texts, each cut at its first eos.
  * ``bleu_tokenize``: the sacrebleu tokenizer to score this task with ("13a" normally;
    "char" for the numbers task, whose German outputs are single words, so word-level BLEU
    would only restate exact match).
  * ``stats``: counts for the logs: ``train_examples`` (or ``train_tokens`` for streamed LMs),
    and once a split has been evaluated ``{split}_examples``, ``{split}_truncated``. The
    training iterator keeps its own running counts in ``train_iter.stats`` (``examples``,
    ``truncated``, ``dropped``, ``chunks``; each chunk with overlong examples is also logged).

Splits are "train", "validation", "test". sst2's test labels are hidden (-1), so its "test"
is its validation split; lm1b has no validation split, so its "validation" is its test split;
a text file's "validation" and "test" are both its held-out tail.

Batches
-------
Dicts of host-local NumPy arrays, int32 unless said (the shared contract). Padding is data:
every batch, training or eval, packed or not, carries segment ids (0 = padding, 1, 2, ... =
the example within a packed row; an unpacked row is 1 on its real tokens), per-example
positions, and ``weights`` float32 (1 on real targets, 0 on padding), which the model and the
loss use; no token id means padding (padded positions hold 0, which is just filler).

  * decoder_lm: ``inputs`` (B,T), ``targets`` (B,T) = inputs shifted left by one,
    ``segment_ids``, ``positions``, ``weights`` (B,T). Streamed LMs (tiny_shakespeare,
    text_file) are random windows of T+1 tokens of the training stream (nanoGPT; all
    real); sentence LMs (lm1b) are ``[bos] + ids + [eos]`` split into inputs ``seq[:-1]``
    and targets ``seq[1:]``, padded or packed.
  * encoder_decoder: ``inputs`` (B,S) = source ids + eos; ``decoder_inputs`` (B,T) =
    ``[bos] + target[:-1]`` (restarting with bos at each packed segment); ``targets`` (B,T)
    = target ids + eos; ``inputs_segment_ids``, ``inputs_positions`` (B,S),
    ``targets_segment_ids``, ``targets_positions``, ``weights`` (B,T).
  * encoder_classifier: ``inputs``, ``segment_ids``, ``positions`` (B,S) with inputs
    ``[bos] + ids + [eos]``; ``label`` (B,), ``weights`` (B,) (1 per real example).

What the training loop must do
------------------------------
  * Take the model's ``vocab_size`` from ``pipe.vocab_size`` (SentencePiece's vocab_size is a
    soft limit) and make the model's ``max_len`` at least ``max(max_len, max_target_len)``.
  * Save ``pipe.train_iter.get_state()`` with every checkpoint and ``set_state`` it on
    restore (and pass the same workdir, so the saved tokenizer is reused).
  * With ``tokens_per_batch > 0`` batch shapes vary between buckets (rows, bucket length): a
    handful of shapes, so a handful of compilations; fixed-size batching has one shape.
  * Score translation on text: decode the model's output with ``pipe.decode`` and compare with
    ``eval_pairs`` references using ``tfm.metrics.bleu(..., tokenize=pipe.bleu_tokenize)``
    and ``exact_match``. Perplexity is ``exp(nll_sum / weight_sum)`` over ``eval_batches``;
    with the char tokenizer bits per character is ``nll_sum / (weight_sum * ln 2)``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from tfm.data import batching, examples, plans, sources
from tfm.data import numbers as numbers_lib
from tfm.data import tokenizers as tokenizers_lib
from tfm.config import Arch, parse_enum
from tfm.data.config import DataConfig, Dataset, Overlong, Task, TokenizerKind
from tfm.data.tokenizers import Tokenizer
from tfm.token_ids import check_token_ids
from tfm.run_files.layout import TOKENIZER_DIR  # noqa: F401 - WORKDIR/tokenizer, where it is saved


@dataclasses.dataclass
class Pipeline:
    """Tokenizer, training iterator and evaluation data of one run (see the module docstring)."""

    config: DataConfig
    task: Task
    arch: Arch
    tokenizer: Tokenizer
    train_iter: batching.BatchIterator
    num_classes: int | None = None
    class_names: tuple[str, ...] = ()  # classification: the label names, in id order (() = unnamed)
    bleu_tokenize: str = "13a"
    stats: dict[str, int] = dataclasses.field(default_factory=dict)
    process_index: int = 0
    process_count: int = 1
    _eval_cache: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    # ------------------------------------------------------------------ evaluation
    def eval_batches(self, split: str = "validation") -> Iterator[dict[str, np.ndarray]]:
        """A fresh finite pass over ``split`` (host-local rows; weights 0 on padding)."""
        cfg = self.config
        data = self._eval_data(split)
        if sources.is_stream(cfg):
            return batching.eval_windows(data, cfg.max_len, cfg.eval_batch_size,
                                         cfg.max_eval_examples, self.process_index,
                                         self.process_count)
        enc, _ = data
        return batching.eval_batches(enc, cfg.eval_batch_size, self._eval_assemble,
                                     self.process_index, self.process_count)

    def num_eval_examples(self, split: str = "validation") -> int:
        """Real (non-padding) rows of ``eval_batches(split)`` over all hosts."""
        data = self._eval_data(split)
        if sources.is_stream(self.config):
            return batching.num_windows(len(data), self.config.max_len, self.config.max_eval_examples)
        return len(data[0])

    def eval_pairs(self, split: str = "validation") -> list[tuple[str, str]]:
        """Translation: (source text, reference text), in the row order of ``eval_batches``."""
        if self.task is not Task.TRANSLATION:
            raise ValueError(f"eval_pairs is for translation data sets, not {self.config.dataset.value!r}")
        return list(self._eval_data(split)[1])

    @property
    def decode_sets(self) -> tuple[str, ...]:
        """Translation: the sets to decode for BLEU / exact match ("validation" first)."""
        return ("validation",) + sources.EXTRA_EVAL_SETS.get(self.config.dataset, ())

    def eval_groups(self, split: str = "validation") -> list[str] | None:
        """Group label of each example of ``eval_pairs(split)`` (numbers: magnitude bucket)."""
        cfg = self.config
        if cfg.dataset is not Dataset.NUMBERS:
            return None
        numbers = sources.load_examples(cfg, split).numbers
        return numbers_lib.bucket_labels(numbers[: self.num_eval_examples(split)])

    def _eval_data(self, split: str):
        if split not in self._eval_cache:
            cfg = self.config
            if sources.is_stream(cfg):
                self._eval_cache[split] = encode_stream(self.tokenizer, sources.load_text(cfg, split))
            else:
                source = sources.load_examples(cfg, split)
                n = source.num_examples
                if cfg.max_eval_examples:
                    n = min(n, cfg.max_eval_examples)
                raw = source.read(0, n)
                # Every held-out example is scored: overlong ones are truncated, never dropped.
                enc = encode_examples(self.task, self.tokenizer, raw, cfg, drop=False)
                if enc.truncated:
                    logging.warning("%s: %d of %d examples truncated to the maximum length",
                                    split, enc.truncated, len(enc))
                self.stats[f"{split}_examples"] = len(enc)
                self.stats[f"{split}_truncated"] = enc.truncated
                self._eval_cache[split] = (enc, raw)
        return self._eval_cache[split]

    def _eval_assemble(self, enc: examples.Encoded, rows) -> dict[str, np.ndarray]:
        cfg = self.config
        if self.task is Task.TRANSLATION:
            return batching.assemble_translation(enc, rows, cfg.max_len, cfg.max_target_len,
                                                 self.tokenizer.bos_id)
        if self.task is Task.LM:
            return batching.assemble_lm(enc, rows, cfg.max_len)
        return batching.assemble_classification(enc, rows, cfg.max_len)

    # ------------------------------------------------------------------ new text
    def encode_inputs(self, texts: Sequence[str], return_mask: bool = False):
        """(len(texts), max_len) int32 inputs for new source / classification text, and with
        ``return_mask`` the bool mask of their real tokens: ``(inputs, mask)``."""
        if self.task is Task.LM:
            raise ValueError("encode_inputs is for translation and classification; encode LM "
                             "prompts with pipe.tokenizer.encode")
        raw = [(t, "") for t in texts] if self.task is Task.TRANSLATION else [(t, 0) for t in texts]
        enc = encode_examples(self.task, self.tokenizer, raw, self.config, drop=False)
        rows = [[i] for i in range(len(enc))]
        batch = self._eval_assemble(enc, rows)
        seg = batch["inputs_segment_ids" if self.task is Task.TRANSLATION else "segment_ids"]
        return (batch["inputs"], seg > 0) if return_mask else batch["inputs"]

    def decode(self, ids: np.ndarray) -> list[str]:
        """(B, T) ids -> B texts, each cut at its first eos."""
        return self.tokenizer.decode_batch(np.asarray(ids))


def _num_classes(cfg: DataConfig) -> int:
    if cfg.dataset is Dataset.CLASSIFICATION_FILE:
        return len(sources.labeled_files.label_names(cfg))
    return 2  # sst2


# ====================================================================== building blocks
def encode_examples(task: Task, tok: Tokenizer, raw: Sequence[Any], cfg: DataConfig, *,
                    drop: bool) -> examples.Encoded:
    """Raw examples of ``task`` -> :class:`examples.Encoded` (ids placed, overlong handled)."""
    if task is Task.TRANSLATION:
        src = _checked(tok, tok.encode_batch([r[0] for r in raw]))
        tgt = _checked(tok, tok.encode_batch([r[1] for r in raw]))
        return examples.encode_translation(src, tgt, cfg.max_len, cfg.max_target_len, drop=drop,
                                           eos_id=tok.eos_id)
    special = dict(bos_id=tok.bos_id, eos_id=tok.eos_id)  # the tokenizer's own ids
    if task is Task.LM:
        return examples.encode_lm_sentences(_checked(tok, tok.encode_batch(list(raw))), cfg.max_len,
                                            drop=drop, **special)
    pairs = bool(raw) and isinstance(raw[0][0], tuple)  # (text, text) pairs: a local file's text_pair_column
    first = [r[0][0] if pairs else r[0] for r in raw]
    second = _checked(tok, tok.encode_batch([r[0][1] for r in raw])) if pairs else None
    return examples.encode_classification(_checked(tok, tok.encode_batch(first)), [r[1] for r in raw],
                                          cfg.max_len, drop=drop, second=second, **special)


def _checked(tok: Tokenizer, rows: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
    """``rows`` after checking every id is in the tokenizer's vocabulary (a corrupt tokenizer
    file would otherwise become NaN logits in training)."""
    if len(rows):
        check_token_ids(np.concatenate([np.asarray(r).ravel() for r in rows]), tok.vocab_size,
                        f"the {tok.kind} tokenizer's output")
    return rows


def encode_stream(tok: Tokenizer, text: str) -> np.ndarray:
    """A text stream -> one int32 token stream.

    Character level and byte-level BPE (GPT-2): the whole text, newlines included.
    SentencePiece normalises newlines away, so the text is encoded line by line with eos
    between lines.
    """
    if tok.keeps_newlines:
        return _checked(tok, tok.encode_batch([text]))[0]
    lines = [line for line in text.split("\n") if line.strip()]
    ids = _checked(tok, tok.encode_batch(lines))
    eos = np.array([tok.eos_id], np.int32)
    return np.concatenate([part for line in ids for part in (line, eos)]).astype(np.int32)


def tokenizer_texts(cfg: DataConfig) -> list[str]:
    """The training texts a tokenizer is built from (see ``DataConfig.tokenizer_max_examples``)."""
    cap = cfg.tokenizer_max_examples
    if sources.is_stream(cfg):
        text = sources.load_text(cfg, "train")
        if cfg.tokenizer is TokenizerKind.CHAR:
            return [text]
        lines = [line for line in text.split("\n") if line.strip()]
        return lines[:cap]
    source = sources.load_examples(cfg, "train")
    n = source.num_examples
    if isinstance(source, sources.NumbersSource):
        raw = source.tokenizer_sample(cap)
    elif n <= cap:
        raw = source.read(0, n)
    elif source.random_access:
        raw = source.take(np.sort(np.random.default_rng(0).choice(n, cap, replace=False)))
    else:
        raw = source.read(0, cap)
    task = cfg.task
    if task is Task.TRANSLATION:
        return [r[0] for r in raw] + [r[1] for r in raw]
    if task is Task.CLASSIFICATION:  # a text, or both texts of a pair
        return [t for r in raw for t in (r[0] if isinstance(r[0], tuple) else (r[0],))]
    return list(raw)


def build_tokenizer(cfg: DataConfig) -> Tokenizer:
    """Builds the tokenizer of ``cfg`` from its training split."""
    texts = tokenizer_texts(cfg)
    if cfg.tokenizer is TokenizerKind.CHAR:
        return tokenizers_lib.CharTokenizer.train(texts)
    return tokenizers_lib.SentencePieceTokenizer.train(
        texts, cfg.vocab_size, max_sentences=max(len(texts), 1), seed=cfg.shuffle_seed,
        character_coverage=cfg.tokenizer_character_coverage)


def get_tokenizer(cfg: DataConfig, workdir: str | os.PathLike | None = None,
                  process_index: int = 0, pretrained: Tokenizer | None = None) -> Tokenizer:
    """Loads ``WORKDIR/tokenizer`` if present, else builds it -- or, for
    ``tokenizer="pretrained"``, takes ``pretrained`` (an imported model's) -- and saves it from
    host 0."""
    tok_dir = pathlib.Path(workdir) / TOKENIZER_DIR if workdir else None
    own_kinds = {TokenizerKind.CHAR.value, TokenizerKind.SENTENCEPIECE.value}
    if tok_dir is not None and tokenizers_lib.exists(tok_dir):
        tok = tokenizers_lib.load_tokenizer(tok_dir)
        if cfg.tokenizer is TokenizerKind.PRETRAINED and tok.kind not in own_kinds:
            pass  # an imported model's tokenizer, saved by the first run of this workdir
        elif tok.kind != cfg.tokenizer.value:
            raise ValueError(
                f"DataConfig.tokenizer={cfg.tokenizer.value!r} but {tok_dir} holds a {tok.kind!r} "
                "tokenizer (a resumed run must keep its tokenizer; use a fresh workdir)")
        logging.info("tokenizer: loaded %s (vocab %d) from %s", tok.kind, tok.vocab_size, tok_dir)
        return tok
    if cfg.tokenizer is TokenizerKind.PRETRAINED:
        if pretrained is None:
            raise ValueError("DataConfig.tokenizer='pretrained': no imported tokenizer was given "
                             "(set TrainConfig.init_from)")
        tok = pretrained
        logging.info("tokenizer: %s (vocab %d) of the imported model", tok.kind, tok.vocab_size)
    else:
        tok = build_tokenizer(cfg)
        logging.info("tokenizer: built %s (vocab %d) from the training split", tok.kind, tok.vocab_size)
    if tok_dir is not None and process_index == 0:
        tok.save(tok_dir)
    return tok


def _arch(arch: Any) -> Arch:
    return parse_enum(Arch, arch, "arch")


def build_pipeline(
    data_cfg: DataConfig,
    arch: Any = None,
    *,
    workdir: str | os.PathLike | None = None,
    process_index: int = 0,
    process_count: int = 1,
    batch_multiple: int = 1,
    pretrained_tokenizer: Tokenizer | None = None,
) -> Pipeline:
    """Builds the tokenizer and the batches of ``data_cfg`` (see the module docstring)."""
    cfg = data_cfg
    task = cfg.task
    wanted = cfg.arch if arch is None else _arch(arch)
    if wanted is not cfg.arch:
        raise ValueError(
            f"DataConfig.dataset={cfg.dataset.value!r} is a {task.value} data set and trains "
            f"arch={cfg.arch.value!r}, not {wanted.value!r}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is not in [0, {process_count})")
    if batch_multiple % process_count:
        raise ValueError(f"batch_multiple={batch_multiple} is not a multiple of the "
                         f"{process_count} hosts")
    for field in ("batch_size", "eval_batch_size"):
        if getattr(cfg, field) % batch_multiple:
            raise ValueError(f"DataConfig.{field}={getattr(cfg, field)} is not divisible by "
                             f"batch_multiple={batch_multiple} (the device count)")

    tok = get_tokenizer(cfg, workdir, process_index, pretrained_tokenizer)
    shard = dict(process_index=process_index, process_count=process_count)
    if sources.is_stream(cfg):
        tokens = encode_stream(tok, sources.load_text(cfg, "train"))
        train_iter = batching.WindowIterator(tokens, cfg.max_len, cfg.batch_size,
                                             cfg.shuffle_seed, **shard)
        stats = {"train_tokens": int(len(tokens))}
    else:
        source = sources.load_examples(cfg, "train")
        drop = cfg.overlong is Overlong.DROP

        def encode(raw):
            return encode_examples(task, tok, raw, cfg, drop=drop)

        train_iter = batching.ChunkedIterator(
            source, encode, _planner(cfg, batch_multiple), _assembler(cfg, tok.bos_id),
            chunk_size=cfg.chunk_size, seed=cfg.shuffle_seed, **shard)
        stats = {"train_examples": int(source.num_examples)}
    pipe = Pipeline(
        config=cfg, task=task, arch=cfg.arch, tokenizer=tok, train_iter=train_iter,
        num_classes=_num_classes(cfg) if task is Task.CLASSIFICATION else None,
        class_names=sources.labeled_files.label_names(cfg) if cfg.dataset is Dataset.CLASSIFICATION_FILE else (),
        bleu_tokenize="char" if cfg.dataset.value == "numbers" else "13a",
        stats=stats, **shard)
    logging.info("data: %s (%s), tokenizer %s vocab %d, %s", cfg.dataset.value, task.value,
                 tok.kind, tok.vocab_size, stats)
    return pipe


def _planner(cfg: DataConfig, batch_multiple: int):
    """Encoded chunk -> planned global batches, per the batching options of ``cfg``."""
    task = cfg.task
    caps = [cfg.max_len, cfg.max_target_len] if task is Task.TRANSLATION else [cfg.max_len]
    longest = max(caps)

    def lengths(enc: examples.Encoded) -> np.ndarray:
        if task is Task.TRANSLATION:
            return np.stack([enc.lengths("inputs"), enc.lengths("targets")], axis=1)
        return enc.lengths("inputs")[:, None]

    if cfg.pack:
        rows = (plans.rows_for_tokens(cfg.tokens_per_batch, longest, batch_multiple)
                if cfg.tokens_per_batch else cfg.batch_size)
        return lambda enc: plans.plan_packed(lengths(enc), caps, rows)
    if cfg.tokens_per_batch:
        bounds = plans.bucket_boundaries(longest)
        return lambda enc: plans.plan_buckets(lengths(enc).max(axis=1), bounds,
                                                 cfg.tokens_per_batch, batch_multiple)
    return lambda enc: plans.plan_padded(len(enc), cfg.batch_size)


def _assembler(cfg: DataConfig, bos_id: int):
    """(Encoded, host rows, PlannedBatch) -> batch, per the task of ``cfg`` (``bos_id``: the
    tokenizer's decoder start token)."""
    task = cfg.task

    def assemble(enc, rows, planned: plans.PlannedBatch):
        if task is Task.TRANSLATION:
            src_len = planned.length or cfg.max_len
            tgt_len = planned.length or cfg.max_target_len
            return batching.assemble_translation(enc, rows, src_len, tgt_len, bos_id)
        if task is Task.LM:
            return batching.assemble_lm(enc, rows, cfg.max_len)
        return batching.assemble_classification(enc, rows, cfg.max_len)

    return assemble
