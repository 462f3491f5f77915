"""BERT's WordPiece tokenizer (Wu et al. 2016; Devlin et al. 2019) from a Hugging Face model
directory, behind tfm's :class:`~tfm.data.tokenizers.Tokenizer`, run by the ``tokenizers`` library.

Built from the directory's ``tokenizer.json`` (its normalizer decides lower-casing and accent
stripping) or, without it, ``vocab.txt`` with what ``BertTokenizerFast`` builds from it: the
BERT normalizer (``do_lower_case`` / ``strip_accents`` from ``tokenizer_config.json``; lower-case
by default, as transformers), the BERT pre-tokenizer (whitespace and punctuation), WordPiece
with ``##`` continuations and ``[UNK]`` for words it cannot split.

``encode`` adds no special token (tfm's convention); :meth:`WordPieceTokenizer.encode_for_model`
gives what BERT models read: ``[CLS] a [SEP]`` or, for a pair, ``[CLS] a [SEP] b [SEP]`` with
token types 0 for the first part and 1 for the second, truncated longest-first to a length.
Special ids are the vocabulary's own ([PAD], [UNK], [CLS], [SEP], [MASK], or the names
``tokenizer_config.json`` gives); tfm's bos/eos are [CLS]/[SEP].
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from tfm.data.hf_tokenizers import (HF_TOKENIZER_FILE, KEPT_HF_TOKENIZER_FILE, TokenizerFilesError, _FileBacked,
                                    _read)

VOCAB_FILE = "vocab.txt"
CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")
_DEFAULT_SPECIAL = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def _token_name(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class WordPieceTokenizer(_FileBacked):
    """BERT's WordPiece tokenizer (see the module docstring)."""

    kind = "wordpiece"
    keeps_newlines = False
    hf_names = {KEPT_HF_TOKENIZER_FILE: HF_TOKENIZER_FILE}

    def __init__(self, files: dict[str, bytes], *, pad_id: int | None = None, bos_id: int | None = None,
                 eos_id: int | None = None, unk_id: int | None = None):
        import tokenizers

        self.files = dict(files)
        config = {}
        if "tokenizer_config.json" in files:
            try:
                config = json.loads(files["tokenizer_config.json"])
            except ValueError as e:
                raise TokenizerFilesError(f"tokenizer_config.json is not valid JSON: {e}") from None
        if KEPT_HF_TOKENIZER_FILE in files:
            try:
                self._tok = tokenizers.Tokenizer.from_str(files[KEPT_HF_TOKENIZER_FILE].decode("utf-8"))
            except Exception as e:  # the library raises its own Exception type for a bad file
                raise TokenizerFilesError(f"{HF_TOKENIZER_FILE} cannot be read by the tokenizers library: {e}") \
                    from None
        elif VOCAB_FILE in files:
            self._tok = _from_vocab(files[VOCAB_FILE], config)
        else:
            raise TokenizerFilesError(f"WordPiece needs {HF_TOKENIZER_FILE} or {VOCAB_FILE}; got {sorted(files)}")
        self.special: dict[str, int] = {}
        for role, default in _DEFAULT_SPECIAL.items():
            name = _token_name(config.get(f"{role}_token")) or default
            i = self._tok.token_to_id(name)
            if i is None:
                raise TokenizerFilesError(f"the WordPiece vocabulary has no {role} token {name!r}")
            self.special[role] = int(i)
        self.pad_id = self.special["pad"] if pad_id is None else pad_id
        self.unk_id = self.special["unk"] if unk_id is None else unk_id
        self.bos_id = self.special["cls"] if bos_id is None else bos_id
        self.eos_id = self.special["sep"] if eos_id is None else eos_id
        self.mask_id = self.special["mask"]
        self.mask_token = self._tok.id_to_token(self.mask_id)

    @classmethod
    def from_hf_dir(cls, directory: str | os.PathLike, *, pad_id: int | None = None) -> "WordPieceTokenizer":
        """The tokenizer of a Hugging Face BERT directory (``tokenizer.json`` preferred)."""
        directory = pathlib.Path(directory)
        files = {}
        if (directory / HF_TOKENIZER_FILE).is_file():
            files[KEPT_HF_TOKENIZER_FILE] = _read(directory, HF_TOKENIZER_FILE)
        for name in (VOCAB_FILE, *CONFIG_FILES):
            if (directory / name).is_file():
                files[name] = _read(directory, name)
        if KEPT_HF_TOKENIZER_FILE not in files and VOCAB_FILE not in files:
            raise TokenizerFilesError(f"{directory} has no BERT tokenizer: it needs {HF_TOKENIZER_FILE} or "
                                      f"{VOCAB_FILE}")
        return cls(files, pad_id=pad_id)

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in out]

    def encode_for_model(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                         max_len: int = 512) -> list[tuple[np.ndarray, np.ndarray]]:
        """(ids, token_types) per text: ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]``, the
        longer part shortened first (transformers' "longest_first") to at most ``max_len``."""
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} second texts of pairs")
        firsts = self.encode_batch(texts)
        seconds = self.encode_batch(pairs) if pairs is not None else [None] * len(firsts)
        cls, sep = self.special["cls"], self.special["sep"]
        out = []
        for a, b in zip(firsts, seconds):
            a, b = list(a), None if b is None else list(b)
            room = max_len - (2 if b is None else 3)
            if room < (1 if b is None else 2):
                raise ValueError(f"max_len={max_len} leaves no room for text besides [CLS]/[SEP]")
            while len(a) + (0 if b is None else len(b)) > room:
                if b is not None and len(b) > len(a):
                    b.pop()
                else:
                    a.pop()
            ids = [cls, *a, sep] + ([] if b is None else [*b, sep])
            types = [0] * (len(a) + 2) + ([] if b is None else [1] * (len(b) + 1))
            out.append((np.asarray(ids, np.int32), np.asarray(types, np.int32)))
        return out

    def id_to_token(self, i: int) -> str:
        return self._tok.id_to_token(int(i))

    def _decode_clean(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)


def _from_vocab(vocab_txt: bytes, config: dict):
    """What BertTokenizerFast builds from vocab.txt and its tokenizer_config.json settings."""
    import tokenizers
    from tokenizers import decoders, models, normalizers, pre_tokenizers

    lines = vocab_txt.decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for index, line in enumerate(lines):  # the id of a token is its line number (BertTokenizer's load_vocab)
        token = line.rstrip("\r")
        if token in vocab:
            raise TokenizerFilesError(f"{VOCAB_FILE} line {index + 1}: {token!r} is already on line "
                                      f"{vocab[token] + 1}")
        vocab[token] = index
    unk = _token_name(config.get("unk_token")) or "[UNK]"
    if unk not in vocab:
        raise TokenizerFilesError(f"{VOCAB_FILE} has no unknown token {unk!r}")
    lower = config.get("do_lower_case", True)
    tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=config.get("tokenize_chinese_chars", True),
        strip_accents=config.get("strip_accents"), lowercase=bool(lower))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    specials = [_token_name(config.get(f"{r}_token")) or d for r, d in _DEFAULT_SPECIAL.items()]
    tok.add_special_tokens([tokenizers.AddedToken(t, special=True) for t in specials if t in vocab])
    return tok
