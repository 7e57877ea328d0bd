"""Streaming drift monitoring against a recorded reference, with alerts as ledger records.

Generic over named scalar features (tabular columns, model scores, LLM token statistics such as entropy or
perplexity), optional embeddings, predicted classes and, where the truth is known, labels. Production rows
accumulate into tumbling windows of ``window`` rows; each full window is compared with the reference:

* every scalar feature: two-sample Kolmogorov-Smirnov (the alerting test) and PSI over reference quantile bins
  (reported every window; alerting only when ``psi_threshold`` is set, e.g. the conventional 0.25, because PSI
  has no sampling distribution: on windows of a few hundred rows its noise alone crosses 0.25 often);
* embeddings: MMD^2 with an RBF kernel and a permutation p-value;
* predictions: the largest class-proportion change with a two-proportion z-test;
* labels (given with the rows they belong to, where the outcome is known; rows without one count as unlabelled):
  the same test on the label proportions (label shift) and, beside predictions, a one-sided two-proportion test
  of the window's accuracy against the reference's (a drop in performance, for Art. 72 post-market monitoring);
  each needs at least 20 labelled rows in the window.

Multiple testing: one window runs one test per feature, so each p-value is compared with ``alpha / tests``
(Bonferroni). That bounds the chance that a window without drift raises any alert by ``alpha`` (the family-wise
false-alarm rate per window), which the tests measure on unshifted data.

Example::

    ref = DriftReference.from_arrays({"age": val_age, "score": val_scores}, predictions=val_pred, labels=val_y)
    monitor = DriftMonitor(ref, run=run, window=256)
    for batch in production:
        for alert in monitor.update({"age": batch_age, "score": batch_scores}, predictions=batch_pred):
            print(alert.feature, alert.statistic, alert.value)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from torchwitness.controls.drift import functional as F
from torchwitness.errors import InputError
from torchwitness.ledger.schema import register_kind


class FeatureSummary(msgspec.Struct):
    rows: int
    mean: float
    std: float
    quantiles: list[float]  # 10th, 20th, ..., 90th percentiles: never the minimum or maximum, which are one
    # person's own value (the oldest, the highest paid) and single them out


class ReferenceRecord(msgspec.Struct):
    """``drift.reference``: what production is compared with (summaries only, never the rows)."""

    features: dict[str, FeatureSummary]
    embedding_dim: int | None
    prediction_counts: list[int] | None
    window: int
    alpha: float
    psi_threshold: float | None
    label_counts: list[int] | None = None
    accuracy: list[int] | None = None  # [correct, rows] of the reference's predictions against its labels


class DriftAlert(msgspec.Struct):
    """``drift.alert``: one statistic crossing its threshold in one window (returned and recorded as is)."""

    feature: str
    statistic: str
    value: float
    threshold: float
    p_value: float | None
    window: int
    rows: int


class WindowRecord(msgspec.Struct):
    """``drift.window``: every statistic of one window, alerting or not (for trajectories and reports)."""

    window: int
    rows: int
    ks: dict[str, list[float]]  # feature -> [D, p]
    psi: dict[str, float]
    mmd: list[float] | None
    prediction_shift: list[float] | None
    alerts: int
    label_shift: list[float] | None = None  # [largest proportion change, p]
    accuracy: list[float] | None = None  # [the window's accuracy, p of the drop from the reference's]


for _kind, _struct in {"drift.reference": ReferenceRecord, "drift.alert": DriftAlert,
                       "drift.window": WindowRecord}.items():
    register_kind(_kind, _struct)


def _as_matrix(values: Any) -> np.ndarray:
    """Embeddings as a float64 ``[rows, dim]`` array (tensors are copied to the host: off the hot path)."""
    return np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float64)


def _classes(name: str, values: Any, *, unknown: bool = False) -> np.ndarray:
    """Class indices as int64; a clear error for anything else (-1 is allowed where ``unknown``). A class the
    reference never saw is allowed: it counts as a shift (see _shift)."""
    arr = _as_array(name, values)
    ints = arr.astype(np.int64)
    bad = (ints != arr) | (ints < (-1 if unknown else 0))
    if bad.any():
        allowed = "0 or more" + (", or -1 where not known" if unknown else "")
        raise InputError(f"drift {name} must be class indices ({allowed}), not {arr[bad][0]:g}")
    return ints


def _shift(reference_counts: np.ndarray, classes: np.ndarray) -> tuple[float, float]:
    """The proportion test of a window's classes against the reference's; classes the reference never had share
    one extra bin against a reference share of 0 (one bin, however large the class index)."""
    n = len(reference_counts)
    counts = np.bincount(classes[classes < n], minlength=n)
    unseen = int((classes >= n).sum())
    if unseen:
        return F.proportion_shift(np.append(reference_counts, 0), np.append(counts, unseen))
    return F.proportion_shift(reference_counts, counts)


def _as_array(name: str, values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a tensor: the monitor runs off the hot path, at window boundaries
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(arr).all():
        raise InputError(f"drift feature {name!r} holds NaN or infinite values")
    return arr


@dataclass
class DriftReference:
    """Reference samples kept in memory (at most ``max_rows`` per feature) plus their recorded summaries."""

    features: dict[str, np.ndarray]
    embeddings: np.ndarray | None = None
    prediction_counts: np.ndarray | None = None
    bins: int = 10
    label_counts: np.ndarray | None = None
    accuracy: tuple[int, int] | None = None  # (correct, rows)
    edges: dict[str, np.ndarray] = field(init=False)
    sorted: dict[str, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        if not self.features and self.embeddings is None and self.prediction_counts is None and (
                self.label_counts is None):
            raise InputError("a drift reference needs at least one feature, embeddings, predictions or labels")
        self.edges = {k: F.quantile_edges(v, self.bins) for k, v in self.features.items()}
        self.sorted = {k: np.sort(v) for k, v in self.features.items()}

    @classmethod
    def from_arrays(cls, features: dict[str, Any], *, embeddings: Any = None, predictions: Any = None,
                    labels: Any = None, num_classes: int | None = None, max_rows: int = 5000, bins: int = 10,
                    seed: int = 0) -> DriftReference:
        rng = np.random.default_rng(seed)
        feats = {k: _as_array(k, v) for k, v in features.items()}
        for k, v in feats.items():
            if len(v) < 20:
                raise InputError(f"drift reference for {k!r} has {len(v)} rows; at least 20 are needed")
            if len(v) > max_rows:
                feats[k] = rng.choice(v, max_rows, replace=False)
        emb = None
        if embeddings is not None:
            emb = _as_matrix(embeddings)
            emb = emb[rng.choice(len(emb), min(len(emb), 500), replace=False)]
        counts = label_counts = accuracy = pred = truth = None
        if predictions is not None:
            pred = _classes("predictions", predictions)
        if labels is not None:
            truth = _classes("labels", labels)
        for name, a in (("predictions", pred), ("labels", truth)):
            if a is not None and not len(a):
                raise InputError(f"drift reference {name} are empty: give at least one row, or leave them out")
        # Predictions and labels share one class count: a class only one of them saw is still a class of both.
        classes = max([num_classes or 0] + [int(a.max()) + 1 for a in (pred, truth) if a is not None])
        if pred is not None:
            counts = np.bincount(pred, minlength=classes)
        if truth is not None:
            label_counts = np.bincount(truth, minlength=classes)
            if pred is not None:
                if len(pred) != len(truth):
                    raise InputError(f"drift reference predictions and labels differ in length ({len(pred)} vs "
                                     f"{len(truth)}): accuracy needs both for the same rows")
                accuracy = (int((pred == truth).sum()), len(truth))
        return cls(feats, emb, counts, bins, label_counts, accuracy)

    def digest(self) -> str:
        """``sha256`` over the reference samples, so a saved monitor state is only loaded against its reference."""
        h = hashlib.sha256(f"bins={self.bins}".encode())
        for name in sorted(self.features):
            h.update(f"|{name}|".encode())
            h.update(np.ascontiguousarray(self.features[name], dtype=np.float64).tobytes())
        for extra in (self.embeddings, self.prediction_counts, self.label_counts, self.accuracy):
            h.update(b"|-|" if extra is None else np.ascontiguousarray(extra).tobytes())
        return "sha256:" + h.hexdigest()

    def summary(self) -> dict[str, FeatureSummary]:
        qs = np.linspace(10, 90, 9)
        return {k: FeatureSummary(len(v), float(v.mean()), float(v.std()),
                                  [float(q) for q in np.percentile(v, qs)]) for k, v in self.features.items()}


class DriftMonitor:
    """Tumbling-window drift tests against a :class:`DriftReference`; records into ``run`` when given."""

    def __init__(self, reference: DriftReference, *, run: Any = None, window: int = 500, alpha: float = 0.01,
                 psi_threshold: float | None = None, mmd_permutations: int = 200, seed: int = 0) -> None:
        if window < 20:
            raise InputError("drift windows need at least 20 rows")
        if not 0 < alpha < 1:
            raise InputError(f"alpha must be in (0, 1), not {alpha}")
        self.reference = reference
        self.run = run
        self.window = window
        self.alpha = alpha
        self.psi_threshold = psi_threshold
        self.mmd_permutations = mmd_permutations
        self.seed = seed
        self.windows_seen = 0
        self.windows_alerting = 0
        self._buffer: dict[str, list[np.ndarray]] = {k: [] for k in reference.features}
        self._emb: list[np.ndarray] = []
        self._pred: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._rows = 0
        if run is not None:
            run.record("drift.reference", {
                "features": {k: msgspec.to_builtins(v) for k, v in reference.summary().items()},
                "embedding_dim": None if reference.embeddings is None else int(reference.embeddings.shape[1]),
                "prediction_counts": None if reference.prediction_counts is None
                else reference.prediction_counts.tolist(),
                "window": window, "alpha": alpha, "psi_threshold": psi_threshold,
                "label_counts": None if reference.label_counts is None else reference.label_counts.tolist(),
                "accuracy": None if reference.accuracy is None else list(reference.accuracy)})

    @property
    def false_alarm_rate(self) -> float:
        """Share of windows that raised any alert (on data known to be unshifted, the false-alarm rate)."""
        return self.windows_alerting / self.windows_seen if self.windows_seen else 0.0

    def state_dict(self) -> dict[str, Any]:
        """Counters and the partly filled window, for a serving process that restarts mid-window.

        The partial window holds production feature values: keep the state with the run's private data (it is
        not evidence and never goes into the ledger), and load it with :meth:`load_state_dict`.
        """
        def joined(parts: list[np.ndarray]) -> np.ndarray | None:
            return np.concatenate(parts) if parts else None

        return {"reference": self.reference.digest(), "window": self.window, "alpha": self.alpha,
                "windows_seen": self.windows_seen, "windows_alerting": self.windows_alerting, "rows": self._rows,
                "features": {k: joined(v) for k, v in self._buffer.items()}, "embeddings": joined(self._emb),
                "predictions": joined(self._pred), "labels": joined(self._labels)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Carry on from :meth:`state_dict`: window numbering, false-alarm counters and pending rows."""
        for key, mine in (("reference", self.reference.digest()), ("window", self.window), ("alpha", self.alpha)):
            if state.get(key) != mine:
                raise InputError(f"drift monitor state was saved with another {key} ({state.get(key)!r}, this "
                                 f"monitor has {mine!r})")
        if self.reference.label_counts is not None:  # row for row with the pending rows (see update)
            for key in ("predictions", "labels"):
                held = 0 if state.get(key) is None else len(state[key])
                if held != int(state["rows"]):
                    raise InputError(f"drift monitor state holds {held} {key} for {state['rows']} pending rows: "
                                     "it was not saved by this version; start the monitor afresh")
        self.windows_seen, self.windows_alerting = int(state["windows_seen"]), int(state["windows_alerting"])
        self._rows = int(state["rows"])
        self._buffer = {k: [] if state["features"].get(k) is None else [np.asarray(state["features"][k])]
                        for k in self.reference.features}
        self._emb = [] if state["embeddings"] is None else [np.asarray(state["embeddings"])]
        self._pred = [] if state["predictions"] is None else [np.asarray(state["predictions"])]
        self._labels = [] if state.get("labels") is None else [np.asarray(state["labels"])]

    def update(self, features: dict[str, Any] | None = None, *, embeddings: Any = None,
               predictions: Any = None, labels: Any = None) -> list[DriftAlert]:
        """Add production rows; returns the alerts of every window this call completed. ``labels`` are the true
        classes of these same rows, -1 where not known."""
        features = features or {}
        missing = set(self.reference.features) - set(features)
        if missing:
            raise InputError(f"drift update lacks reference features: {', '.join(sorted(missing))}")
        arrays = {k: _as_array(k, features[k]) for k in self.reference.features}
        lengths = {len(v) for v in arrays.values()}
        ref = self.reference
        if predictions is not None:
            pred = _classes("predictions", predictions)
            lengths.add(len(pred))
        if labels is not None:
            if ref.label_counts is None:
                raise InputError("this drift reference has no labels to compare with: build it with labels=")
            truth = _classes("labels", labels, unknown=True)
            lengths.add(len(truth))
        if len(lengths) > 1:
            raise InputError(f"drift update arrays have different lengths: {sorted(lengths)}")
        for k, v in arrays.items():
            self._buffer[k].append(v)
        if embeddings is not None:
            self._emb.append(_as_matrix(embeddings))
        rows = lengths.pop() if lengths else (len(self._emb[-1]) if self._emb else 0)
        # With labels, predictions and labels are kept row for row (-1 where none came), so that a window's
        # accuracy compares each row's prediction with its own label.
        paired = ref.label_counts is not None
        if predictions is not None or paired:
            self._pred.append(pred if predictions is not None else np.full(rows, -1, dtype=np.int64))
        if paired:
            self._labels.append(truth if labels is not None else np.full(rows, -1, dtype=np.int64))
        self._rows += rows
        alerts: list[DriftAlert] = []
        while self._rows >= self.window:
            alerts.extend(self._close_window())
        return alerts

    def _take(self, parts: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        joined = np.concatenate(parts) if parts else np.empty(0)
        return joined[: self.window], [joined[self.window:]] if len(joined) > self.window else []

    def _close_window(self) -> list[DriftAlert]:
        ref = self.reference
        current = {}
        for k in list(self._buffer):
            current[k], self._buffer[k] = self._take(self._buffer[k])
        emb = pred = truth = None
        if self._emb:
            joined = np.concatenate(self._emb)
            emb, self._emb = joined[: self.window], ([joined[self.window:]] if len(joined) > self.window else [])
        if self._pred:
            pred, self._pred = self._take(self._pred)
        if self._labels:
            truth, self._labels = self._take(self._labels)
        self._rows -= self.window
        index = self.windows_seen
        self.windows_seen += 1

        predicted = None if pred is None or ref.prediction_counts is None else pred[pred >= 0]
        known = None if truth is None else truth[truth >= 0]
        # Row for row (see update): a row counts towards accuracy where both its prediction and its label came.
        both = (pred >= 0) & (truth >= 0) if pred is not None and truth is not None else None
        has_pred = predicted is not None and len(predicted) > 0
        labelled = known is not None and len(known) >= 20
        judged = both is not None and ref.accuracy is not None and int(both.sum()) >= 20
        tests = len(current) + (emb is not None and ref.embeddings is not None) + has_pred + labelled + judged
        level = self.alpha / max(tests, 1)
        alerts: list[DriftAlert] = []
        ks, psi_values = {}, {}
        for k, values in current.items():
            d = F.ks_statistic(ref.sorted[k], values)
            n, m = len(ref.sorted[k]), len(values)
            p = F.kolmogorov_sf(np.sqrt(n * m / (n + m)) * d)
            ks[k] = [d, p]
            psi_values[k] = F.psi(F.bin_counts(ref.features[k], ref.edges[k]), F.bin_counts(values, ref.edges[k]))
            if p < level:
                alerts.append(DriftAlert(k, "ks", d, level, p, index, self.window))
            if self.psi_threshold is not None and psi_values[k] > self.psi_threshold:
                alerts.append(DriftAlert(k, "psi", psi_values[k], self.psi_threshold, None, index, self.window))
        mmd = None
        if emb is not None and ref.embeddings is not None:
            value, p = F.mmd_test(ref.embeddings, emb[:500], permutations=self.mmd_permutations,
                                  seed=self.seed + index)
            mmd = [value, p]
            if p < level:
                alerts.append(DriftAlert("embeddings", "mmd", value, level, p, index, self.window))
        shift = None
        if has_pred:
            value, p = _shift(ref.prediction_counts, predicted)
            shift = [value, p]
            if p < level:
                alerts.append(DriftAlert("predictions", "proportion_shift", value, level, p, index, self.window))
        label_shift = accuracy = None
        if labelled:
            value, p = _shift(ref.label_counts, known)
            label_shift = [value, p]
            if p < level:
                alerts.append(DriftAlert("labels", "proportion_shift", value, level, p, index, self.window))
        if judged:
            rows = int(both.sum())
            correct = int((pred[both] == truth[both]).sum())
            drop, p = F.accuracy_drop(*ref.accuracy, correct, rows)
            accuracy = [correct / rows, p]
            if p < level:
                alerts.append(DriftAlert("accuracy", "accuracy_drop", drop, level, p, index, self.window))
        if alerts:
            self.windows_alerting += 1
        if self.run is not None:
            self.run.record("drift.window", {"window": index, "rows": self.window, "ks": ks, "psi": psi_values,
                                             "mmd": mmd, "prediction_shift": shift, "alerts": len(alerts),
                                             "label_shift": label_shift, "accuracy": accuracy})
            for a in alerts:
                self.run.record("drift.alert", msgspec.structs.asdict(a))
        return alerts
