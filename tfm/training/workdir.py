"""What a workdir promises the runs that use it: one run at a time, and that what it holds
(tokenizer, data) is what this run would build.

* :class:`WorkdirMismatchError`: the workdir holds something this run must not use or replace.
* :func:`setting_differences`: the settings that differ between a workdir's saved config and
  this run's ("train.optimizer: 'adam' in the workdir, 'adamw' now").
"""

from __future__ import annotations

import dataclasses
from typing import Any


class WorkdirMismatchError(ValueError):
    """The workdir holds a run this config must not continue or overwrite."""


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def setting_differences(saved: Any, new: Any, sections: tuple[str, ...] = ("model", "data", "train"),
                        ignore: frozenset[str] = frozenset()) -> list[str]:
    """``"section.field: saved in the workdir, new now"`` for every differing field of two
    RunConfigs (``ignore``: dotted names left out)."""
    out = []
    for section in sections:
        a, b = getattr(saved, section), getattr(new, section)
        for f in dataclasses.fields(a):
            name = f"{section}.{f.name}"
            if name in ignore:
                continue
            x, y = getattr(a, f.name), getattr(b, f.name)
            if x != y:
                out.append(f"{name}: {_plain(x)!r} in the workdir, {_plain(y)!r} now")
    return out
