"""Tokenizers of Hugging Face model directories, behind tfm's :class:`~tfm.data.tokenizers.Tokenizer`.

Each keeps the special ids of its own vocabulary (no id is reserved by tfm):

* :class:`ByteLevelBPETokenizer`: GPT-2's byte-level BPE (Radford et al. 2019, section 2.2),
  run by the ``tokenizers`` library from the directory's ``tokenizer.json`` or, without it,
  ``vocab.json`` + ``merges.txt``. GPT-2 has no padding token; ``<|endoftext|>`` is its BOS, EOS
  and unk. Newlines are ordinary tokens, so a text stream is encoded whole.
* :class:`TokenizerJSON`: any other ``tokenizer.json`` (Llama, Mistral, Qwen2), with the special
  ids of the model's config.json.
* :class:`MarianSentencePieceTokenizer`: what ``transformers.MarianTokenizer`` does for opus-mt
  models: the source SentencePiece model (``source.spm``) splits text into pieces, which
  ``vocab.json`` (shared by source and target) maps to ids; decoding maps ids back to pieces.
  EOS is ``</s>`` (id 0 in opus-mt), padding ``<pad>``, which is also the decoder's start token.

Like tfm's own tokenizers, ``encode`` adds no special token (Marian sources get their EOS from
the caller, as tfm's translation batches do). ``save(dir)`` writes the original files next to
tfm's ``tokenizer.json`` (the Hugging Face ``tokenizer.json`` is kept as ``hf_tokenizer.json``),
and :func:`tfm.data.tokenizers.load_tokenizer` reads them back; ``save_hf(dir)`` writes them
under their Hugging Face names for an exported model directory.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from tfm import files
from tfm.data.tokenizers import META_FILE, Tokenizer, TokenizerError, _atomic_write

HF_TOKENIZER_FILE = "tokenizer.json"  # the tokenizers library's file (Hugging Face layout)
KEPT_HF_TOKENIZER_FILE = "hf_tokenizer.json"  # its name inside a tfm tokenizer directory


class TokenizerFilesError(TokenizerError):
    """A model directory's tokenizer files are missing or inconsistent."""


# A tokenizer file larger than this is refused before it is read (GPT-2's tokenizer.json: 1.4 MB).
MAX_FILE_BYTES = 256 << 20


def _read(directory: pathlib.Path, name: str, named_by: str | os.PathLike | None = None) -> bytes:
    """The bytes of ``directory/name``; ``named_by``: the file that named it (the name is then
    untrusted: it must stay inside ``directory``, see :func:`tfm.files.inside`)."""
    path = (files.inside(directory, name, named_by=named_by) if named_by is not None
            else os.path.join(directory, name))
    if not os.path.lexists(path):
        raise TokenizerFilesError(f"{path} is missing" + (f" (named by {named_by})" if named_by else ""))
    return files.read_bytes(path, limit=MAX_FILE_BYTES)


def _present(directory: pathlib.Path, name: str) -> bool:
    """Whether ``directory/name`` exists in any form (a FIFO or dangling symlink too: reading it
    is then refused, rather than skipped silently)."""
    return os.path.lexists(directory / name)


def _special_ids(files: dict[str, bytes]) -> dict:
    return json.loads(files["special_ids.json"]) if "special_ids.json" in files else {}


class _FileBacked(Tokenizer):
    """A tokenizer built from a set of files ({name: bytes}) that it saves unchanged."""

    files: dict[str, bytes]
    hf_names: dict[str, str] = {}  # file name inside a tfm tokenizer dir -> Hugging Face name

    def save(self, directory: str | os.PathLike) -> None:
        directory = pathlib.Path(directory)
        files.make_dirs(directory)
        for name, data in self.files.items():
            _atomic_write(directory / files.plain_name(name, named_by=f"{self.kind} tokenizer"), data)
        meta = {
            "kind": self.kind, "vocab_size": self.vocab_size, "files": sorted(self.files),
            "pad_id": self.pad_id, "bos_id": self.bos_id, "eos_id": self.eos_id, "unk_id": self.unk_id,
        }
        _atomic_write(directory / META_FILE, json.dumps(meta).encode())

    def save_hf(self, directory: str | os.PathLike) -> list[str]:
        """Writes the files under their Hugging Face names; returns the names written."""
        directory = pathlib.Path(directory)
        written = []
        for name, data in self.files.items():
            hf_name = files.plain_name(self.hf_names.get(name, name), named_by=f"{self.kind} tokenizer")
            _atomic_write(directory / hf_name, data)
            written.append(hf_name)
        return written

    @classmethod
    def _from_meta(cls, directory: pathlib.Path, meta: dict):
        named_by = directory / META_FILE
        names = meta.get("files")
        if not isinstance(names, list):
            raise TokenizerFilesError(f"{named_by}: 'files' must be a list of file names")
        contents = {name: _read(directory, name, named_by) for name in names}
        ids = {k: meta[k] for k in ("pad_id", "bos_id", "eos_id", "unk_id") if k in meta}
        for k, v in ids.items():
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise TokenizerFilesError(f"{named_by}: {k} must be an integer, got {v!r}")
        return _built(cls, directory, contents, **ids)


class ByteLevelBPETokenizer(_FileBacked):
    """GPT-2's byte-level BPE (see the module docstring)."""

    kind = "byte_level_bpe"
    keeps_newlines = True
    hf_names = {KEPT_HF_TOKENIZER_FILE: HF_TOKENIZER_FILE}

    def __init__(self, files: dict[str, bytes], *, pad_id: int | None = None, bos_id: int | None = None,
                 eos_id: int | None = None, unk_id: int | None = None):
        import tokenizers

        self.files = dict(files)
        if KEPT_HF_TOKENIZER_FILE in files:
            self._tok = tokenizers.Tokenizer.from_str(files[KEPT_HF_TOKENIZER_FILE].decode("utf-8"))
        elif "vocab.json" in files and "merges.txt" in files:
            self._tok = _bpe_from_vocab_merges(files["vocab.json"], files["merges.txt"])
        else:
            raise TokenizerFilesError(
                f"byte-level BPE needs {HF_TOKENIZER_FILE} or vocab.json + merges.txt; got {sorted(files)}")
        end = self._tok.token_to_id("<|endoftext|>")
        self.eos_id = end if eos_id is None else eos_id
        self.bos_id = self.eos_id if bos_id is None else bos_id
        self.unk_id = self.eos_id if unk_id is None else unk_id
        self.pad_id = -1 if pad_id is None else pad_id  # GPT-2 has none: no id is dropped
        if self.eos_id is None:
            raise TokenizerFilesError("byte-level BPE: no <|endoftext|> token and no eos_token_id given")

    @classmethod
    def from_hf_dir(cls, directory: str | os.PathLike, *, eos_id: int | None = None,
                    bos_id: int | None = None) -> "ByteLevelBPETokenizer":
        """The tokenizer of a Hugging Face GPT-2 directory (``tokenizer.json`` preferred)."""
        directory = pathlib.Path(directory)
        contents = {}
        if _present(directory, HF_TOKENIZER_FILE):
            contents[KEPT_HF_TOKENIZER_FILE] = _read(directory, HF_TOKENIZER_FILE)
        for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
            if _present(directory, name):
                contents[name] = _read(directory, name)
        if KEPT_HF_TOKENIZER_FILE not in contents and not ("vocab.json" in contents and "merges.txt" in contents):
            raise TokenizerFilesError(
                f"{directory} has no GPT-2 tokenizer: it needs {HF_TOKENIZER_FILE}, or vocab.json and "
                "merges.txt")
        return _built(cls, directory, contents, eos_id=eos_id, bos_id=bos_id)

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in out]

    def _decode_clean(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


def _built(cls, directory: pathlib.Path, contents: dict[str, bytes], **ids):
    """``cls(contents, **ids)``; a library's failure to parse the files (a corrupt
    tokenizer.json, merges.txt, vocab.json or SentencePiece model) is a TokenizerFilesError
    naming the directory."""
    for k, v in ids.items():
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not -1 <= v < 1 << 31):  # -1: none
            raise TokenizerFilesError(f"{directory}: {k} {v!r} is not a token id")
    try:
        return cls(contents, **ids)
    except TokenizerFilesError:
        raise
    except Exception as e:  # noqa: BLE001 - tokenizers/sentencepiece/json raise many types
        raise TokenizerFilesError(f"{directory}: the {cls.kind} tokenizer files cannot be used: "
                                  f"{type(e).__name__}: {_first_line(e)}") from None


class TokenizerJSON(ByteLevelBPETokenizer):
    """Any ``tokenizer.json`` the ``tokenizers`` library runs (Llama, Mistral, Qwen2, ...), with
    the special ids of the model's ``config.json`` (``bos_token_id``, ``eos_token_id``,
    ``pad_token_id``): nothing is looked up by name. ``starts_with_bos``: the file's own
    post-processor puts BOS first (Llama, Mistral; not Qwen2), so LM prompts should too."""

    kind = "tokenizer_json"

    def __init__(self, files: dict[str, bytes], *, pad_id: int | None = None, bos_id: int | None = None,
                 eos_id: int | None = None, unk_id: int | None = None):
        import tokenizers

        if KEPT_HF_TOKENIZER_FILE not in files:
            raise TokenizerFilesError(f"this tokenizer needs {HF_TOKENIZER_FILE}; got {sorted(files)}")
        if eos_id is None:
            raise TokenizerFilesError("no eos_token_id: the model's config.json must name its EOS id")
        self.files = dict(files)
        self._tok = tokenizers.Tokenizer.from_str(files[KEPT_HF_TOKENIZER_FILE].decode("utf-8"))
        self.eos_id = eos_id
        self.bos_id = eos_id if bos_id is None else bos_id
        self.unk_id = self.eos_id if unk_id is None else unk_id
        self.pad_id = -1 if pad_id is None else pad_id
        ids = self._tok.encode("a", add_special_tokens=True).ids
        self.starts_with_bos = bool(ids) and ids[0] == self.bos_id and bos_id is not None

    @classmethod
    def from_hf_dir(cls, directory: str | os.PathLike, *, eos_id: int | None = None,  # type: ignore[override]
                    bos_id: int | None = None, pad_id: int | None = None) -> "TokenizerJSON":
        directory = pathlib.Path(directory)
        contents = {KEPT_HF_TOKENIZER_FILE: _read(directory, HF_TOKENIZER_FILE)}
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            if _present(directory, name):
                contents[name] = _read(directory, name)
        return _built(cls, directory, contents, eos_id=eos_id, bos_id=bos_id, pad_id=pad_id)


def _bpe_from_vocab_merges(vocab_json: bytes, merges_txt: bytes):
    """GPT-2's tokenizer from vocab.json and merges.txt (what GPT2TokenizerFast builds)."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers

    vocab = json.loads(vocab_json)
    merges = []
    for line in merges_txt.decode("utf-8").splitlines():
        if line.startswith("#version") or not line.strip():
            continue
        a, b = line.split(" ")
        merges.append((a, b))
    tok = tokenizers.Tokenizer(models.BPE(vocab, merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if "<|endoftext|>" in vocab:
        tok.add_special_tokens([tokenizers.AddedToken("<|endoftext|>", special=True)])
    return tok


class MarianSentencePieceTokenizer(_FileBacked):
    """transformers.MarianTokenizer's encoding and decoding (see the module docstring)."""

    kind = "marian"
    keeps_newlines = False
    SPECIAL = ("</s>", "<unk>", "<pad>")

    def __init__(self, files: dict[str, bytes], *, pad_id: int | None = None, bos_id: int | None = None,
                 eos_id: int | None = None, unk_id: int | None = None):
        import sentencepiece as spm

        self.files = dict(files)
        if "target_vocab.json" in files:
            raise TokenizerFilesError(
                "Marian tokenizers with separate source and target vocabularies (target_vocab.json) "
                "are not supported: tfm's Marian models share one vocabulary")
        self.vocab: dict[str, int] = json.loads(files["vocab.json"])
        if not isinstance(self.vocab, dict) or not self.vocab or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 1 << 31 for i in self.vocab.values()):
            raise TokenizerFilesError("Marian vocab.json must map pieces to ids (integers in [0, 2**31))")
        self._pieces = {i: p for p, i in self.vocab.items()}
        self._source = spm.SentencePieceProcessor(model_proto=files["source.spm"])
        self._target = spm.SentencePieceProcessor(model_proto=files["target.spm"])
        for token in self.SPECIAL:
            if token not in self.vocab:
                raise TokenizerFilesError(f"Marian vocab.json has no {token!r} entry")
        self.eos_id = self.vocab["</s>"] if eos_id is None else eos_id
        self.unk_id = self.vocab["<unk>"] if unk_id is None else unk_id
        self.pad_id = self.vocab["<pad>"] if pad_id is None else pad_id
        self.bos_id = self.pad_id if bos_id is None else bos_id  # Marian starts decoding from pad
        self._special = {self.vocab[t] for t in self.SPECIAL}

    @classmethod
    def from_hf_dir(cls, directory: str | os.PathLike, *, bos_id: int | None = None,
                    eos_id: int | None = None, pad_id: int | None = None) -> "MarianSentencePieceTokenizer":
        directory = pathlib.Path(directory)
        if _present(directory, "target_vocab.json"):
            raise TokenizerFilesError(
                f"{directory / 'target_vocab.json'}: separate source and target vocabularies are not "
                "supported (tfm's Marian models share one vocabulary)")
        contents = {name: _read(directory, name) for name in ("source.spm", "target.spm", "vocab.json")}
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            if _present(directory, name):
                contents[name] = _read(directory, name)
        return _built(cls, directory, contents, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)

    @property
    def vocab_size(self) -> int:
        return max(self.vocab.values()) + 1

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = []
        for text in texts:
            code = []
            if text.startswith(">>") and (end := text.find("<<")) != -1:  # a language code
                code, text = [text[: end + 2]], text[end + 2:]
            pieces = code + self._source.encode(text, out_type=str)
            out.append(np.asarray([self.vocab.get(p, self.unk_id) for p in pieces], dtype=np.int32))
        return out

    def _decode_clean(self, ids: list[int]) -> str:
        # As MarianTokenizer.decode(ids, skip_special_tokens=True): pieces through vocab.json,
        # joined by SentencePiece (the source model, as transformers does with a shared vocabulary).
        pieces = []
        for i in ids:
            if i in self._special:
                continue
            pieces.append(self._pieces.get(i, "<unk>"))
        return self._source.decode_pieces(pieces).replace("\u2581", " ").strip()

    def id_to_piece(self, i: int) -> str:
        return self._pieces.get(int(i), "<unk>")
