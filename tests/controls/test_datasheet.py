"""The datasheet is computed from the data: counts, coverage and missing values checked against pandas."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

import torchwitness as tw
from torchwitness.controls.datasheet import RANK, datasheet
from torchwitness.errors import InputError
from torchwitness.ledger import iter_records, verify_run


def test_adult_datasheet_matches_pandas(adult_frame, tmp_path):
    numeric = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
    raw = adult_frame[["workclass", "occupation", "native-country"]].to_numpy()
    feats = np.column_stack([adult_frame[numeric].to_numpy(dtype=np.float64), raw])
    names = [*numeric, "workclass", "occupation", "native-country"]
    sheet = datasheet("adult.data", features=feats.astype(object), feature_names=names,
                      labels=adult_frame["y_true"].to_numpy(),
                      sensitive={"sex": adult_frame["sex"].to_numpy(), "race": adult_frame["race"].to_numpy()})
    assert sheet.rows == len(adult_frame) == 32561
    assert sheet.label_distribution == {"0": 24720, "1": 7841}
    assert sheet.missing_values == int((adult_frame[["workclass", "occupation", "native-country"]] == "?").sum().sum())
    sex = next(v for v in sheet.coverage if v.attributes == ["sex"])
    assert {g.name: g.n for g in sex.groups} == {"sex=Female": 10771, "sex=Male": 21790}
    inter = sheet.coverage[-1]
    expected = adult_frame.groupby(["sex", "race"])["y_true"].agg(["count", "mean"])
    for g in inter.groups:
        parts = dict(p.split("=") for p in g.name.split(", "))
        row = expected.loc[(parts["sex"], parts["race"])]
        assert g.n == row["count"] and g.positive_rate == pytest.approx(row["mean"], abs=1e-12)
    with tw.Run(tmp_path / "run") as run:
        run.record("data.datasheet", msgspec.to_builtins(sheet))
    assert next(iter_records(tmp_path / "run", kinds={"data.datasheet"}))["data"]["content_digest"] == \
        sheet.content_digest
    verify_run(tmp_path / "run", deep=True)


def test_digest_changes_with_content_and_sensitive_columns_are_refused():
    x, y, s = np.ones((4, 2), np.float32), np.array([0, 1, 0, 1]), {"sex": np.array(["F", "M", "F", "M"])}
    a = datasheet("a", features=x, labels=y, sensitive=s)
    x2 = x.copy()
    x2[0, 0] = 2
    assert datasheet("a", features=x2, labels=y, sensitive=s).content_digest != a.content_digest
    assert datasheet("a", features=x, labels=y, sensitive={"sex": s["sex"][::-1]}).content_digest != a.content_digest
    with pytest.raises(InputError, match="sex=F"):
        datasheet("a", features=x, labels=y, sensitive=s, feature_names=["age", "sex=F"])


def test_column_bounds_never_disclose_a_rare_value(adult_frame):
    """Adult's largest capital gain (99,999) and oldest age (90) are a handful of people's values: the datasheet
    states bounds 1 % in from each end, rounded outward to two significant figures, never such a value."""
    numeric = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
    sheet = datasheet("adult.data", features=adult_frame[numeric].to_numpy(dtype=np.float64), feature_names=numeric,
                      labels=adult_frame["y_true"].to_numpy(), sensitive={"sex": adult_frame["sex"].to_numpy()})
    for col in sheet.columns[:len(numeric)]:
        values = np.sort(adult_frame[col.name].to_numpy(dtype=np.float64))
        k = max(RANK, int(np.ceil(0.01 * len(values))))
        assert col.low <= values[k - 1] and col.high >= values[-k]  # outward: the middle 98 % lie within
        assert all(float(f"{bound:.2g}") == bound for bound in (col.low, col.high))  # two significant figures
        assert (values < col.low).sum() < k and (values > col.high).sum() < k
    gain = next(c for c in sheet.columns if c.name == "capital-gain")
    assert gain.high < 99_999 and "99999" not in msgspec.json.encode(sheet).decode()
    tiny = datasheet("tiny", features=np.arange(12.0).reshape(-1, 1), labels=np.zeros(12),
                     sensitive={"g": np.array(["a", "b"] * 6)})
    assert (tiny.columns[0].low, tiny.columns[0].high, tiny.columns[0].mean) == (None, None, None)
