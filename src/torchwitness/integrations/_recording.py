"""What the framework callbacks record besides the watch: the parts Lightning and the HF Trainer share.

Numbers a framework logs are already host values (it converted them for its loggers), so recording them costs
no extra device sync. Checkpoint files are hashed when the framework reports them saved, before a later save may
rotate them away.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The numbers among logged values, NaN included (a NaN loss is evidence too); anything else is dropped."""
    out: dict[str, float] = {}
    for k, v in values.items():
        if hasattr(v, "item") and not isinstance(v, int | float):  # one-element tensors, numpy scalars
            try:
                v = v.item()
            except (ValueError, RuntimeError):  # more than one element: not a logged number
                continue
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[str(k)] = float(v)
    return out


def data_rows(loaders: Any) -> list[tuple[str, int]]:
    """``(data set name, rows)`` of each data loader in ``loaders`` (one, a list or a dict) whose data set has a
    length; the name is the data set's own (HF ``datasets``: its builder name) or its class."""
    if loaders is None:
        return []
    items: Iterable[Any] = loaders.values() if isinstance(loaders, Mapping) else \
        loaders if isinstance(loaders, list | tuple) else [loaders]
    out = []
    for loader in items:
        dataset = getattr(loader, "dataset", loader)
        try:
            rows = len(dataset)
        except TypeError:  # an iterable data set: no length to state
            continue
        info = getattr(dataset, "info", None)
        name = getattr(info, "dataset_name", None) or getattr(info, "builder_name", None) or type(dataset).__name__
        out.append((str(name), int(rows)))
    return out


def record_data(run: Any, loaders: Any, split: str, seen: set[str]) -> list[tuple[str, int]]:
    """One ``dataset`` record per data set of ``split`` (once per run); returns ``(name, rows)`` of each."""
    found = data_rows(loaders)
    for name, rows in found:
        key = f"{split}/{name}"
        if key not in seen:
            seen.add(key)
            run.log_dataset(name, split=split, rows=rows)
    return found


def record_checkpoint(run: Any, model: Any, path: str | Path, name: str, version: str) -> None:
    """A ``model`` record for a checkpoint the framework saved: its files' digests (hashed now, before rotation)."""
    p = Path(path)
    if p.exists():
        run.log_model(name, model=model, files=[p], version=version)
