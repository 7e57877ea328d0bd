"""Drift on LLM token statistics: the generic monitor fed with per-request entropy, margin, perplexity, length.

The features come from ``llm.generation`` data (``GenerationProbe.last`` after a call, or the records of a run),
so a calibration set recorded once becomes the reference and production requests are compared with it by the
same KS/PSI windows as any other feature (:class:`~torchwitness.controls.drift.DriftMonitor`).

>>> calib = [{"stats": {"entropy_mean": 2.0 + i % 7 / 10, "margin_mean": 0.3, "perplexity": 9.0 + i % 5,
...                     "length": 32}} for i in range(200)]
>>> sorted(token_features(calib))
['entropy_mean', 'length', 'margin_mean', 'perplexity']
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from torchwitness.controls.drift.monitor import DriftReference
from torchwitness.ledger.encoding import decode_float

TOKEN_FEATURES = ("entropy_mean", "margin_mean", "perplexity", "length")


def token_features(generations: Iterable[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per-request token statistics as feature columns (requests with a non-finite value are left out)."""
    rows = []
    for g in generations:
        stats = g["stats"]
        values = [decode_float(stats[k]) for k in TOKEN_FEATURES]
        if all(np.isfinite(values)):
            rows.append(values)
    table = np.asarray(rows, dtype=np.float64).reshape(-1, len(TOKEN_FEATURES))
    return {k: table[:, i] for i, k in enumerate(TOKEN_FEATURES)}


def token_reference(generations: Iterable[dict[str, Any]], **kwargs: Any) -> DriftReference:
    """A drift reference from calibration requests' token statistics."""
    return DriftReference.from_arrays(token_features(generations), **kwargs)
