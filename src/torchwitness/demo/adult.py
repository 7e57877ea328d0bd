"""The UCI Adult census data (shipped compressed inside the package), ready for a small classifier.

Source: UCI Machine Learning Repository, "Adult" (Becker & Kohavi, 1996), CC BY 4.0. The files are the
original ``adult.data`` / ``adult.test`` (md5 5d7c39d7... / 35238206...), gzip-compressed.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from importlib import resources

import numpy as np

COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
           "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
           "income"]
NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
CATEGORICAL = ["workclass", "education", "marital-status", "occupation", "relationship", "native-country"]
SENSITIVE = ["sex", "race"]


@dataclass
class AdultSplit:
    """Model inputs, labels and the sensitive attributes kept *beside* the inputs, never inside them."""

    features: np.ndarray  # float32 [n, d], standardised numerics + one-hot categoricals
    labels: np.ndarray  # int64 [n], 1 = income > 50K
    sensitive: dict[str, np.ndarray]  # e.g. {"sex": array(["Male", ...]), "race": ...}
    row_ids: np.ndarray  # int64 [n], the row's position in the original file (the "subject")


@dataclass
class Adult:
    train: AdultSplit
    test: AdultSplit
    feature_names: list[str]


def _read_rows(name: str) -> list[list[str]]:
    with resources.files("torchwitness.demo").joinpath(f"data/{name}.gz").open("rb") as raw, \
            gzip.open(raw, "rt", encoding="utf-8") as f:
        rows = []
        for line in f:
            parts = [p.strip() for p in line.strip().split(",")]
            if len(parts) == len(COLUMNS):
                rows.append(parts)
        return rows


def load_adult() -> Adult:
    """Parse, clean (rows with ``?`` dropped), encode and standardise with statistics from the train split."""
    splits = {}
    for name in ("adult.data", "adult.test"):
        rows = [r for r in _read_rows(name) if "?" not in r]
        ids = np.arange(len(rows), dtype=np.int64)
        splits[name] = (rows, ids)
    train_rows = splits["adult.data"][0]
    col = {c: i for i, c in enumerate(COLUMNS)}
    categories = {c: sorted({r[col[c]] for r in train_rows}) for c in CATEGORICAL}
    names = list(NUMERIC) + [f"{c}={v}" for c in CATEGORICAL for v in categories[c]]
    mean = std = None
    out = {}
    for name, (rows, ids) in splits.items():
        numeric = np.array([[float(r[col[c]]) for c in NUMERIC] for r in rows], dtype=np.float64)
        if mean is None:
            mean, std = numeric.mean(0), numeric.std(0) + 1e-12
        numeric = (numeric - mean) / std
        onehot = np.zeros((len(rows), len(names) - len(NUMERIC)), dtype=np.float64)
        offset = 0
        for c in CATEGORICAL:
            lookup = {v: j for j, v in enumerate(categories[c])}
            for i, r in enumerate(rows):
                j = lookup.get(r[col[c]])
                if j is not None:
                    onehot[i, offset + j] = 1.0
            offset += len(categories[c])
        labels = np.array([r[col["income"]].rstrip(".") == ">50K" for r in rows], dtype=np.int64)
        sensitive = {s: np.array([r[col[s]] for r in rows]) for s in SENSITIVE}
        out[name] = AdultSplit(np.hstack([numeric, onehot]).astype(np.float32), labels, sensitive, ids)
    return Adult(out["adult.data"], out["adult.test"], names)
