"""Test setup: 8 fake CPU devices (for pmap / sharding tests), cheap CPU code generation, strict
dtype promotion and one JAX persistent compilation cache for the whole test run.

XLA_FLAGS must be set before JAX initialises its backends, which is why this happens at import
time of the conftest, before any test module imports jax.

The compilation cache is a temporary directory made by the process that starts the run (the
pytest-xdist controller, or pytest itself without workers) and removed when it exits. It travels
in environment variables, so the xdist workers (which import this file again), the training
subprocesses, the launchers (:mod:`tfm.compilation_cache` reads ``TFM_COMPILATION_CACHE``) and
the notebook kernels all read and write the same one: a program compiled by one test is read
from disk by every later test that builds the same program, in any process.
"""

import atexit
import os
import shutil
import tempfile

# 8 fake CPU devices, and LLVM's cheapest optimisation level for the CPU code XLA emits. The
# tests check what the compiled programs compute (XLA's HLO passes, fusion and layout still run:
# the same programs, the same numerics up to float rounding that every test tolerates), not how
# fast the machine code is, and at -O0 the compiles that dominate the run on CPU take far less.
# Launchers and benchmarks outside the tests keep XLA's defaults.
_TEST_XLA_FLAGS = ("--xla_force_host_platform_device_count=8", "--xla_backend_optimization_level=0")
for _flag in _TEST_XLA_FLAGS:
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):  # xdist workers inherit them
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

if "PYTEST_XDIST_WORKER" not in os.environ:  # the process that starts the run: a fresh cache
    _cache = tempfile.mkdtemp(prefix="tfm-test-jax-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ.update({
        "TFM_COMPILATION_CACHE": _cache,
        "JAX_COMPILATION_CACHE_DIR": _cache,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    })

import pathlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")

@pytest.fixture(scope="session")
def jax_cache_dir() -> pathlib.Path:
    """The run's persistent compilation cache (subprocesses inherit it through the environment)."""
    return pathlib.Path(os.environ["JAX_COMPILATION_CACHE_DIR"])


SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> pathlib.Path:
    """../shared/data beside the project; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture
def tinyshakespeare(shared_data) -> pathlib.Path:
    path = shared_data / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


def pytest_sessionfinish(session):
    """Frees JAX's compiled programs and the run's garbage while the session still runs, then
    freezes what is left (gc.freeze), so that the garbage collections pytest runs afterwards
    (five, to report unraisable exceptions) have nothing to walk. In a pytest-xdist worker
    everything after this hook must end within the 5 s execnet waits before interrupting the
    worker, which otherwise prints a KeyboardInterrupt traceback at the end of a passing run."""
    import gc

    jax.clear_caches()
    gc.collect()
    gc.freeze()
