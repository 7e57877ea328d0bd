"""The ``repro.environment`` record: every setting that decides whether a run can be re-run to the same bits.

Recorded once per run, the first time any reproducibility probe (operator inventory, replay recording) runs.

>>> state = determinism_state()
>>> sorted(state)[:3]
['cublas_workspace_config', 'cudnn_allow_tf32', 'cudnn_benchmark']
"""

from __future__ import annotations

import os
import weakref
from typing import Any

import msgspec

from torchwitness.ledger.schema import register_kind


class ReproEnvironment(msgspec.Struct):
    """Seeds, determinism switches and numeric-precision switches in force when the record was made."""

    seed: int | None
    torch_initial_seed: Any  # up to 2**64: large values arrive as {"$int": "..."}
    torch: str
    deterministic_algorithms: bool
    deterministic_warn_only: bool
    cudnn_enabled: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool
    cudnn_allow_tf32: bool
    matmul_allow_tf32: bool
    float32_matmul_precision: str
    fill_uninitialized_memory: bool
    cublas_workspace_config: str | None
    pythonhashseed: str | None
    num_threads: int
    cuda_available: bool
    determinism_requested: bool


register_kind("repro.environment", ReproEnvironment)

_RECORDED: weakref.WeakSet[Any] = weakref.WeakSet()


def determinism_state() -> dict[str, Any]:
    """The switches that decide kernel choice and numerics, read from torch (no device work)."""
    import torch

    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_enabled": bool(torch.backends.cudnn.enabled),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "fill_uninitialized_memory": bool(torch.utils.deterministic.fill_uninitialized_memory),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


def determinism_requested(run: Any, state: dict[str, Any] | None = None) -> bool:
    """A run asks for determinism when it records a seed or turns on a determinism switch."""
    state = state or determinism_state()
    return bool(getattr(run, "seed", None) is not None or state["deterministic_algorithms"]
                or state["cudnn_deterministic"])


def environment(run: Any) -> dict[str, Any]:
    """The ``repro.environment`` payload for ``run``."""
    import torch

    state = determinism_state()
    return {"seed": getattr(run, "seed", None), "torch_initial_seed": torch.initial_seed(), "torch": torch.__version__,
            **state, "pythonhashseed": os.environ.get("PYTHONHASHSEED"), "num_threads": torch.get_num_threads(),
            "cuda_available": torch.cuda.is_available(), "determinism_requested": determinism_requested(run, state)}


def record_environment(run: Any, *, force: bool = False) -> bool:
    """Record ``repro.environment`` in ``run`` unless already done in this process; returns whether it did."""
    if run in _RECORDED and not force:
        return False
    run.record("repro.environment", environment(run))
    _RECORDED.add(run)
    return True
