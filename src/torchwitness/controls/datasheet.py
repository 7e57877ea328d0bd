"""``data.datasheet``: what a data set holds, computed from the data itself (EU AI Act Art. 10(2), Annex IV 2(d)).

Sensitive attributes are declared separately from the model's inputs; a feature column named after one is
refused, because a model that sees ``sex`` by accident is exactly what the examination must rule out.

>>> import numpy as np
>>> sheet = datasheet("toy", features=np.array([[1.0, np.nan], [2.0, 3.0]]), feature_names=["a", "b"],
...                   labels=np.array([0, 1]), sensitive={"sex": np.array(["F", "M"])})
>>> sheet.rows, sheet.missing_values, sheet.label_distribution
(2, 1, {'0': 1, '1': 1})
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import msgspec
import numpy as np

from torchwitness.controls.fairness.groups import GroupEncoder
from torchwitness.errors import InputError
from torchwitness.ledger.schema import register_kind


class ColumnInfo(msgspec.Struct):
    """One column. ``low``/``high`` bound the middle of its values, never an exact extreme: a column's minimum
    or maximum is often one person's value (Adult's largest ``capital-gain``), and a datasheet is shared widely.
    They are the values ``RANK`` rows in from each end (1 % of the rows, at least ``RANK``), rounded outward to
    two significant figures, and the mean is rounded to four; all three are None below ``2 * RANK`` values."""

    name: str
    dtype: str
    missing: int
    low: float | None = None
    high: float | None = None
    mean: float | None = None


class GroupCoverage(msgspec.Struct):
    """One group's size, share of the rows and positive-label rate; ``status`` flags groups below the minimum."""

    name: str
    n: int
    share: float
    positive_rate: float | None
    status: str


class CoverageView(msgspec.Struct):
    attributes: list[str]
    groups: list[GroupCoverage]


class Datasheet(msgspec.Struct):
    name: str
    rows: int
    columns: list[ColumnInfo]
    content_digest: str
    sensitive_attributes: list[str]
    label_distribution: dict[str, int]
    coverage: list[CoverageView]
    missing_values: int
    min_group_size: int
    source: str | None = None


register_kind("data.datasheet", Datasheet)

RANK = 10  # column bounds sit at least this many rows in from each end


def _digest(features: np.ndarray, labels: np.ndarray, sensitive: Mapping[str, np.ndarray]) -> str:
    # the digest covers values, dtypes and shapes, so a re-encoded or reordered copy gets a different digest
    h = hashlib.sha256()
    for part in (features, labels, *(np.asarray(sensitive[k]).astype(str) for k in sorted(sensitive))):
        a = np.ascontiguousarray(part)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return f"sha256:{h.hexdigest()}"


def _rounded(x: float, digits: int, direction: str) -> float:
    """``x`` to ``digits`` significant figures, rounded ``"down"``, ``"up"`` or to the ``"nearest"``."""
    if x == 0 or not math.isfinite(x):
        return x
    exponent = math.floor(math.log10(abs(x))) - (digits - 1)
    scaled = x / 10.0**exponent
    whole = {"down": math.floor, "up": math.ceil, "nearest": round}[direction](scaled)
    return round(whole * 10.0**exponent, -exponent) if exponent < 0 else float(whole * 10**exponent)


def _column(name: str, col: np.ndarray) -> ColumnInfo:
    if np.issubdtype(col.dtype, np.number):
        x = col.astype(np.float64)
        missing = int(np.isnan(x).sum())
        finite = np.sort(x[~np.isnan(x)])
        if len(finite) < 2 * RANK:
            return ColumnInfo(name, str(col.dtype), missing)
        k = max(RANK, math.ceil(0.01 * len(finite)))
        return ColumnInfo(name, str(col.dtype), missing, _rounded(float(finite[k - 1]), 2, "down"),
                          _rounded(float(finite[-k]), 2, "up"), _rounded(float(finite.mean()), 4, "nearest"))
    values = col.astype(str)
    return ColumnInfo(name, str(col.dtype), int(np.isin(values, ["", "?", "nan", "None"]).sum()))


def _coverage(codes: np.ndarray, labels: np.ndarray, enc: GroupEncoder, attrs: list[int],
              min_group_size: int) -> CoverageView:
    shape = tuple(enc.shape[i] for i in attrs)
    flat = np.ravel_multi_index(tuple(codes[:, i] for i in attrs), shape)
    n = np.bincount(flat, minlength=int(np.prod(shape)))
    pos = np.bincount(flat, weights=(labels == 1).astype(np.float64), minlength=len(n))
    names = [enc.attributes[i] for i in attrs]
    groups = []
    for g, idx in enumerate(np.ndindex(*shape)):
        label = ", ".join(f"{a}={enc.categories[a][k]}" for a, k in zip(names, idx, strict=True))
        groups.append(GroupCoverage(label, int(n[g]), float(n[g] / max(len(labels), 1)),
                                    float(pos[g] / n[g]) if n[g] else None,
                                    "ok" if n[g] >= min_group_size else "insufficient"))
    return CoverageView(names, groups)


def datasheet(name: str, *, features: np.ndarray, labels: np.ndarray, sensitive: Mapping[str, Sequence],
              feature_names: Sequence[str] | None = None, min_group_size: int = 30,
              source: str | None = None) -> Datasheet:
    """Compute the datasheet of one split; record it with ``run.record("data.datasheet", msgspec.to_builtins(s))``."""
    features, labels = np.asarray(features), np.asarray(labels)
    if features.ndim != 2 or len(features) != len(labels):
        raise InputError(f"features must be [rows, columns] with one label per row, got {features.shape} "
                         f"and {labels.shape}")
    names = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(features.shape[1])]
    leaked = [c for c in names for a in sensitive if c == a or c.startswith(f"{a}=")]
    if leaked:
        raise InputError(f"sensitive attribute(s) among the model's inputs: {', '.join(leaked)}")
    sens = {k: np.asarray(v) for k, v in sensitive.items()}
    enc = GroupEncoder.fit(sens)
    codes = enc.encode(sens)
    coverage = [_coverage(codes, labels, enc, [i], min_group_size) for i in range(len(enc.shape))]
    if len(enc.shape) > 1:
        coverage.append(_coverage(codes, labels, enc, list(range(len(enc.shape))), min_group_size))
    columns = [_column(n, features[:, i]) for i, n in enumerate(names)]
    columns += [_column(k, v) for k, v in sens.items()]
    values, counts = np.unique(labels.astype(str), return_counts=True)
    return Datasheet(name=name, rows=len(labels), columns=columns, content_digest=_digest(features, labels, sens),
                     sensitive_attributes=list(sens), label_distribution=dict(zip(values.tolist(),
                                                                                     counts.tolist(), strict=True)),
                     coverage=coverage, missing_values=sum(c.missing for c in columns),
                     min_group_size=min_group_size, source=source)
