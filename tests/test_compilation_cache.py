"""tfm.compilation_cache: where the launchers' persistent compilation cache lives, and that a
second process reads what the first compiled."""

import os
import pathlib
import subprocess
import sys

from tfm import compilation_cache

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_the_setting_decides_the_directory(tmp_path):
    home = os.path.expanduser("~")
    assert compilation_cache.cache_dir({}) == pathlib.Path(home, ".cache", "tfm", "jax")
    assert compilation_cache.cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "tfm" / "jax"
    given = {"TFM_COMPILATION_CACHE": str(tmp_path / "c"), "XDG_CACHE_HOME": "/elsewhere"}
    assert compilation_cache.cache_dir(given) == tmp_path / "c"
    for off in ("off", "OFF", "0", "false", "no", "none"):
        assert compilation_cache.cache_dir({"TFM_COMPILATION_CACHE": off}) is None


_PROGRAM = """
import time, jax, jax.numpy as jnp
from tfm import compilation_cache
print(compilation_cache.enable())
x = jnp.ones((64, 64))
jax.jit(lambda x: jnp.tanh(x @ x.T).sum() * 3.0)(x).block_until_ready()
"""


def _run(env: dict) -> str:
    env = {k: v for k, v in env.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", _PROGRAM], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_new_process_writes_then_reads_the_cache(tmp_path):
    env = dict(os.environ, TFM_COMPILATION_CACHE=str(tmp_path / "cache"))
    assert _run(env) == str(tmp_path / "cache")
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert any(name.startswith("jit__lambda") for name in entries)  # the program, not only its pieces
    _run(env)  # the second process finds every program there and adds nothing
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == entries

    off = dict(os.environ, TFM_COMPILATION_CACHE="off", XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert _run(off) == "None"
    assert not (tmp_path / "xdg").exists()
