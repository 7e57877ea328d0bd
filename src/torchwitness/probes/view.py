"""What training rules read: host-side views of one audited step, and the history kept across steps.

Everything here is plain Python and numpy, filled from the single batched transfer of an audited step.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from torchwitness.probes.stats import ACTIVATION_FIELDS, VALUE_FIELDS, std_from_norm

if TYPE_CHECKING:
    from torchwitness.probes.watch import Watch

Event = Literal["init", "step", "eval", "close"]
_DEVICE_NAMES: dict[torch.device, str] = {}  # str(device) costs a microsecond, and it is asked per tensor


@dataclass
class TensorInfo:
    """Shape, dtype and (once fetched) value statistics of one tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: str
    data_ptr: int = 0
    stats: dict[str, float] | None = None

    @classmethod
    def of(cls, name: str, t: torch.Tensor) -> TensorInfo:
        device = _DEVICE_NAMES.get(t.device)
        if device is None:
            device = _DEVICE_NAMES[t.device] = str(t.device)
        return cls(name=name, shape=tuple(t.shape), dtype=t.dtype, device=device,
                   data_ptr=t.data_ptr() if t.numel() else 0)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def floating(self) -> bool:
        return self.dtype.is_floating_point

    def fill(self, values: list[float] | None) -> None:
        if values is not None:
            names = VALUE_FIELDS if self.floating else VALUE_FIELDS[:2]
            self.stats = dict(zip(names, values, strict=False))
            if "std" in self.stats:  # the device sent the L2 norm
                self.stats["std"] = std_from_norm(self.stats["mean"], self.stats["std"], self.numel)

    @property
    def nonfinite(self) -> bool:
        s = self.stats
        return s is not None and not all(math.isfinite(s[k]) for k in ("min", "max", "mean", "max_abs") if k in s)

    @property
    def has_nan(self) -> bool:
        """Some element is NaN (an infinity alone leaves min/max/mean, or a norm, infinite, not NaN)."""
        s = self.stats
        return s is not None and any(math.isnan(s[k]) for k in ("min", "max", "mean", "max_abs") if k in s)

    @property
    def additive_mask(self) -> bool:
        """Values of an additive attention mask: 0 where attended, -inf or a huge negative elsewhere (no NaN).
        Its -inf is by design; only an input other than the model's first is taken for one."""
        s = self.stats
        return self.floating and s is not None and s.get("max") == 0.0 and s.get("min", math.nan) <= -1e4


@dataclass
class ModuleInfo:
    """One module's behaviour in the first training forward of an audited step."""

    name: str
    kind: str
    module: torch.nn.Module
    training: bool
    grad_enabled: bool
    max_calls: int = 1
    input_dtype: torch.dtype | None = None
    producer: str | None = None  # the module whose output was this module's input, when it was one
    out: TensorInfo | None = None
    units: dict[str, float] | None = None
    n_units: int = 0
    batch: int = 0
    channels_first: bool = False  # a 3-D output laid out (B, C, L): a 1-D convolution's, or passed on from one

    def fill(self, peak: float, units: Sequence[float] | None) -> None:
        """Take the peak ``|x|`` and, for batched outputs, ``[dead, spread, magnitude]`` from the transfer."""
        if self.out is not None:
            self.out.stats = {"max_abs": peak}
        if units is not None:
            self.units = dict(zip(ACTIVATION_FIELDS[1:], units, strict=True))


@dataclass
class ParamInfo:
    """One trainable parameter at an audited optimizer step."""

    name: str
    module: str
    param: torch.nn.Parameter
    shape: tuple[int, ...]
    dtype: torch.dtype
    has_grad: bool = False
    grad_norm: float = float("nan")
    weight_norm: float = float("nan")
    update_ratio: float | None = None  # |update| / |weight| at the step, estimated on the tensor's first elements
    update_norm: float | None = None
    unchanged_frac: float | None = None  # low-precision params: share of elements a non-zero grad left unchanged
    group: int | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class LossInfo:
    """The loss module's call in an audited step: what it was fed and what it returned."""

    kind: str
    module: torch.nn.Module | None
    input: TensorInfo | None
    target: TensorInfo | None
    weighted: bool = False  # class weights (weight=, pos_weight=) given
    class_weights: tuple[str, list[float]] | None = None  # ("class" | "pos" | "element", the values), when read
    value: float | None = None
    row_sums: tuple[float, float] | None = None  # min and max of the input's row sums over the class axis
    producer: str | None = None  # the autograd op that made the input, looking through views and casts
    target_computed: bool = False  # the target was computed after the forward (log1p(y)), not the data's own
    target_constant: bool = False  # ... filled with one value by construction (torch.ones_like: a GAN's labels)
    target_grad: bool = False  # the target carries gradients (another output of the model)


class LossLog:
    """The run's ``(step, loss)`` pairs, indexed from 0 across the whole run, holding the first pair and at most
    the ``keep`` most recent ones (a million-step run would otherwise hold a million tuples).

    >>> log = LossLog(keep=3)
    >>> log.extend((s, 1.0 / (s + 1)) for s in range(10))
    >>> len(log), log.first, log.start, log[9]
    (10, (0, 1.0), 7, (9, 0.1))
    >>> [s for s, _ in log.held()]
    [7, 8, 9]
    """

    __slots__ = ("_items", "first", "keep", "start")

    def __init__(self, keep: int = 50_000) -> None:
        self.keep = keep
        self.first: tuple[int, float] | None = None
        self.start = 0  # run-wide index of the oldest pair still held
        self._items: list[tuple[int, float]] = []

    def extend(self, pairs: Iterable[tuple[int, float]]) -> None:
        self._items.extend(pairs)
        if self.first is None and self._items:
            self.first = self._items[0]
        if len(self._items) > 2 * self.keep:  # trimmed in chunks, so appends stay amortised O(1)
            drop = len(self._items) - self.keep
            del self._items[:drop]
            self.start += drop

    def __len__(self) -> int:
        return self.start + len(self._items)

    def __getitem__(self, i: int) -> tuple[int, float]:
        """The pair at run-wide index ``i`` (``i >= start``)."""
        if i < self.start:
            raise IndexError(f"loss {i} is no longer held (oldest held: {self.start})")
        return self._items[i - self.start]

    def recent(self, n: int) -> list[tuple[int, float]]:
        """The last ``n`` pairs still held."""
        return self._items[-n:] if n > 0 else []

    def held(self) -> list[tuple[int, float]]:
        """Every pair still held, oldest first."""
        return list(self._items)


class RowSample:
    """A bounded, hash-consistent sample of row fingerprints (the training rows an audit has seen).

    Every-step auditing of a long run would otherwise keep one fingerprint per training sample ever seen. Past
    ``cap`` fingerprints, only those whose low ``shift`` bits are zero are kept (``shift`` grows as needed), and
    an overlap is measured against the other set filtered the same way, so the overlap fraction stays an
    unbiased estimate. Fingerprints are already uniform hashes, so their low bits make a fair coin.

    >>> s = RowSample(cap=4)
    >>> s.update(range(16)); len(s) <= 4, s.shift
    (True, 2)
    """

    __slots__ = ("cap", "rows", "shift")

    def __init__(self, cap: int = 200_000) -> None:
        self.cap = cap
        self.rows: set[int] = set()
        self.shift = 0

    @property
    def _mask(self) -> int:
        return (1 << self.shift) - 1

    def update(self, fps: Iterable[int]) -> None:
        mask = self._mask
        self.rows.update(fps if not mask else (fp for fp in fps if fp & mask == 0))
        while len(self.rows) > self.cap:
            self.shift += 1
            mask = self._mask
            self.rows = {fp for fp in self.rows if fp & mask == 0}

    def overlap(self, other: set[int]) -> int:
        """How many of the sampled rows are in ``other`` (``other`` filtered by the same rule)."""
        mask = self._mask
        if not mask:
            return len(self.rows & other)  # in C: both sets hold up to ~10**5 fingerprints
        return sum(1 for fp in other if fp & mask == 0 and fp in self.rows)

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class History:
    """State kept across audited steps and windows."""

    losses: LossLog = field(default_factory=LossLog)
    audited: int = 0
    batch_fps: list[tuple[int, int, int]] = field(default_factory=list)  # (step, batch fingerprint, data_ptr)
    train_rows: RowSample = field(default_factory=RowSample)
    eval_rows: set[int] = field(default_factory=set)
    eval_groups: list[set[int]] = field(default_factory=list)  # the rows of each evaluation forward
    label_hist: list[float] | None = None  # per class, and a last bin for ids outside the head
    moments: np.ndarray | None = None
    moment_shape: tuple[int, int, str] | None = None  # features, label columns, "classes" or "regression"
    modules_called: set[str] = field(default_factory=set)
    grad_seen: dict[str, int] = field(default_factory=dict)  # param -> audited steps with a non-zero grad
    grad_zero: dict[str, int] = field(default_factory=dict)  # param -> audited steps where its module ran, grad == 0
    counters: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    objective_scale: list[float] = field(default_factory=list)  # backward's loss over the loss call's, per audit

    def bump(self, key: str) -> int:
        self.counters[key] = self.counters.get(key, 0) + 1
        return self.counters[key]

    def add_hist(self, hist: list[float]) -> None:
        # Plain lists: the few numbers of an audited step cost less in Python than in numpy calls, whose code the
        # training step has just evicted from the CPU's caches.
        if self.label_hist is None or len(self.label_hist) != len(hist):
            self.label_hist = list(hist)
        else:
            self.label_hist = list(map(operator.add, self.label_hist, hist))

    def absorb(self, view: StepView, loss_steps: list[int], data: dict[str, Any]) -> None:
        """Fold one audited step's host data (the losses since the last audit, histograms, moments, grads)."""
        h = self
        h.audited += 1
        if "root_producer" in view.extra:  # the module whose output is the model's (TW408's frozen output layers)
            h.notes["root_producer"] = view.extra["root_producer"]
        if "losses" in data:
            h.losses.extend(zip(loss_steps, data["losses"], strict=True))
            given = dict(zip(loss_steps, data["losses"], strict=True)).get(view.step)
            called = view.loss.value if view.loss is not None else None
            if given is not None and called is not None and math.isfinite(given) and math.isfinite(called) \
                    and called > 0 and len(h.objective_scale) < 256:
                # What backward got over the loss call's value: 1, or a scale (loss / accumulation steps), or more
                # (other terms: an auxiliary head, a feature loss). TW109's chance level follows it.
                h.objective_scale.append(given / called)
        if "eval_rows" in data:
            rows = [int(fp) for fp in data["eval_rows"]]
            h.eval_rows.update(rows)
            at = 0
            for n in view.extra.get("eval_groups", [len(rows)]):
                h.eval_groups.append(set(rows[at:at + n]))
                at += n
        if view.row_fps is not None and view.primary is not None and view.trained_modes:
            h.train_rows.update(view.row_fps)
        if "hist" in data:  # the last bin counts the ids outside the head (ignore indices, bad labels)
            h.add_hist([*data["hist"], view.extra["hist_labels"] - sum(data["hist"])])
            more = data.get("hist_more")
            if more is not None and more != [view.extra["more_calls"] * c for c in data["hist"]]:
                # Later loss calls of the step on other targets (a GAN's real then fake labels): their labels
                # count, and the loss given to backward may sum the calls, so no one chance level holds, unless
                # each call had a backward of its own (micro-batches of gradient accumulation).
                h.add_hist([*more, view.extra["more_labels"] - sum(more)])
                if view.extra.get("backwards", 0) < view.extra["more_calls"] + 1:
                    h.notes["several_losses"] = True
        if "moments" in data:
            shape = view.extra.get("moment_shape")
            if h.moments is None or h.moment_shape != shape:
                h.moments, h.moment_shape = np.array(data["moments"]), shape
            else:
                h.moments += np.asarray(data["moments"])
        h.modules_called.update(view.modules)
        if view.forwards:
            h.bump("training_forwards")
        for p in view.params:
            if p.has_grad and p.grad_norm != 0:
                h.grad_seen[p.name] = h.grad_seen.get(p.name, 0) + 1
            elif p.has_grad and p.module in view.modules and len(p.shape) >= 2:
                h.grad_zero[p.name] = h.grad_zero.get(p.name, 0) + 1
        lo = view.loss
        if lo is not None:
            h.notes["loss_kind"] = lo.kind
            if lo.target_grad:  # the target is another output of the model (two views): no chance level
                h.notes["target_grad"] = True
            h.notes["class_weighted"] = lo.weighted
            if lo.class_weights is not None:
                h.notes["class_weights"] = lo.class_weights
            if lo.target is not None and lo.target.stats and "std" in lo.target.stats:
                h.notes.setdefault("target_var", []).append(lo.target.stats["std"] ** 2)


@dataclass
class StepView:
    """Everything a training rule sees at one event (``init``, ``step``, ``eval`` or ``close``)."""

    event: Event
    step: int
    watch: Watch
    inputs: list[TensorInfo] = field(default_factory=list)
    targets: TensorInfo | None = None
    loss: LossInfo | None = None
    modules: dict[str, ModuleInfo] = field(default_factory=dict)
    params: list[ParamInfo] = field(default_factory=list)
    stale_grad_norm: float | None = None
    trained_modes: list[bool] = field(default_factory=list)  # model.training of each forward that was backpropagated
    forwards: int = 0
    statistics: bool = True  # the statistical probes ran; rules registered as statistical are called only then
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def history(self) -> History:
        return self.watch.history

    @property
    def model(self) -> torch.nn.Module:
        return self.watch.model

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        return self.watch.optimizer

    def threshold(self, name: str) -> float:
        return self.watch.thresholds[name]

    @cached_property
    def row_fps(self) -> list[int] | None:
        """Content fingerprints of the primary input's rows (audited training steps), as Python ints."""
        rows = self.extra.get("data", {}).get("rows")
        return None if rows is None else list(map(int, rows))

    @property
    def primary(self) -> TensorInfo | None:
        """The first tensor handed to the model's forward."""
        return self.inputs[0] if self.inputs else None

    @property
    def inputs_nonfinite(self) -> bool:
        return any(t.nonfinite and not (i and t.additive_mask) for i, t in enumerate(self.inputs))
