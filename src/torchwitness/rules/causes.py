"""Which findings explain which: the root cause is reported, its consequences are attached to it.

One silent bug sets off several rules: NaN inputs give a NaN loss, non-finite gradients and a "diverging" loss;
blank images give dead filters, duplicate samples and zero gradients. A finding is attached to an earlier one
(``caused_by``) when its rule is a known consequence of the earlier one's rule (:data:`EXPLAINS`) and it did not
start before it. Findings of the same step are ordered along the data flow (:data:`FLOW`): data, forward
numerics, loss, gradients, optimizer, schedule, so the earliest cause of a step is the one reported.

>>> from torchwitness.rules.findings import Finding, FindingSet
>>> s = FindingSet()
>>> for f in ordered([Finding.of("TW108", "loss", "diverging", step=7), Finding.of("TW201", "input:x", "NaN", step=7)]):
...     _ = s.add(f)
>>> [(f.rule_id, [c.rule_id for c in f.consequences]) for f in s]
[('TW201', ['TW108'])]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torchwitness.rules.findings import Finding

# Causal order within one step: what goes into the model, the forward, the loss, the gradients, the optimizer
# and the schedule. Rules not listed sort after these, by ID.
FLOW: tuple[str, ...] = (
    # data: values, layout, repetition, labels
    "TW211", "TW201", "TW202", "TW204", "TW203", "TW205", "TW213", "TW212", "TW214", "TW206", "TW207", "TW209",
    "TW153", "TW210", "TW407",
    # configuration that changes what the forward computes
    "TW412", "TW411", "TW401", "TW413",
    # forward numerics and representations: dead units upstream leave collapsed outputs downstream
    "TW105", "TW414", "TW404", "TW403",
    # the loss call and its value
    "TW150", "TW151", "TW152", "TW101",
    # gradients; saturation through depth shows first as vanishing gradients, then as collapsed activations
    "TW304", "TW102", "TW103", "TW110", "TW104", "TW405", "TW111",
    # optimizer, then the schedule and the loss curve
    "TW107", "TW308", "TW307", "TW108", "TW109",
)
_RANK = {rid: i for i, rid in enumerate(FLOW)}

_NUMERIC = frozenset({"TW101", "TW102", "TW103", "TW104", "TW105", "TW108", "TW109", "TW111", "TW307", "TW308",
                      "TW403", "TW404", "TW405"})
_UNITS = frozenset({"TW403", "TW404", "TW405", "TW104", "TW111", "TW109"})

# root rule -> rules whose findings it explains when they start at or after it.
EXPLAINS: dict[str, frozenset[str]] = {
    "TW201": _NUMERIC | {"TW206", "TW207"},  # non-finite inputs
    "TW202": _NUMERIC,  # non-finite targets
    "TW203": _NUMERIC,  # inputs far out of scale
    # blank or constant inputs; every row of logits is then the same one, which can drift onto a pair summing to 1
    "TW204": _UNITS | {"TW206", "TW207", "TW214", "TW414", "TW150"},
    "TW205": frozenset({"TW109", "TW213"}),
    "TW211": _NUMERIC | {"TW212"},
    # token ids piled up or folded: most rows then look up one embedding, and units downstream that it leaves
    # below zero pass nothing (the layers see a near-constant input, as with blank inputs)
    "TW212": frozenset({"TW109", "TW206", "TW207", "TW210", "TW405", "TW403", "TW404"}),
    "TW213": frozenset({"TW109"}),  # images scrambled by reshape
    "TW214": frozenset({"TW206", "TW207"}),  # the same batch every step
    # the watched model's forward never ran (a copy of it was trained): none of its layers ran or learned
    "TW412": frozenset({"TW408", "TW109", "TW110", "TW111", "TW308", "TW413"}),
    "TW207": frozenset({"TW109"}),  # batches of a few samples repeated: the loss can sit at chance for a while
    "TW206": frozenset({"TW214", "TW207"}),
    # binary targets outside [0, 1] (raw 0-255 pixels as BCE targets): their "class" counts mean nothing
    "TW153": frozenset({"TW101", "TW102", "TW103", "TW108", "TW109", "TW307", "TW210"}),
    "TW150": _UNITS,
    "TW151": frozenset({"TW101", "TW102", "TW103", "TW108", "TW109", "TW307"}),
    "TW152": frozenset({"TW109", "TW405"}),
    "TW411": _UNITS,  # filters pruned to zero
    # trained in eval mode: BatchNorm on stale statistics no longer normalises the batch, so activations and
    # updates can grow until a rate that trains the model in train mode diverges
    "TW401": _NUMERIC,
    "TW301": frozenset({"TW109", "TW308"}),  # trainable tensors no optimizer steps: the loss may not move
    # a model that learns only the label frequencies of a skewed task; with sorted data, the loss jumps where
    # each new class begins
    "TW210": frozenset({"TW109", "TW108"}),
    "TW305": frozenset({"TW109", "TW408"}),  # an unfreeze that does nothing: the frozen layers never learn
    # an output that never reaches the loss, or reaches it detached: the layers before it never learn
    "TW413": frozenset({"TW111", "TW408", "TW109"}),
    "TW110": frozenset({"TW111", "TW408", "TW109"}),
    "TW105": _NUMERIC,
    "TW101": _NUMERIC | {"TW202"},  # NaN targets seen after the loss went NaN: the loss computation made them
    "TW102": _NUMERIC,
    "TW304": _NUMERIC,  # gradients accumulated across steps
    "TW103": _NUMERIC - {"TW104"},
    "TW307": _NUMERIC,
    "TW108": _NUMERIC - {"TW104"},
    # steps that change nothing (before backward, a rate far too low or collapsed): nothing downstream trains
    "TW308": frozenset({"TW109", "TW110", "TW111", "TW408", "TW413"}),
    "TW107": frozenset({"TW308", "TW109"}),  # low-precision updates rounded away: steps change nothing
    # vanishing gradients: only the layers near the output learn, and the updates they take alone can be large
    # next to their weights (a rate the same model trains at once its gradients flow)
    "TW104": frozenset({"TW405", "TW111", "TW109", "TW307"}),
    "TW414": _UNITS | {"TW405"},  # representation collapse
    "TW403": frozenset({"TW104", "TW111", "TW109", "TW405"}),
    "TW404": frozenset({"TW104", "TW111", "TW109", "TW403", "TW405"}),
    "TW405": frozenset({"TW111", "TW109"}),
    "TW111": frozenset({"TW109"}),  # gradients zeroed (clipped to 0, multiplied by 0): the loss cannot move
    # BatchNorm over one sample: a noisy or degenerate forward, and a loss of one sample per step, whose rise
    # over a lucky first value is that noise
    "TW407": frozenset({"TW109", "TW405", "TW108"}),
    # one weight_decay argument given to Adam: the L2 term it adds also reaches biases and norms
    "TW302": frozenset({"TW303"}),

}


def explains(root_id: str, *consequences: str) -> None:
    """Declare that findings of ``root_id`` explain later findings of ``consequences`` (for third-party rules)."""
    EXPLAINS[root_id] = EXPLAINS.get(root_id, frozenset()) | frozenset(consequences)


def _when(f: Finding) -> int:
    return -1 if f.first_step is None else f.first_step  # findings at construction precede every step


def is_cause(root: Finding, other: Finding) -> bool:
    """``root`` explains ``other``: a known consequence that did not start before it."""
    if other.rule_id not in EXPLAINS.get(root.rule_id, ()):
        return False
    a, b = _when(root), _when(other)
    return a < b or (a == b and sort_key(root) < sort_key(other))


def sort_key(f: Finding) -> tuple[int, int, str]:
    """Step first (construction-time findings first), then the data-flow order, then the rule ID."""
    return (_when(f), _RANK.get(f.rule_id, len(FLOW)), f.rule_id)


def ordered(findings: Iterable[Finding]) -> list[Finding]:
    """``findings`` in causal order: add them to a set in this order so roots come before what they explain."""
    return sorted(findings, key=sort_key)
