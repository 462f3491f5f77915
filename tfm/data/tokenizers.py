"""Tokenizers: character level and SentencePiece, one interface, saved in the workdir.

Every tokenizer reserves the same special ids (the project's token conventions):
``pad = 0``, ``bos = 1``, ``eos = 2``, ``unk = 3`` (kept, so that older workdirs keep working).
The pad id is only the filler written into padded positions: what is padding travels with the
batch as segment ids and weights, and no model, loss or search infers it from a token id (other
tokenizers, e.g. GPT-2's, have no pad token at all).
Neither adds bos/eos by itself: ``encode`` returns the bare ids of the text and the batching
code places bos/eos where the batch format wants them.

* :class:`CharTokenizer`: one id per Unicode code point seen in the training text (sorted, from
  id 4 on). A character never seen in training becomes ``unk`` (id 3, decoded as "⁇"): held-out
  text may contain characters the training text lacks, which must not crash an evaluation.
* :class:`SentencePieceTokenizer`: a unigram SentencePiece model (Kudo 2018) trained in-process
  on the training split; for translation one vocabulary is shared by source and target, as in
  the paper (section 5.1). ``vocab_size`` is a soft limit (a small corpus may give fewer pieces).

Unseen text. Both tokenizers remember the whitespace-separated words of the text they were
built from (when there are at most :data:`MAX_KNOWN_WORDS` distinct ones; ``known_words`` is
None otherwise), and :meth:`Tokenizer.unknown_text` lists what of a new text they never saw:
characters that become unk, and words outside ``known_words``. A model cannot have learned
those, so translation warns about them (:func:`tfm.inference.translate`).

``tok.save(directory)`` writes ``tokenizer.json`` (which class, plus the character vocabulary)
and, for SentencePiece, ``spm.model``; :func:`load_tokenizer` reads either back.
"""

from __future__ import annotations

import abc
import io
import json
import os
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np

from tfm import files
from tfm.files import TfmError
from tfm.token_ids import BOS_ID, EOS_ID, PAD_ID, UNK_ID

NUM_RESERVED = 4
UNK_TEXT = "\u2047"  # "⁇", what SentencePiece also prints for unk

# Tokenizers built from text with at most this many distinct words remember them (known_words).
MAX_KNOWN_WORDS = 50_000

META_FILE = "tokenizer.json"
# tokenizer.json and the files it names are read whole: larger ones are refused before reading.
MAX_TOKENIZER_FILE_BYTES = 256 << 20
SPM_FILE = "spm.model"


class TokenizerError(TfmError, ValueError):
    """A saved tokenizer that cannot be read (missing, damaged or hand-edited files); names the file."""


class Tokenizer(abc.ABC):
    """Text <-> int ids. ``pad_id = 0``, ``bos_id = 1``, ``eos_id = 2``, ``unk_id = 3`` here; the
    tokenizers of imported models (:mod:`tfm.data.hf_tokenizers`) keep their own special ids.

    ``keeps_newlines``: whether a newline survives encode/decode (a text stream can then be
    encoded whole; otherwise it is encoded line by line with EOS between lines).
    """

    kind: str
    keeps_newlines: bool = False
    pad_id: int = PAD_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID
    unk_id: int = UNK_ID
    # The words of the text the tokenizer was built from (None: not recorded, e.g. too many).
    known_words: frozenset[str] | None = None

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids (the model's V), reserved ids included."""

    @abc.abstractmethod
    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text -> its int32 ids (no bos/eos added)."""

    @abc.abstractmethod
    def _decode_clean(self, ids: list[int]) -> str:
        """Text of ids that hold no pad/bos/eos."""

    @abc.abstractmethod
    def save(self, directory: str | os.PathLike) -> None:
        """Writes the tokenizer to ``directory`` (created if needed)."""

    def encode(self, text: str) -> list[int]:
        """``text`` -> its ids (no bos/eos added)."""
        return self.encode_batch([text])[0].tolist()

    def unknown_text(self, text: str) -> list[str]:
        """What of ``text`` this tokenizer never saw in the text it was built from: characters
        it encodes as unk, then (when ``known_words`` is recorded) whitespace-separated words
        outside it. In order of first appearance, each once; [] when everything is known."""
        chars = sorted({c for c in text if not c.isspace()})
        ids = self.encode_batch(chars) if chars else []
        unknown_chars = {c for c, i in zip(chars, ids) if self.unk_id in i.tolist()}
        found = [c for c in text if c in unknown_chars]
        if self.known_words is not None:
            found += [w for w in text.split() if w not in self.known_words]
        return list(dict.fromkeys(found))

    def _meta_words(self) -> dict:
        return {} if self.known_words is None else {"known_words": sorted(self.known_words)}

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text, stopping at the first eos and dropping pad and bos."""
        clean = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"{self.kind} tokenizer: token id {i} is outside [0, "
                                 f"{self.vocab_size}) (its vocabulary)")
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                clean.append(i)
        return self._decode_clean(clean)

    def decode_batch(self, ids: np.ndarray | Sequence[Sequence[int]]) -> list[str]:
        """(B, T) ids -> B texts (see :meth:`decode`)."""
        return [self.decode(row) for row in ids]

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Tokenizer":
        return load_tokenizer(directory)


class CharTokenizer(Tokenizer):
    """Character-level tokenizer over the code points of the training text."""

    kind = "char"
    keeps_newlines = True

    def __init__(self, chars: Iterable[str], known_words: Iterable[str] | None = None):
        self.known_words = None if known_words is None else frozenset(known_words)
        chars = sorted(set(chars))
        for c in chars:
            if len(c) != 1:
                raise ValueError(f"CharTokenizer: vocabulary entries must be single characters, got {c!r}")
        self.chars = chars
        self._codepoints = np.array([ord(c) for c in chars], dtype=np.uint32)  # sorted
        self._id_to_char = ["", "", "", UNK_TEXT] + chars

    @classmethod
    def train(cls, texts: Iterable[str]) -> "CharTokenizer":
        """Vocabulary = every character of ``texts``."""
        texts = list(texts)
        seen: set[str] = set()
        for t in texts:
            seen.update(t)
        if not seen:
            raise ValueError("CharTokenizer: the training text is empty")
        return cls(seen, known_words=word_set(texts))

    @property
    def vocab_size(self) -> int:
        return NUM_RESERVED + len(self.chars)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        # Vectorised: all texts as one UTF-32 array, looked up in the sorted code points.
        lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        cps = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
        if cps.size:
            pos = np.searchsorted(self._codepoints, cps)
            pos = np.minimum(pos, len(self._codepoints) - 1)
            known = self._codepoints[pos] == cps
            ids = np.where(known, pos + NUM_RESERVED, UNK_ID).astype(np.int32)
        else:
            ids = np.zeros(0, np.int32)
        return np.split(ids, np.cumsum(lengths)[:-1])

    def _decode_clean(self, ids: list[int]) -> str:
        return "".join(self._id_to_char[i] if 0 <= i < len(self._id_to_char) else UNK_TEXT
                       for i in ids)

    def save(self, directory: str | os.PathLike) -> None:
        directory = pathlib.Path(directory)
        files.make_dirs(directory)
        meta = {"kind": self.kind, "vocab_size": self.vocab_size, "chars": self.chars,
                **self._meta_words()}
        _atomic_write(directory / META_FILE, json.dumps(meta, ensure_ascii=False).encode())

    @classmethod
    def _from_meta(cls, directory: pathlib.Path, meta: dict) -> "CharTokenizer":
        chars = meta.get("chars")
        if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
            raise TokenizerError(f"{directory / META_FILE}: 'chars' must be a list of characters, got "
                                 f"{type(chars).__name__ if chars is not None else 'nothing'}")
        return cls(chars, known_words=_known_words(directory, meta))


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model with pad=0, bos=1, eos=2, unk=3."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes, known_words: Iterable[str] | None = None):
        import sentencepiece as spm

        self.known_words = None if known_words is None else frozenset(known_words)
        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        if (self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id(), self._sp.unk_id()) != (
            PAD_ID, BOS_ID, EOS_ID, UNK_ID
        ):
            raise ValueError(
                "SentencePieceTokenizer: the model must use pad=0, bos=1, eos=2, unk=3; got "
                f"pad={self._sp.pad_id()}, bos={self._sp.bos_id()}, eos={self._sp.eos_id()}, "
                f"unk={self._sp.unk_id()}"
            )

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        *,
        max_sentences: int = 300_000,
        seed: int = 0,
        character_coverage: float = 1.0,
    ) -> "SentencePieceTokenizer":
        """Trains a unigram model on ``texts`` (at most ``max_sentences``, sampled with ``seed``).

        ``character_coverage`` < 1 maps the rarest characters (that fraction of the text's
        characters is covered) to unk; 1.0 keeps them all.

        ``vocab_size`` is a soft limit: on a small corpus the model may come out smaller.
        """
        import sentencepiece as spm

        texts = [t for t in texts if t.strip()]
        if not texts:
            raise ValueError("SentencePieceTokenizer: the training text is empty")
        if len(texts) > max_sentences:
            keep = np.random.default_rng(seed).choice(len(texts), max_sentences, replace=False)
            texts = [texts[i] for i in np.sort(keep)]
        writer = io.BytesIO()
        spm.SentencePieceTrainer.Train(
            minloglevel=2,  # quiet (errors still raise)
            sentence_iterator=iter(texts),
            model_writer=writer,
            model_type="unigram",
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            character_coverage=character_coverage,
            pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
            # SentencePiece's default 4192-byte cap would silently skip long lines.
            max_sentence_length=1 << 20,
            num_threads=1,  # reproducible
        )
        return cls(writer.getvalue(), known_words=word_set(texts))

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        ids = self._sp.encode(list(texts), out_type=int)
        return [np.asarray(x, dtype=np.int32) for x in ids]

    def _decode_clean(self, ids: list[int]) -> str:
        return self._sp.decode(ids)

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def save(self, directory: str | os.PathLike) -> None:
        directory = pathlib.Path(directory)
        files.make_dirs(directory)
        _atomic_write(directory / SPM_FILE, self.model_proto)
        meta = {"kind": self.kind, "vocab_size": self.vocab_size, "model_file": SPM_FILE,
                **self._meta_words()}
        _atomic_write(directory / META_FILE, json.dumps(meta).encode())

    @classmethod
    def _from_meta(cls, directory: pathlib.Path, meta: dict) -> "SentencePieceTokenizer":
        named_by = directory / META_FILE
        path = files.inside(directory, meta.get("model_file", SPM_FILE), named_by=named_by)
        if not os.path.lexists(path):
            raise TokenizerError(f"load_tokenizer: {path} is missing (named by {named_by})")
        data = files.read_bytes(path, limit=MAX_TOKENIZER_FILE_BYTES)
        try:
            return cls(data, known_words=_known_words(directory, meta))
        except (RuntimeError, ValueError) as e:  # SentencePiece's parse error
            if isinstance(e, TfmError):
                raise
            raise TokenizerError(f"{path} is not a SentencePiece model: {str(e).splitlines()[0][:200]}") from None


_CLASSES: dict[str, type[Tokenizer]] = {
    CharTokenizer.kind: CharTokenizer,
    SentencePieceTokenizer.kind: SentencePieceTokenizer,
}


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """Reads a tokenizer written by ``Tokenizer.save(directory)`` (e.g. ``WORKDIR/tokenizer``)."""
    directory = pathlib.Path(directory)
    meta_path = directory / META_FILE
    if not os.path.lexists(meta_path):
        raise TokenizerError(f"load_tokenizer: no tokenizer in {directory} ({META_FILE} is missing)")
    meta = files.read_json(meta_path, limit=MAX_TOKENIZER_FILE_BYTES)
    kind = meta.get("kind")
    from tfm.data import hf_tokenizers, hf_wordpiece  # the tokenizers of Hugging Face model directories

    classes = {**_CLASSES, **{c.kind: c for c in (hf_tokenizers.ByteLevelBPETokenizer,
                                                  hf_tokenizers.TokenizerJSON,
                                                  hf_tokenizers.MarianSentencePieceTokenizer,
                                                  hf_wordpiece.WordPieceTokenizer)}}
    if not isinstance(kind, str) or kind not in classes:
        raise TokenizerError(f"load_tokenizer: unknown kind {kind!r} in {meta_path}; known: {sorted(classes)}")
    try:
        tok = classes[kind]._from_meta(directory, meta)
    except TfmError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as e:
        # a hand-edited tokenizer.json of the right kind but wrong contents
        raise TokenizerError(f"load_tokenizer: {meta_path} ({kind}) cannot be used: "
                             f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") from None
    if "vocab_size" in meta and meta["vocab_size"] != tok.vocab_size:
        raise TokenizerError(
            f"load_tokenizer: {meta_path} says vocab_size={meta['vocab_size']} but the loaded "
            f"tokenizer has {tok.vocab_size}"
        )
    return tok


def word_set(texts: Iterable[str], limit: int = MAX_KNOWN_WORDS) -> frozenset[str] | None:
    """The distinct whitespace-separated words of ``texts``; None when there are more than
    ``limit`` (then no word counts as unknown)."""
    words: set[str] = set()
    for t in texts:
        words.update(t.split())
        if len(words) > limit:
            return None
    return frozenset(words)


def exists(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a saved tokenizer."""
    return os.path.lexists(pathlib.Path(directory) / META_FILE)


def _known_words(directory: pathlib.Path, meta: dict) -> list[str] | None:
    words = meta.get("known_words")
    if words is not None and (not isinstance(words, list) or not all(isinstance(w, str) for w in words)):
        raise TokenizerError(f"{directory / META_FILE}: 'known_words' must be a list of strings")
    return words


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
    """Through :func:`tfm.files.write_bytes` (no symlink followed, no temporary file left)."""
    files.write_bytes(path, data)
