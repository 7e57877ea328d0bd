"""Sensitive attributes as integer codes, kept beside the batch and never among the model's inputs.

>>> import numpy as np
>>> enc = GroupEncoder.fit({"sex": np.array(["F", "M", "F"]), "race": np.array(["a", "a", "b"])})
>>> enc.encode({"sex": np.array(["M"]), "race": np.array(["b"])}).tolist()
[[1, 1]]
>>> enc.shape
(2, 2)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from torchwitness.errors import InputError


@dataclass(frozen=True)
class GroupEncoder:
    """Maps each declared sensitive attribute's values to codes ``0..K-1`` (sorted, so stable across runs)."""

    categories: dict[str, tuple[str, ...]]

    @classmethod
    def fit(cls, sensitive: Mapping[str, Sequence]) -> GroupEncoder:
        if not sensitive:
            raise InputError("declare at least one sensitive attribute")
        return cls({name: tuple(str(v) for v in np.unique(np.asarray(values).astype(str)))
                    for name, values in sensitive.items()})

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(self.categories)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.categories.values())

    def encode(self, sensitive: Mapping[str, Sequence]) -> np.ndarray:
        """``[n, attributes]`` int64 codes; a value not seen by :meth:`fit` raises (it would be a silent drop)."""
        cols = []
        for name, cats in self.categories.items():
            if name not in sensitive:
                raise InputError(f"sensitive attribute {name!r} missing from the batch")
            values = np.asarray(sensitive[name]).astype(str)
            codes = np.searchsorted(np.asarray(cats), values)
            bad = (codes >= len(cats)) | (np.asarray(cats)[np.minimum(codes, len(cats) - 1)] != values)
            if bad.any():
                raise InputError(f"sensitive attribute {name!r} has unseen value {str(values[bad][0])!r}")
            cols.append(codes.astype(np.int64))
        return np.stack(cols, axis=1)

    def flat(self, codes: np.ndarray) -> np.ndarray:
        """The intersectional group index (row-major over :attr:`shape`) of ``[n, attributes]`` codes."""
        return np.ravel_multi_index(tuple(np.asarray(codes).T), self.shape)
