"""Fairness with uncertainty: streaming group counts, fairlearn-compatible disparities, intervals and tests, a gate.

>>> import numpy as np, torch
>>> from torchwitness.controls.fairness import FairnessAccumulator, GroupEncoder
>>> sex = np.array(["F", "M"] * 50)
>>> enc = GroupEncoder.fit({"sex": sex})
>>> acc = FairnessAccumulator(enc, min_group_size=10, reps=200)
>>> y = torch.tensor([0, 1] * 50); pred = torch.tensor([0, 1, 1, 1] * 25)
>>> acc.update(pred, y, torch.from_numpy(enc.encode({"sex": sex})))
>>> result = acc.compute(epoch=0)
>>> [d.estimate for d in result.views[0].disparities if d.metric == "demographic_parity_difference"]
[0.5]
"""

from torchwitness.controls.fairness.accumulator import FairnessAccumulator
from torchwitness.controls.fairness.functional import confusion_counts, disparities, group_rates
from torchwitness.controls.fairness.gate import FairnessGate, FairnessWarning, GateResult
from torchwitness.controls.fairness.groups import GroupEncoder
from torchwitness.controls.fairness.intervals import disparity_intervals
from torchwitness.controls.fairness.report import FairnessEval, evaluate

__all__ = ["FairnessAccumulator", "FairnessEval", "FairnessGate", "FairnessWarning", "GateResult", "GroupEncoder",
           "confusion_counts", "disparities", "disparity_intervals", "evaluate", "group_rates"]
