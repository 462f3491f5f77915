"""Bounding how many asynchronously dispatched steps are outstanding at once.

JAX returns from a jitted call as soon as the work is queued, so a Python loop can run far
ahead of the devices. Two or three queued steps are all that hiding the host's dispatch needs;
more buy nothing and can hang a run:

XLA:CPU lets each device hold a fixed number of queued computations
(``max_inflight_computations_per_device``, 32 in jaxlib 0.10). With several CPU devices in one
process (``--xla_force_host_platform_device_count``, ``jax_num_cpu_devices``) and a step that
all-reduces across them, a loop that has queued more than that can hang: one device runs its
part of a step and waits in the all-reduce, while the other device's part of the same step
never starts (gdb: its launch waits on that device's in-flight semaphore). After 40 s XLA
aborts the process ("Termination timeout for `all reduce RendezvousKey{...}` ... only 1 of
them arrived"). Measured on cpu_small over 2 CPU devices (benchmarks/README.md): 30 steps
outstanding ran 2,500 steps; 40 outstanding aborted, and so did the training loop logging
every 200 steps, within a few hundred steps.

:class:`InFlight` keeps at most ``limit`` steps outstanding by waiting for the oldest one
(``jax.block_until_ready`` on an output of it: no transfer to the host).
"""

from __future__ import annotations

import collections
from typing import Any

import jax


class InFlight:
    """A window of the last ``limit`` dispatched steps.

    ``push(outputs)`` after dispatching a step: if more than ``limit`` steps are then
    outstanding, it waits until the oldest one has finished.
    """

    def __init__(self, limit: int):
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"InFlight limit must be a positive integer, got {limit!r}")
        self.limit = limit
        self._queue: collections.deque[Any] = collections.deque()

    def push(self, outputs: Any) -> None:
        """Records a dispatched step by (some of) its outputs; waits while over the limit."""
        self._queue.append(outputs)
        while len(self._queue) > self.limit:
            jax.block_until_ready(self._queue.popleft())

    def __len__(self) -> int:
        return len(self._queue)
