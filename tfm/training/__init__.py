"""Training: configuration, state, pure steps, parallel strategies, checkpoints and the loop.

    from tfm.training import RunConfig, TrainConfig, run
    run(RunConfig.from_config_dict(config_dict), workdir)   # what train.py does

Modules, bottom to top: ``config`` (TrainConfig, RunConfig), ``optimizer`` (the schedule and
optax transformation a TrainConfig names), ``state`` (TrainState), ``steps`` (train_step /
eval_step), ``parallel`` (single / pmap / sharded), ``distributed`` (multi-host start),
``checkpointer`` (orbax), ``workdir_guard`` (lock, provenance, the saved config), ``resume``
(restoring into this run's state), ``init_from`` (starting from an imported model),
``devices`` (the CPU device split), ``memory`` (batch sizes checked before allocating),
``flops`` (MFU), ``health`` (NaN/Inf checks), ``writer`` (TensorBoard + metrics.jsonl),
``progress`` (metric pulls, throughput, progress bar), ``inflight`` (how many dispatched steps
may be outstanding), ``eval`` (validation metrics, BLEU decoding), ``signals`` (preemption),
``setup`` (what a run builds before its first step), ``loop`` (``run``: restore, then step,
flush, evaluate, save).
"""

from tfm.training.config import Optimizer, RunConfig, Schedule, Strategy, TrainConfig, default_config_dict
from tfm.training.devices import configure_cpu_devices
from tfm.training.loop import NonFiniteLossError, WorkdirMismatchError, run
from tfm.training.state import TrainState

__all__ = [
    "NonFiniteLossError", "Optimizer", "RunConfig", "Schedule", "Strategy", "TrainConfig",
    "TrainState", "WorkdirMismatchError", "configure_cpu_devices", "default_config_dict", "run",
]
