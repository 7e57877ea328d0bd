"""torchwitness: a verifiable record of a PyTorch model's life.

>>> import torchwitness as tw
>>> tw.__version__ >= "0.1"
True

``Run`` (and everything that needs torch) is imported lazily, so ``torchwitness.ledger`` and the ``verify``
command work without torch installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Personal", "Run", "__version__", "verify_run"]

_LAZY = {
    "Run": "torchwitness.run",
    "Personal": "torchwitness.ledger.encoding",
    "verify_run": "torchwitness.ledger.verify",
}

if TYPE_CHECKING:
    from torchwitness.ledger.encoding import Personal
    from torchwitness.ledger.verify import verify_run
    from torchwitness.run import Run


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'torchwitness' has no attribute {name!r}")
