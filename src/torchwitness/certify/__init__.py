"""Edit certification: prove a quantized or pruned model is still good enough, or roll the edit back.

>>> from torchwitness.certify import load_policy
>>> load_policy("strict").diagnostics.gate
True
"""

from __future__ import annotations

import importlib
from typing import Any

# Exported lazily (PEP 562): `doctor` and the CLI read policies and edit names without importing torch.
_EXPORTS = {"certify": "api", "CertifyResult": "api", "certificate_schema": "certificate", "Edit": "editspec",
            "EditSession": "edits", "apply_edit": "edits", "weights_digest": "edits", "Policy": "policy",
            "load_policy": "policy", "CertCheck": "verify", "verify_certificate": "verify"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
