"""``python -m tfm.export --workdir DIR --out HF_DIR``: a trained (or ``--pretrained``) GPT-2- or
Marian-shaped model in Hugging Face's layout (see :func:`tfm.cli.export_main` and
:func:`tfm.interop.save_pretrained`)."""

import sys

from tfm.cli import export_main

if __name__ == "__main__":
    sys.exit(export_main())
