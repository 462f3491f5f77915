"""How many XLA devices a CPU-only host is split into: data parallelism over its cores.

XLA:CPU gives a process one device by default; its matmuls then use the cores through one
intra-op pool, and everything between them (LayerNorm, softmax, the optimiser's per-leaf
updates) runs mostly on one core. Split into one device per physical core, each core runs its
own share of the batch, and the gradients are summed with one flat all-reduce
(:func:`tfm.kernels.psum_flat`, on CPU). That made the step of every benchmarked model faster
(benchmarks/README.md, "Against PyTorch, and the CPU split by default"), so it is the
default of :func:`tfm.training.run` (and so of ``train.py`` and notebooks) on a CPU-only host.

The count can only be set before JAX starts its backends (``jax_num_cpu_devices``), so
:func:`configure_cpu_devices` runs first thing in ``run``. It decides, in this order:

1. an explicit request -- ``TrainConfig.cpu_devices`` (``train.py --cpu_devices=N`` sets it),
   else the ``TFM_CPU_DEVICES`` environment variable -- is applied as asked (``auto`` or 0:
   the automatic choice);
2. a count the user set themselves -- ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
   or ``jax.config.update("jax_num_cpu_devices", N)`` -- is left alone;
3. backends already started (a notebook that ran JAX first): nothing can change; when that left
   a multi-core CPU host with one device, a hint says how to get the split;
4. not a CPU-only host (``JAX_PLATFORMS`` names an accelerator, or an accelerator plugin --
   CUDA, ROCm, TPU -- is installed), several processes, or a strategy that is not plain data
   parallelism: left alone;
5. otherwise one device per physical core available to the process (affinity, cgroup quota),
   at most :data:`MAX_AUTO_DEVICES`, and the largest such count that divides the batch sizes
   (``batch_size``, ``eval_batch_size``, and the per-device batch by ``grad_accum_steps``);
   the log says when the batch kept it below the core count.

Every decision is logged once, with how to override it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import logging
import os
import pkgutil
import re

import jax

from tfm import backend

log = logging.getLogger(__name__)

ENV_VAR = "TFM_CPU_DEVICES"

# Measured on 2 cores only (2 devices beat 1, 3 and 4); larger hosts are unmeasured, so the
# automatic split stops here (per-device batches shrink and the all-reduce grows with the count).
MAX_AUTO_DEVICES = 8

_XLA_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=(\d+)")

# What this process decided last, "PID COUNT DIGEST": the count tfm set ("-": none), so that a
# second run does not mistake it for the user's, and a digest of the decision last logged, so
# that a notebook's every run() does not repeat it. A record inherited from a parent process
# (another PID) is not this process's and is ignored.
DECIDED_VAR = "TFM_CPU_SPLIT_DECIDED"


@dataclasses.dataclass(frozen=True)
class CpuSplit:
    """What :func:`configure_cpu_devices` decided.

    Attributes:
      devices: the CPU device count the process gets (None: left to JAX's default, or unknown).
      source: "config" / "env" (an explicit request), "auto", "XLA_FLAGS", "jax_config",
        "initialized" (backends already started), "not_cpu", "multiprocess", "strategy".
      changed: whether this call set ``jax_num_cpu_devices``.
      message: the line that was logged.
    """

    devices: int | None
    source: str
    changed: bool
    message: str


# ---------------------------------------------------------------------- the policy
def configure_cpu_devices(
    requested: int | None = None,
    *,
    batch_sizes: tuple[int, ...] = (),
    grad_accum_steps: int = 1,
    data_parallel: bool = True,
) -> CpuSplit:
    """Splits a CPU-only host into XLA devices before JAX's backends start (module docstring).

    Args:
      requested: an explicit device count (>= 1); None or 0: the environment variable, else
        automatic.
      batch_sizes: global batch sizes that must divide evenly over the devices.
      grad_accum_steps: the per-device share of ``batch_sizes[0]`` must divide by it.
      data_parallel: whether the run's strategy spreads the batch over every device (pmap, or
        sharded with ``mesh_data=-1, mesh_fsdp=1``); the automatic split needs it.
    """
    source = "config"
    if not requested:
        requested, source = env_request(), "env"
    if requested:
        return _explicit(requested, source)

    user_count = user_device_count()
    if user_count is not None:
        return _decided(user_count[0], user_count[1], False,
                        f"CPU devices: {user_count[0]}, as {user_count[1]} sets", level=logging.INFO)
    if backends_initialized():
        return _already_initialized(batch_sizes, grad_accum_steps, data_parallel)
    platform = host_platform()
    if platform != "cpu":
        return _decided(None, "not_cpu", False,
                        f"CPU device split: not applied ({platform or 'an accelerator plugin is installed'})",
                        level=logging.DEBUG)
    if multiprocess():
        return _decided(None, "multiprocess", False,
                        "CPU device split: not applied (several processes); use --cpu_devices",
                        level=logging.INFO)
    cores = physical_cores()
    if not data_parallel:
        return _decided(None, "strategy", False,
                        f"CPU device split: not applied on this {cores}-core host (the strategy "
                        "is not plain data parallelism); set TrainConfig.cpu_devices to split it",
                        level=logging.INFO)
    n, why = pick_split(cores, batch_sizes, grad_accum_steps)
    if n > 1:
        _set_count(n)
    message = (f"CPU-only host with {cores} physical core(s): {n} XLA CPU device(s) for data "
               f"parallelism{why} (override: --cpu_devices=N, TrainConfig.cpu_devices or "
               f"{ENV_VAR}=N)")
    return _decided(n, "auto", n > 1, message, level=logging.INFO)


def configure_for_run(train, data) -> CpuSplit:
    """:func:`configure_cpu_devices` for a :class:`tfm.training.config.RunConfig`'s parts."""
    from tfm.training.config import Strategy

    data_parallel = train.strategy is Strategy.PMAP or (
        train.strategy is Strategy.SHARDED and train.mesh_data == -1 and train.mesh_fsdp == 1)
    return configure_cpu_devices(
        train.cpu_devices or None,
        batch_sizes=(data.batch_size, data.eval_batch_size),
        grad_accum_steps=train.grad_accum_steps,
        data_parallel=data_parallel,
    )


def pick_split(cores: int, batch_sizes: tuple[int, ...] = (), grad_accum_steps: int = 1
               ) -> tuple[int, str]:
    """The largest device count <= min(cores, MAX_AUTO_DEVICES) that every batch size divides
    by (and whose per-device training batch divides by ``grad_accum_steps``), with the reason
    when it is below the core count ("" otherwise)."""
    limit = max(1, min(cores, MAX_AUTO_DEVICES))
    for n in range(limit, 0, -1):
        if all(b % n == 0 for b in batch_sizes) and (
            not batch_sizes or (batch_sizes[0] // n) % grad_accum_steps == 0
        ):
            break
    if n == limit:
        why = "" if limit == cores else f" (at most {MAX_AUTO_DEVICES} automatically)"
    else:
        sizes = " and ".join(str(b) for b in batch_sizes)
        why = (f" (not {limit}: the batch sizes {sizes} with grad_accum_steps={grad_accum_steps} "
               f"only split evenly over {n}; use multiples of {limit} for all {limit})")
    return n, why


# ---------------------------------------------------------------------- the cases
def _explicit(n: int, source: str) -> CpuSplit:
    what = "TrainConfig.cpu_devices" if source == "config" else ENV_VAR
    if backends_initialized():
        current = _cpu_device_count()
        if current == n:
            return _decided(n, source, False, f"CPU devices: {n}, as {what} asks", level=logging.INFO)
        return _decided(
            current, source, False,
            f"{what}={n} cannot be applied: JAX's backends already started with {current} CPU "
            f"device(s). Set it before any JAX operation (e.g. first thing in the notebook: "
            f"import jax; jax.config.update('jax_num_cpu_devices', {n})) or restart the process.",
            level=logging.WARNING)
    _set_count(n)
    return _decided(n, source, True, f"CPU devices: {n}, as {what} asks", level=logging.INFO)


def _already_initialized(batch_sizes, grad_accum_steps, data_parallel) -> CpuSplit:
    current = _cpu_device_count() if backend.platform() == "cpu" else None
    if current is None:
        return _decided(None, "not_cpu", False, "CPU device split: not a CPU run", level=logging.DEBUG)
    cores = physical_cores()
    n, _ = pick_split(cores, batch_sizes, grad_accum_steps)
    if current == 1 and n > 1 and data_parallel and not multiprocess():
        return _decided(
            current, "initialized", False,
            f"JAX started before tfm.training.run with 1 CPU device, so this {cores}-core host "
            f"trains on one device. Splitting it into {n} is faster (benchmarks/README.md): run "
            f"`import jax; jax.config.update('jax_num_cpu_devices', {n})` (or "
            f"tfm.training.configure_cpu_devices()) before any JAX operation, e.g. at the top of "
            f"the notebook, then restart the kernel.",
            level=logging.WARNING)
    return _decided(current, "initialized", False, f"CPU devices: {current}", level=logging.DEBUG)


def _decided(devices, source, changed, message, *, level) -> CpuSplit:
    applied, logged = _record()
    digest = hashlib.sha256(message.encode()).hexdigest()[:16]
    if digest != logged:  # once per decision, not at every run() of a notebook
        log.log(level, "%s", message)
        _remember(applied, digest)
    return CpuSplit(devices, source, changed, message)


def _set_count(n: int) -> None:
    jax.config.update("jax_num_cpu_devices", n)
    _remember(n, _record()[1])


def _record() -> tuple[int | None, str | None]:
    """(the count this process set, the digest of the decision it last logged), from
    :data:`DECIDED_VAR`."""
    fields = os.environ.get(DECIDED_VAR, "").split()
    if len(fields) != 3 or fields[0] != str(os.getpid()):
        return None, None
    return (int(fields[1]) if fields[1].isdigit() else None), fields[2]


def _remember(applied: int | None, digest: str | None) -> None:
    os.environ[DECIDED_VAR] = f"{os.getpid()} {'-' if applied is None else applied} {digest or '-'}"


# ---------------------------------------------------------------------- what the host has
def env_request() -> int | None:
    """``TFM_CPU_DEVICES`` as a count (None when unset, empty, 0 or "auto")."""
    text = os.environ.get(ENV_VAR, "").strip().lower()
    if text in ("", "auto", "0"):
        return None
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 1:
        raise ValueError(f"{ENV_VAR}={os.environ[ENV_VAR]!r}: expected a positive device count or 'auto'")
    return n


def user_device_count() -> tuple[int, str] | None:
    """(count, where) when the user set the CPU device count themselves, else None."""
    configured = _jax_num_cpu_devices()
    if configured is not None and configured >= 0 and configured != _record()[0]:
        return configured, "jax_num_cpu_devices"
    found = _XLA_COUNT_FLAG.findall(os.environ.get("XLA_FLAGS", ""))
    if found and not (configured is not None and configured >= 0):
        return int(found[-1]), "XLA_FLAGS"
    return None


def _jax_num_cpu_devices() -> int | None:
    return jax.config.jax_num_cpu_devices  # -1: not set


def backends_initialized() -> bool:
    return backend.backends_started()


def host_platform() -> str | None:
    """The platform JAX will pick, found without starting a backend: "cpu" on a CPU-only host,
    the first of ``JAX_PLATFORMS`` when it is set, None when an accelerator plugin is installed
    (the host may well have a GPU/TPU)."""
    platforms = jax.config.jax_platforms
    if platforms:
        return platforms.split(",")[0].strip().lower()
    if _accelerator_plugins():
        return None
    return "cpu"


def _accelerator_plugins() -> list[str]:
    """Installed PJRT plugins (jax_plugins.*: CUDA, ROCm, ...) and libtpu."""
    found = []
    try:
        import jax_plugins  # a namespace package, present only with plugins

        found += [name for _, name, _ in pkgutil.iter_modules(jax_plugins.__path__)]
    except ImportError:
        pass
    from importlib.metadata import entry_points

    found += [ep.name for ep in entry_points(group="jax_plugins")]
    if importlib.util.find_spec("libtpu") is not None:
        found.append("libtpu")
    return found


def multiprocess() -> bool:
    """Whether this is one of several JAX processes (initialised, or about to be)."""
    env = os.environ
    return bool(
        jax.distributed.is_initialized()
        or int(env.get("JAX_NUM_PROCESSES", "1") or 1) > 1
        or int(env.get("SLURM_NTASKS", "1") or 1) > 1
        or env.get("TFM_DISTRIBUTED") == "1"
    )


def physical_cores() -> int:
    """Physical cores this process may run on: its CPU affinity, counted once per core
    (hyper-threads share one), and at most the cgroup's CPU quota (containers)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(
        range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topology = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{topology}/physical_package_id") as f:
                package = f.read().strip()
            with open(f"{topology}/core_id") as f:
                core = f.read().strip()
            cores.add((package, core))
        except OSError:
            cores.add(("cpu", str(cpu)))
    n = len(cores)
    quota = _cgroup_cpu_quota()
    if quota is not None:
        n = min(n, max(1, int(quota)))
    return max(1, n)


def _cgroup_cpu_quota() -> float | None:
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _cpu_device_count() -> int:
    return len(jax.local_devices(backend="cpu"))


__all__ = ["CpuSplit", "ENV_VAR", "MAX_AUTO_DEVICES", "configure_cpu_devices", "configure_for_run",
           "host_platform", "physical_cores", "pick_split"]
