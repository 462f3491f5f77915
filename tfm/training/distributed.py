"""Multi-host runs: starting ``jax.distributed`` before anything else touches JAX.

A run of several processes (hosts, or processes on one host) calls
:func:`initialize_distributed` first; the strategies of :mod:`tfm.training.parallel` then see
every process's devices, and each process feeds its own rows.
"""

from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Starts jax.distributed when the run has several processes; returns whether it did.

    The arguments come from flags; when they are absent, the standard environment variables
    (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``) are read. On a
    cluster JAX recognises (SLURM, Open MPI, Cloud TPU, ...), set ``TFM_DISTRIBUTED=1`` (SLURM
    with several tasks is recognised by itself) and ``jax.distributed.initialize()`` detects
    whatever is missing. A single process without any of these does nothing. Must run before
    any other JAX call.
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    cluster = env.get("TFM_DISTRIBUTED") == "1" or int(env.get("SLURM_NTASKS", "1")) > 1
    if jax.distributed.is_initialized():
        return True  # the caller did it already
    if num_processes is not None and num_processes <= 1:
        return False  # explicitly one process
    if coordinator_address is None and num_processes is None and not cluster:
        return False  # nothing says there are several processes
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    log.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
    return True
