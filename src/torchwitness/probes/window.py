"""One audited step being collected: on-device probes go into a pack, host metadata into infos.

:class:`Window` is filled by the watch's hooks during an audited step and turned into a
:class:`~torchwitness.probes.view.StepView` by :meth:`Window.build` after the step's single transfer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from torchwitness.probes import inrange, stats
from torchwitness.probes.transfer import Pack
from torchwitness.probes.view import LossInfo, ModuleInfo, ParamInfo, StepView, TensorInfo

TARGET_KEYS = ("labels", "label", "targets", "target", "y")
MAX_INPUTS = 4
_CLASS_LOSSES = ("CrossEntropyLoss", "NLLLoss", "MultiMarginLoss")
_BINARY_LOSSES = ("BCEWithLogitsLoss", "BCELoss")


def tensors_of(args: tuple, kwargs: dict | None) -> tuple[list[tuple[str, torch.Tensor]], torch.Tensor | None]:
    """The tensors handed to a forward (positional, keyword, one level of dict nesting) and the target if any.
    A 0-d tensor is a setting (a count such as the Hugging Face Trainer's ``num_items_in_batch``, a temperature),
    not data: it is left out."""
    found: list[tuple[str, torch.Tensor]] = []
    target = None

    def take(name: str, v: Any) -> None:
        nonlocal target
        if isinstance(v, torch.Tensor) and v.layout == torch.strided:  # a sparse input is passed, not judged
            if not v.ndim:
                return
            if name in TARGET_KEYS:
                target = v
            else:
                found.append((name, v))
        elif isinstance(v, dict):
            for k, x in v.items():
                if isinstance(k, str) and isinstance(x, torch.Tensor):
                    take(k, x)

    for i, a in enumerate(args):
        take(f"arg{i}", a)
    for k, v in (kwargs or {}).items():
        take(k, v)
    return found, target


def primary_of(found: list[tuple[str, torch.Tensor]]) -> list[torch.Tensor]:
    """The forward's first input, and its first table of floating features when that is another one
    (``model(codes, numeric)``): the columns a label can leak into (TW209)."""
    first = [t for _, t in found[:1]]
    table = next((t for _, t in found[1:] if t.ndim == 2 and t.is_floating_point()), None)
    return first if table is None or (first[0].ndim == 2 and first[0].is_floating_point()) else [*first, table]


def first_tensor(out: Any) -> torch.Tensor | None:
    """The main tensor of a module output: itself, ``.logits``, or the first tensor of a tuple or dict."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else ()
    for v in items:
        if isinstance(v, torch.Tensor):
            return v
    return None


@dataclass
class Forward:
    """One grad-enabled forward of the root model inside an audited step."""

    training: bool
    trained: bool = False  # its output received a gradient


# Autograd nodes that reshape, slice or cast a tensor without changing what its values mean.
_PASS_THROUGH = frozenset({"ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0", "SqueezeBackward0",
                           "SqueezeBackward1", "SqueezeBackward2", "UnsqueezeBackward0", "SelectBackward0",
                           "SliceBackward0", "CloneBackward0", "ToCopyBackward0", "TBackward0",
                           "TransposeBackward0", "PermuteBackward0", "ExpandBackward0", "AliasBackward0"})


def producer_op(x: torch.Tensor, depth: int = 8) -> str | None:
    """The name of the autograd op that computed ``x`` (``"SigmoidBackward0"``, say), looking through views and
    casts; None for a tensor outside the graph. Reads graph metadata only: no kernel, no sync."""
    fn = x.grad_fn
    for _ in range(depth):
        if fn is None:
            return None
        name = type(fn).__name__
        if name not in _PASS_THROUGH or not fn.next_functions:
            return name
        fn = fn.next_functions[0][0]
    return None


@dataclass
class Window:
    """Collects one audited step."""

    step: int
    statistics: bool = True  # take the statistical probes (unit statistics, update ratios, label counts) too
    fingerprints: bool = True  # fingerprint the batch's rows (duplicates, repeated batches, train/eval overlap)
    pack: Pack = field(default_factory=Pack)
    forwards: list[Forward] = field(default_factory=list)
    inputs: list[TensorInfo] = field(default_factory=list)
    targets: TensorInfo | None = None
    num_classes: int | None = None
    loss: LossInfo | None = None
    modules: dict[str, ModuleInfo] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)  # calls in the current forward
    outputs: dict[int, str] = field(default_factory=dict)  # id(output tensor) -> producing module
    acts: list[tuple[str, torch.Tensor]] = field(default_factory=list)  # outputs awaiting summary
    passed: list[torch.Tensor] = field(default_factory=list)  # outputs not summarised, held until the forward ends
    params: list[ParamInfo] = field(default_factory=list)
    lowp: list[int] = field(default_factory=list)  # indices into params of low-precision tensors
    before: list[torch.Tensor] = field(default_factory=list)
    stale_checked: bool = False
    thread: int | None = None  # the thread that ran the step's first forward (the taps are process-wide)
    backwards: int = 0  # Tensor.backward calls seen while the window was open
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def current(self) -> int:
        return len(self.forwards) - 1

    def add_inputs(self, tensors: list[tuple[str, torch.Tensor]]) -> None:
        for i, (name, t) in enumerate(tensors[:MAX_INPUTS]):
            info = TensorInfo.of(name, t)
            self.inputs.append(info)
            if t.numel() and t.dtype != torch.bool and not t.is_complex():
                # Bounds judge non-finite, out-of-scale and constant inputs; mean and spread are for reports.
                self.pack.add(f"in/{i}", stats.value_stats(t, bounds=not self.statistics))
                if i == 0 and t.ndim >= 1 and self.fingerprints:
                    self.pack.add("rows", stats.row_fingerprints(t))
                if i == 0 and self.statistics and t.is_floating_point() and t.ndim >= 2 and t.shape[0] >= 2:
                    if t[0].numel() >= 8:  # blank samples, each constant in itself (TW204)
                        self.pack.add("in/rowrange", inrange.max_row_range(t))
                    if t.ndim == 4 and t.shape[1] in (2, 3, 4) and min(t.shape[2:]) >= 8:  # scrambled (TW213)
                        self.pack.add("in/nbr", inrange.neighbour_probe(t))

    def add_targets(self, target: torch.Tensor, num_classes: int | None, binary: bool = False,
                    ignore: int | None = None) -> None:
        if not target.numel():
            return
        if self.targets is not None:
            # Targets told without their class count (watch.observe) are counted when the loss call tells it.
            if num_classes is None or self.num_classes is not None or self.targets.shape != tuple(target.shape):
                return
        else:
            self.targets = TensorInfo.of("target", target)
            if self.statistics or target.is_floating_point():  # class ids cannot be NaN: their bounds persist
                self.pack.add("tgt", stats.value_stats(target))
        labels, num_classes = _labels(target, num_classes, binary)
        if labels is not None and ignore is not None:  # the loss leaves these out (padding): so do its counts
            labels = labels.masked_fill(labels == ignore, -1)
        x = next((t for t in self._primary() if t.ndim == 2 and t.is_floating_point()), None)
        want_moments = self.statistics and x is not None and self.extra.get("want_moments", True)
        if labels is None or num_classes is None:
            # A regression target, one per row: a feature column that copies it is a leak all the same.
            if want_moments and target.is_floating_point() and not binary and target.ndim >= 1 \
                    and target.numel() == x.shape[0] == target.shape[0]:
                self._add_moments(x, target.reshape(-1, 1), "regression")
            return
        self.num_classes = num_classes
        if not self.statistics:
            return
        ids, table, vocab = self.extra.pop("embed_ids", (None, None, 0))
        if ids is not None and ids.numel() == labels.numel() and not ids.is_floating_point():
            # Targets equal to the inputs at the same positions (ignored ones, < 0, aside): a causal LM whose
            # labels were never shifted learns to copy its input (TW209).
            valid = labels.reshape(-1) >= 0
            same = (ids.reshape(-1).to(labels.device) == labels.reshape(-1)) & valid
            self.pack.add("copy", same.sum() / valid.sum().clamp(min=1))
            # A masked LM's [MASK] id, often the table's last row: its positions are the ones with a target, the
            # others ignored (TW212 reads a pile there as the mask, not as clamped ids).
            last = ids.reshape(-1).to(labels.device) == vocab - 1
            self.pack.add("mask_last", torch.stack([(last & valid).sum() / last.sum().clamp(min=1),
                                                    (~last & ~valid).sum() / (~last).sum().clamp(min=1)]).float())
            self.extra["mask_table"] = table
            if ids.ndim == 2 and ids.shape[1] > 1:  # targets that are the next input ids: a causal LM
                ahead = ids[:, 1:].to(labels.device) == labels.reshape(ids.shape)[:, :-1]
                self.pack.add("next", ahead.float().mean())
        self.pack.add("hist", stats.class_histogram(labels, num_classes))
        self.extra["hist_labels"] = labels.numel()
        if want_moments and labels.ndim == 1 and x.shape[0] == labels.shape[0] and num_classes <= 32:
            onehot = torch.nn.functional.one_hot(labels.clamp(0, num_classes - 1), num_classes)
            self._add_moments(x, onehot[:, 1:] if num_classes == 2 else onehot, "classes")

    def more_targets(self, kind: str, x: Any, t: Any) -> None:
        """Another loss call of the step, of the kind of the first (a GAN's discriminator meets the real batch's
        targets, then the fake batch's): its class counts, for History.absorb to add when they differ."""
        if not self.statistics or self.loss is None or kind != self.loss.kind or not isinstance(t, torch.Tensor) \
                or "hist_labels" not in self.extra:
            return
        c = x.shape[1] if kind in _CLASS_LOSSES and isinstance(x, torch.Tensor) and x.ndim >= 2 else None
        labels, num_classes = _labels(t, c, kind in _BINARY_LOSSES)
        if labels is None or num_classes != self.num_classes:
            return
        # Kept apart until the host sees them: the same targets again (auxiliary heads, deep supervision) leave
        # the counts as they are (History.absorb).
        hist = stats.class_histogram(labels, num_classes)
        if "more_calls" in self.extra:
            self.pack.accumulate("hist_more", hist)
        else:
            self.pack.add("hist_more", hist)
        self.extra["more_calls"] = self.extra.get("more_calls", 0) + 1
        self.extra["more_labels"] = self.extra.get("more_labels", 0) + labels.numel()

    def _add_moments(self, x: torch.Tensor, cols: torch.Tensor, kind: str) -> None:
        self.pack.add("moments", stats.label_moments(x, cols))
        self.extra["moment_shape"] = (min(x.shape[1], 256), cols.shape[1], kind)

    def _primary(self) -> list[torch.Tensor]:
        return self.extra.get("primary", [])

    def summarise_activations(self) -> None:
        """Summarise the module outputs of the forward that just ended, in a few batched kernels."""
        self.passed.clear()
        if not self.acts or "act_names" in self.extra:
            self.acts.clear()
            return
        tensors = [t for _, t in self.acts]
        flags = [self.modules[n].channels_first if n in self.modules else False for n, _ in self.acts]
        bounds, units = stats.activation_summary(tensors, units=self.statistics, channels_first=flags)
        self.extra["act_names"] = [n for n, _ in self.acts]
        self.extra["act_batched"] = [n for n, t in self.acts if t.ndim >= 2 and t.shape[0] >= 2]
        self.pack.add("act/bounds", bounds)
        if units is not None:
            self.pack.add("act/units", units)
        self.acts.clear()

    def add_loss(self, kind: str, x: Any, t: Any, output: Any, *, module: torch.nn.Module | None = None,
                 options: dict[str, Any] | None = None) -> None:
        """Note the loss call of this step: what it was fed (``x``: model output, ``t``: target), its weights and
        its ignored class id (:func:`~torchwitness.probes.lossspy.loss_options`)."""
        weighted = (options or {}).get("weights")
        x = x if isinstance(x, torch.Tensor) else None
        t = t if isinstance(t, torch.Tensor) else None
        self.loss = LossInfo(kind=kind, module=module, input=TensorInfo.of("input", x) if x is not None else None,
                             target=TensorInfo.of("target", t) if t is not None else None,
                             weighted=weighted is not None,
                             target_grad=t is not None and t.requires_grad,
                             producer=producer_op(x) if x is not None and self.statistics else None)
        if x is not None and x.numel() and x.is_floating_point() and self.statistics:  # what the loss is fed persists
            self.pack.add("loss/in", stats.value_stats(x, bounds=True))
            if x.ndim >= 2:
                self.pack.add("loss/rowsum", torch.stack(torch.aminmax(x.detach().float().sum(1))))
        if weighted is not None and isinstance(weighted[1], torch.Tensor) and 0 < weighted[1].numel() <= 4096 \
                and self.statistics:  # what the weights make of the class counts (TW210)
            self.pack.add("loss/weight", weighted[1].detach().float().flatten())
            self.extra["loss_weight"] = "element" if weighted[0] == "class" and kind in _BINARY_LOSSES else weighted[0]
        if t is not None:
            c = x.shape[1] if kind in _CLASS_LOSSES and x is not None and x.ndim >= 2 else None
            self.add_targets(t, c, binary=kind in _BINARY_LOSSES, ignore=(options or {}).get("ignore"))
        if isinstance(output, torch.Tensor) and output.numel() == 1:
            self.pack.add("loss/value", output.detach().float())

    def build(self, watch: Any, data: dict[str, list[float]], event: str = "step") -> StepView:
        """Fill the infos from the fetched arrays and wrap them in a view."""
        for i, info in enumerate(self.inputs):
            info.fill(data.get(f"in/{i}"))
        if "in/first" in data:
            self.extra["first_in"].fill(data["in/first"])
        if self.targets is not None:
            self.targets.fill(data.get("tgt"))
        if self.loss is not None:
            if self.loss.input is not None:
                self.loss.input.fill(data.get("loss/in"))
            if self.loss.target is not None and self.targets is not None:
                self.loss.target.stats = self.targets.stats
            rs = data.get("loss/rowsum")
            if rs is not None:
                self.loss.row_sums = (float(rs[0]), float(rs[1]))
            weights = data.get("loss/weight")
            if weights is not None:
                self.loss.class_weights = (self.extra["loss_weight"], list(weights))
            v = data.get("loss/value")
            if v is not None:
                self.loss.value = float(v[0])
        bounds, units = data.get("act/bounds"), data.get("act/units")
        names = self.extra.get("act_names", [])
        batched = self.extra.get("act_batched", [])
        n = len(batched)
        per_module = dict(zip(batched, zip(units[:n], units[n:2 * n], units[2 * n:], strict=True), strict=True)) \
            if units is not None else {}
        if bounds is not None:
            for name, peak in zip(names, stats.peaks(bounds), strict=True):
                self.modules[name].fill(peak, per_module.get(name))
        self._fill_params(data)
        stale = data.get("stale")
        view = StepView(event=event, step=self.step, watch=watch, inputs=self.inputs, targets=self.targets,  # type: ignore[arg-type]
                        loss=self.loss, modules=self.modules, params=self.params,
                        stale_grad_norm=float(stale[0]) if stale is not None else None,
                        trained_modes=[f.training for f in self.forwards if f.trained],
                        forwards=len(self.forwards), statistics=self.statistics, extra=self.extra)
        view.extra["data"] = data
        view.extra["backwards"] = self.backwards
        return view

    def _fill_params(self, data: dict[str, list[float]]) -> None:
        with_grad = [p for p in self.params if p.has_grad]
        if "gp/norm" in data:  # gradient norms, then weight norms
            norms, n = data["gp/norm"], len(with_grad)
            for p, g, w in zip(with_grad, norms[:n], norms[n:] or [math.nan] * n, strict=True):
                p.grad_norm, p.weight_norm = g, w
        moving = self.extra.get("moving", [])
        if "u/norm" in data:
            for p, w, u in zip(moving, data["s/norm"], data["u/norm"], strict=True):
                p.update_norm = u
                p.update_ratio = u / w if w > 0 else None
        lp = data.get("lowp")
        if lp is not None:
            for j, i in enumerate(self.lowp):
                lost, moved = lp[2 * j], lp[2 * j + 1]
                with_grad[i].unchanged_frac = float(lost / moved) if moved else None


def _labels(target: torch.Tensor, num_classes: int | None, binary: bool) -> tuple[torch.Tensor | None, int | None]:
    """Class ids of a loss's targets and their number: binary targets thresholded at 0.5, class ids as given
    (heads of up to 4,096 classes); None for anything else."""
    if binary and target.is_floating_point():
        return (target.detach() > 0.5).to(torch.int64), 2
    if not target.is_floating_point() and num_classes and num_classes <= 4096:
        return target, num_classes
    return None, num_classes
