"""The accumulator's state contract and the gate's policies, with the evidence they leave."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
import torch

import torchwitness as tw
from torchwitness.controls.fairness import FairnessAccumulator, FairnessGate, FairnessWarning, GroupEncoder
from torchwitness.errors import InputError
from torchwitness.ledger import iter_records, verify_run


def _biased(n=4000, gap=0.3, seed=0):
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n)
    race = rng.choice(["a", "b", "c"], n)
    y = rng.integers(0, 2, n)
    pred = (rng.random(n) < np.where(sex == "M", 0.5 + gap / 2, 0.5 - gap / 2)).astype(int)
    return {"sex": sex, "race": race}, torch.tensor(y), torch.tensor(pred)


def test_state_dict_round_trip_and_reset():
    sens, y, pred = _biased()
    enc = GroupEncoder.fit(sens)
    codes = torch.from_numpy(enc.encode(sens))
    a = FairnessAccumulator(enc, reps=100)
    a.update(pred[:2000], y[:2000], codes[:2000])
    b = FairnessAccumulator(enc, reps=100)
    b.load_state_dict(a.state_dict())
    a.update(pred[2000:], y[2000:], codes[2000:])
    b.update(pred[2000:], y[2000:], codes[2000:])
    assert torch.equal(a.counts, b.counts) and int(a.counts.sum()) == 4000
    assert a.compute() == b.compute()
    a.reset()
    assert int(a.counts.sum()) == 0
    other = FairnessAccumulator(GroupEncoder.fit({"sex": np.array(["F", "M", "X"])}))
    with pytest.raises(InputError):
        other.load_state_dict(b.state_dict())


def test_unseen_sensitive_value_raises():
    enc = GroupEncoder.fit({"sex": np.array(["F", "M"])})
    with pytest.raises(InputError, match="unseen value 'X'"):
        enc.encode({"sex": np.array(["F", "X"])})


@pytest.mark.parametrize(("policy", "checkpoint", "stop"), [("block_checkpoint", False, False), ("stop", False, True)])
def test_gate_blocks_or_stops_and_records_every_epoch(tmp_path, policy, checkpoint, stop):
    sens, y, pred = _biased()
    enc = GroupEncoder.fit(sens)
    with tw.Run(tmp_path / "run") as run:
        gate = FairnessGate(run, metric="demographic_parity_difference", threshold=0.1, attributes=["sex"],
                            bound="ci_low", policy=policy)
        acc = FairnessAccumulator(enc, reps=300)
        for epoch, g in enumerate((0.0, 0.3)):
            sens, y, pred = _biased(gap=g, seed=epoch)
            acc.reset()
            acc.update(pred, y, torch.from_numpy(enc.encode(sens)))
            out = gate.evaluate(acc, epoch=epoch, step=epoch)
        assert out.checkpoint_allowed is checkpoint and out.stop is stop
    records = [r["data"] for r in iter_records(tmp_path / "run", kinds={"fairness.eval"})]
    assert [r["epoch"] for r in records] == [0, 1]
    assert [r["gate"]["violated"] for r in records] == [False, True]
    assert records[1]["gate"]["value"] > 0.1 and records[1]["gate"]["action"] == policy
    assert [v["attributes"] for v in records[0]["views"]] == [["sex"], ["race"], ["sex", "race"]]
    verify_run(tmp_path / "run", deep=True)


def test_gate_bound_choice_changes_the_decision():
    sens, y, pred = _biased(n=400, gap=0.12, seed=3)
    enc = GroupEncoder.fit(sens)
    acc = FairnessAccumulator(enc, reps=1000)
    acc.update(pred, y, torch.from_numpy(enc.encode(sens)))
    result = acc.compute()
    kw = {"metric": "demographic_parity_difference", "threshold": 0.1, "attributes": ["sex"]}
    low = FairnessGate(None, bound="ci_low", policy="stop", **kw).decide(result)
    high = FairnessGate(None, bound="ci_high", policy="stop", **kw).decide(result)
    assert low.value < 0.1 < high.value
    assert not low.violated and high.violated


def test_gate_fails_closed_when_groups_are_insufficient_and_warns():
    sens, y, pred = _biased(n=100)
    enc = GroupEncoder.fit(sens)
    acc = FairnessAccumulator(enc, min_group_size=1000, reps=50)
    acc.update(pred, y, torch.from_numpy(enc.encode(sens)))
    gate = FairnessGate(None, metric="equalized_odds_difference", threshold=0.5, attributes=["sex", "race"])
    with pytest.warns(FairnessWarning, match="fails closed"):
        out = gate.evaluate(acc)
    assert out.decision.violated and out.decision.value is None and out.checkpoint_allowed
    assert len(out.result.views[-1].insufficient) == 6


def test_flat_group_index_and_attribute_codes_give_the_same_counts():
    sens, y, pred = _biased()
    enc = GroupEncoder.fit(sens)
    codes = enc.encode(sens)
    by_codes, by_flat = FairnessAccumulator(enc, reps=0), FairnessAccumulator(enc, reps=0)
    by_codes.update(pred, y, torch.from_numpy(codes))
    by_flat.update(pred, y, torch.from_numpy(enc.flat(codes)))
    naive = np.zeros((6, 2, 2), dtype=np.int64)
    for g, t, p in zip(enc.flat(codes), y.tolist(), pred.tolist(), strict=True):
        naive[g, t, p] += 1
    assert np.array_equal(by_codes.counts.numpy(), naive.ravel())
    assert torch.equal(by_codes.counts, by_flat.counts)


def test_dossier_says_no_disparity_detected_only_when_the_test_does_not_reject(tmp_path) -> None:
    import torchwitness as tw
    from torchwitness.controls.fairness import confusion_counts, evaluate
    from torchwitness.report.build import build_document

    enc = GroupEncoder(categories={"sex": ("F", "M")})
    rng = np.random.default_rng(3)
    g = np.repeat([0, 1], 1000)
    y = rng.integers(0, 2, 2000)
    equal = (rng.random(2000) < 0.3).astype(int)
    unequal = (rng.random(2000) < np.where(g == 1, 0.45, 0.3)).astype(int)
    texts = {}
    for name, pred in (("equal", equal), ("unequal", unequal)):
        result = evaluate(confusion_counts(g, y, pred, 2), enc, reps=500)
        with tw.Run(tmp_path / name) as run:
            run.record("fairness.eval", msgspec.to_builtins(result))
        dp = next(d for d in result.views[0].disparities if d.metric == "demographic_parity_difference")
        texts[name] = (dp, next(s.text for s in build_document(tmp_path / name).statements()
                                if s.text.startswith("demographic_parity_difference across sex")))
    dp, text = texts["equal"]
    assert dp.estimate > 0 and dp.ci_low == 0.0 and dp.p_value >= 0.05  # a point estimate above 0 alone is no finding
    assert "no disparity detected (test of equal selection rates: p = " in text
    dp, text = texts["unequal"]
    assert dp.ci_low > 0.05 and dp.p_value < 0.01
    assert "a disparity is detected" in text and "no disparity detected" not in text
