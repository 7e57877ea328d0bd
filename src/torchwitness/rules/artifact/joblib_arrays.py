"""What joblib reads after a ``NumpyArrayWrapper``'s BUILD, told from the wrapper's pickled state alone.

``joblib.numpy_pickle.NumpyUnpickler`` replaces each wrapper by an array it reads straight from the file: raw
bytes (after a padding byte and padding, since joblib 1.2) or, when the dtype holds Python objects, a nested
pickle. The dtype is the wrapper's ``numpy.dtype(code, align, copy)`` with its BUILD state ``(version, byteorder,
subarray, names, fields, elsize, alignment, flags)``; nothing is imported to read it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, BinaryIO

_DTYPE = re.compile(r"([<>|=]?)([biufcmMOSUV])(\d*)")


@dataclass
class ArrayLayout:
    """``has_object``: a nested pickle follows; else ``nbytes`` raw bytes after the padding (``align``)."""

    has_object: bool
    nbytes: int = 0
    align: int | None = None


def array_layout(state: Any) -> ArrayLayout | str:
    """The layout of the array a wrapper with this BUILD ``state`` stands for, or why it cannot be told."""
    dtype = state.get("dtype") if isinstance(state, dict) else None
    if _code(dtype) is None:
        return "joblib array whose dtype the scanner cannot follow"
    shape = state.get("shape")
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
        return "joblib array whose shape the scanner cannot follow"
    has_object = _has_object(dtype)
    if has_object is None:
        return f"joblib array of dtype {_code(dtype)!r} whose fields the scanner cannot follow"
    if has_object:
        return ArrayLayout(True)
    itemsize = _itemsize(dtype)
    if itemsize is None:
        return f"joblib array of dtype {_code(dtype)!r} that the scanner cannot size"
    align = state.get("numpy_array_alignment_bytes")
    if align is not None and (not isinstance(align, int) or align <= 0):
        return "joblib array with an alignment the scanner cannot follow"
    return ArrayLayout(False, math.prod(shape) * itemsize, align)


def check_padding(stream: BinaryIO, align: int) -> str | None:
    """Read the padding joblib writes before aligned array bytes: one byte n = align - (offset + 1) % align, then
    n bytes 0xff. Anything else is not a joblib file (and to ``pickle.load`` those bytes would be opcodes)."""
    at = stream.tell()
    pad = stream.read(1)
    padding = stream.read(pad[0]) if pad else b""
    if not pad or pad[0] != align - (at + 1) % align or padding != b"\xff" * pad[0]:
        return f"joblib array padding at offset {at} is not what joblib writes"
    return None


def _code(dtype: Any) -> str | None:
    """The type code of a value the pickle built with ``numpy.dtype(code, ...)``, else None."""
    by, args = getattr(dtype, "by", None), getattr(dtype, "args", None)
    if getattr(by, "qualname", None) != "numpy.dtype" or not isinstance(args, tuple) or not args:
        return None
    code = args[0]
    return code if isinstance(code, str) and _DTYPE.fullmatch(code) else None


def _has_object(dtype: Any, depth: int = 0) -> bool | None:
    """Whether the dtype holds Python objects, looking into the fields and sub-arrays of structured dtypes; None
    when that cannot be told."""
    code = _code(dtype)
    if code is None or depth > 8:
        return None
    if code.lstrip("<>|=").startswith("O"):
        return True
    state = getattr(dtype, "state", None)
    if not isinstance(state, tuple) or len(state) < 5:
        return None if code.lstrip("<>|=").startswith("V") else False
    inner = []
    if state[2] is not None:  # sub-array: (dtype, shape)
        inner.append(state[2][0] if isinstance(state[2], tuple) and state[2] else None)
    if state[4] is not None:  # fields: name -> (dtype, offset[, title])
        if not isinstance(state[4], dict):
            return None
        inner.extend(f[0] if isinstance(f, tuple) and f else None for f in state[4].values())
    found = [_has_object(d, depth + 1) for d in inner]
    return None if None in found else any(found)


def _itemsize(dtype: Any) -> int | None:
    """Bytes per element: elsize from the dtype's state, else its type code's size (``f8`` -> 8)."""
    code, state = _code(dtype), getattr(dtype, "state", None)
    m = _DTYPE.fullmatch(code or "")
    if m is None:
        return None
    if isinstance(state, tuple) and len(state) > 5 and isinstance(state[5], int) and state[5] > 0:
        return state[5]
    if m.group(2) == "V" or (isinstance(state, tuple) and len(state) > 4 and state[4] is not None):
        return None  # structured or void: only its state's elsize says
    return int(m.group(3)) if m.group(3) and int(m.group(3)) > 0 else None
