"""``python -m tfm.generate --workdir DIR --prompt "ROMEO:" --max_new_tokens 200``: the command
line of :func:`tfm.inference.generate` (see :func:`tfm.cli.generate_main`).

The library function and this module share the name ``tfm.generate``. Importing this module
(``import tfm.generate``) rebinds that attribute of the package to the module, so the module is
made callable with the function's signature: ``tfm.generate(...)`` works either way.
"""

import sys
import types

from tfm import inference
from tfm.cli import generate_main


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return inference.generate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(generate_main())
