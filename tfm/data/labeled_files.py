"""Classification examples from local files: CSV, TSV (a header row names the columns) or JSONL
(one JSON object per line), with a text column, optionally a second text column for sentence
pairs, and a label column (``DataConfig.text_column``, ``text_pair_column``, ``label_column``).

Labels are names (``DataConfig.label_names``, or the distinct labels of the training file) or
integer ids. A row with a missing column, an empty text or an unknown label is left out, and
counted and named (``file:line``) in one warning per file: never silently dropped. A file with
no usable row is a ValueError naming it. Without ``classification_valid_file`` a fixed-seed
``valid_fraction`` of the training file is held out for validation (and test).
"""

from __future__ import annotations

import csv
import json
import logging
import pathlib
from typing import Any

import numpy as np

from tfm.data.config import DataConfig

log = logging.getLogger(__name__)

HOLD_OUT_SEED = 0  # the held-out validation rows never move between runs
FORMATS = (".csv", ".tsv", ".jsonl")


def _rows(path: str) -> list[tuple[int, dict[str, Any] | None]]:
    """(line number, row dict or None when the line cannot be parsed) of a file."""
    p = pathlib.Path(path).expanduser()
    suffix = p.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unknown format {suffix!r}; expected one of {', '.join(FORMATS)}")
    if not p.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot be read as UTF-8 text: {e}") from None
    if suffix == ".jsonl":
        out = []
        for i, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            out.append((i, row if isinstance(row, dict) else None))
        return out
    reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
    out = []
    for row in reader:
        # a row with too few fields holds None for the missing ones; extra ones go under None
        clean = {k: v for k, v in row.items() if k is not None and v is not None}
        out.append((reader.line_num, clean))
    return out


def _label_id(value: Any, names: tuple[str, ...]) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value in names:
        return names.index(value)
    try:
        i = int(value)
    except (TypeError, ValueError):
        return None
    if str(value).strip() != str(i) and not isinstance(value, int):
        return None
    return i if 0 <= i < len(names) else None


def label_names(cfg: DataConfig) -> tuple[str, ...]:
    """The classes in id order: ``cfg.label_names``, else those of the training file."""
    if cfg.label_names:
        return cfg.label_names
    values = {str(row[cfg.label_column]).strip() for _, row in _rows(cfg.classification_file)
              if row and row.get(cfg.label_column) not in (None, "")}
    if all(v.lstrip("-").isdigit() for v in values) and values:
        ids = sorted(int(v) for v in values)
        if ids[0] < 0:
            raise ValueError(f"{cfg.classification_file}: negative label id {ids[0]}")
        names = tuple(str(i) for i in range(ids[-1] + 1))
    else:
        names = tuple(sorted(values))
    if len(names) < 2:
        raise ValueError(f"{cfg.classification_file}: {len(names)} distinct label(s) in column "
                         f"{cfg.label_column!r}; classification needs two or more")
    return names


def read_examples(cfg: DataConfig, path: str, names: tuple[str, ...]) -> list[tuple[Any, int]]:
    """(text, label id) of every good row of ``path`` (text a (text, text) pair with
    ``cfg.text_pair_column``); bad rows are counted and named."""
    good, bad = [], []
    for line, row in _rows(path):
        if row is None:
            bad.append(f"{path}:{line} (not a JSON object)")
            continue
        columns = (cfg.text_column, *([cfg.text_pair_column] if cfg.text_pair_column else []), cfg.label_column)
        missing = [c for c in columns if c not in row]
        if missing:
            bad.append(f"{path}:{line} (no column {missing[0]!r})")
            continue
        texts = [row[c] for c in columns[:-1]]
        if not all(isinstance(t, str) and t.strip() for t in texts):
            bad.append(f"{path}:{line} (empty text)")
            continue
        text = texts[0] if len(texts) == 1 else tuple(texts)
        label = _label_id(row[cfg.label_column], names)
        if label is None:
            bad.append(f"{path}:{line} (unknown label {row[cfg.label_column]!r})")
            continue
        good.append((text, label))
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        log.warning("%s: %d of %d rows left out: %s", path, len(bad), len(bad) + len(good), shown)
    if not good:
        raise ValueError(f"{path}: no usable row ({len(bad)} bad: {', '.join(bad[:3])})")
    return good


def load_split(cfg: DataConfig, split: str) -> list[tuple[str, int]]:
    """The (text, label id) examples of ``split`` ("train", "validation" or "test")."""
    names = label_names(cfg)
    if cfg.classification_valid_file:
        return read_examples(cfg, cfg.classification_file if split == "train" else cfg.classification_valid_file,
                             names)
    rows = read_examples(cfg, cfg.classification_file, names)
    order = np.random.default_rng(HOLD_OUT_SEED).permutation(len(rows))
    n_valid = max(1, int(round(len(rows) * cfg.valid_fraction)))
    if n_valid >= len(rows):
        raise ValueError(f"{cfg.classification_file}: {len(rows)} rows cannot be split with "
                         f"valid_fraction={cfg.valid_fraction}; give classification_valid_file or more rows")
    held = set(order[:n_valid].tolist())
    return [r for i, r in enumerate(rows) if (i in held) == (split != "train")]
