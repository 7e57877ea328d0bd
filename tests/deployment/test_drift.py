"""Drift statistics against scipy and a naive MMD; alerts and false-alarm rate on the Adult test split."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.stats

import torchwitness as tw
from torchwitness.controls.drift import DriftMonitor, DriftReference
from torchwitness.controls.drift import functional as F
from torchwitness.demo.adult import NUMERIC, load_adult
from torchwitness.errors import InputError
from torchwitness.ledger import iter_records


@pytest.mark.parametrize("seed", range(5))
def test_ks_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=400), rng.normal(0.1 * seed, 1, size=150)
    d, p = F.ks_2samp(a, b)
    assert d == pytest.approx(scipy.stats.ks_2samp(a, b).statistic, abs=1e-12)
    # Our p-value is the limiting (Kolmogorov) distribution at sqrt(nm/(n+m)) * D.
    expected = scipy.stats.kstwobign.sf(np.sqrt(400 * 150 / 550) * d)
    assert p == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_mmd_matches_a_naive_double_loop() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(15, 3)), rng.normal(0.5, 1, size=(12, 3))
    bw = 1.3

    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * bw * bw))

    sxx = sum(k(x[i], x[j]) for i in range(15) for j in range(15) if i != j) / (15 * 14)
    syy = sum(k(y[i], y[j]) for i in range(12) for j in range(12) if i != j) / (12 * 11)
    sxy = sum(k(x[i], y[j]) for i in range(15) for j in range(12)) / (15 * 12)
    value, p = F.mmd_test(x, y, bandwidth=bw, permutations=50)
    assert value == pytest.approx(sxx + syy - 2 * sxy, rel=1e-10)
    assert 0 < p <= 1
    shifted = F.mmd_test(rng.normal(size=(60, 3)), rng.normal(1.5, 1, size=(60, 3)), permutations=100)
    assert shifted[1] < 0.02


def test_psi_is_zero_for_identical_bins_and_grows_with_shift() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(size=5000)
    edges = F.quantile_edges(ref)
    base = F.bin_counts(ref, edges)
    assert F.psi(base, base) == 0
    assert F.psi(base, F.bin_counts(ref + 1.0, edges)) > 0.25 > F.psi(base, F.bin_counts(rng.normal(size=5000),
                                                                                          edges))


@pytest.fixture(scope="module")
def adult():
    data = load_adult()
    weights = np.random.default_rng(0).normal(size=data.train.features.shape[1]) / 10

    def columns(split):
        cols = {name: split.features[:, i] for i, name in enumerate(NUMERIC)}
        cols["score"] = 1 / (1 + np.exp(-split.features @ weights))
        return cols, (cols["score"] > 0.5).astype(np.int64)

    return columns(data.train), columns(data.test)


def test_false_alarm_rate_on_unshifted_windows(adult) -> None:
    (train, train_pred), (test, test_pred) = adult
    reference = DriftReference.from_arrays(train, predictions=train_pred, num_classes=2)
    monitor = DriftMonitor(reference, window=64, alpha=0.01)
    for start in range(0, len(test_pred) - 63, 64):
        monitor.update({k: v[start:start + 64] for k, v in test.items()}, predictions=test_pred[start:start + 64])
    assert monitor.windows_seen >= 200
    assert monitor.false_alarm_rate <= 0.01, monitor.false_alarm_rate
    psi = DriftMonitor(reference, window=1024, psi_threshold=0.25)  # PSI alerts need large windows to be quiet
    for start in range(0, len(test_pred) - 1023, 1024):
        psi.update({k: v[start:start + 1024] for k, v in test.items()}, predictions=test_pred[start:start + 1024])
    assert psi.false_alarm_rate == 0


def test_shift_is_caught_in_the_first_window_after_it(adult, tmp_path) -> None:
    (train, train_pred), (test, test_pred) = adult
    with tw.Run(tmp_path / "run") as run:
        monitor = DriftMonitor(DriftReference.from_arrays(train, predictions=train_pred), run=run, window=128,
                               psi_threshold=0.25)
        first_alert = None
        for w in range(40):
            rows = slice(w * 128, (w + 1) * 128)
            batch = {k: v[rows].copy() for k, v in test.items()}
            if w >= 20:  # the shift: everyone 1 standard deviation older
                batch["age"] += 1.0
            alerts = monitor.update(batch, predictions=test_pred[rows])
            if alerts and first_alert is None:
                first_alert = w
    assert first_alert == 20
    recorded = [r["data"] for r in iter_records(tmp_path / "run", kinds={"drift.alert"})]
    assert recorded and recorded[0]["feature"] == "age" and recorded[0]["window"] == 20
    assert {r["statistic"] for r in recorded if r["feature"] == "age"} >= {"ks", "psi"}
    assert len(list(iter_records(tmp_path / "run", kinds={"drift.window"}))) == 40
    # the recorded reference summarises each feature by deciles: an extreme value appears only where many
    # people share it (a capital gain of 0), never one person's own (the highest gain, the oldest age)
    (reference,) = [r["data"] for r in iter_records(tmp_path / "run", kinds={"drift.reference"})]
    for name, summary in reference["features"].items():
        assert len(summary["quantiles"]) == 9 and 0 < summary["rows"] <= len(train[name])
        for extreme in (train[name].min(), train[name].max()):
            if np.isclose(summary["quantiles"], extreme).any():
                assert np.isclose(train[name], extreme).mean() > 0.1


def test_label_shift_and_accuracy_drop_with_outcomes_known_late(tmp_path) -> None:
    """Labels of served rows (-1 where the outcome is not known yet): quiet on unshifted windows, an accuracy
    drop caught in the first window of a degraded model, a label shift in the first window of shifted outcomes."""
    data = load_adult()
    rng = np.random.default_rng(0)

    def predict(y: np.ndarray) -> np.ndarray:  # a model that is right 85 % of the time
        return np.where(rng.random(len(y)) < 0.85, y, 1 - y)

    reference = DriftReference.from_arrays({}, predictions=predict(data.train.labels), labels=data.train.labels,
                                           num_classes=2)
    y = data.test.labels
    quiet = DriftMonitor(reference, window=64)
    for start in range(0, len(y) - 63, 64):
        quiet.update(predictions=predict(y[start:start + 64]), labels=y[start:start + 64])
    assert quiet.windows_seen >= 200
    assert quiet.false_alarm_rate <= 0.01, quiet.false_alarm_rate

    first: dict[tuple[str, str], int] = {}
    with tw.Run(tmp_path / "run") as run:
        # alpha 0.001: over 20 quiet windows, a false alarm at 0.01 would come one run in five
        monitor = DriftMonitor(reference, run=run, window=128, alpha=0.001)
        for w in range(40):
            truth = y[w * 128:(w + 1) * 128].copy()
            if w >= 30:  # outcomes shift: everyone served from here on earns more
                truth[:] = 1
            pred = predict(truth)
            if 20 <= w < 30:  # the model degrades: half its answers wrong
                pred = np.where(rng.random(128) < 0.5, 1 - truth, pred)
            known = truth.copy()
            known[::4] = -1  # a quarter of the outcomes are not known yet
            for alert in monitor.update(predictions=pred, labels=known):
                first.setdefault((alert.feature, alert.statistic), alert.window)
    assert first[("accuracy", "accuracy_drop")] == 20
    assert first[("labels", "proportion_shift")] == 30
    (recorded,) = [r["data"] for r in iter_records(tmp_path / "run", kinds={"drift.reference"})]
    assert recorded["label_counts"] == np.bincount(data.train.labels).tolist()
    assert recorded["accuracy"][1] == len(data.train.labels)
    windows = [r["data"] for r in iter_records(tmp_path / "run", kinds={"drift.window"})]
    assert windows[0]["accuracy"][0] == pytest.approx(0.85, abs=0.1) and windows[25]["accuracy"][0] < 0.6
    # Outcomes of rows served without predictions must not pair later predictions with other rows' labels.
    perfect = DriftMonitor(reference, window=200)
    perfect.update(labels=y[:30])
    for w in range(10):
        truth = y[30 + 200 * w:230 + 200 * w]
        assert not [a for a in perfect.update(predictions=truth, labels=truth) if a.feature == "accuracy"]
    with pytest.raises(InputError, match=r"labels must be class indices \(0 or more, or -1 where not known\), not -2"):
        perfect.update(predictions=np.zeros(3), labels=np.array([0, -2, 1]))
    # A class the reference never saw is a shift to report, not an input to refuse.
    novel = DriftMonitor(reference, window=100)
    alerts = novel.update(predictions=np.full(100, 2), labels=np.full(100, 2))
    assert {(a.feature, a.statistic) for a in alerts} >= {("predictions", "proportion_shift"),
                                                         ("labels", "proportion_shift")}
    huge = DriftMonitor(reference, window=100).update(predictions=np.full(100, 2**40), labels=np.zeros(100))
    assert ("predictions", "proportion_shift") in {(a.feature, a.statistic) for a in huge}  # one bin, no 8 TB
    shared = DriftReference.from_arrays({}, predictions=[0, 4, 1], labels=[0, 1, 1], num_classes=2)
    assert len(shared.prediction_counts) == len(shared.label_counts) == 5
    with pytest.raises(InputError, match="predictions are empty"):
        DriftReference.from_arrays({}, predictions=[], labels=[0, 1])
    state = novel.state_dict()
    novel.update(predictions=np.zeros(10), labels=np.zeros(10))
    mismatched = {**novel.state_dict(), "labels": np.zeros(4)}
    with pytest.raises(InputError, match="holds 4 labels for 10 pending rows"):
        DriftMonitor(reference, window=100).load_state_dict(mismatched)
    DriftMonitor(reference, window=100).load_state_dict(state)
    with pytest.raises(InputError, match=r"labels must be class indices \(0 or more\), not -1"):
        DriftReference.from_arrays({}, labels=np.array([0, 1, -1]))
    with pytest.raises(InputError, match="no labels to compare with"):
        DriftMonitor(DriftReference.from_arrays({"a": np.arange(100.0)}), window=20).update(
            {"a": np.zeros(5)}, labels=np.zeros(5))
    with pytest.raises(InputError, match="differ in length"):
        DriftReference.from_arrays({}, predictions=np.zeros(30), labels=np.zeros(40))


def test_bad_input_is_refused() -> None:
    ref = DriftReference.from_arrays({"a": np.arange(100.0)})
    monitor = DriftMonitor(ref, window=20)
    with pytest.raises(InputError, match="lacks reference features"):
        monitor.update({"b": np.zeros(5)})
    with pytest.raises(InputError, match="NaN"):
        monitor.update({"a": np.array([np.nan])})
    with pytest.raises(InputError, match="at least 20 are needed"):
        DriftReference.from_arrays({"a": np.arange(5.0)})


def test_a_restarted_monitor_carries_on_mid_window(adult, tmp_path) -> None:
    """Saving the state mid-window and loading it into a new monitor gives the alerts of one unbroken monitor."""
    (train, train_pred), (test, test_pred) = adult
    reference = DriftReference.from_arrays(train, predictions=train_pred, num_classes=2)

    def feed(monitor: DriftMonitor, lo: int, hi: int) -> list[tuple[int, str, str]]:
        out = []
        for start in range(lo, hi, 100):  # 100-row batches against 128-row windows: restarts fall mid-window
            batch = {k: v[start:start + 100].copy() for k, v in test.items()}
            if start >= 2_000:
                batch["age"] += 1.0
            out += [(a.window, a.feature, a.statistic) for a in monitor.update(batch,
                                                                              predictions=test_pred[start:start + 100])]
        return out

    whole = DriftMonitor(reference, window=128)
    expected = feed(whole, 0, 4_000)
    first = DriftMonitor(reference, window=128)
    got = feed(first, 0, 1_900)
    path = tmp_path / "private" / "drift-state.pkl"  # production values: the run's private side, never the ledger
    path.parent.mkdir()
    path.write_bytes(pickle.dumps(first.state_dict()))
    second = DriftMonitor(reference, window=128)
    second.load_state_dict(pickle.loads(path.read_bytes()))
    got += feed(second, 1_900, 4_000)
    assert got == expected and expected
    assert (second.windows_seen, second.windows_alerting) == (whole.windows_seen, whole.windows_alerting)
    other = DriftMonitor(DriftReference.from_arrays({"age": test["age"]}), window=128)
    with pytest.raises(InputError, match="another reference"):
        other.load_state_dict(first.state_dict())
    with pytest.raises(InputError, match="another window"):
        DriftMonitor(reference, window=256).load_state_dict(first.state_dict())
