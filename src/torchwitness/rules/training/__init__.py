"""Training-loop rules (TW100-TW499), judged by :class:`torchwitness.probes.watch.Watch`.

Each rule is a function of a :class:`~torchwitness.probes.view.StepView` registered with :func:`training_rule`,
which files it in the catalogue and says at which event the watch calls it:

- ``init``: once, when the watch starts (model and optimizer as constructed);
- ``step``: after each audited step, with that step's signals;
- ``eval``: at the first evaluation forward (grad disabled) after a training step;
- ``close``: once, when the watch closes (window rules judged over all audited steps).

IDs: TW1xx numerics and gradients, TW2xx data and batches, TW3xx optimizer, TW4xx architecture, modes and hints,
TW8xx cross-rank checks under torch.distributed.
"""

from __future__ import annotations

from torchwitness.rules.training import (  # noqa: F401  (registers)
    architecture,
    data,
    distributed,
    flow,
    freeze,
    inrange,
    labels,
    loss,
    numerics,
    optimizer,
)
from torchwitness.rules.training._registry import When, training_rule, training_rules

__all__ = ["When", "training_rule", "training_rules"]
