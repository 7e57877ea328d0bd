"""``make demo``: train a classifier on UCI Adult with every step recorded, then verify the evidence.

``run_demo`` is imported on first use, so ``torchwitness demo`` can start printing (and timing) before torch and
the demo's libraries load.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_demo"]


def __getattr__(name: str) -> Any:
    if name == "run_demo":
        from torchwitness.demo.pipeline import run_demo

        return run_demo
    raise AttributeError(f"module 'torchwitness.demo' has no attribute {name!r}")
