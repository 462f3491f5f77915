"""Train a Transformer.

    python train.py                                   # the numbers task, into workdirs/numbers
    python train.py --config=configs/shakespeare_char.py --workdir=/tmp/shakespeare
    python train.py --config=configs/numbers.py --config.train.num_steps=500 \\
                    --config.model.dtype=bfloat16      # any field can be overridden
    python train.py --cpu_devices=1                   # CPU: one device (default: one per core)

Re-running with the same --workdir resumes from its newest checkpoint. SIGTERM / Ctrl-C save a
checkpoint and exit 0. Several processes (one per host): pass --coordinator_address=HOST:PORT
--num_processes=N --process_id=I, or set JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID (SLURM and Cloud TPU are detected).

All the work happens in tfm.training.loop.run; this file only parses flags.
"""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

_HERE = os.path.dirname(os.path.abspath(__file__))

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
    "as the batch size allows (2 on 2 cores: cpu_small's step 1.3-1.7x faster, "
    "benchmarks/README.md), unless TFM_CPU_DEVICES or "
    "XLA_FLAGS=--xla_force_host_platform_device_count says otherwise; GPU/TPU hosts untouched.",
    lower_bound=1,
)


class _QuietLibraries:
    """Drops INFO records of libraries that log every checkpoint step by step (orbax)."""

    def filter(self, record) -> bool:
        return record.levelno >= 30 or "/orbax/" not in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    from tfm.training import parallel

    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)

    from tfm.training.config import RunConfig
    from tfm.training.loop import run

    config = RunConfig.from_config_dict(_CONFIG.value)  # validated before anything compiles
    if _CPU_DEVICES.value is not None:  # run() applies it before JAX's backends start
        config = config.replace(train=config.train.replace(cpu_devices=_CPU_DEVICES.value))
    workdir = _WORKDIR.value or os.path.join("workdirs", _config_name())
    logging.info("workdir: %s", os.path.abspath(workdir))
    result = run(config, workdir)
    logging.info("finished at step %d%s", result["step"], " (preempted)" if result["preempted"] else "")


def _config_name() -> str:
    """"numbers" for --config=configs/numbers.py (a ":arg" suffix is ignored)."""
    path = config_flags.get_config_filename(flags.FLAGS["config"])
    return os.path.splitext(os.path.basename(path.split(":")[0]))[0] or "run"


if __name__ == "__main__":
    app.run(main)
