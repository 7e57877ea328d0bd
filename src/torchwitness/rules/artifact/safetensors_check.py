"""Header sanity of a safetensors file, read with ``json`` and arithmetic only (the format cannot run code, but a
bad header can still crash or mislead a loader, or hide bytes no tensor accounts for).

Layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the data buffer. Each tensor entry is
``{"dtype", "shape", "data_offsets": [begin, end]}`` relative to the buffer start.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

DTYPE_BYTES: dict[str, float] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "C64": 8, "F64": 8, "I64": 8, "U64": 8, "F4": 0.5, "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
}
MAX_HEADER = 100_000_000  # the reference implementation refuses larger headers


@dataclass
class SafetensorsReport:
    """``errors`` make the file invalid; ``gaps`` are byte ranges of the buffer no tensor covers."""

    tensors: int = 0
    header_bytes: int = 0
    errors: list[str] = field(default_factory=list)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 0 < n <= size - 8 and head[8:9] == b"{"


def check_safetensors(f: BinaryIO) -> SafetensorsReport:
    """Check the safetensors file open as ``f``; only the header is read."""
    rep = SafetensorsReport()
    size = f.seek(0, 2)
    f.seek(0)
    if size < 8:
        rep.errors.append(f"file is {size} bytes, shorter than the 8-byte header length")
        return rep
    (n,) = struct.unpack("<Q", f.read(8))
    rep.header_bytes = n
    if n > MAX_HEADER or 8 + n > size:
        rep.errors.append(f"header length {n} exceeds the file ({size} bytes) or the {MAX_HEADER} limit")
        return rep
    try:
        header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        rep.errors.append(f"header is not UTF-8 JSON: {e}")
        return rep
    if not isinstance(header, dict):
        rep.errors.append("header JSON is not an object")
        return rep
    buffer = size - 8 - n
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        rep.errors.append("__metadata__ must map strings to strings")
    else:
        rep.metadata = meta
    ranges: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        problem = _entry_problem(entry, buffer)
        if problem:
            rep.errors.append(f"tensor {name!r}: {problem}")
        else:
            ranges.append((*entry["data_offsets"], name))
    rep.tensors = len(header)
    ranges.sort()
    covered = 0
    for begin, end, name in ranges:
        if begin < covered:
            rep.errors.append(f"tensor {name!r} [{begin}, {end}) overlaps the previous tensor (ends at {covered})")
        elif begin > covered:
            rep.gaps.append((covered, begin))
        covered = max(covered, end)
    if covered < buffer and not rep.errors:
        rep.gaps.append((covered, buffer))
    return rep


def _entry_problem(entry: Any, buffer: int) -> str | None:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        return "entry must have exactly dtype, shape and data_offsets"
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BYTES:
        return f"unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return f"shape {shape!r} is not a list of non-negative integers"
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        return f"data_offsets {offsets!r} is not [begin, end] with 0 <= begin <= end"
    if offsets[1] > buffer:
        return f"data_offsets end {offsets[1]} lies beyond the data buffer ({buffer} bytes)"
    expected = math.prod(shape) * DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != expected:
        return f"{offsets[1] - offsets[0]} bytes for shape {shape} of {dtype} (expected {expected:g})"
    return None
