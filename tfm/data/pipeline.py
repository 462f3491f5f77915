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
  * ``tokenizer``: a :class:`tfm.data.tokenizers.Tokenizer` (pad 0, bos 1, eos 2, unk 3).
  * ``vocab_size``: ``tokenizer.vocab_size`` -- set the model's vocab_size from it.
  * ``num_classes``: classification only (2 for sst2), else None.
  * ``train_iter``: :class:`tfm.data.batching.BatchIterator`; infinite; ``next(it)`` gives
    the next host-local training batch; ``get_state() -> dict`` (JSON-able) and
    ``set_state(dict)``: after ``set_state(s)`` the next batch is exactly the one the
    uninterrupted run would have produced after ``s`` was taken.
  * ``eval_batches(split="validation") -> Iterator[dict]``: a fresh finite pass over the
    split (no shuffling, no packing, fixed shapes (eval_batch_size/P, max_len)); every eval
    batch carries ``weights`` (0 on padding tokens and on the padding rows that fill the
    last batch). Global eval batch j holds examples ``[j*E, (j+1)*E)`` of the split in order
    (E = eval_batch_size), so row r of host i is example ``j*E + i*E/P + r``.
  * ``num_eval_examples(split="validation") -> int``: real (non-padding) rows over all batches.
  * ``eval_pairs(split="validation") -> list[tuple[str, str]]``: translation only: (source
    text, reference text) in the same order as the rows of ``eval_batches`` -- for BLEU and
    exact match on detokenized text.
  * ``encode_inputs(texts) -> np.ndarray``: translation / classification: (len(texts),
    max_len) int32 model inputs for new text, built exactly like the ``inputs`` of a batch
    (truncated, padded). For LM prompts use ``tokenizer.encode`` (no eos is added there).
  * ``decode(ids) -> list[str]``: (B, T) ids -> texts, each cut at its first eos.
  * ``bleu_tokenize``: the sacrebleu tokenizer to score this task with ("13a" normally;
    "char" for the numbers task, whose German outputs are single words, so word-level BLEU
    would only restate exact match).
  * ``stats``: dict of counts logged while building: ``{split}_examples``,
    ``{split}_truncated``, ``{split}_dropped`` and for LMs ``{split}_tokens``.

Splits are "train", "validation", "test". sst2's test labels are hidden (-1), so its "test"
is its validation split; lm1b has no validation split, so its "validation" is its test split;
a text file's "validation" and "test" are both its held-out tail.

Batches
-------
Dicts of host-local NumPy arrays, int32 unless said (the shared contract):

  * decoder_lm: ``inputs`` (B,T), ``targets`` (B,T) = inputs shifted left by one. Streamed
    LMs (tiny_shakespeare, text_file) are random windows of T+1 tokens of the training
    stream (nanoGPT); sentence LMs (lm1b) are ``[bos] + ids + [eos]`` split into inputs
    ``seq[:-1]`` and targets ``seq[1:]``, padded (or packed: + ``segment_ids``, ``positions``).
  * encoder_decoder: ``inputs`` (B,S) = source ids + eos; ``decoder_inputs`` (B,T) =
    ``[bos] + target[:-1]``; ``targets`` (B,T) = target ids + eos; packed adds
    ``inputs_segment_ids``, ``inputs_positions``, ``targets_segment_ids``,
    ``targets_positions`` (decoder_inputs restart with bos at each segment).
  * encoder_classifier: ``inputs`` (B,S) = ``[bos] + ids + [eos]``, ``label`` (B,).
  * eval batches add ``weights`` float32, the shape of ``targets`` (classification: (B,)).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from tfm.data.config import DataConfig, Task


@dataclasses.dataclass
class Pipeline:
    """Tokenizer, training iterator and evaluation data of one run (see the module docstring)."""

    config: DataConfig
    task: Task
    arch: str
    tokenizer: Any
    train_iter: Any
    num_classes: int | None = None
    bleu_tokenize: str = "13a"
    stats: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def eval_batches(self, split: str = "validation") -> Iterator[dict[str, np.ndarray]]:
        raise NotImplementedError

    def num_eval_examples(self, split: str = "validation") -> int:
        raise NotImplementedError

    def eval_pairs(self, split: str = "validation") -> list[tuple[str, str]]:
        raise NotImplementedError

    def encode_inputs(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def decode(self, ids: np.ndarray) -> list[str]:
        raise NotImplementedError


def build_pipeline(
    data_cfg: DataConfig,
    arch: Any = None,
    *,
    workdir: str | None = None,
    process_index: int = 0,
    process_count: int = 1,
    batch_multiple: int = 1,
) -> Pipeline:
    """Builds the tokenizer and the batches of ``data_cfg`` (see the module docstring)."""
    raise NotImplementedError
