"""Preemption: SIGTERM / SIGINT become a request to checkpoint and stop, not a lost run.

:class:`StopSignals` sets a flag the loop checks (it saves the current step and returns; with
several processes they agree on the step, :meth:`StopSignals.agreed`); during
set-up (:meth:`StopSignals.interruptible`: downloads, tokenizer training -- nothing to save yet)
a signal stops the run at once with :class:`SetupInterrupted`.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any

import jax
import numpy as np

log = logging.getLogger(__name__)


class SetupInterrupted(BaseException):
    """SIGTERM/SIGINT during set-up (a BaseException: libraries' ``except Exception`` retry
    loops, e.g. TFDS downloads, must not swallow it)."""


class StopSignals:
    """SIGTERM / SIGINT set a flag (the loop checkpoints and returns); a second SIGINT
    interrupts at once. Inside :meth:`interruptible` (set-up: data, tokenizer, compilation --
    nothing to save yet) they stop the run at once. Installed only from the main thread;
    restored on exit."""

    def __init__(self):
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, Any] = {}
        self._interruptible = False

    def agreed(self) -> bool:
        """Whether any process was asked to stop: with several processes a host collective,
        which every process calls at the same step, so that all of them stop at that step."""
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.array([int(self.requested)], np.int32))
        return bool(np.asarray(flags).any())

    @contextlib.contextmanager
    def interruptible(self):
        self._interruptible = True
        try:
            if self.requested:
                raise SetupInterrupted(self.signal_name)
            yield
        finally:
            self._interruptible = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        if self._interruptible:
            self._interruptible = False
            raise SetupInterrupted(self.signal_name)
        log.warning("%s received: saving a checkpoint at the current step and stopping",
                    self.signal_name)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
