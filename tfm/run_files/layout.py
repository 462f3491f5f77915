"""The layout of a workdir: the one place that names what lives where.

A workdir written by ``train.py`` (:mod:`tfm.training.loop`) and read by :mod:`tfm.inference`::

    WORKDIR/config.json            the resolved run config (model, data, train)       CONFIG_FILE
    WORKDIR/tokenizer/             the tokenizer (tfm.data.tokenizers.load_tokenizer)  TOKENIZER_DIR
    WORKDIR/checkpoints/<step>/    orbax checkpoints, each with two items:             CHECKPOINT_DIR
        state/                     the TrainState {step, params, opt_state}            STATE_ITEM
        meta/                      data position and dropout key (JSON)                META_ITEM
    WORKDIR/checkpoints_damaged/   unreadable checkpoints, moved aside, never deleted  DAMAGED_CHECKPOINT_DIR
    WORKDIR/provenance.json        what the tokenizer and the training text come from  PROVENANCE_FILE
    WORKDIR/superseded/<time>/     a tokenizer a run never checkpointed, moved aside   SUPERSEDED_DIR
    WORKDIR/tfm.lock               the lock of the run using the workdir               LOCK_FILE
    WORKDIR/metrics.jsonl          one JSON record per logged step                     METRICS_FILE
    WORKDIR/tensorboard/           TensorBoard event files                             TENSORBOARD_DIR

Names only (no imports): training, inference and the data pipeline all import it, so that a
change of layout is one edit and the reader cannot fall out of step with the writer.
"""

from __future__ import annotations

import os

CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"
CHECKPOINT_DIR = "checkpoints"
DAMAGED_CHECKPOINT_DIR = CHECKPOINT_DIR + "_damaged"
STATE_ITEM = "state"
META_ITEM = "meta"
PROVENANCE_FILE = "provenance.json"
SUPERSEDED_DIR = "superseded"
LOCK_FILE = "tfm.lock"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def checkpoint_dir(workdir: str | os.PathLike) -> str:
    """``WORKDIR/checkpoints`` (absolute)."""
    return os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))


def damaged_dir(checkpoints: str | os.PathLike) -> str:
    """Where the damaged steps of a checkpoint directory are moved: its sibling
    ``checkpoints_damaged``."""
    return os.path.join(os.path.dirname(os.path.abspath(os.fspath(checkpoints))), DAMAGED_CHECKPOINT_DIR)
