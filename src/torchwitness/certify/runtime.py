"""How certification uses the machine: torch's thread count, chosen on purpose and recorded.

Oversubscription is the costly mistake on a shared CPU: two intra-op threads on two cores that other processes
also use ran a 1M-parameter GPT-2 2-5x *slower* than one thread. So unless the caller asks for a number, the
count is the cores this process may use minus the CPUs other processes keep busy (``/proc/stat`` over
50 ms; the 1-minute load average where that is not readable), at least 1 and at most torch's own
setting (which honours ``OMP_NUM_THREADS``). The choice and its inputs go into the certificate.

>>> with threads_for(None) as info:
...     info["torch_threads"] >= 1 and info["choice"] in ("requested", "free cores")
True
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from torchwitness.errors import InputError


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity mask
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from ``/proc/stat``."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _busy(window: float = 0.05) -> float:
    """CPUs other processes keep busy now, measured over ``window`` seconds while this one sleeps. The 1-minute
    load average lags: just after another job it still reads ~1 on an idle machine (it halved the threads of
    a certify run right after the previous one), and an instant's run queue catches passing kernel threads."""
    try:
        busy0, total0 = _cpu_times()
        time.sleep(window)
        busy1, total1 = _cpu_times()
        return (os.cpu_count() or 1) * (busy1 - busy0) / max(1, total1 - total0)
    except (OSError, IndexError, ValueError):
        pass
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # Windows has neither /proc nor a load average
        return 0.0


def choose_threads(requested: int | None) -> dict[str, Any]:
    cores = _cores()
    if requested is not None:
        if requested < 1:
            raise InputError(f"threads must be at least 1, not {requested}")
        return {"torch_threads": requested, "cores": cores, "choice": "requested"}
    load = _busy()
    free = max(1, int(cores - load + 0.5))
    return {"torch_threads": max(1, min(torch.get_num_threads(), free)), "cores": cores,
            "busy_cpus": round(load, 2), "choice": "free cores"}


@contextmanager
def threads_for(requested: int | None) -> Iterator[dict[str, Any]]:
    """Set torch's intra-op thread count for the block and restore the caller's afterwards."""
    info = choose_threads(requested)
    before = torch.get_num_threads()
    torch.set_num_threads(info["torch_threads"])
    try:
        yield info
    finally:
        torch.set_num_threads(before)


def model_digest(model: nn.Module, weights: str) -> str:
    """Weights plus what else decides the function: module tree (``repr``) and a Hugging Face config."""
    h = hashlib.sha256(f"{weights}\0{type(model).__module__}.{type(model).__qualname__}\0{model!r}".encode())
    config = getattr(model, "config", None)
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):
        h.update(json.dumps(to_dict(), sort_keys=True, default=str).encode())
    return "sha256:" + h.hexdigest()
