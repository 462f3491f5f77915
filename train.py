"""Train a Transformer.

    python train.py                                   # the numbers task, into workdirs/numbers
    python train.py --config=configs/shakespeare_char.py --workdir=/tmp/shakespeare   # TFDS: tfm[tfds]
    python train.py --config=configs/numbers.py --config.train.num_steps=500 \\
                    --config.model.dtype=bfloat16      # any field can be overridden
    python train.py --cpu_devices=1                   # CPU: one device (default: one per core)

Re-running with the same --workdir resumes from its newest checkpoint. SIGTERM / Ctrl-C save a
checkpoint and exit 0. Several processes (one per host): pass --coordinator_address=HOST:PORT
--num_processes=N --process_id=I, or set JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID. SLURM with several tasks is detected; on another cluster that
jax.distributed.initialize() recognises by itself (Cloud TPU, Open MPI, ...) set TFM_DISTRIBUTED=1.
TFM_COMPILATION_CACHE=DIR|off moves or turns off the cache of compiled programs (default
$XDG_CACHE_HOME/tfm/jax, see tfm/compilation_cache.py).

All the work happens in tfm.training.loop.run; this file only parses flags.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_HERE = os.path.dirname(os.path.abspath(__file__))


def _check_config_overrides(argv) -> None:
    """Every ``--config.SECTION.FIELD=`` of the command line against the dataclasses: an
    unknown or renamed one is one line naming it and the valid names (ml_collections would
    raise a traceback while this file is imported, before absl parses anything)."""
    from tfm.training.config import override_error

    for arg in argv[1:]:
        if arg.startswith("--config."):
            error = override_error(arg.split("=", 1)[0])
            if error:
                print(f"error: {error}", file=sys.stderr)
                sys.exit(2)


if __name__ == "__main__":
    _check_config_overrides(sys.argv)

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_HERE, "configs", "numbers.py"), "Experiment config file.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory of the run (default: workdirs/<config file name>)."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for multi-process runs."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes taking part.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", None,
    "Split the host CPU into this many XLA devices (jax_num_cpu_devices), for data parallelism "
    "(= --config.train.cpu_devices=N). Default: on a CPU-only host one device per physical core "
    "as the batch size allows (measured in benchmarks/README.md), unless TFM_CPU_DEVICES or "
    "XLA_FLAGS=--xla_force_host_platform_device_count says otherwise; GPU/TPU hosts untouched.",
    lower_bound=1,
)


class _QuietLibraries:
    """Drops INFO records of libraries that log every checkpoint step by step (orbax), and cuts
    their warnings and errors to one line without the traceback."""

    def filter(self, record) -> bool:
        if "/orbax/" not in record.pathname:
            return True
        if record.levelno >= 30:  # one line: tfm reports what failed, and where, itself
            record.msg, record.args = str(record.getMessage()).splitlines()[0][:300], ()
            record.exc_info = record.exc_text = None
            return True
        return False


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    from tfm import compilation_cache
    from tfm.training import distributed

    compilation_cache.enable()  # before anything compiles: TFM_COMPILATION_CACHE moves it or turns it off

    distributed.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)

    from tfm.training.config import RunConfig
    from tfm.training.loop import run

    try:
        config = RunConfig.from_config_dict(_CONFIG.value)  # validated before anything compiles
        if _CPU_DEVICES.value is not None:  # run() applies it before JAX's backends start
            config = config.replace(train=config.train.replace(cpu_devices=_CPU_DEVICES.value))
        workdir = _WORKDIR.value or os.path.join("workdirs", _config_name())
        logging.info("workdir: %s", os.path.abspath(workdir))
        result = run(config, workdir)
    except _user_errors() as e:
        _exit_with(e)
    logging.info("finished at step %d%s", result["step"], " (preempted)" if result["preempted"] else "")


def _user_errors() -> tuple[type[BaseException], ...]:
    """What a user's config, data, workdir or file system causes: reported in one message,
    without a traceback (--verbosity=1 shows it)."""
    from tfm.data.sources import MissingExtraError
    from tfm.files import TfmError  # the base of tfm's own errors (workdir, checkpoint, files...)

    return (TfmError, ValueError, OSError, FloatingPointError, MissingExtraError)


def _exit_with(error: BaseException) -> None:
    """Prints ``error: ...`` and exits 1 -- at once, even if a library thread (orbax's saves
    after a failed write) would keep the interpreter from shutting down."""
    import threading

    if logging.get_verbosity() >= 1:
        logging.exception("traceback")
    print(f"error: {error}", file=sys.stderr, flush=True)
    stuck = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    if stuck:
        sys.stdout.flush()
        os._exit(1)
    sys.exit(1)


def _config_name() -> str:
    """"numbers" for --config=configs/numbers.py (a ":arg" suffix is ignored)."""
    path = config_flags.get_config_filename(flags.FLAGS["config"])
    return os.path.splitext(os.path.basename(path.split(":")[0]))[0] or "run"


if __name__ == "__main__":
    app.run(main)
