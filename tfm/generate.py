"""``python -m tfm.generate --workdir DIR --prompt "ROMEO:" --max_new_tokens 200
[--temperature T --top_k K --top_p P --seed S]``: see :func:`tfm.cli.generate_main`."""

import sys

from tfm.cli import generate_main

if __name__ == "__main__":
    sys.exit(generate_main())
