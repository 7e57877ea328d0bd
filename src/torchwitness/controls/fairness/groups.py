"""Sensitive attributes as integer codes, kept beside the batch and never among the model's inputs.

>>> import numpy as np
>>> enc = GroupEncoder.fit({"sex": np.array(["F", "M", "F"]), "race": np.array(["a", "a", "b"])})
>>> enc.encode({"sex": np.array(["M"]), "race": np.array(["b"])}).tolist()
[[1, 1]]
>>> enc.shape
(2, 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from torchwitness.controls.fairness.inputs import as_array, columns
from torchwitness.errors import InputError


def _pandas() -> Any:
    """pandas when installed: its hash-based factorize is ~8x numpy's sort-based unique on 10M strings."""
    try:
        import pandas
    except ImportError:
        return None
    return pandas


def _factorize(values: Any) -> tuple[np.ndarray, list[str]]:
    """(codes, distinct values as strings): pandas' hash table where installed, numpy's sort otherwise."""
    if type(values).__module__.startswith("polars"):
        try:
            import pyarrow.compute as pc
        except ImportError:
            values = values.to_numpy()
        else:
            if str(values.dtype).startswith(("Categorical", "Enum")) and not values.null_count():
                # the codes are already there: map the few distinct physical codes to their strings
                present = values.unique()
                phys = present.to_physical().to_numpy().astype(np.int64)
                order = np.argsort(phys)
                rows = values.to_physical().to_numpy().astype(np.int64)
                return order[np.searchsorted(phys[order], rows)], [str(u) for u in present.cast(str).to_list()]
            # otherwise arrow's hash table, zero-copy from polars
            encoded = pc.dictionary_encode(values.cast(str).fill_null("None").to_arrow())
            return (np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64),
                    [str(u) for u in encoded.dictionary.to_pylist()])
    pd = _pandas()
    if pd is not None:
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
        return np.asarray(codes, dtype=np.int64), [str(u) for u in uniques]
    uniques, codes = np.unique(np.asarray(values).astype(str), return_inverse=True)
    return codes.astype(np.int64), [str(u) for u in uniques]


def _distinct(values: Any) -> tuple[str, ...]:
    return tuple(sorted(set(_factorize(values)[1])))


def _codes(name: str, values: Any, cats: tuple[str, ...]) -> np.ndarray:
    """Each row's index in ``cats``: one factorize pass, then a lookup over the few distinct values."""
    codes, uniques = _factorize(values)
    index = {c: i for i, c in enumerate(cats)}
    unseen = [u for u in uniques if u not in index]
    if unseen:
        raise InputError(f"sensitive attribute {name!r} has unseen value {unseen[0]!r} "
                         f"(GroupEncoder.fit saw only: {', '.join(cats[:8])}{', ...' if len(cats) > 8 else ''})")
    return np.array([index[u] for u in uniques], dtype=np.int64)[codes]


def _column(name: str, values: Any) -> Any:
    """One value per row; pandas columns stay pandas (a round trip through numpy costs more than the encoding)."""
    module = type(values).__module__.split(".")[0]
    if module in ("pandas", "polars") and getattr(values, "ndim", 1) == 1:
        return values
    arr = as_array(values, f"sensitive attribute {name!r}")
    if arr.ndim != 1:
        raise InputError(f"sensitive attribute {name!r} must be one value per row (shape [n]), got {arr.shape}")
    return arr


@dataclass(frozen=True)
class GroupEncoder:
    """Maps each declared sensitive attribute's values to codes ``0..K-1`` (sorted, so stable across runs)."""

    categories: dict[str, tuple[str, ...]]

    @classmethod
    def fit(cls, sensitive: Any) -> GroupEncoder:
        """Learn each attribute's categories from a DataFrame (pandas or polars) or a mapping of columns."""
        cols = columns(sensitive)
        if not cols:
            raise InputError("declare at least one sensitive attribute (a DataFrame or mapping of one column or more)")
        return cls({name: _distinct(_column(name, values)) for name, values in cols.items()})

    def __repr__(self) -> str:
        return "GroupEncoder(" + ", ".join(f"{a}: {len(c)} groups" for a, c in self.categories.items()) + ")"

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(self.categories)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.categories.values())

    def encode(self, sensitive: Any) -> np.ndarray:
        """``[n, attributes]`` int64 codes; a value not seen by :meth:`fit` raises (it would be a silent drop)."""
        cols = columns(sensitive)
        out = []
        for name, cats in self.categories.items():
            if name not in cols:
                raise InputError(f"sensitive attribute {name!r} missing from the batch "
                                 f"(it has {', '.join(map(repr, cols))})")
            out.append(_codes(name, _column(name, cols[name]), cats))
        if len({len(c) for c in out}) > 1:
            raise InputError("sensitive attributes have different lengths: " +
                             ", ".join(f"{n} {len(c)}" for n, c in zip(self.categories, out, strict=True)))
        return np.stack(out, axis=1)

    def flat(self, codes: np.ndarray) -> np.ndarray:
        """The intersectional group index (row-major over :attr:`shape`) of ``[n, attributes]`` codes."""
        return np.ravel_multi_index(tuple(np.asarray(codes).T), self.shape)
