"""TenSEAL, imported on first use with a message naming the extra."""

from __future__ import annotations

from typing import Any

from torchwitness.errors import InputError


def tenseal() -> Any:
    try:
        import tenseal as ts
    except ImportError as e:
        raise InputError("secure inference needs TenSEAL: pip install 'torchwitness[secure]'") from e
    return ts
