"""``python -m tfm.translate --workdir DIR "three hundred twenty-one"``: the command line of
:func:`tfm.inference.translate` (see :func:`tfm.cli.translate_main`).

The library function and this module share the name ``tfm.translate``. Importing this module
(``import tfm.translate``) rebinds that attribute of the package to the module, so the module is
made callable with the function's signature: ``tfm.translate(...)`` works either way.
"""

import sys

from tfm.cli import make_module_callable, translate_main

make_module_callable(__name__, "translate")

if __name__ == "__main__":
    sys.exit(translate_main())
