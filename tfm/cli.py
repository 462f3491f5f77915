"""The command lines for a trained workdir or an imported model::

    python -m tfm.cli generate  --workdir DIR --prompt "ROMEO:" --max_new_tokens 200
    python -m tfm.cli translate --workdir DIR "three hundred twenty-one"
    python -m tfm.cli export    --workdir DIR --out HF_DIR
    python -m tfm.cli classify  --pretrained BERT_DIR "a gripping film"     (or stdin, one per line)
    python -m tfm.cli fill-mask --pretrained BERT_DIR "Paris is the [MASK] of France."

(``tfm generate ...`` etc. once tfm is installed: the ``tfm`` script runs :func:`main`.)

They need only the workdir (config, tokenizer, newest checkpoint: see :mod:`tfm.inference`) or,
with ``--pretrained DIR``, a model directory in Hugging Face's layout (see :mod:`tfm.interop`).
Each command is a function taking ``argv`` (``generate_main`` for ``generate``, ...), so that
tests call them in-process; the library functions (``tfm.generate``, ...) keep their own names.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _prog(command: str = "") -> str:
    """How the user ran us, for usage lines: the installed ``tfm`` script or ``python -m tfm.cli``."""
    launcher = "tfm" if os.path.basename(sys.argv[0]) == "tfm" else "python -m tfm.cli"
    return f"{launcher} {command}".strip()


def _start() -> None:
    """Before the first compilation: quiet library logs, and JAX's persistent compilation cache
    (:mod:`tfm.compilation_cache`: a second run reads its programs from disk)."""
    import logging

    from absl import logging as absl_logging

    from tfm import compilation_cache

    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("jax").setLevel(logging.WARNING)
    compilation_cache.enable()


def _one_line_errors(command):
    """tfm's own errors (:class:`tfm.files.TfmError`: a bad workdir, model directory, file or
    argument) from ``command`` become one ``error: ...`` line on stderr and exit status 2; the
    one place the commands turn them into that."""
    import functools

    @functools.wraps(command)
    def run(argv: Sequence[str] | None = None) -> int:
        from tfm.files import TfmError

        try:
            return command(argv)
        except TfmError as e:
            lines = str(e).strip().splitlines() or [type(e).__name__]
            print(f"error: {lines[0]}", *lines[1:], sep="\n", file=sys.stderr)
            return 2

    return run


@_one_line_errors
def generate_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=_prog("generate"),
        description="Continue a prompt with a decoder-only language model trained by train.py.",
    )
    _add_source(parser)
    parser.add_argument("--prompt", default="", help="text to continue (default: start from nothing)")
    parser.add_argument("--max_new_tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top_k", type=int, default=0, help="sample from the k most likely tokens (0 = all)")
    parser.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_samples", type=int, default=1)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    args = parser.parse_args(argv)
    from tfm import arguments  # pure Python: bad arguments are refused before anything heavy is imported

    options = arguments.generation(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        seed=args.seed, num_samples=args.num_samples)

    lm = _load(args, "decoder_lm")
    from tfm import inference

    samples = _warning_lines(lambda: inference.generate(lm, args.prompt, **options))
    for i, text in enumerate([samples] if args.num_samples == 1 else samples):
        if i:
            print("\n---------------")
        print(args.prompt + text)
    return 0


def _warning_lines(run):
    """``run()``, with each UnknownTextWarning it gives printed as one "warning:" line on
    stderr (what the command prints on stdout is unchanged)."""
    from tfm import inference

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", inference.UnknownTextWarning)
        result = run()
    for w in caught:
        if issubclass(w.category, inference.UnknownTextWarning):
            print(f"warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return result


def _add_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="the training run's --workdir")
    source.add_argument("--pretrained", help="a model directory in Hugging Face's layout "
                        "(config.json, model.safetensors, tokenizer files), e.g. a downloaded gpt2")


def _load(args: argparse.Namespace, arch: str | None):
    """The model of ``args.workdir`` (its checkpoint of ``args.step``, default the newest) or
    ``args.pretrained`` (a tfm.inference.Pretrained); tfm's own error when it cannot be used
    (missing parts, wrong model kind when ``arch`` is given)."""
    _start()
    from tfm import inference, interop  # imported late: --help and argument errors stay fast

    if getattr(args, "pretrained", None):
        if getattr(args, "step", None) is not None:
            raise inference.WorkdirError("--step is for --workdir checkpoints, not --pretrained")
        model = interop.from_pretrained(args.pretrained)
        if arch is not None and model.config.arch.value != arch:
            raise inference.WorkdirError(
                f"{args.pretrained} holds a model of kind {model.config.arch.value!r}, but this needs {arch!r}")
        return model
    return inference.load(args.workdir, step=args.step, arch=arch)


@_one_line_errors
def translate_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=_prog("translate"),
        description="Translate sentences (arguments, or one per line on stdin) with an "
        "encoder-decoder trained by train.py. Beam search with the paper's settings by default.",
    )
    parser.add_argument("sentences", nargs="*", help="sentences to translate (default: read stdin)")
    _add_source(parser)
    # not given: tfm.inference.translate's defaults, the paper's (tfm.decoding.BEAM_SIZE, ALPHA,
    # EXTRA_LEN); the CLI imports no JAX before it has to
    parser.add_argument("--beam_size", type=int, default=argparse.SUPPRESS,
                        help="1 = greedy (default: the paper's, tfm.decoding.BEAM_SIZE)")
    parser.add_argument("--alpha", type=float, default=argparse.SUPPRESS,
                        help="length penalty exponent (default: the paper's, tfm.decoding.ALPHA)")
    parser.add_argument("--extra_len", type=int, default=argparse.SUPPRESS,
                        help="maximum output length = input length + this (default: tfm.decoding.EXTRA_LEN)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    args = parser.parse_args(argv)
    from tfm import arguments

    search = {k: getattr(args, k) for k in ("beam_size", "alpha", "extra_len") if hasattr(args, k)}
    options = arguments.translation(**search, batch_size=args.batch_size)

    mt = _load(args, "encoder_decoder")
    from tfm import inference

    sentences = args.sentences or [line.rstrip("\n") for line in sys.stdin]
    # Inputs with text the tokenizer never saw get one "warning:" line each on stderr (the
    # translations on stdout stay one per input line).
    translations = _warning_lines(lambda: inference.translate(mt, sentences, **options))
    for line in translations:
        print(line)
    return 0


@_one_line_errors
def export_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=_prog("export"),
        description="Write a GPT-2-shaped decoder_lm, Marian-shaped encoder_decoder or BERT-shaped encoder_classifier (a training "
        "workdir's newest checkpoint, or an imported model) in Hugging Face's layout, loadable by "
        "transformers' from_pretrained.",
    )
    _add_source(parser)
    parser.add_argument("--out", required=True, help="a new (or empty) directory to write")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    parser.add_argument("--max_shard_mb", type=int, default=None,
                        help="write shards of at most this many MB + model.safetensors.index.json "
                        "(default: one file)")
    args = parser.parse_args(argv)
    from tfm import arguments

    max_shard_mb = arguments.max_shard_mb(args.max_shard_mb) or 0
    model = _load(args, None)
    from tfm import interop

    written = interop.save_pretrained(model, args.out, max_shard_bytes=max_shard_mb * 2**20 or None)
    print(f"wrote {args.out}: {', '.join(written)}")
    return 0


def _texts(args) -> list[str]:
    return args.texts or [line.rstrip("\n") for line in sys.stdin]


@_one_line_errors
def classify_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=_prog("classify"),
        description="Classify texts (arguments, or one per line on stdin; a tab separates the two texts "
        "of a pair) with an encoder-only classifier: prints label, probability and text, tab-separated.",
    )
    parser.add_argument("texts", nargs="*", help="texts to classify (default: read stdin)")
    _add_source(parser)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    args = parser.parse_args(argv)
    from tfm import arguments

    arguments.integer("batch_size", args.batch_size, 1)
    model = _load(args, "encoder_classifier")
    from tfm import encoding_tasks

    inputs = [tuple(t.split("\t", 1)) if "\t" in t else t for t in _texts(args)]
    results = encoding_tasks.classify(model, inputs, batch_size=args.batch_size)
    for text, r in zip(inputs, results):
        shown = " | ".join(text) if isinstance(text, tuple) else text
        print(f"{r['label']}\t{r['score']:.4f}\t{shown}")
    return 0


@_one_line_errors
def fill_mask_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=_prog("fill-mask"),
        description="Fill the mask token (e.g. [MASK]) of texts (arguments, or one per line on stdin) "
        "with a masked-LM model: prints, per text, the top-k completions with their probabilities.",
    )
    parser.add_argument("texts", nargs="*", help="texts holding the mask token (default: read stdin)")
    _add_source(parser)
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    args = parser.parse_args(argv)
    from tfm import arguments

    arguments.integer("top_k", args.top_k, 1)
    arguments.integer("batch_size", args.batch_size, 1)
    model = _load(args, "encoder_classifier")
    from tfm import encoding_tasks

    texts = _texts(args)
    results = encoding_tasks.fill_mask(model, texts, top_k=args.top_k, batch_size=args.batch_size)
    for text, result in zip(texts, results):
        print(text)
        masks = result if result and isinstance(result[0], list) else [result]
        for m, cands in enumerate(masks):
            line = "  ".join(f"{c['token']} {c['score']:.4f}" for c in cands)
            print(f"  mask {m + 1}: {line}" if len(masks) > 1 else f"  {line}")
    return 0


COMMANDS = {"generate": generate_main, "translate": translate_main, "export": export_main,
            "classify": classify_main, "fill-mask": fill_mask_main}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tfm.cli COMMAND ...`` (or the installed ``tfm COMMAND ...``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = (f"usage: {_prog()} {{{','.join(COMMANDS)}}} ...  "
             f"({_prog('COMMAND')} --help for its options)")
    if not argv or argv[0] in ("-h", "--help"):
        print(usage, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"{usage}\nerror: unknown command {argv[0]!r}", file=sys.stderr)
        return 2
    return command(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
