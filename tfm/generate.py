"""``python -m tfm.generate --workdir DIR --prompt "ROMEO:" --max_new_tokens 200``: the command
line of :func:`tfm.inference.generate` (see :func:`tfm.cli.generate_main`).

The library function and this module share the name ``tfm.generate``. Importing this module
(``import tfm.generate``) rebinds that attribute of the package to the module, so the module is
made callable with the function's signature: ``tfm.generate(...)`` works either way.
"""

import sys

from tfm.cli import generate_main, make_module_callable

make_module_callable(__name__, "generate")

if __name__ == "__main__":
    sys.exit(generate_main())
