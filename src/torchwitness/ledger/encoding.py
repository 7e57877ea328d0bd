"""Explicit conversion of Python, numpy and torch values into the JSON data model of a record.

RFC 8785 admits only finite IEEE doubles and integers within +-2**53, so other values get tagged objects:

==========================  =====================================================================
value                       encoding
==========================  =====================================================================
NaN, +Inf, -Inf             ``{"$float": "NaN"}``, ``{"$float": "Infinity"}``, ``{"$float": "-Infinity"}``
int beyond +-2**53          ``{"$int": "12345678901234567890"}``
bytes                       ``{"$bytes": "<base64>"}``
tensor / ndarray (non-0d)   ``{"$array": {"dtype": "float32", "shape": [2, 3], "data": [...]}}`` (row-major)
``Packed(tensor)``          ``{"$array": {"dtype": "int16", "shape": [8192], "base64": "..."}}`` (little-endian)
0-d tensor, numpy scalar    the plain number or bool
personal value              ``{"$personal": "hmac-sha256:<hex>"}`` (see :mod:`torchwitness.ledger.personal`)
==========================  =====================================================================

Anything else (sets, arbitrary objects, non-string dict keys) raises :class:`RecordEncodingError` naming the
path of the offending value; nothing is ever turned into a string silently.

Encoding runs in two passes so the caller's thread never waits for a device: :func:`snapshot` (caller) checks
types, copies containers and detaches-and-clones tensors; :func:`finalize` (writer thread) turns the cloned
tensors into lists and personal values into commitments.
"""

from __future__ import annotations

import base64
import datetime as _dt
import enum
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any

from torchwitness.errors import RecordEncodingError

_MAX_SAFE_INT = 2**53 - 1
_SCALARS = (str, bool, type(None))


class Personal:
    """Marks a value as personal data: the ledger stores a keyed commitment, never the value itself.

    >>> Personal("alice@example.org")
    Personal(<redacted>)
    """

    __slots__ = ("value",)

    def __init__(self, value: str | int | float | bool | list | dict) -> None:
        self.value = value

    def __repr__(self) -> str:  # never leak the value into logs or tracebacks
        return "Personal(<redacted>)"


class Fingerprint:
    """Marks an input batch whose rows the ledger stores only as keyed fingerprints (never the values).

    A tensor or array gives one ``hmac-sha256-128:<32 hex>`` per row (first dimension); a list of tensors or arrays
    gives one per item, each hashed whole (one commitment per served request, say). The key is the run's secret
    fingerprint key from the private side store, so equal inputs can be matched by the key holder and nobody else
    learns them. The hashing happens on the writer thread.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Fingerprint(<redacted>)"


class Packed:
    """Marks a tensor or array to be stored as base64 of its little-endian bytes instead of a JSON number list.

    For long arrays (a served window's predictions, say): serialising them costs the writer thread a few
    microseconds instead of one Python object per element, and :func:`decode_array` reads either form back.

    >>> import numpy as np
    >>> decode_array(finalize(snapshot({"p": Packed(np.array([1, 2], dtype=np.int16))})[0], None)["p"])
    array([1, 2], dtype=int16)
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Computed:
    """Marks a value the writer thread computes: ``fn()`` runs there and its result is recorded like any value.

    For reductions whose kernels run without the GIL (a served window's top classes, say): the caller's thread
    hands over references and goes on, and the kernels run on the writer's core. ``fn`` must read only what the
    caller hands over and never modifies again; an exception it raises becomes a ``ledger.error`` record.

    >>> finalize(snapshot({"n": Computed(lambda: 2 + 3)})[0], None)
    {'n': 5}
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn


class _Deferred:
    """A value the writer thread must finish (a cloned tensor)."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: Any) -> None:
        self.tensor = tensor


def encode_float(x: float) -> float | int | dict[str, str]:
    if math.isfinite(x):
        # RFC 8785 writes integral doubles without a fraction ("1", not "1.0"): an int has the same bytes.
        return int(x) if x.is_integer() and -_MAX_SAFE_INT <= x <= _MAX_SAFE_INT else x
    return {"$float": "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")}


def decode_float(value: Any) -> float:
    """Inverse of :func:`encode_float` for reading numbers back from a record."""
    if isinstance(value, dict) and "$float" in value:
        return float({"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}[value["$float"]])
    return float(value)


def _encode_int(x: int) -> int | dict[str, str]:
    return x if -_MAX_SAFE_INT <= x <= _MAX_SAFE_INT else {"$int": str(x)}


def _encode_flat(values: list) -> list:
    out = []
    for v in values:
        if isinstance(v, float):
            out.append(encode_float(v))
        elif isinstance(v, int) and not isinstance(v, bool):
            out.append(_encode_int(v))
        elif isinstance(v, complex):
            raise RecordEncodingError("complex numbers have no JSON encoding; record real and imag parts")
        else:
            out.append(v)
    return out


def _encode_array(array: Any, dtype: str) -> dict[str, Any]:
    """A numpy array as ``$array``; a vectorised check lets typical arrays skip the per-element loop."""
    np = sys.modules["numpy"]
    flat = array.reshape(-1)
    if array.dtype.kind == "f":
        simple = bool(np.isfinite(flat).all()) and not bool((flat == np.trunc(flat)).any())
    elif array.dtype.kind in "iu":
        simple = flat.size == 0 or (int(flat.max()) <= _MAX_SAFE_INT and int(flat.min()) >= -_MAX_SAFE_INT)
    else:
        simple = array.dtype.kind == "b"
    data = flat.tolist()
    return {"$array": {"dtype": dtype, "shape": list(array.shape), "data": data if simple else _encode_flat(data)}}


def _numpy_value(x: Any, path: str) -> Any:
    np = sys.modules["numpy"]
    if isinstance(x, np.ndarray):
        if x.ndim == 0:
            return _numpy_value(x[()], path)
        if x.dtype.kind not in "biuf":
            raise RecordEncodingError(f"{path}: numpy array of dtype {x.dtype} has no JSON encoding")
        return _encode_array(x, x.dtype.name)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.integer):
        return _encode_int(int(x))
    if isinstance(x, np.floating):
        return encode_float(float(x))
    raise RecordEncodingError(f"{path}: numpy value of type {type(x).__name__} has no JSON encoding")


def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _is_numpy(x: Any) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(x, (np.ndarray, np.generic))


def snapshot(value: Any, path: str = "data", copy: bool = True) -> tuple[Any, bool]:
    """Copy ``value`` into the record data model; return it and whether :func:`finalize` has work left.

    Runs in the caller's thread: it must stay cheap and must never synchronise with a device. ``copy=False``
    keeps references to the caller's tensors instead of cloning them (the caller hands them over).
    """
    def own(t: Any) -> Any:
        if copy:
            return t.detach().clone()
        return t.detach() if t.requires_grad else t

    deferred = False

    def walk(x: Any, p: str) -> Any:
        nonlocal deferred
        if isinstance(x, _SCALARS):
            return x
        if isinstance(x, float):
            return encode_float(x)
        if isinstance(x, int):
            return _encode_int(x)
        if isinstance(x, Mapping):
            out = {}
            for k, v in x.items():
                if not isinstance(k, str):
                    raise RecordEncodingError(f"{p}: dict key {k!r} is not a string")
                # Plain values are taken without a recursive call and its path string: most of a record.
                kind = type(v)
                if kind is str or kind is bool or v is None:
                    out[k] = v
                elif kind is float:
                    out[k] = encode_float(v)
                elif kind is int:
                    out[k] = _encode_int(v)
                else:
                    out[k] = walk(v, f"{p}.{k}")
            return out
        if isinstance(x, (list, tuple)):
            # Homogeneous lists of plain numbers or strings (latencies, ids) skip the per-element walk.
            types = set(map(type, x))
            if (types == {int} and min(x) >= -_MAX_SAFE_INT and max(x) <= _MAX_SAFE_INT) or types == {str}:
                return list(x)
            if types == {float}:
                return [encode_float(v) for v in x]
            return [walk(v, f"{p}[{i}]") for i, v in enumerate(x)]
        if _is_tensor(x):
            if x.is_complex() or x.is_quantized or x.layout is not sys.modules["torch"].strided:
                raise RecordEncodingError(f"{p}: tensor of dtype {x.dtype} / layout {x.layout} has no JSON "
                                          "encoding; convert it to a dense real tensor first")
            deferred = True
            # clone() is asynchronous on accelerators; the writer thread performs the device-to-host copy.
            return _Deferred(own(x))
        if _is_numpy(x):
            return _numpy_value(x, p)
        if isinstance(x, Personal):
            deferred = True
            return Personal(walk(x.value, p))
        if isinstance(x, Packed):
            if not (_is_tensor(x.value) or _is_numpy(x.value)):
                raise RecordEncodingError(f"{p}: Packed takes a tensor or array, not {type(x.value).__name__}")
            deferred = True
            return Packed(own(x.value) if _is_tensor(x.value) else sys.modules["numpy"].array(x.value, copy=copy))
        if isinstance(x, Computed):
            deferred = True
            return x
        if isinstance(x, Fingerprint):
            deferred = True
            items = list(x.value) if isinstance(x.value, (list, tuple)) else [x.value]
            for v in items:
                if not (_is_tensor(v) or _is_numpy(v)):
                    raise RecordEncodingError(f"{p}: Fingerprint takes tensors or arrays, not {type(v).__name__}")
            owned = [own(v) if _is_tensor(v) else sys.modules["numpy"].array(v, copy=copy) for v in items]
            return Fingerprint(owned if isinstance(x.value, (list, tuple)) else owned[0])
        if isinstance(x, bytes):
            return {"$bytes": base64.b64encode(x).decode()}
        if isinstance(x, (_dt.datetime, _dt.date)):
            return x.isoformat()
        if isinstance(x, enum.Enum):
            return walk(x.value, p)
        if isinstance(x, PurePath):
            return x.as_posix()
        raise RecordEncodingError(f"{p}: value of type {type(x).__module__}.{type(x).__qualname__} has no JSON "
                                  "encoding; convert it to numbers, strings, lists or dicts")

    return walk(value, path), deferred


def _tensor_value(t: Any) -> Any:
    torch = sys.modules["torch"]
    if t.dtype in (torch.bfloat16, torch.float16) or str(t.dtype).startswith("torch.float8"):
        values = t.float().cpu()
    else:
        values = t.cpu()
    dtype = str(t.dtype).removeprefix("torch.")
    if t.dim() == 0:
        item = values.item()
        return encode_float(item) if isinstance(item, float) else (
            _encode_int(item) if isinstance(item, int) and not isinstance(item, bool) else item)
    return _encode_array(values.numpy(), dtype)


def _host_array(t: Any) -> Any:
    if _is_tensor(t):
        if t.dtype == sys.modules["torch"].bfloat16:
            t = t.float()
        t = t.numpy() if t.is_cpu else t.cpu().numpy()
    return t if t.flags.c_contiguous else sys.modules["numpy"].ascontiguousarray(t)


def fingerprint_buffers(value: Any) -> list[memoryview]:
    """Byte views (no copies) of what :class:`Fingerprint` commits to: each list item whole, else each row."""
    if isinstance(value, list):
        # A request is hashed whole: one C call, which releases the GIL while it hashes.
        return [memoryview(_host_array(v)).cast("B") for v in value]
    rows = _host_array(value)
    if rows.ndim == 0:
        return [memoryview(rows.reshape(1)).cast("B")]
    return [memoryview(row).cast("B") for row in rows.reshape(rows.shape[0], -1)]


def finalize(value: Any, commit: Callable[[Any], str],
             fingerprint: Callable[[memoryview], str] | None = None) -> Any:
    """Writer-thread pass: tensors to lists, personal values to ``commit(value)`` commitments and
    :class:`Fingerprint` rows to ``fingerprint(row_bytes)``."""
    if isinstance(value, dict):
        return {k: finalize(v, commit, fingerprint) for k, v in value.items()}
    if isinstance(value, list):
        if set(map(type, value)).isdisjoint(_UNFINISHED):  # plain numbers and strings: nothing to finish
            return value
        return [finalize(v, commit, fingerprint) for v in value]
    if isinstance(value, _Deferred):
        return _tensor_value(value.tensor)
    if isinstance(value, Personal):
        return {"$personal": commit(finalize(value.value, commit, fingerprint))}
    if isinstance(value, Packed):
        array = _host_array(value.value)
        if array.dtype.kind not in "biuf":
            raise RecordEncodingError(f"an array of dtype {array.dtype} cannot be packed")
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        return {"$array": {"dtype": array.dtype.name, "shape": list(array.shape),
                           "base64": base64.b64encode(little.tobytes()).decode()}}
    if isinstance(value, Computed):
        return finalize(snapshot(value.fn(), copy=False)[0], commit, fingerprint)
    if isinstance(value, Fingerprint):
        if fingerprint is None:
            raise RecordEncodingError("fingerprints need a ledger (its private key)")
        return [fingerprint(b) for b in fingerprint_buffers(value.value)]
    return value


def decode_array(value: Any) -> Any:
    """The numpy array inside an ``$array`` value, in either its ``data`` or its packed ``base64`` form."""
    import numpy as np  # readers may not have imported it yet; writers never need this function

    if not (isinstance(value, dict) and isinstance(value.get("$array"), dict)):
        raise RecordEncodingError("not an $array value")
    spec = value["$array"]
    try:
        dtype = np.dtype(spec["dtype"])
    except TypeError:  # torch-only dtypes (bfloat16, float8) are recorded as their float values
        dtype = np.dtype("float32")
    if "base64" in spec:
        flat = np.frombuffer(base64.b64decode(spec["base64"]), dtype=dtype.newbyteorder("<")).astype(dtype)
    else:
        flat = np.array([decode_float(v) if isinstance(v, dict) else v for v in spec["data"]], dtype=dtype)
    return flat.reshape(spec["shape"])


_UNFINISHED = (dict, list, _Deferred, Personal, Fingerprint, Packed, Computed)


def iter_commitments(value: Any):
    """Yield every ``$personal`` commitment inside decoded record data."""
    if isinstance(value, dict):
        if set(value) == {"$personal"}:
            yield value["$personal"]
            return
        for v in value.values():
            yield from iter_commitments(v)
    elif isinstance(value, list):
        for v in value:
            yield from iter_commitments(v)
