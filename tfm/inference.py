"""Using a trained model: generate text, translate sentences (over a :class:`Pretrained`, which
:func:`load` reads from a training workdir: :mod:`tfm.pretrained`). From a notebook::

    import tfm
    lm = tfm.inference.load("workdirs/shakespeare_char")     # a Pretrained
    print(tfm.generate(lm, "ROMEO:", max_new_tokens=200, temperature=0.8, seed=0))
    tfm.translate("workdirs/numbers", ["three hundred twenty-one"])    # a workdir works too
    tfm.inference.Pretrained(model_cfg, params, tokenizer)             # or in-memory objects

Decoding itself is :mod:`tfm.decoding` (compiled, KV-cached).
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Sequence

import jax
import numpy as np

from tfm import arguments, decoding
from tfm.config import Arch
from tfm.data.config import STREAM_DATASETS, DataConfig, Task
from tfm.data.tokenizers import Tokenizer
from tfm.pretrained import Pretrained, WorkdirError, load, read_config, restore_params  # noqa: F401 (tfm.inference.load, ...)
from tfm.token_ids import check_token_ids

log = logging.getLogger(__name__)



class UnknownTextWarning(UserWarning):
    """An input holds text the tokenizer never saw while it was built (characters it maps to
    unk, or words outside its training text): the model cannot have learned it, and its
    output for that input is a guess."""


def _as_pretrained(model: Pretrained | str | os.PathLike | tuple) -> Pretrained:
    if isinstance(model, (str, os.PathLike)):
        return load(model)
    return Pretrained(*model) if isinstance(model, tuple) else model



def _resolve(model: Pretrained | str | os.PathLike | tuple, arch: Arch) -> Pretrained:
    if isinstance(model, (str, os.PathLike)):
        return load(model, arch=arch)
    if isinstance(model, tuple):
        model = Pretrained(*model)
    if not isinstance(model, Pretrained):
        raise TypeError(
            "expected a workdir path, a tfm.inference.Pretrained, or a (config, params, tokenizer) "
            f"tuple; got {type(model).__name__}"
        )
    if model.config.arch is not arch:
        where = f" in {model.workdir}" if model.workdir else ""
        raise WorkdirError(
            f"the model{where} is of kind {model.config.arch.value!r}, but this needs {arch.value!r}"
        )
    return model


def _bucket(n: int, multiple: int, cap: int) -> int:
    """n rounded up to a multiple (fewer distinct shapes -> fewer compilations), at most cap."""
    return min(-(-n // multiple) * multiple, cap)


def _pad(rows: Sequence[Sequence[int]], width: int, *, left: bool) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, mask), each (len(rows), width): the rows right-aligned (``left`` padding, for LM
    prompts) or left-aligned (sources), the mask True on their tokens. The padding holds 0, but
    only the mask says what is real: 0 may be a real token, and a tokenizer need not have a pad."""
    out = np.zeros((len(rows), width), np.int32)
    mask = np.zeros((len(rows), width), bool)
    for i, r in enumerate(rows):
        cols = slice(width - len(r), width) if left else slice(0, len(r))
        if r:
            out[i, cols] = r
            mask[i, cols] = True
    return out, mask


# ---------------------------------------------------------------------- language models
def _is_stream_lm(data: DataConfig | None) -> bool:
    return data is not None and data.task is Task.LM and data.dataset in STREAM_DATASETS


def generate(
    model: Pretrained | str | os.PathLike | tuple,
    prompt: str | Sequence[str] = "",
    *,
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    num_samples: int = 1,
    add_bos: bool | None = None,
    stop_at_eos: bool | None = None,
) -> str | list[str]:
    """Continues text prompts with a decoder-only language model.

    Args:
      model: a workdir of a decoder_lm run, a :class:`Pretrained`, or (config, params, tokenizer).
      prompt: one prompt (returns one continuation) or a list (returns a list, in order).
      max_new_tokens: tokens to generate per prompt. Longer than the model's context
        (``max_len``) works too: when the cache is full, decoding restarts from the newest
        ``max_len // 2`` tokens (re-encoded in one pass) and goes on.
      temperature: 0 = greedy; otherwise sampling from softmax(logits / temperature), with the
        optional top-k and nucleus (top-p) filters.
      seed: sampling seed (same seed, same text).
      num_samples: continuations per prompt; when > 1 each prompt gives a list of them.
      add_bos: start every prompt with BOS; default: when the model was trained on sentences
        (lm1b), which all begin with BOS; not for streamed text (tiny_shakespeare, text files);
        for an imported model, when its tokenizer.json puts BOS first (Llama, Mistral).
      stop_at_eos: end a continuation at EOS; default: except for streamed text, where
        SentencePiece uses EOS as the line break (it is printed as a newline there).
    Returns:
      The continuation(s) only (the prompt is not repeated).

    Arguments are checked first (:mod:`tfm.arguments`). A prompt holding characters the tokenizer
    never saw is still continued, with an :class:`UnknownTextWarning` naming them.
    """
    options = arguments.generation(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                   top_p=top_p, seed=seed, num_samples=num_samples)
    num_samples = options.pop("num_samples")
    prompts, single = arguments.texts("prompt", prompt)
    add_bos = arguments.optional_bool("add_bos", add_bos)
    stop_at_eos = arguments.optional_bool("stop_at_eos", stop_at_eos)
    lm = _resolve(model, Arch.DECODER_LM)
    tok = lm.tokenizer
    stream = _is_stream_lm(lm.data)
    if add_bos is None:  # as trained: sentences (lm1b) start with BOS; an imported model as its tokenizer says
        add_bos = ((lm.data.task is Task.LM and not stream) if lm.data is not None
                   else getattr(lm.tokenizer, "starts_with_bos", False))
    stop_at_eos = (not stream) if stop_at_eos is None else stop_at_eos
    if not prompts:
        return []
    warn_unknown(tok, prompts, "continuation")
    rows = []
    for text in prompts:
        ids = ([tok.bos_id] if add_bos else []) + tok.encode(text)
        rows.extend([ids or [tok.bos_id]] * num_samples)  # an empty prompt starts from BOS
    outputs = generate_ids(lm, rows, eos_id=tok.eos_id if stop_at_eos else -1, **options)
    texts = ["\n".join(tok.decode(piece) for piece in _split(ids, tok.eos_id)) for ids in outputs]
    grouped = [texts[i * num_samples:(i + 1) * num_samples] for i in range(len(prompts))]
    result = grouped if num_samples > 1 else [g[0] for g in grouped]
    return result[0] if single else result


def _split(ids: Sequence[int], sep: int) -> list[list[int]]:
    pieces, cur = [], []
    for i in ids:
        if i == sep:
            pieces.append(cur)
            cur = []
        else:
            cur.append(int(i))
    return pieces + [cur]


def generate_ids(
    model: Pretrained | str | os.PathLike | tuple,
    rows: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    eos_id: int | None = None,
) -> list[list[int]]:
    """Token-level :func:`generate`: prompt ids (one non-empty list per row) -> generated ids.

    A row ends at ``eos_id`` (dropped from the output; None = the model's tokenizer's, -1 =
    never) or after ``max_new_tokens``.
    Decoding runs in compiled segments of at most the model's context. A row's context is its
    prompt (its newest ``max_len`` tokens) and what it generated; when the rest does not fit,
    a segment fills the cache (its context rounded up to a multiple of 8, then new tokens) and
    the row restarts from its newest ``max_len // 2`` tokens (re-encoded in one pass). Each row
    follows this rule on its own, so with greedy decoding every row's output equals that row
    generated alone; rows whose segments have the same shape share a call.
    """
    options = arguments.generation(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                   top_p=top_p, seed=seed)
    max_new_tokens, seed = options["max_new_tokens"], options["seed"]
    lm = _resolve(model, Arch.DECODER_LM)
    if eos_id is None:
        if lm.tokenizer is None:
            raise arguments.ArgumentError("generate_ids: this model has no tokenizer; pass eos_id (-1 = never stop)")
        eos_id = lm.tokenizer.eos_id
    eos_id = arguments.integer("eos_id", eos_id, -1)
    rows = [list(r) for r in rows]
    if any(not r for r in rows):
        raise ValueError("generate_ids: every prompt needs at least one token (e.g. BOS)")
    cfg, model = lm.config, lm.model
    for r in rows:
        check_token_ids(r, cfg.vocab_size, "generate_ids prompt")
    max_len = cfg.max_len
    keep = max(max_len // 2, 1)  # context kept when the cache is full
    rng = jax.random.key(seed)
    out: list[list[int]] = [[] for _ in rows]
    # Where each row's context starts in its tokens (prompt + output so far): set by the row's
    # own lengths only, so the other rows of a batch never decide what a row sees.
    start = [max(len(r) - max_len, 0) for r in rows]
    live, calls = list(range(len(rows))), 0
    while live:  # each row's next segment: its context and the (width, steps) of its call
        groups: dict[tuple[int, int], list[tuple[int, list[int]]]] = {}
        for i in live:
            tokens_i = rows[i] + out[i]
            if out[i]:  # a row still going after a segment has filled its cache: restart
                start[i] = len(tokens_i) - keep
            context, remaining = tokens_i[start[i]:], max_new_tokens - len(out[i])
            if len(context) - 1 + remaining <= max_len:  # the rest fits: one last segment
                width = _bucket(len(context), 8, max_len + 1 - remaining)
                steps = min(_bucket(remaining, 8, max_len), max_len + 1 - width)  # >= remaining
            else:  # fill the cache
                width = _bucket(len(context), 8, max_len)
                steps = max_len + 1 - width
            groups.setdefault((width, steps), []).append((i, context))
        still = []
        for (width, steps), group in sorted(groups.items()):
            batch = _bucket(len(group), 8, max(len(group), 8))  # pad rows to a multiple of 8
            # filler rows: a one-token prompt (any id); their output is discarded
            prompts, mask = _pad([c for _, c in group] + [[0]] * (batch - len(group)), width, left=True)
            decoded = decoding.lm_generate(
                model, lm.params, prompts, prompt_mask=mask, max_new_tokens=steps,
                rng=jax.random.fold_in(rng, calls), temperature=temperature, top_k=top_k, top_p=top_p,
                eos_id=eos_id, vocab_limit=lm.vocab_limit,
            )
            calls += 1
            tokens, lengths = np.asarray(decoded.tokens), np.asarray(decoded.lengths)
            for j, (i, _) in enumerate(group):
                new = tokens[j, : lengths[j]].tolist()[: max_new_tokens - len(out[i])]
                ended = eos_id >= 0 and bool(new) and new[-1] == eos_id
                out[i].extend(new[:-1] if ended else new)
                if not ended and len(out[i]) < max_new_tokens:
                    still.append(i)
        live = sorted(still)
    return out


# ---------------------------------------------------------------------- translation
def unknown_text(model: Pretrained | str | os.PathLike | tuple, text: str) -> list[str]:
    """The characters and words of ``text`` that ``model``'s tokenizer never saw in its
    training text (see :meth:`tfm.data.tokenizers.Tokenizer.unknown_text`); [] if none."""
    return _as_pretrained(model).tokenizer.unknown_text(text)


def warn_unknown(tok: Tokenizer, texts: Sequence[str], output: str) -> None:
    """One :class:`UnknownTextWarning` per text holding text ``tok`` never saw in training,
    naming it (``output``: what the model makes of the text, e.g. "translation")."""
    for text in texts:
        unknown = tok.unknown_text(text)
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            warnings.warn(UnknownTextWarning(
                f"{text[:80]!r} contains text never seen in training ({shown}); the model has "
                f"not learned it, so its {output} is a guess"), stacklevel=3)


def translate(
    model: Pretrained | str | os.PathLike | tuple,
    sentences: str | Sequence[str],
    *,
    beam_size: int = decoding.BEAM_SIZE,
    alpha: float = decoding.ALPHA,
    extra_len: int = decoding.EXTRA_LEN,
    batch_size: int = 32,
) -> str | list[str]:
    """Translates sentences with an encoder-decoder, by beam search with the paper's settings.

    Args:
      model: a workdir of an encoder_decoder run, a :class:`Pretrained`, or (config, params,
        tokenizer).
      sentences: one sentence (returns one translation) or a list (returns a list, in order).
      beam_size: K (1 = greedy search). alpha: the length penalty's exponent.
      extra_len: at most (source length + extra_len) output tokens (also capped by max_len).
      batch_size: sentences decoded together.

    A sentence holding text the tokenizer never saw in training (unknown characters, or words
    outside its training text: :func:`unknown_text`) is still translated, with an
    :class:`UnknownTextWarning` naming that text.
    """
    options = arguments.translation(beam_size=beam_size, alpha=alpha, extra_len=extra_len, batch_size=batch_size)
    alpha, extra_len, batch_size = options["alpha"], options["extra_len"], options["batch_size"]
    texts, single = arguments.texts("sentences", sentences)
    mt = _resolve(model, Arch.ENCODER_DECODER)
    tok, cfg, net = mt.tokenizer, mt.config, mt.model
    beam_size = arguments.integer("beam_size", beam_size, 1, tok.vocab_size)  # no more beams than ids
    warn_unknown(tok, texts, "translation")
    sources = []
    for text in texts:
        ids = tok.encode(text) + [tok.eos_id]  # as the training batches: source ids + eos
        if len(ids) > cfg.max_len:
            log.warning("source of %d tokens cut to max_len=%d: %r", len(ids), cfg.max_len, text[:80])
            ids = ids[: cfg.max_len]
        sources.append(ids)
    results: list[str] = [""] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(sources[i]))  # similar lengths together
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = _bucket(max(len(sources[i]) for i in chunk), 8, cfg.max_len)
        rows = _bucket(len(chunk), 8, max(len(chunk), batch_size))
        # filler rows: one token (EOS), output discarded
        inputs, mask = _pad([sources[i] for i in chunk] + [[tok.eos_id]] * (rows - len(chunk)), width, left=False)
        # the tokenizer's own ids (Marian: start = pad); never an id past its vocabulary
        special = dict(bos_id=tok.bos_id, eos_id=tok.eos_id, vocab_limit=tok.vocab_size)
        if beam_size > 1:
            out = decoding.encdec_beam_search(
                net, mt.params, inputs, inputs_mask=mask, beam_size=beam_size, alpha=alpha, extra_len=extra_len,
                **special,
            ).best()
        else:
            out = decoding.encdec_greedy(net, mt.params, inputs, inputs_mask=mask, extra_len=extra_len, **special)
        ids = out.to_lists()
        for r, i in enumerate(chunk):
            results[i] = tok.decode(ids[r])
    return results[0] if single else results


# ---------------------------------------------------------------------- attention maps
def attention_maps(model: Pretrained | str | os.PathLike | tuple, *inputs, **kwargs) -> dict[str, jax.Array]:
    """The attention weights of one forward pass, for visualisation.

    ``inputs`` and ``kwargs`` are what the model's ``apply`` takes (e.g. ``inputs,
    decoder_inputs`` for an encoder-decoder). Returns a dict from each attention layer's path
    (e.g. ``"decoder/stack/layer_0/cross_attention"``) to its (B, N, T, S) weights (with a
    leading layer axis under ``scan_layers``); collecting them does not change the outputs.
    """
    model = _as_pretrained(model)
    apply = jax.jit(functools.partial(model.model.apply, mutable=["intermediates"], **kwargs))
    _, state = apply({"params": model.params}, *inputs)
    out = {}
    for path, value in jax.tree_util.tree_flatten_with_path(
        state["intermediates"], is_leaf=lambda x: isinstance(x, tuple)
    )[0]:
        keys = [getattr(p, "key", getattr(p, "idx", None)) for p in path]
        name = "/".join(str(k) for k in keys if k != "attention_weights")
        for i, w in enumerate(value):  # sow keeps a tuple (one entry per call)
            out[name if len(value) == 1 else f"{name}#{i}"] = w
    return out
