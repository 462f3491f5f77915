"""JAX's persistent compilation cache for the launchers: compiled programs reused across processes.

``train.py``, the commands (``tfm generate|translate|export``) and the notebooks call
:func:`enable` before anything compiles; the library itself never does (``import tfm`` and the
functions below the launchers leave JAX's settings alone). A second run of the same program
then reads the compiled executable from disk instead of compiling it again (XLA on CPU, GPU
and TPU).

One setting, the environment variable ``TFM_COMPILATION_CACHE``:

* unset: ``$XDG_CACHE_HOME/tfm/jax`` (``~/.cache/tfm/jax`` without XDG_CACHE_HOME);
* ``off`` (or ``0``, ``false``, ``no``, ``none``): no persistent cache;
* any other value: that directory (created if missing).

If JAX's own ``JAX_COMPILATION_CACHE_DIR`` (or ``jax.config.jax_compilation_cache_dir``) is
already set and ``TFM_COMPILATION_CACHE`` is not, JAX's choice stands.
"""

from __future__ import annotations

import os
import pathlib

ENV_VAR = "TFM_COMPILATION_CACHE"
_OFF = frozenset({"off", "0", "false", "no", "none"})


def cache_dir(environ=None) -> pathlib.Path | None:
    """The directory :func:`enable` uses under ``environ`` (default: ``os.environ``); None = off."""
    environ = os.environ if environ is None else environ
    setting = environ.get(ENV_VAR, "").strip()
    if setting.lower() in _OFF:
        return None
    if setting:
        return pathlib.Path(setting).expanduser()
    base = environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "tfm" / "jax"


def enable(environ=None) -> pathlib.Path | None:
    """Points JAX's persistent compilation cache at :func:`cache_dir` and caches every program
    (no minimum compile time or size: the commands' programs each compile in well under JAX's
    default threshold of a second). Call before the first compilation. Returns the directory
    in use, or None when off (or when the directory cannot be created: a read-only home only
    costs the compile time, so it is not an error)."""
    import jax

    environ = os.environ if environ is None else environ
    if ENV_VAR not in environ and jax.config.jax_compilation_cache_dir:
        return pathlib.Path(jax.config.jax_compilation_cache_dir)
    directory = cache_dir(environ)
    if directory is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
