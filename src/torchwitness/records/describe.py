"""Digests, row and feature counts from what users hold: a pandas or polars DataFrame, a numpy array, a tensor,
a list, or a file or folder on disk; and file digests of saved models.

A digest covers values, dtypes, shapes and column names, so a re-encoded, reordered or renamed copy gets another
one. Files are hashed in 1 MiB blocks (a checkpoint is never read into memory whole).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from torchwitness.errors import InputError

_BLOCK = 1 << 20


@dataclass(frozen=True)
class DataFacts:
    digest: str
    rows: int | None
    features: int | None
    feature_names: list[str] | None


def file_digest(path: Path) -> tuple[str, int]:
    """``("sha256:<hex>", size in bytes)`` of one file."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
            size += len(block)
    return f"sha256:{h.hexdigest()}", size


def files_of(path: str | Path) -> list[Path]:
    """``path`` itself, or the files under a folder (sorted, hidden ones skipped); refuses what is not there."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file() and not any(
            part.startswith(".") for part in f.relative_to(p).parts))
    raise InputError(f"no such file or folder: {p}")


def _update(h: Any, a: np.ndarray) -> None:
    if a.dtype == object:
        a = a.astype(str)
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())


def _columns(frame: Any) -> list[tuple[str, np.ndarray]]:
    if hasattr(frame, "to_numpy") and hasattr(frame, "columns") and hasattr(frame, "iloc"):  # pandas
        return [(str(c), frame[c].to_numpy()) for c in frame.columns]
    if hasattr(frame, "get_columns"):  # polars
        return [(str(s.name), s.to_numpy()) for s in frame.get_columns()]
    raise InputError(f"data= takes a DataFrame, an array, a tensor, a list or a path, not {type(frame).__name__}")


def describe_data(data: Any) -> DataFacts:
    """Digest, rows, features (and column names for data frames) of ``data``."""
    h = hashlib.sha256()
    if isinstance(data, str | Path):
        files = files_of(data)
        for f in files:
            digest, size = file_digest(f)
            h.update(f"{f.relative_to(data) if Path(data).is_dir() else f.name}\0{digest}\0{size}\n".encode())
        return DataFacts(f"sha256:{h.hexdigest()}", None, None, None)
    if hasattr(data, "columns") and (hasattr(data, "iloc") or hasattr(data, "get_columns")):
        columns = _columns(data)
        for name, values in columns:
            h.update(name.encode() + b"\0")
            _update(h, values)
        rows = len(columns[0][1]) if columns else 0
        return DataFacts(f"sha256:{h.hexdigest()}", rows, len(columns), [n for n, _ in columns])
    if hasattr(data, "detach") and hasattr(data, "cpu"):  # a tensor
        data = data.detach().cpu().numpy()
    if hasattr(data, "to_numpy"):  # a pandas or polars series
        data = data.to_numpy()
    try:
        a = np.asarray(data)
    except (TypeError, ValueError) as e:
        raise InputError(f"data= cannot be read as an array: {e}") from None
    if a.ndim == 0:
        raise InputError("data= must hold rows: got a single value")
    _update(h, a)
    return DataFacts(f"sha256:{h.hexdigest()}", int(a.shape[0]), int(np.prod(a.shape[1:])) if a.ndim > 1 else 1,
                     None)


def describe_model(model: Any) -> tuple[str, int]:
    """``(architecture, parameter count)`` of an ``nn.Module``: its class, with its immediate children's."""
    children = [type(c).__name__ for c in model.children()]
    arch = type(model).__name__ + (f"({', '.join(children[:12])}{', …' if len(children) > 12 else ''})"
                                   if children else "")
    return arch, sum(p.numel() for p in model.parameters())
