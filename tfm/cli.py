"""The command lines for a trained workdir or an imported model::

    python -m tfm.cli generate  --workdir DIR --prompt "ROMEO:" --max_new_tokens 200
    python -m tfm.cli translate --workdir DIR "three hundred twenty-one"
    python -m tfm.cli export    --workdir DIR --out HF_DIR

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


def _quiet_logs() -> None:
    import logging

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("jax").setLevel(logging.WARNING)


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
    if args.max_new_tokens < 1:
        parser.error("--max_new_tokens must be >= 1")
    if not 0 <= args.temperature < float("inf") or args.top_k < 0 or not 0 < args.top_p <= 1 or args.num_samples < 1:
        parser.error("need --temperature >= 0, --top_k >= 0, 0 < --top_p <= 1, --num_samples >= 1")

    lm = _load(args, "decoder_lm")
    if lm is None:
        return 2
    from tfm import inference

    samples = inference.generate(
        lm, args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, seed=args.seed, num_samples=args.num_samples,
    )
    for i, text in enumerate([samples] if args.num_samples == 1 else samples):
        if i:
            print("\n---------------")
        print(args.prompt + text)
    return 0


def _add_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="the training run's --workdir")
    source.add_argument("--pretrained", help="a model directory in Hugging Face's layout "
                        "(config.json, model.safetensors, tokenizer files), e.g. a downloaded gpt2")


def _load(args: argparse.Namespace, arch: str):
    """The model of ``args.workdir`` or ``args.pretrained`` (a tfm.inference.Pretrained), or None
    after printing to stderr why it cannot be used (missing parts, wrong model kind)."""
    _quiet_logs()
    from tfm import inference, interop  # imported late: --help and argument errors stay fast

    try:
        if getattr(args, "pretrained", None):
            if getattr(args, "step", None) is not None:
                raise inference.WorkdirError("--step is for --workdir checkpoints, not --pretrained")
            model = interop.from_pretrained(args.pretrained)
            if model.config.arch.value != arch:
                raise inference.WorkdirError(
                    f"{args.pretrained} holds a model of kind {model.config.arch.value!r}, but this needs {arch!r}")
            return model
        return inference.load(args.workdir, step=args.step, arch=arch)
    except (inference.WorkdirError, interop.HFFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return None


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
    search = {k: getattr(args, k) for k in ("beam_size", "alpha", "extra_len") if hasattr(args, k)}
    if search.get("beam_size", 1) < 1 or args.batch_size < 1 or search.get("extra_len", 1) < 1:
        parser.error("--beam_size, --batch_size and --extra_len must be >= 1")

    mt = _load(args, "encoder_decoder")
    if mt is None:
        return 2
    from tfm import inference

    sentences = args.sentences or [line.rstrip("\n") for line in sys.stdin]
    # Inputs with text the tokenizer never saw get one "warning:" line each on stderr (the
    # translations on stdout stay one per input line).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", inference.UnknownTextWarning)
        translations = inference.translate(
            mt, sentences, **search, batch_size=args.batch_size,
        )
    for w in caught:
        if issubclass(w.category, inference.UnknownTextWarning):
            print(f"warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    for line in translations:
        print(line)
    return 0


def export_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=_prog("export"),
        description="Write a GPT-2-shaped decoder_lm or Marian-shaped encoder_decoder (a training "
        "workdir's newest checkpoint, or an imported model) in Hugging Face's layout, loadable by "
        "transformers' from_pretrained.",
    )
    _add_source(parser)
    parser.add_argument("--out", required=True, help="a new (or empty) directory to write")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    parser.add_argument("--max_shard_mb", type=int, default=0,
                        help="write shards of at most this many MB + model.safetensors.index.json (0 = one file)")
    args = parser.parse_args(argv)
    _quiet_logs()
    from tfm import inference, interop

    try:
        model = (interop.from_pretrained(args.pretrained) if args.pretrained
                 else inference.load(args.workdir, step=args.step))
        written = interop.save_pretrained(model, args.out,
                                          max_shard_bytes=args.max_shard_mb * 2**20 or None)
    except (inference.WorkdirError, interop.HFFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {', '.join(written)}")
    return 0


COMMANDS = {"generate": generate_main, "translate": translate_main, "export": export_main}


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
