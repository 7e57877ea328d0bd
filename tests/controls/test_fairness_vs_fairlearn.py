"""Every fairness number against fairlearn on Adult and COMPAS, single attributes and their intersection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score, precision_score

from torchwitness.controls.fairness import FairnessAccumulator, GroupEncoder
from torchwitness.controls.fairness.report import view_name

TOL = 1e-9


def rule_data(df, attrs):
    return df["y_true"].to_numpy(), df["y_pred"].to_numpy(), {a: df[a].astype(str).to_numpy() for a in attrs}

CASES = [("adult_frame", ["sex"]), ("adult_frame", ["race"]), ("adult_frame", ["sex", "race"]),
         ("compas_frame", ["sex"]), ("compas_frame", ["race"]), ("compas_frame", ["sex", "race"]),
         ("compas_frame", ["sex", "age_cat"])]


def _ppv(y_true, y_pred):
    return precision_score(y_true, y_pred, zero_division=np.nan)


@pytest.mark.parametrize(("frame", "attrs"), CASES)
def test_every_number_matches_fairlearn(frame, attrs, request):
    df = request.getfixturevalue(frame)
    y, yhat, sensitive = rule_data(df, attrs)
    enc = GroupEncoder.fit(sensitive)
    acc = FairnessAccumulator(enc, min_group_size=1, reps=0)
    # three uneven batches: streaming must equal one pass
    codes = torch.from_numpy(enc.encode(sensitive))
    for part in np.array_split(np.arange(len(y)), [1000, 4000]):
        acc.update(torch.from_numpy(yhat[part]), torch.from_numpy(y[part]), codes[part])
    result = acc.compute()
    view = next(v for v in result.views if view_name(v.attributes) == view_name(attrs))
    sf = df[attrs] if len(attrs) > 1 else df[attrs[0]]

    frame_ = MetricFrame(metrics={"selection_rate": selection_rate, "accuracy": accuracy_score,
                                  "tpr": true_positive_rate, "fpr": false_positive_rate, "ppv": _ppv},
                         y_true=y, y_pred=yhat, sensitive_features=sf)
    by_group = frame_.by_group
    observed = [g for g in view.groups if g.n > 0]
    assert len(observed) == len(by_group)
    assert {g.name for g in view.groups if g.n == 0} <= set(view.insufficient)
    for g, (key, row) in zip(observed, by_group.iterrows(), strict=True):
        key = key if isinstance(key, tuple) else (key,)
        assert g.name == ", ".join(f"{a}={k}" for a, k in zip(attrs, key, strict=True)) if len(attrs) > 1 \
            else g.name == f"{attrs[0]}={key[0]}"
        for metric in ("selection_rate", "accuracy", "tpr", "fpr"):
            assert getattr(g, metric) == pytest.approx(row[metric], abs=TOL)
        assert (g.ppv is None) == bool(np.isnan(row["ppv"]))
        if g.ppv is not None:
            assert g.ppv == pytest.approx(row["ppv"], abs=TOL)

    got = {d.metric: d.estimate for d in view.disparities}
    kw = {"y_true": y, "y_pred": yhat, "sensitive_features": sf}
    expected = {
        "demographic_parity_difference": demographic_parity_difference(**kw),
        "demographic_parity_ratio": demographic_parity_ratio(**kw),
        "equalized_odds_difference": equalized_odds_difference(**kw, agg="worst_case"),
        "equalized_odds_difference_mean": equalized_odds_difference(**kw, agg="mean"),
        "equal_opportunity_difference": equal_opportunity_difference(**kw),
        "predictive_parity_difference": float(np.nanmax(by_group["ppv"]) - np.nanmin(by_group["ppv"])),
        "accuracy_difference": frame_.difference()["accuracy"],
    }
    for metric, value in expected.items():
        assert got[metric] == pytest.approx(value, abs=TOL), metric


def test_small_groups_are_reported_insufficient_not_dropped(compas_frame):
    y, yhat, sensitive = rule_data(compas_frame, ["sex", "race"])
    enc = GroupEncoder.fit(sensitive)
    acc = FairnessAccumulator(enc, min_group_size=50, reps=200)
    acc.update(torch.tensor(yhat), torch.tensor(y), torch.from_numpy(enc.encode(sensitive)))
    inter = acc.compute().views[-1]
    small = {g.name for g in inter.groups if g.n < 50}
    assert "sex=Female, race=Asian" in small and set(inter.insufficient) == small
    assert len(inter.groups) == 12  # every declared combination appears, small ones flagged
    # disparities use only sufficient groups: equal to fairlearn restricted to them
    keep = np.ones(len(y), dtype=bool)
    for name in small:
        parts = dict(p.split("=") for p in name.split(", "))
        keep &= ~((sensitive["sex"] == parts["sex"]) & (sensitive["race"] == parts["race"]))
    expected = demographic_parity_difference(y[keep], yhat[keep],
                                             sensitive_features=compas_frame[["sex", "race"]][keep])
    got = next(d for d in inter.disparities if d.metric == "demographic_parity_difference")
    assert got.estimate == pytest.approx(expected, abs=TOL)
    assert got.ci_low < got.estimate < got.ci_high


def test_undefined_rate_is_none_where_fairlearn_reports_zero(compas_frame):
    # race x age_cat has a group without positive labels: its TPR does not exist; fairlearn says 0.0
    y, yhat, sensitive = rule_data(compas_frame, ["race", "age_cat"])
    enc = GroupEncoder.fit(sensitive)
    acc = FairnessAccumulator(enc, min_group_size=1, reps=0)
    acc.update(torch.tensor(yhat), torch.tensor(y), torch.from_numpy(enc.encode(sensitive)))
    groups = [g for g in acc.compute().views[-1].groups if g.n > 0]
    frame = MetricFrame(metrics={"tpr": true_positive_rate, "fpr": false_positive_rate}, y_true=y, y_pred=yhat,
                        sensitive_features=compas_frame[["race", "age_cat"]]).by_group
    undefined = [(g, row) for g, (_, row) in zip(groups, frame.iterrows(), strict=True)
                 if g.tpr is None or g.fpr is None]
    assert undefined
    for g, row in undefined:
        assert (g.tpr is None and row["tpr"] == 0.0) or (g.fpr is None and row["fpr"] == 0.0)
