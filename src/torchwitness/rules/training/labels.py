"""Class counts of the labels the loss is fed (TW210): a skew the loss's weights do not balance, labels that
collapse to one class mid-run, and batches that each hold a single class (data sorted by label, not shuffled)."""

from __future__ import annotations

import math
from collections.abc import Iterator

from torchwitness.probes.inrange import EMBEDDINGS
from torchwitness.probes.view import History, StepView
from torchwitness.rules.catalogue import Phase, Severity
from torchwitness.rules.findings import Finding
from torchwitness.rules.training._registry import training_rule
from torchwitness.rules.training.data import BIAS

_COLLAPSE_PER_STEP = 16  # labels an audited step needs for "all one class" to mean something


@training_rule("TW210", when=("step", "close"), name="class-imbalance", title="Severe class imbalance",
               severity=Severity.WARN, phase=Phase.BATCH, obligations=BIAS,
               remediation="Weight the loss (CrossEntropyLoss(weight=...), BCEWithLogitsLoss(pos_weight=...)), "
                           "resample (WeightedRandomSampler), and report per-class metrics, not accuracy.",
               statistical=True)
def class_imbalance(v: StepView) -> Iterator[Finding]:
    """The most frequent class outnumbers the least frequent by more than ``imbalance_ratio`` (20), as far as the
    labels seen prove it (a one-sided binomial test of the two counts at that ratio, at 20 %: a few minority labels
    do not make a ratio); a model can score high accuracy by ignoring the minority. Not reported when the loss's
    class weights (``weight=``, ``pos_weight=``) bring the weighted counts within that ratio (weights set to the
    class frequencies instead of their inverses do not), nor for next-token targets over the model's own input
    vocabulary, nor for targets the loop fills with one value by construction (``torch.ones_like(d_real)``: a GAN
    discriminator's real/fake labels).

    Example: fraud detection with 1% positives trained with plain BCE. Fix: ``pos_weight`` or resampling.

    Also reported: labels that collapse to one class mid-run, every label of at least 3 consecutive audited
    steps (16 or more per step, 64 in all) one class that held under half of the labels before (a shard whose
    label column is empty, a label map that sends everything to 0); and audited batches that each hold a single
    class, two classes or more filling batches in turn (data sorted by label, fed without shuffling).
    """
    h = v.history
    hist = h.label_hist
    if v.loss is not None and v.loss.target_constant:  # labels made by torch.ones/zeros/full (a GAN's): no data
        h.notes["TW210:constructed"] = True
    weights = h.notes.get("class_weights") if h.notes.get("class_weighted") else None
    if hist is None or h.notes.get("TW210") or h.notes.get("TW210:constructed") or \
            (h.notes.get("class_weighted") and weights is None):
        return
    collapsed = _labels_collapsed(h, hist, v.step) if v.event == "step" else None
    in_turn = _sorted_batches(h) if v.event == "step" else None
    if in_turn is not None:
        h.notes["TW210"] = True
        yield Finding.of("TW210", "target", in_turn, step=min(h.notes["TW210:one_class"][1].values()))
        return
    if collapsed is not None:
        h.notes["TW210"] = True
        cls, first, steps, n = collapsed
        # Dated just after the last audited batch of several classes: the collapse began between the two audits,
        # and what it set off in the loss (TW108's jump) is its consequence.
        since = h.notes.get("TW210:mixed", first - 1) + 1
        yield Finding.of("TW210", "target", f"from step {first} every label is class {cls} ({n} labels over {steps} "
                         f"audited steps), where batches up to step {since - 1} held several classes: the labels "
                         f"collapsed to one class mid-run, between steps {since} and {first}", step=since,
                         details={"class": cls, "steps": steps})
        return
    counts = hist[:-1]
    # Next-token prediction over the input vocabulary: token frequencies are skewed by nature (Zipf's law).
    tables = h.notes.get("embedding_sizes")
    if tables is None:  # the module tree is walked once per watch, not at every audit
        tables = h.notes["embedding_sizes"] = {m.num_embeddings for m in v.watch._inner.modules()
                                               if isinstance(m, EMBEDDINGS)}
    if len(counts) in tables:
        return
    total = sum(counts)
    if total < max(v.threshold("imbalance_min_labels"), 20 * len(counts)) or len(counts) < 2:
        return
    present = [c for c in counts if c > 0]
    ratio = math.inf if len(present) < 2 else max(present) / min(present)
    if len(present) < 2 and len(counts) > 2:  # a wide head and one class only: the head may be over-sized
        return
    # Judged on what the labels seen prove, not on the ratio they show: one minority label in 64 shows 57:1 of
    # a 17:1 split. One-sided binomial test of the smallest class against the largest, at the bar's ratio.
    least = min(present) if len(present) > 1 else 0.0
    seen = h.notes.get("TW210:one_class")
    newest = h.notes.get("TW210:class_first", {}).get(counts.index(least))
    if seen is not None and seen[0] >= 4 and seen[0] >= seen[2] and newest == v.step:
        return  # mostly one-class batches, the least class first seen now: sorted data's next class may just begin
    if _at_most(int(least), int(max(counts) + least), 1 / (v.threshold("imbalance_ratio") + 1)) < IMBALANCE_ALPHA:
        share = min(present) / total if len(present) > 1 else 0.0
        why = f"class imbalance {ratio:.3g}:1 over {int(total)} labels (smallest class {share:.1%})"
        if weights is not None:  # weighted: only when the weights leave the classes as far apart
            left = _weighted_ratio(counts, *weights)
            if left is None or left <= v.threshold("imbalance_ratio"):
                return
            why += f"; the loss's class weights leave it at {left:.3g}:1 (weights that favour the frequent class?)"
        h.notes["TW210"] = True
        yield Finding.of("TW210", "target", why, step=v.step, details={"counts": counts})


def _weighted_ratio(counts: list[float], kind: str, weights: list[float]) -> float | None:
    """The largest over the smallest class count once each is multiplied by its loss weight (``pos_weight``
    multiplies the positives of a binary target); None when the weights do not map onto the classes."""
    if kind == "class" and len(weights) == len(counts):
        weighted = [c * w for c, w in zip(counts, weights, strict=True)]
    elif kind == "pos" and len(weights) == 1 and len(counts) == 2:
        weighted = [counts[0], counts[1] * weights[0]]
    else:
        return None
    present = [x for c, x in zip(counts, weighted, strict=True) if c > 0]
    if len(present) < 2 or min(present) <= 0:
        return None
    return max(present) / min(present)


IMBALANCE_ALPHA = 0.2


def _at_most(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p): summed in log space over small counts (scipy is not a dependency of
    the core), by the normal approximation (with continuity correction) once the mean is over 200.

    >>> round(_at_most(1, 58, 1 / 21), 2), round(_at_most(0, 2, 0.5), 2)
    (0.23, 0.25)
    """
    mean = n * p
    if k >= mean or not 0 < p < 1:  # at or above the expected count (or no share to test): no evidence
        return 1.0
    if mean > 200:
        return 0.5 * math.erfc((mean - k - 0.5) / math.sqrt(2 * mean * (1 - p)))
    return sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p)
                        + (n - i) * math.log1p(-p)) for i in range(k + 1))


def _labels_collapsed(h: History, hist: list[float], now: int) -> tuple[int, int, int, int] | None:
    """``(class, first step, audited steps, labels)`` of a streak of audited steps whose labels are all one
    class that held under half of the labels before the streak (3 steps and 64 labels or more), else None."""
    prev, streak = h.notes.get("TW210:prev"), h.notes.get("TW210:streak")
    h.notes["TW210:prev"] = list(hist)
    if prev is not None and len(prev) != len(hist):
        return None
    step = [a - b for a, b in zip(hist[:-1], prev[:-1], strict=True)] if prev is not None else list(hist[:-1])
    n = sum(step)
    present = [i for i, c in enumerate(step) if c > 0]
    _note_batch_classes(h, present, n, now)
    if prev is None:
        return None
    if n >= _COLLAPSE_PER_STEP and len(present) == 1 and len(step) >= 2:
        cls = present[0]
        if streak is None or streak[0] != cls:
            before = sum(prev[:-1])
            share = prev[cls] / before if before else 1.0
            streak = [cls, now, 0, 0, share]
        streak[2] += 1
        streak[3] += int(n)
    elif n > 0:
        streak = None
        if len(present) > 1:
            h.notes["TW210:mixed"] = now  # the last audited batch of several classes: the collapse came after it
    h.notes["TW210:streak"] = streak
    if streak is not None and streak[2] >= 3 and streak[3] >= 4 * _COLLAPSE_PER_STEP and streak[4] < 0.5:
        return streak[0], streak[1], streak[2], streak[3]
    return None


def _note_batch_classes(h: History, present: list[int], n: float, now: int) -> None:
    """Count, in ``TW210:one_class`` (``[one-class batches, {class: first step}, mixed batches]``), the audited
    batches of 16 labels or more that held one class, and those that held several; keep the audited step each
    class was first seen at (``TW210:class_first``)."""
    first = h.notes.setdefault("TW210:class_first", {})
    for c in present:
        first.setdefault(c, now)
    if n < _COLLAPSE_PER_STEP:
        return
    seen = h.notes.setdefault("TW210:one_class", [0, {}, 0])
    if len(present) == 1:
        seen[0] += 1
        seen[1].setdefault(present[0], now)
    else:
        seen[2] += 1


def _sorted_batches(h: History) -> str | None:
    """What a finding says when audited batches held one class each (4 or more, and no fewer than the mixed ones,
    where sorted classes meet), and 2 classes or more filled batches in turn: data sorted by label and fed
    unshuffled, each batch teaching one class. (A rare class leaves many batches with only the common one, but
    never fills one itself.)"""
    seen = h.notes.get("TW210:one_class")
    if seen is None or seen[0] < 4 or len(seen[1]) < 2 or seen[2] > seen[0]:
        return None
    turns = ", ".join(f"class {c} from step {s}" for c, s in sorted(seen[1].items(), key=lambda kv: kv[1])[:4])
    return f"{seen[0]} of {seen[0] + seen[2]} audited batches held a single class, the classes in turn ({turns}): " \
        "the data is sorted by label and not shuffled"
