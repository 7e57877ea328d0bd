"""TW2xx: what goes into the model: inputs, targets, batches, splits."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from torchwitness.probes.inrange import loader_batch_sizes
from torchwitness.probes.view import StepView
from torchwitness.rules.catalogue import Phase, Severity
from torchwitness.rules.findings import Finding
from torchwitness.rules.training._registry import training_rule

DATA = ("EU-AI-Act:Art.10(2)(f)", "EU-AI-Act:Art.15")
BIAS = ("EU-AI-Act:Art.10(2)(f)", "EU-AI-Act:Art.10(2)(g)")
_MASK52 = (1 << 52) - 1
# Layers that standardise what they are given: raw units fed straight into one are normalised by the model.
_NORMS = (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.RMSNorm)


@training_rule("TW201", when="step", name="nonfinite-input", title="Inputs contain NaN or Inf",
               severity=Severity.ERROR, phase=Phase.BATCH, obligations=DATA,
               remediation="Clean or impute the data before batching (e.g. torch.nan_to_num, drop rows), and assert "
                           "torch.isfinite(x).all() once per dataset, not per step.")
def nonfinite_input(v: StepView) -> Iterator[Finding]:
    """A floating input tensor holds NaN or Inf; everything downstream (loss, gradients, weights) is poisoned.

    Example: a CSV with missing values read with pandas and turned into a tensor. Fix: impute or drop them.

    An additive attention mask handed to the model after its first input (0 and -inf, or 0 and a huge negative)
    holds its -inf by design and is not reported; nor are missing values that the model handles itself (its
    forward imputes them: ``torch.nan_to_num`` and a missing indicator) when nothing downstream is non-finite:
    every layer output, the loss and every gradient of the step finite (between audits: every loss, and the
    sentinels on the prediction and the first layer's gradient).
    """
    handled = _handled_in_model(v)
    for i, t in enumerate(v.inputs):
        if t.nonfinite and not (i and t.additive_mask) and not handled:
            v.history.notes.setdefault("TW201:first", v.step)
            yield Finding.of("TW201", f"input:{t.name}", f"input {t.name} contains NaN/Inf", step=v.step)
    seen = v.extra.get("sentinel", {})
    for field, first in sorted(seen.items()):  # between audits, the always-on sentinel
        if field != "input" and not field.startswith("input:"):  # ("input:NAME": an input after the first)
            continue
        if _handled_between(v, first):
            continue
        v.history.notes["TW201:first"] = min(first, v.history.notes.get("TW201:first", first))
        name = field[6:] or v.extra.get("sentinel_input") or (v.primary.name if v.primary is not None else "arg0")
        yield Finding.of("TW201", f"input:{name}", f"input {name} contains NaN/Inf, first at step {first} (between "
                         "audited steps)", step=first)


def _handled_in_model(v: StepView) -> bool:
    """Nothing the step computed from its inputs is non-finite: layer outputs (at least one measured), the loss
    (its value, known, and what it was fed) and every gradient. A non-finite input the model passed on into its
    first layer would show in all of them."""
    outs = [m.out for m in v.modules.values() if m.out is not None and m.out.stats is not None]
    lo = v.loss
    values = [x for s, x in v.history.losses.recent(1) if s == v.step]
    if lo is not None and lo.value is not None:
        values.append(lo.value)
    return bool(outs) and bool(values) and all(map(math.isfinite, values)) and not any(o.nonfinite for o in outs) \
        and (lo is None or lo.input is None or not lo.input.nonfinite) \
        and all(math.isfinite(p.grad_norm) for p in v.params if p.has_grad)


def _handled_between(v: StepView, first: int) -> bool:
    """Between audits: the sentinels on the prediction and on the first trainable tensor's gradient watched step
    ``first`` and stayed finite, and so did every loss logged since."""
    seen, where = v.extra.get("sentinel", {}), v.extra.get("sentinel_where", ())
    log = v.history.losses
    return "pred" not in seen and "grad" not in seen and any(f in ("pred", "grad") and s == first for f, s in where) \
        and all(math.isfinite(x) for s, x in log.recent(min(len(log) - log.start, v.step - first + 2)) if s >= first)


@training_rule("TW202", when="step", name="nonfinite-target", title="Targets contain NaN or Inf",
               severity=Severity.ERROR, phase=Phase.BATCH, obligations=DATA,
               remediation="Drop or fix the rows with missing labels before training.")
def nonfinite_target(v: StepView) -> Iterator[Finding]:
    """A floating target tensor holds NaN or Inf. Fix: drop unlabelled rows.

    Not reported when the target handed to the loss was computed after the forward (``log1p(y)``), or when the
    prediction handed to the loss is non-finite too while the model's own output is finite: the loss
    computation made the NaN (``log1p`` of a value below -1, say), which TW101 reports.
    """
    lo, out = v.loss, v.modules.get("model")
    if lo is not None and lo.target_computed:  # log1p(y) of a y < -1: made by the loss computation (TW101)
        return
    if lo is not None and lo.input is not None and lo.input.nonfinite and out is not None and out.out is not None \
            and out.out.stats is not None and not out.out.nonfinite:
        return
    if v.targets is not None and v.targets.nonfinite:
        v.history.notes.setdefault("TW202:first", v.step)
        yield Finding.of("TW202", "target", "targets contain NaN/Inf", step=v.step)
    seen = v.extra.get("sentinel", {})
    first, pred = seen.get("target"), seen.get("pred")
    if first is not None and (pred is None or pred > first):  # between audits, from the always-on sentinel
        v.history.notes.setdefault("TW202:first", first)
        yield Finding.of("TW202", "target", f"targets contain NaN/Inf, first at step {first} (between audited "
                         "steps)", step=first)


@training_rule("TW203", when="step", name="input-scale", title="Inputs are not normalised",
               severity=Severity.WARN, phase=Phase.BATCH, obligations=DATA,
               remediation="Standardise features (subtract the mean, divide by the std of the training set) or "
                           "scale images to [0, 1] (divide uint8 pixels by 255).", statistical=True)
def input_scale(v: StepView) -> Iterator[Finding]:
    """A floating input has values beyond ``input_abs_max`` (100): raw pixels (0-255) or raw units (income in
    dollars) slow training and can make it diverge. Or, not constant, it never reaches ``input_abs_min`` (0.01):
    scaled down twice (pixels divided by 255 again), its signal hardly moves the first layer.

    Not reported when the forward's first layer is a normalisation layer (a BatchNorm1d in front of raw
    features), or when the first layer with weights is given, for the same batch, a tensor the forward computed
    (not the input itself) whose values are in range (``(img / 255 - mean) / std`` in the forward): the model
    scales its input itself.

    Example: ``x = torch.tensor(images, dtype=torch.float32)`` from uint8 images. Fix: ``x / 255``.
    """
    # Modules are in the order their forwards ended: the first leaf is the first layer the input met.
    first = next((m.module for m in v.modules.values() if not any(True for _ in m.module.children())), None)
    if isinstance(first, _NORMS):
        return
    notes = v.history.notes
    clean = notes.get("TW203:clean", -1)
    notes["TW203:clean"] = v.step
    got = v.extra.get("first_in")  # what the first layer with weights was given, when it is no input itself
    scaled = max(abs(got.stats["min"]), abs(got.stats["max"])) if got is not None and got.stats is not None \
        and not got.nonfinite else None
    for i, t in enumerate(v.inputs):
        s = t.stats
        if not t.floating or s is None or t.nonfinite or (i and t.additive_mask):
            continue
        peak = max(abs(s["min"]), abs(s["max"]))
        if scaled is not None and got.shape[:1] == t.shape[:1] and \
                v.threshold("input_abs_min") <= scaled <= v.threshold("input_abs_max"):
            continue
        if peak > v.threshold("input_abs_max"):
            notes["TW203:clean"] = clean
            moments = f" (mean {s['mean']:.3g}, std {s['std']:.3g})" if "std" in s else ""
            # Seen at a sampled audit; the loss's one-step jump since the last audit that saw the inputs in range
            # (TW108) is when such a batch first came: the finding starts there and explains that jump.
            jump = notes.get("TW108:jump")
            since = f", first at step {jump}, where the loss jumped" if jump is not None and clean < jump < v.step \
                else ""
            yield Finding.of("TW203", f"input:{t.name}", f"input {t.name} reaches |x| = {peak:.4g}{moments}{since}",
                             step=jump if since else v.step)
        elif 0 < peak < v.threshold("input_abs_min") and s["min"] < s["max"]:  # a constant one is TW204's
            notes["TW203:clean"] = clean
            yield Finding.of("TW203", f"input:{t.name}", f"input {t.name} peaks at |x| = {peak:.3g}: far below unit "
                             "scale, as if scaled twice (pixels divided by 255 again)", step=v.step)


@training_rule("TW204", when="step", name="flat-input", title="Input is constant across the batch",
               severity=Severity.WARN, phase=Phase.BATCH, obligations=DATA,
               remediation="Check the data pipeline: a constant input usually means a wrong column, a tensor of "
                           "zeros left from preallocation, or a normalisation that divided by a huge number.",
               statistical=True)
def flat_input(v: StepView) -> Iterator[Finding]:
    """Every value of a floating input is the same, every sample of it is constant within itself (blank images
    of varying brightness), or every sample of a batch (of 8 or more; floating or token ids) is the same; the
    model cannot learn from it. Dead units, dead filters and duplicate
    samples that follow are reported as its consequences.

    An input after the first that is constant within each batch but takes another value at a later audited
    step (a per-batch conditioning scalar: a loss weight, a noise level, a task id broadcast over the rows) is
    not reported; such an input is judged once a second audited step has seen it, and reported only if it held
    the same value there.

    Example: ``x = torch.zeros(batch, 10)`` left unfilled. Fix: fill the batch from the data.
    """
    levels = v.history.notes.setdefault("TW204:levels", {})  # input name -> its constant value, or None: varied
    for i, t in enumerate(v.inputs):
        s = t.stats
        if t.floating and s is not None and t.numel > 1 and not t.nonfinite and s["max"] - s["min"] <= v.threshold(
                "flat_std"):
            if i:  # judged on its second sighting: constant across steps too, or a per-batch level
                seen = t.name in levels
                levels[t.name] = s["min"] if not seen or levels[t.name] == s["min"] else None
                if not seen or levels[t.name] is None:
                    continue
            yield Finding.of("TW204", f"input:{t.name}", f"input {t.name} is constant ({s['min']:.3g})", step=v.step)
            return
    blank = v.extra.get("data", {}).get("in/rowrange")
    t = v.primary
    if blank is not None and t is not None and not t.nonfinite and blank[0] <= v.threshold("flat_std"):
        yield Finding.of("TW204", f"input:{t.name}", f"every sample of input {t.name} is blank (constant within "
                         "itself; the samples differ only in their level)", step=v.step)
        return
    rows = v.row_fps
    # Every sample of a batch the very same (a mean broadcast over the rows, one row repeated; token ids that
    # are all padding after a truncation from the wrong end): constant per feature across the batch, so nothing
    # tells the samples apart.
    if rows is not None and t is not None and not t.nonfinite and len(rows) >= 8 \
            and len(set(rows)) == 1 and t.numel // max(t.shape[0], 1) >= 2:
        yield Finding.of("TW204", f"input:{t.name}", f"all {len(rows)} samples of input {t.name} are identical: "
                         "each feature is constant across the batch", step=v.step)


@training_rule("TW205", when="step", name="input-layout", title="Image batch looks channels-last (NHWC)",
               severity=Severity.WARN, phase=Phase.BATCH, obligations=DATA,
               remediation="Convert images with x.permute(0, 3, 1, 2) (not .view/.reshape) before a Conv2d model.",
               statistical=True)
def input_layout(v: StepView) -> Iterator[Finding]:
    """A 4-D float input has a last dimension of 1, 3 or 4 and large dimensions before it, and the model has a
    ``Conv2d`` whose input channels equal its second dimension: it looks like NHWC images fed to a model whose
    convolutions expect NCHW (a model that permutes the batch itself has no such convolution).

    Example: numpy images ``(N, 32, 32, 3)`` reshaped with ``.view(N, 3, 32, 32)``. Fix: ``permute(0, 3, 1, 2)``.
    """
    t = v.primary
    if t is None or len(t.shape) != 4 or not t.floating:
        return
    _, c, h, w = t.shape
    # Only a 2-D convolution taking c channels can run on the batch as it is; a model without one permutes it
    # itself (x.permute(0, 3, 1, 2) in forward) or flattens it.
    takes = any(isinstance(m, torch.nn.Conv2d) and m.in_channels == c for m in v.watch._inner.modules())
    if takes and w in (1, 3, 4) and c not in (1, 3, 4) and c >= 8 and h >= 8:
        yield Finding.of("TW205", f"input:{t.name}", f"input shape {list(t.shape)} looks like NHWC", step=v.step)


@training_rule("TW206", when="step", name="duplicate-batch",
               title="The same batch again (a loader restarted every step)",
               severity=Severity.WARN, phase=Phase.BATCH, obligations=DATA,
               remediation="Create the iterator once per epoch (for x, y in loader) instead of calling "
                           "next(iter(loader)) every step, and check the sampler.")
def duplicate_batch(v: StepView) -> Iterator[Finding]:
    """The batch of a step has exactly the same samples as the batch of the step just before it, in new memory:
    the loader is restarted every step, or a sampler repeats itself. Judged on consecutive steps only (an audited
    step and the next one, whose batch is fingerprinted in passing when it is not audited), so unshuffled epochs
    (which repeat a batch one epoch later) and full-batch training (on one tensor, a copy of it per step, or a
    DataLoader whose one batch is its whole dataset: more than 256 rows and no loader with that batch size) are
    not reported.

    Example: ``x, y = next(iter(loader))`` inside the loop. Fix: iterate the loader.
    """
    history = v.history.batch_fps
    peeked = v.extra.get("data", {}).get("peek/rows")
    if peeked is not None and history and len(peeked) >= 2:  # the step after the last audited one
        step, ptr, name = v.extra["peek"]
        fp = sum(map(int, peeked)) & _MASK52
        yield from _repeated_batch(v, step, fp, ptr, len(peeked), f"input:{name}")
        history[:] = [(step, fp, ptr)]
    rows = v.row_fps
    t = v.primary
    if rows is None or t is None or len(rows) < 2:
        return
    fp = sum(rows) & _MASK52
    yield from _repeated_batch(v, v.step, fp, t.data_ptr, t.shape[0], f"input:{t.name}")
    history[:] = [(v.step, fp, t.data_ptr)]


def _repeated_batch(v: StepView, step: int, fp: int, ptr: int, rows: int, location: str) -> Iterator[Finding]:
    history = v.history.batch_fps
    if history:
        before, old_fp, old_ptr = history[-1]
        if before == step - 1 and old_fp == fp and old_ptr != ptr and _batch_sized(v, rows):
            yield Finding.of("TW206", location, f"batch at step {step} repeats the batch of step {before}",
                             step=step)


def _batch_sized(v: StepView, rows: int) -> bool:
    """Whether a tensor fed again is a batch rather than the whole data set (full-batch training, where a copy per
    step, `X.float()` or a loader whose one batch is its whole dataset, is expected): no DataLoader in the
    caller's frames has a dataset of exactly these rows, and either a loader has this batch size over more data
    or the tensor is of a batch's size (at most 256 rows)."""
    loaders = v.history.notes.get("loaders")
    if loaders is None:  # looked up once per run, only once a batch has repeated
        loaders = v.history.notes["loaders"] = loader_batch_sizes()
    if any(n == rows for _, n in loaders):
        return False
    return rows <= 256 or any(b == rows and n > b for b, n in loaders)


@training_rule("TW207", when="step", name="duplicate-samples", title="Many samples repeat within a batch",
               severity=Severity.WARN, phase=Phase.BATCH, obligations=DATA,
               remediation="De-duplicate the dataset, and check oversampling and augmentation code.")
def duplicate_samples(v: StepView) -> Iterator[Finding]:
    """More than ``duplicate_rows_fraction`` (25%) of a floating batch's samples are exact copies of another
    sample of the same batch.

    Example: a dataset concatenated with itself, or an index list built with repeats. Fix: de-duplicate.
    """
    rows = v.row_fps
    t = v.primary
    # Fewer than 8 values per sample (low-cardinality tabular rows) can repeat legitimately.
    if rows is None or t is None or not t.floating or len(rows) < 8 or t.numel // max(t.shape[0], 1) < 8:
        return
    dup = 1 - len(set(rows)) / len(rows)
    if dup > v.threshold("duplicate_rows_fraction"):
        yield Finding.of("TW207", f"input:{t.name}", f"{dup:.0%} of the batch at step {v.step} are duplicates",
                         step=v.step)


@training_rule("TW208", when=("step", "close"), name="train-eval-overlap",
               title="Evaluation data overlaps training data",
               severity=Severity.WARN, phase=Phase.EVAL, obligations=DATA,
               remediation="Split the data once, by a stable key (and by group: user, patient, document), before "
                           "any shuffling or augmentation; never evaluate on training samples.", statistical=True)
def train_eval_overlap(v: StepView) -> Iterator[Finding]:
    """Samples of the training batches are found, bit for bit, in the batches given to the model under
    ``torch.no_grad()`` (evaluation): the evaluation overstates accuracy. Not reported for training metrics
    beside a held-out evaluation: when the training set was evaluated whole (90 % or more of the audited
    training samples appear) and some evaluation forward of 8 rows or more holds none of them; nor for the very
    batch tensor just trained on, measured again (a training-accuracy metric), which is not evaluation data.

    Example: ``val = data[:200]`` while training on ``data``. Fix: disjoint splits.
    """
    h = v.history  # the watch keeps the sample of training rows (History.train_rows)
    if not h.train_rows or not h.eval_rows or h.notes.get("TW208"):
        return
    shared = h.train_rows.overlap(h.eval_rows)
    frac = shared / len(h.train_rows)
    if frac >= 0.9 and any(len(g) >= 8 and not h.train_rows.overlap(g) for g in h.eval_groups):
        return
    if shared >= 3 and frac > v.threshold("overlap_fraction"):
        h.notes["TW208"] = True
        yield Finding.of("TW208", "data", f"{frac:.0%} of audited training samples also appear in evaluation",
                         step=v.step, details={"shared": shared})


def _correlations(v: StepView) -> np.ndarray | None:
    h = v.history
    if h.moments is None or h.moment_shape is None:
        return None
    f, c, _ = h.moment_shape
    m = h.moments
    n = m[0]
    if n < v.threshold("leak_min_rows"):
        return None
    sx, sxx = m[1:1 + f], m[1 + f:1 + 2 * f]
    sy, syy = m[1 + 2 * f:1 + 2 * f + c], m[1 + 2 * f + c:1 + 2 * f + 2 * c]
    sxy = m[1 + 2 * f + 2 * c:].reshape(f, c)
    cov = sxy / n - np.outer(sx / n, sy / n)
    # A variance at the rounding level of the second moment is a constant column: its "correlation" is noise.
    vx = np.maximum(sxx / n - (sx / n) ** 2, 0)
    vx[vx <= 1e-9 * np.maximum(sxx / n, 1e-30)] = 0
    vy = np.maximum(syy / n - (sy / n) ** 2, 0)
    vy[vy <= 1e-9 * np.maximum(syy / n, 1e-30)] = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / np.sqrt(np.outer(vx, vy))
        if h.moment_shape[2] == "classes" and c >= 3:
            # The class index itself (a label column left in as 0, 1, 2, ...), from the one-hot sums: each
            # one-hot column squares to itself, so index moments are weighted sums of the class counts.
            k = np.arange(c, dtype=np.float64)
            mi, vi = (k @ sy) / n, max((k * k) @ sy / n - ((k @ sy) / n) ** 2, 0.0)
            cov_i = (sxy @ k) / n - (sx / n) * mi
            corr = np.concatenate([corr, (cov_i / np.sqrt(vx * vi))[:, None]], 1)
    return np.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)  # a constant column correlates with nothing


@training_rule("TW209", when=("step", "close"), name="label-leak", title="A feature equals the label",
               severity=Severity.ERROR, phase=Phase.BATCH, obligations=DATA,
               remediation="Drop the column from the features: it is the target (or a copy, or an encoding of "
                           "it) and will not exist at prediction time.", statistical=True)
def label_leak(v: StepView) -> Iterator[Finding]:
    """An input column correlates with a class label (one class's indicator, or the class index 0, 1, 2, ...)
    at ``leak_corr`` (0.995) or more over the audited batches: the label (or an encoding of it) is among the
    features. For a regression target (one float per
    row) the bar is ``leak_corr_regression`` (0.9999): a strong predictor can correlate at 0.995, a copy of the
    target (or a rescaled one) does not stop short of 1.

    Example: ``X = df.drop(columns=["id"])`` keeps the ``target`` column. Fix: drop the target from X.

    Also reported: class targets equal, position by position, to the ids the model's first embedding table was
    fed (at ``leak_corr`` of the positions or more): a causal LM whose labels were not shifted (``labels =
    input_ids`` given to a forward that does not shift them) is trained to copy its input.
    """
    notes = v.history.notes
    if notes.get("TW209"):
        return
    ahead, attention = v.extra.get("data", {}).get("next"), v.extra.get("unmasked_attention")
    if v.event == "step" and ahead and ahead[0] >= 0.9 and attention is not None:
        notes["TW209"] = True
        yield Finding.of("TW209", attention, f"{ahead[0]:.0%} of the targets are the next input ids, and attention "
                         f"'{attention}' ran with no mask: every position sees the token it is trained to predict "
                         "(a causal LM without its causal mask)", step=v.step, details={"next": ahead[0]})
        return
    copy = v.extra.get("data", {}).get("copy") if v.event == "step" else None
    if copy and copy[0] >= v.threshold("leak_corr"):
        notes["TW209"] = True
        yield Finding.of("TW209", "target", f"{copy[0]:.1%} of the class targets equal the model's input ids at "
                         "the same positions: labels not shifted for next-token prediction, so each position is "
                         "trained to copy its own input", step=v.step, details={"copy": copy[0]})
        return
    if v.event == "step" and "moments" not in v.extra.get("data", {}):
        return
    # A copied label correlates at ~1 from the first rows on: judged when the rows seen have doubled since the
    # last look (and at close), not at every audit (the numpy work cost ~0.2 ms an audit).
    rows = float(v.history.moments[0]) if v.history.moments is not None else 0.0
    if v.event == "step" and rows < 2 * notes.get("TW209_rows", 0.0):
        return
    corr = _correlations(v)
    if corr is not None:
        notes["TW209_rows"] = rows
    if corr is None:
        return
    col, cls = np.unravel_index(np.argmax(np.abs(corr)), corr.shape)
    r = float(corr[col, cls])
    regression = v.history.moment_shape[2] == "regression"
    if abs(r) >= v.threshold("leak_corr_regression" if regression else "leak_corr"):
        v.history.notes["TW209"] = True
        what = "the regression target" if regression else "the label"
        yield Finding.of("TW209", f"input:feature[{col}]", f"feature {col} has correlation {r:.5g} with {what}",
                         step=v.step, details={"feature": int(col), "corr": r})


@training_rule("TW211", when="step", name="invalid-token-ids", title="Token ids outside the embedding table",
               severity=Severity.ERROR, phase=Phase.BATCH, obligations=DATA,
               remediation="Make the embedding's num_embeddings equal to the tokenizer's vocabulary size "
                           "(len(tokenizer)), after adding special tokens; check padding ids are >= 0.")
def invalid_token_ids(v: StepView) -> Iterator[Finding]:
    """Indices fed to an ``nn.Embedding`` are negative or >= ``num_embeddings`` (IndexError on CPU, a device
    assert on GPU, silent garbage in some kernels).

    Example: a tokenizer with 30,522 ids and ``nn.Embedding(30000, d)``. Fix: size the table from the tokenizer.
    """
    data = v.extra.get("data", {})
    for key, limit in v.extra.items():
        if not key.startswith("ids/") or key.endswith("/limit") or key not in data:
            continue
        lo, hi = (int(x) for x in data[key])
        if lo < 0 or hi >= limit:
            name = key[4:]
            yield Finding.of("TW211", name, f"token ids in [{lo}, {hi}] but {name} has {limit} rows", step=v.step)
