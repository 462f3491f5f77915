"""``python -m tfm.translate --workdir DIR "three hundred twenty-one"`` (or one sentence per line
on stdin): see :func:`tfm.cli.translate_main`."""

import sys

from tfm.cli import translate_main

if __name__ == "__main__":
    sys.exit(translate_main())
