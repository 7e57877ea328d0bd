"""The data of the vocabulary records, built and checked on the caller's thread: a bad argument raises at once,
naming it, before anything reaches the ledger."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torchwitness.errors import InputError
from torchwitness.records.describe import describe_data, describe_model, file_digest, files_of

_SCALARS = (str, int, float, bool, type(None))


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InputError(f"{what} takes a dict of names to values, not {type(value).__name__}")
    return value


def flat_params(params: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 0.1}}`` → ``{"optimizer.lr": 0.1}``; non-scalar values as text."""
    out: dict[str, Any] = {}
    for k, v in _mapping(params, "log_params").items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flat_params(v, name + "."))
        elif isinstance(v, float) and not math.isfinite(v):
            out[name] = str(v)
        elif isinstance(v, _SCALARS):
            out[name] = v
        elif hasattr(v, "item") and getattr(v, "ndim", None) == 0:  # numpy scalars, 0-d tensors
            out[name] = v.item()
        else:
            out[name] = str(v)
    return out


def metric_values(metrics: Any) -> dict[str, Any]:
    """Metric names to numbers (ints, floats, numpy scalars, one-element tensors); anything else is refused."""
    out: dict[str, Any] = {}
    for k, v in _mapping(metrics, "log_metrics").items():
        if isinstance(v, bool) or not (isinstance(v, int | float) or (hasattr(v, "shape") and hasattr(v, "dtype")
                                                                       and _numel(v) == 1)):
            raise InputError(f"metric {k!r} must be a number or a one-element tensor/array, not "
                             f"{type(v).__name__}")
        out[str(k)] = v.reshape(()) if hasattr(v, "reshape") and getattr(v, "ndim", 0) else v
    return out


def _numel(v: Any) -> int:
    n = v.numel() if callable(getattr(v, "numel", None)) else getattr(v, "size", 0)
    return int(n)


def _optional(value: Any, kind: type, what: str) -> Any:
    if value is None:
        return None
    if kind is int and not isinstance(value, bool):
        try:
            return int(operator.index(value))  # numpy integers too
        except TypeError:
            pass
    elif isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise InputError(f"{what} must be {'an int' if kind is int else kind.__name__}, not {type(value).__name__}")


def dataset_record(name: Any, *, data: Any, split: str | None, source: str | None, digest: str | None,
                   rows: int | None, features: int | None, license: str | None, personal_data: bool | None,
                   special_categories: Iterable[str]) -> dict[str, Any]:
    if not isinstance(name, str) or not name:
        raise InputError("log_dataset needs a name (a non-empty string)")
    for value, what in ((split, "split"), (source, "source"), (digest, "digest"), (license, "license")):
        _optional(value, str, what)
    rows, features = _optional(rows, int, "rows"), _optional(features, int, "features")
    _optional(personal_data, bool, "personal_data")
    record: dict[str, Any] = {"name": name}
    if data is not None:
        facts = describe_data(data)
        record.update(digest=facts.digest, rows=facts.rows, features=facts.features,
                      feature_names=facts.feature_names)
        if isinstance(data, str | Path) and source is None:
            source = str(data)
    given = {"split": split, "source": source, "digest": digest, "rows": rows, "features": features,
             "license": license, "personal_data": personal_data}
    record.update({k: v for k, v in given.items() if v is not None})
    categories = [str(c) for c in special_categories]
    if categories:
        record["special_categories"] = categories
    return {k: v for k, v in record.items() if v is not None}


def model_record(name: str | None, *, model: Any, files: Iterable[str | Path], architecture: str | None,
                 config: Mapping[str, Any] | None, version: str | None, intended_use: str | None,
                 limitations: str | None, license: str | None) -> dict[str, Any]:
    for value, what in ((name, "name"), (architecture, "architecture"), (version, "version"),
                        (intended_use, "intended_use"), (limitations, "limitations"), (license, "license")):
        _optional(value, str, what)
    record: dict[str, Any] = {}
    if model is not None:
        if not (hasattr(model, "parameters") and hasattr(model, "children")):
            raise InputError(f"model= takes an nn.Module, not {type(model).__name__}")
        record["architecture"], record["parameters"] = describe_model(model)
    record["name"] = name or (type(model).__name__ if model is not None else "model")
    if isinstance(files, str | Path):
        files = [files]
    listed = []
    for given in files:
        root = Path(given)
        for f in files_of(root):
            digest, size = file_digest(f)
            listed.append({"path": str(f), "digest": digest, "bytes": size})
    if listed:
        record["files"] = listed
    if config is not None:
        record["config"] = flat_params(config)
    extra = {"architecture": architecture, "version": version, "intended_use": intended_use,
             "limitations": limitations, "license": license}
    record.update({k: v for k, v in extra.items() if v is not None})
    return record


def eval_record(metrics: Any, *, split: str | None, dataset: str | None, rows: int | None,
                model: str | None) -> dict[str, Any]:
    for value, what in ((split, "split"), (dataset, "dataset"), (model, "model")):
        _optional(value, str, what)
    rows = _optional(rows, int, "rows")
    values = metric_values(metrics)
    if not values:
        raise InputError("log_eval needs at least one metric")
    given = {"split": split, "dataset": dataset, "rows": rows, "model": model}
    return {"metrics": values, **{k: v for k, v in given.items() if v is not None}}
