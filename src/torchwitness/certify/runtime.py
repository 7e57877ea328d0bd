"""How certification uses the machine: torch's thread count, chosen on purpose and recorded.

Oversubscription is the costly mistake on a shared CPU: two intra-op threads on two cores that other processes
also use ran a 1M-parameter GPT-2 2-5x *slower* than one thread. So unless the caller asks for a number, the
count is the cores this process may use minus the 1-minute load average (rounded), at least 1 and at most
torch's own setting (which honours ``OMP_NUM_THREADS``). The choice and its inputs go into the certificate.

>>> with threads_for(None) as info:
...     info["torch_threads"] >= 1 and info["choice"] in ("requested", "free cores")
True
"""

from __future__ import annotations

import hashlib
import json
import os
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


def choose_threads(requested: int | None) -> dict[str, Any]:
    cores = _cores()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    if requested is not None:
        if requested < 1:
            raise InputError(f"threads must be at least 1, not {requested}")
        return {"torch_threads": requested, "cores": cores, "load_average": round(load, 2), "choice": "requested"}
    free = max(1, int(cores - load + 0.5))
    return {"torch_threads": max(1, min(torch.get_num_threads(), free)), "cores": cores,
            "load_average": round(load, 2), "choice": "free cores"}


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
