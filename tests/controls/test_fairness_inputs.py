"""The fairness API takes the data users have and refuses every wrong input with one sentence naming it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchwitness.controls.fairness import FairnessAccumulator, FairnessGate, GroupEncoder
from torchwitness.errors import InputError

SEX = ["F", "M", "M", "F", "M", "F", "M", "M"] * 25
RACE = ["a", "b", "c", "a", "a", "b", "c", "b"] * 25
Y = [0, 1, 1, 0, 1, 0, 0, 1] * 25
PRED = [0, 1, 1, 1, 1, 0, 0, 0] * 25


def _counts(groups, preds=PRED, target=Y, **kw) -> np.ndarray:
    enc = GroupEncoder.fit(pd.DataFrame({"sex": SEX, "race": RACE}))
    acc = FairnessAccumulator(enc, min_group_size=1, reps=0, **kw)
    acc.update(preds, target, groups)
    return acc.counts.numpy()


def test_every_column_form_gives_the_same_counts():
    frame = pd.DataFrame({"sex": SEX, "race": RACE})
    expected = _counts(torch.from_numpy(GroupEncoder.fit(frame).encode(frame)))
    forms = {
        "pandas frame": frame,
        "pandas categoricals": frame.astype("category"),
        "polars frame": pl.DataFrame({"sex": SEX, "race": RACE}),
        "polars categoricals": pl.DataFrame({"sex": SEX, "race": RACE}).cast(pl.Categorical),
        "mapping of lists": {"sex": SEX, "race": RACE},
        "mapping of numpy": {"sex": np.array(SEX), "race": np.array(RACE, dtype=object)},
    }
    for name, groups in forms.items():
        assert np.array_equal(_counts(groups), expected), name
    for name, preds, target in (("numpy", np.array(PRED), np.array(Y)), ("pandas", pd.Series(PRED), pd.Series(Y)),
                                ("polars", pl.Series(PRED), pl.Series(Y)), ("bool", np.array(PRED, bool), Y),
                                ("float 0/1", np.array(PRED, float), Y)):
        assert np.array_equal(_counts(frame, preds, target), expected), name


def test_one_string_column_for_a_single_attribute_and_numeric_codes():
    enc = GroupEncoder.fit(pl.DataFrame({"sex": SEX}))
    acc, ref = FairnessAccumulator(enc, reps=0), FairnessAccumulator(enc, reps=0)
    acc.update(PRED, Y, pd.Series(SEX, dtype="category"))
    ref.update(PRED, Y, torch.tensor([enc.categories["sex"].index(s) for s in SEX]))
    assert torch.equal(acc.counts, ref.counts) and int(acc.counts.sum()) == len(SEX)


def test_scores_are_refused_without_a_threshold_and_thresholded_with_one():
    enc = GroupEncoder.fit({"sex": SEX})
    scores = np.linspace(0.05, 0.95, len(SEX))
    with pytest.raises(InputError, match=r"scores or probabilities.*threshold="):
        FairnessAccumulator(enc).update(scores, Y, SEX)
    acc = FairnessAccumulator(enc, threshold=0.5, reps=0)
    acc.update(scores, Y, SEX)
    ref = FairnessAccumulator(enc, reps=0)
    ref.update((scores >= 0.5).astype(int), Y, SEX)
    assert torch.equal(acc.counts, ref.counts)
    two_class = torch.tensor([[0.2, 0.8], [0.9, 0.1]] * (len(SEX) // 2))  # [n, 2] scores: the larger class wins
    acc = FairnessAccumulator(enc, reps=0)
    acc.update(two_class, Y, SEX)
    assert int(acc.counts.view(2, 2, 2)[..., 1].sum()) == len(SEX) // 2


@pytest.mark.parametrize(("call", "message"), [
    (lambda a: a.update(PRED[:10], Y, SEX), "one row each per example; got preds 10, target 200, groups 200"),
    (lambda a: a.update(PRED, [[0, 1]] * 200, SEX), "target must be \\[n\\] labels"),
    (lambda a: a.update(PRED, [2] * 200, SEX), "must be 0/1"),
    (lambda a: a.update(np.zeros((200, 3)), Y, SEX), "binary task, got \\(200, 3\\)"),
    (lambda a: a.update(["yes"] * 200, Y, SEX), "preds must hold numbers"),
    (lambda a: a.update(PRED, Y, ["X"] * 200), "unseen value 'X'"),
    (lambda a: a.update(PRED, Y, pd.DataFrame({"race": RACE})), "'sex' missing from the batch"),
    (lambda a: a.update(pd.DataFrame({"p": PRED}), Y, SEX), "not a DataFrame"),
    (lambda a: a.update(PRED, Y, torch.full((200,), 7)), "indices below the encoder's group count"),
])
def test_wrong_inputs_are_one_sentence_naming_the_argument(call, message):
    acc = FairnessAccumulator(GroupEncoder.fit({"sex": SEX}))
    with pytest.raises(InputError, match=message) as e:
        call(acc)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kwargs", [{"min_group_size": None}, {"min_group_size": 0}, {"reps": -1}, {"reps": 1.5},
                                    {"confidence": 1.0}, {"confidence": "95%"}, {"threshold": "half"}])
def test_bad_settings_fail_at_construction_not_at_compute(kwargs):
    with pytest.raises(InputError, match=next(iter(kwargs))):
        FairnessAccumulator(GroupEncoder.fit({"sex": SEX}), **kwargs)
    with pytest.raises(InputError, match="GroupEncoder"):
        FairnessAccumulator(pd.DataFrame({"sex": SEX}))


def test_readable_reprs():
    enc = GroupEncoder.fit(pd.DataFrame({"sex": SEX, "race": RACE}))
    acc = FairnessAccumulator(enc, min_group_size=10, reps=200)
    acc.update(PRED, Y, pd.DataFrame({"sex": SEX, "race": RACE}))
    assert repr(enc) == "GroupEncoder(sex: 2 groups, race: 3 groups)"
    assert repr(acc) == ("FairnessAccumulator(attributes=['sex', 'race'], groups=6, rows=200, min_group_size=10, "
                         "reps=200)")
    result = acc.compute(epoch=2)
    text = repr(result)
    assert text.startswith("FairnessEval(split='eval', epoch=2, rows=200)") and "\n  sex (2 groups): " in text
    assert "demographic_parity_difference 0." in text and " p=" in text and "0x" not in text
    gate = FairnessGate(None, metric="demographic_parity_difference", threshold=0.9, attributes=["sex"])
    decided = gate.evaluate(result)
    assert repr(gate).startswith("FairnessGate(demographic_parity_difference[estimate] vs 0.9 on 'sex'")
    assert repr(decided).startswith("GateResult(sex: demographic_parity_difference[estimate] = ")


garbage = st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5),
                    st.lists(st.one_of(st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=2)),
                             max_size=6),
                    st.dictionaries(st.text(max_size=3), st.lists(st.integers(0, 2), max_size=4), max_size=2))


@settings(max_examples=150, deadline=None)
@given(preds=garbage, target=garbage, groups=garbage)
def test_garbage_raises_input_error_and_nothing_else(preds, target, groups):
    acc = FairnessAccumulator(GroupEncoder.fit({"sex": ["F", "M"]}), min_group_size=1, reps=10)
    try:
        acc.update(preds, target, groups)
    except InputError as e:
        assert str(e) and "\n" not in str(e)
    else:
        acc.compute()  # whatever was accepted must also be computable
