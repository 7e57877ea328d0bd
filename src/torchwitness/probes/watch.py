"""``Watch``: hooks a model and optimizer, audits sampled training steps and turns signals into findings.

Steps are counted by the optimizer's step post-hook (or, without an optimizer, by training forwards). Step
``k`` is audited when ``k < first_steps``, ``k % every_n_steps == 0``, or, for sparse sampling, ``k`` is a
multiple of CLOSE_GAP below CLOSE_WATCH. Per-module hooks exist only while an audited step is being collected;
between audited steps what is left is a tap on the root's forward
(:class:`~torchwitness.probes.hookref.ForwardTap`), the optimizer's step post-hook and the loss hook (a loss
module's; without one, a tap on ``Tensor.backward`` keeps a detached reference to the loss, see
:mod:`torchwitness.probes.lossspy`), and the sentinels hold references (no kernel).
On an audited step every probe computes on the device and the host receives one batched transfer when the step
ends.

>>> import torch, torchwitness as tw
>>> model = torch.nn.Linear(4, 2); opt = torch.optim.SGD(model.parameters(), lr=0.1)
>>> with Watch(model, opt, loss_fn=torch.nn.CrossEntropyLoss()) as w:
...     for _ in range(3):
...         opt.zero_grad(); w.loss_fn(model(torch.randn(8, 4)), torch.randint(0, 2, (8,))).backward(); opt.step()
>>> w.step
3
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from functools import partial
from types import TracebackType
from typing import Any

import torch
from torch.nn.modules.module import register_module_forward_pre_hook, register_module_module_registration_hook
from torch.utils.hooks import RemovableHandle

from torchwitness.probes import stats
from torchwitness.probes.audit_log import AuditLog
from torchwitness.probes.capture import PASSIVE, Capture, Facts, mode_sensitive
from torchwitness.probes.config import check_arguments, resolve
from torchwitness.probes.distributed import CrossRank
from torchwitness.probes.hookref import ForwardTap, detachable, elsewhere, transformed
from torchwitness.probes.inrange import EMBEDDINGS, SameInput
from torchwitness.probes.lean import Lean
from torchwitness.probes.lossspy import LossSpy, listen, refresh, unlisten
from torchwitness.probes.quiet import BetweenAudits, guarded
from torchwitness.probes.sentinel import Sentinel, first_bad, magnitude
from torchwitness.probes.stats import ParamHeads
from torchwitness.probes.update import StepUpdate
from torchwitness.probes.view import History, StepView
from torchwitness.probes.window import Forward, Window, first_tensor, primary_of, tensors_of
from torchwitness.rules.causes import ordered
from torchwitness.rules.findings import FindingSet

_EVAL_ROW_BUDGET = 16384
_MOMENT_ROWS = 2048
# When audits are dense (closer than `statistics_every` steps), the statistical probes run on one audited step in
# `statistics_every`: what they judge (dead units, update ratios, label counts) persists across steps, while the
# audits between are lean (probes/lean.py: non-finite values and gradient norms, named at their step); row
# fingerprints (duplicates, a batch fed again) on statistical steps and the step after each. The first
# STATISTICS_WARMUP steps (or first_steps, if more) are never thinned, so a short run is judged in full, and
# until step CLOSE_WATCH the statistical audits come at least every CLOSE_GAP steps: a bug that starts mid-way
# through a run of a few dozen steps (inputs rescaled, zero_grad dropped, a detach added) is judged within a
# few steps of its start. Past it, one in statistics_every.
STATISTICS_WARMUP = 8
CLOSE_WATCH, CLOSE_GAP = 64, 8
# Sparse sampling past CLOSE_WATCH: statistical audits statistics_every past the last one, then SPARSE_STATISTICS
# apart, and at least a quarter of the run's age once that is more, up to SPARSE_STATISTICS_MAX (lean between): a
# statistical audit costs a small model's step ~2 ms, one in 100 steps ~2 % by itself, while the non-finite
# sentinels, loss history and gradient norms still come at every audit. A change that starts at step s of a long
# run is judged by the statistical probes within about s / 4 steps.
SPARSE_STATISTICS, SPARSE_STATISTICS_MAX = 512, 4096


def _is_compiled(model: torch.nn.Module) -> bool:
    return type(model).__name__ == "OptimizedModule" or getattr(model, "_compiled_call_impl", None) is not None


class Watch(BetweenAudits, Capture, StepUpdate):
    """Audits a training loop; see the module docstring. Use :meth:`torchwitness.Run.watch` to get one."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                 loss_fn: Callable[..., Any] | None = None, every_n_steps: int = 100, first_steps: int = 5,
                 statistics_every: int = 64, select: Iterable[str] = (), ignore: Iterable[str] = (),
                 thresholds: Mapping[str, float] | None = None, findings: FindingSet | None = None,
                 record: Callable[[str, Any, int | None], Any] | None = None) -> None:
        check_arguments(model, optimizer, loss_fn, every_n_steps=every_n_steps, first_steps=first_steps,
                        statistics_every=statistics_every)
        from torchwitness.rules.catalogue import select_rules
        from torchwitness.rules.training import distributed as cross_rank_rules
        from torchwitness.rules.training import training_rules

        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.every_n_steps, self.first_steps = every_n_steps, first_steps
        self.statistics_every = statistics_every
        self.thresholds = resolve(thresholds)
        chosen = select_rules(select, ignore)
        rules = [r for r in training_rules() if r.id in chosen]
        self.findings = findings if findings is not None else FindingSet(record)
        self._record = record
        self.history = History()
        self.errors: dict[tuple[str, str], str] = {}  # failures of the watch itself, recorded as watch.error
        self.step = 0
        self.closed = False
        self.compiled = _is_compiled(model)
        inner = getattr(model, "_orig_mod", model)
        self._names = {id(m): (n or "model") for n, m in inner.named_modules()}
        self.mode_sensitive = mode_sensitive(inner)
        self._inner = inner
        self._tree_changed = False
        self._heads = ParamHeads()
        self._statistics_step = -statistics_every
        self._window: Window | None = None
        self._armed: list[RemovableHandle] = []
        self._plan: list[tuple[torch.nn.Module, Callable[..., Any]]] | None = None
        self._losses: list[tuple[int, torch.Tensor]] = []
        self._eval_rows: list[torch.Tensor] = []
        self._audit_log = AuditLog(record)
        self._eval_budget = _EVAL_ROW_BUDGET
        self._eval_seen = False
        self._step_open = False
        self._external_forward = False
        self._parts: list[ForwardTap] | None = None  # taps on the model's children once the loop calls those
        self._by_parts = False  # this step's forward was opened by one of them
        self._last_part: torch.nn.Module | None = None
        self._spy: LossSpy | None = None
        self._peek_step = -1  # the unaudited step after an audited one, whose batch is fingerprinted in passing
        self._peek_hold: Any = None
        self._peeked: tuple[int, torch.Tensor, int, str] | None = None  # (step, row fingerprints, data_ptr, name)
        # Between audits: non-finite values flagged on the device (see probes/sentinel.py), and, on the host, the
        # first step whose training forwards all ran in eval mode (a model.eval() never undone).
        self._sentinel = Sentinel(min(every_n_steps, 4096))
        self._sentinel_grad: tuple[str, torch.nn.Parameter] | None = None
        self._modes_seen = 0  # bit 1: a grad-enabled forward in train mode this step, bit 2: one in eval mode
        self._eval_trained: int | None = None
        self.same_input = SameInput()  # the very same input tensor fed step after step (TW214)
        self.masks: set[str] = set()  # inputs after the first seen holding an additive attention mask
        self._sentinel_input = "arg0"  # the input the sentinel watches
        self._same_step = -1
        # Without a loss module the loss history would hold audited steps only; a function mode between forward
        # and step notes the loss given to backward on every step (a detach; no kernel, no sync).
        self._spy_every_step = not isinstance(loss_fn, torch.nn.Module) and not self.compiled
        self.tapping = False  # between audits, after a training forward: the loss tap reports to this watch
        self.backward_elsewhere = 0  # backward calls the tap saw while not tapping (TW412: another model trained)
        self._zeroed = False  # this optimizer or model cleared gradients since the last step (TW304 asks)
        self._float_targets = False  # a loss call had a floating target: its tap stays between audits
        if not self.compiled:
            listen(self)
        self.initial_versions = {id(p): p._version for p in inner.parameters()}
        self.cross_rank = CrossRank.create(inner)
        # Dense audits are mostly lean (probes/lean.py); cross-rank exchanges, counting by forwards need all of it.
        self._lean = Lean(self, PASSIVE) if optimizer is not None and self.cross_rank is None \
            and not self.compiled else None
        if self.cross_rank is None:  # cross-rank rules read the ranks' matrix, which only a process group provides
            rules = [r for r in rules if r.check.__module__ != cross_rank_rules.__name__]
        # Per event, in ID order; "light" is a step whose statistical probes were thinned out.
        self._rules = {event: [(r.id, r.check) for r in rules if event in r.when]
                       for event in ("init", "step", "eval", "close")}
        self._rules["light"] = [(r.id, r.check) for r in rules if "step" in r.when and not r.statistical]
        # Between audits: forward tap, optimizer post-hook, backward tap (audits add a root post-hook and a step
        # pre-hook). A root pre-hook only where the forward cannot be tapped: a compiled module, and where
        # DataParallel could replicate it (a replica copies the instance's dict, a method bound to this one).
        hooked = self.compiled or torch.cuda.device_count() > 1
        root: Any = model.register_forward_pre_hook(detachable(self._root_pre), with_kwargs=True) if hooked \
            else ForwardTap(model, self._root_pre)
        self._handles = [root, register_module_module_registration_hook(detachable(self._module_added))]
        self._audit_hooks: list[RemovableHandle] = []
        if optimizer is not None:
            self._handles.append(optimizer.register_step_post_hook(detachable(self._post_step)))
        if isinstance(loss_fn, torch.nn.Module):
            self._handles.append(loss_fn.register_forward_hook(detachable(self._loss_hook)))
        self._run_rules(StepView(event="init", step=0, watch=self))
        self._next_audit = self._audit_after(0)  # step 0 is audited: 0 is a multiple of every_n_steps
        self._arm()

    # ---- sampling --------------------------------------------------------------------------------------------
    def _audit_after(self, step: int) -> int:
        """The first audited step after ``step``: the next of the first steps, the next multiple of
        ``every_n_steps``, and, for sparse sampling (audits more than 2 * CLOSE_GAP apart), the next multiple of
        CLOSE_GAP until CLOSE_WATCH: a run of a few dozen steps whose bug starts after its first steps (labels
        collapsing, a layer cut off at step 20) is judged at all."""
        nxt = step + 1
        candidates = [(nxt + self.every_n_steps - 1) // self.every_n_steps * self.every_n_steps]
        if nxt < self.first_steps:
            candidates.append(nxt)
        close = (nxt + CLOSE_GAP - 1) // CLOSE_GAP * CLOSE_GAP
        if close < CLOSE_WATCH and self.every_n_steps > 2 * CLOSE_GAP:
            candidates.append(close)
        return min(candidates)

    def _arm(self) -> bool:
        """Prepare the audit of ``self.step``; False when it is a lean one (no window: see probes/lean.py)."""
        if self._tree_changed:
            self._replan()
        if not self._audit_hooks:
            self._audit_hooks.append(self.model.register_forward_hook(detachable(self._root_post), with_kwargs=True))
            if self.optimizer is not None:
                self._audit_hooks.append(self.optimizer.register_step_pre_hook(detachable(self._pre_step)))
        if self.step < CLOSE_WATCH:
            gap = min(self.statistics_every, CLOSE_GAP)
        elif self.every_n_steps > 2 * CLOSE_GAP and self._statistics_step >= CLOSE_WATCH:
            gap = max(self.statistics_every, SPARSE_STATISTICS, min(self.step // 4, SPARSE_STATISTICS_MAX))
        else:
            gap = self.statistics_every
        statistics = self.step < max(self.first_steps, STATISTICS_WARMUP) or self.step - self._statistics_step >= gap
        # Row fingerprints go with the statistical steps and the step after each: a batch fed again at the next
        # step (TW206) needs two consecutive steps, duplicates and overlaps are properties of the data. A lean
        # step after a statistical one fingerprints its batch in passing, as the step after a sparse audit does.
        fingerprints = statistics or self._statistics_step == self.step - 1
        if statistics:
            self._statistics_step = self.step
        if self._lean is not None:
            if not statistics:
                self._disarm_window()
                self._lean.arm()
                refresh()
                return False
            self._lean.disarm()
        self._window = Window(step=self.step, statistics=statistics, fingerprints=fingerprints)
        refresh()
        # Feature/label moments stop once enough rows are in: correlations are settled by then.
        m = self.history.moments
        self._window.extra["want_moments"] = m is None or m[0] < _MOMENT_ROWS
        if self._armed or self.compiled:  # compiled graphs keep their submodules unhooked: hooks would recompile
            return True
        if self._plan is None:  # made again when a module joins the tree (_module_added); TorchScript takes no hooks
            names = self._names
            self._plan = [(m, detachable(partial(self._module_hook, Facts.of(m, names.get(id(m), type(m).__name__)))))
                          for m in self._inner.modules() if not isinstance(m, torch.jit.ScriptModule)]
        for m, hook in self._plan:  # the root's own before _root_post, whose loss spy would see its tensor reads
            self._armed.append(m.register_forward_hook(hook, with_kwargs=True, prepend=m is self.model))
            if isinstance(m, EMBEDDINGS):
                self._armed.append(m.register_forward_pre_hook(detachable(self._embedding_pre)))
        self._armed.append(register_module_forward_pre_hook(detachable(self._outside_pre)))
        return True

    def _disarm(self) -> None:
        if not self._audit_hooks:  # between audits: nothing to undo
            return
        if self._lean is not None and self._lean.active:
            self._lean.disarm()
        self._disarm_window()
        for h in self._audit_hooks:
            h.remove()
        self._audit_hooks.clear()
        refresh()

    def _disarm_window(self) -> None:
        if not self._armed and self._window is None:  # between audits: nothing to undo
            return
        for h in self._armed:
            h.remove()
        self._armed.clear()
        self._window = None

    # ---- hooks -----------------------------------------------------------------------------------------------
    def _root_pre(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        # Not @guarded: this hook runs at every step, where each Python frame is a measurable part of the cost.
        try:
            # begin_forward() already opened this forward (and its spy listens on), or not a forward of the loop's
            if self._external_forward or elsewhere():
                if transformed():  # a forward of the loop's (per-sample gradients), not readable: seen, not judged
                    self._modes_seen |= 1
                    self.history.notes["transformed_forwards"] = True
                return
            if self._parts is not None and not self._by_parts:  # the model itself runs again: no more by parts
                self._leave_parts()
            if self._spy is not None:
                self._spy_stop()
            if not torch.is_grad_enabled():
                self._eval_forward(args, kwargs)
                return
            if self.optimizer is None and module.training:
                if self._step_open:
                    self._end_step()
                self._step_open = True
            self._modes_seen |= 1 if module.training else 2
            w = self._window
            if w is None:
                if module.training:  # the loss given to backward and floating targets are noted for the sentinels
                    self.tapping = self._spy_every_step
                self._between_audits(args, kwargs)
                return
            w.forwards.append(Forward(training=module.training))
            w.calls.clear()
            if len(w.forwards) == 1:
                w.thread = threading.get_ident()
                found, target = tensors_of(args, kwargs)
                self._see_input(found)
                w.extra["primary"] = primary_of(found)
                w.add_inputs(found)
                if target is not None:
                    w.extra["kw_target"] = target
                self._cut_start(w)
        except Exception as e:
            self._internal_error("_root_pre", e)

    def _peek_batch(self, args: tuple, kwargs: dict) -> None:
        # The step right after an audited one: fingerprint its batch (on the device, kept for the next audit's
        # transfer) so a batch fed again at the next step is seen even when audits are far apart (TW206).
        self._peek_step, self._peek_hold = -1, None
        found, _ = tensors_of(args, kwargs)
        if found and found[0][1].ndim >= 1 and found[0][1].numel():
            name, t = found[0]
            self._peeked = (self.step, stats.row_fingerprints(t), t.data_ptr(), name)

    @guarded
    def _root_post(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self._external_forward or elsewhere():
            return
        w = self._window
        if w is None or not w.forwards or not torch.is_grad_enabled():
            if w is None and torch.is_grad_enabled():
                lean = self._lean is not None and self._lean.active
                if module.training:
                    self.tapping = self._spy_every_step  # loss history and sentinels: the tap notes the loss
                    if lean:
                        self._lean.end_forward(output)
                elif lean:  # an evaluation forward with gradients on: not this step's training numbers
                    self._lean.discard()
            return
        self._cut_stop(w)
        w.summarise_activations()
        out = first_tensor(output)
        if out is not None and "root_producer" not in w.extra:  # whose statistics describe the model's output
            w.extra["root_producer"] = w.outputs.get(id(out), "model")
        target = w.extra.pop("kw_target", None)
        if target is not None and out is not None and out.ndim >= 1:
            w.add_targets(target, out.shape[-1] if out.shape[-1] <= 4096 else None)
        if out is not None and out.requires_grad:
            hook = partial(self._on_output_grad, w, w.forwards[-1])
            # Each output of a multi-output model: the stale-gradient check (TW304) must run before any of them
            # passes a gradient on, whichever the loss reaches first.
            more = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else ()
            for t in (out, *(t for t in more if isinstance(t, torch.Tensor) and t.requires_grad and t is not out)):
                t.register_hook(hook)
            if w.loss is None:
                self._spy_start()

    # ---- functional losses: a function mode between forward end and optimizer step ----------------------------
    @guarded
    def _eval_forward(self, args: tuple, kwargs: dict) -> None:
        t = next((x for _, x in tensors_of(args, kwargs)[0]), None)
        if t is not None and self.same_input.holds(t):  # the batch just trained on, measured again: a training metric
            return
        if not self._eval_seen:
            self._eval_seen = True
            self._run_rules(StepView(event="eval", step=self.step, watch=self,
                                     extra={"training": self.model.training}))
        # Rows of one integer id (a user, an item) recur by design: no sample identity.
        if self._eval_budget > 0 and t is not None and t.numel() and t.ndim >= (1 if t.is_floating_point() else 2):
            rows = stats.row_fingerprints(t)
            self._eval_rows.append(rows)
            self._eval_budget -= rows.shape[0]

    # ---- step boundaries -------------------------------------------------------------------------------------
    def _end_step(self) -> None:
        self.tapping = False
        if self._spy is not None or self._cut is not None:
            self._spy_stop()
        w = self._window
        if self._modes_seen == 2 and self._eval_trained is None and w is None:
            self._eval_trained = self.step  # every training forward of this unaudited step ran in eval mode
        elif not self._modes_seen and self._parts is None and self.optimizer is not None and not self.compiled:
            self._enter_by_parts()
        if self._by_parts:
            self._by_parts = self._external_forward = False
        self._modes_seen = 0
        if w is not None:
            w.extra["zeroed"] = self._zeroed
            self._guarded_finish(w)
        elif self._lean is not None and self._lean.active:
            self._guarded_lean()
        self.step += 1
        self._eval_seen = False
        self._zeroed = False
        if self.step < self._next_audit and w is None and not self._audit_hooks:  # between audits
            return
        audited = self.step >= self._next_audit
        if audited:
            self._next_audit = self._audit_after(self.step)
        if not (audited and self._arm()):
            if w is not None:
                # Held, the audited batch's memory is not handed to the next batch: "same data, same memory"
                self._peek_step, self._peek_hold = self.step, w.extra.get("primary")
            if not audited:
                self._disarm()

    @guarded
    def _guarded_lean(self) -> None:
        self._lean.finish(self.step)

    def _guarded_finish(self, w: Window) -> None:
        try:
            self._finish(w)
        except Exception as e:
            self._internal_error("_finish", e)

    def _finish(self, w: Window, event: str = "step") -> None:
        if self._losses:
            # One stack (promoting mixed dtypes), then one cast: not a cast per loss of a sparse audit's ~100.
            w.pack.add("losses", magnitude(torch.stack([t for _, t in self._losses])).float())
            loss_steps = [s for s, _ in self._losses]
            self._losses = []
        else:
            loss_steps = []
        if self._eval_rows:
            w.pack.add("eval_rows", torch.cat(self._eval_rows))
            w.extra["eval_groups"] = [r.shape[0] for r in self._eval_rows]  # one per evaluation forward
            self._eval_rows = []
        drained = self._sentinel.drain()
        if drained is not None:
            w.pack.add("sentinel", drained[0])
        if self._eval_trained is not None:
            w.extra["eval_trained"] = self._eval_trained
        if self._peeked is not None:
            step, rows, ptr, name = self._peeked
            w.pack.add("peek/rows", rows)
            w.extra["peek"] = (step, ptr, name)
            self._peeked = None
        for name, limit in list(w.extra.items()):
            if name.startswith("ids/"):
                w.extra[name + "/limit"] = limit
        if self.cross_rank is not None:
            self.cross_rank.pack(w.pack)
        data = w.pack.fetch()  # the one device-to-host transfer of this step
        view = w.build(self, data, event)
        self.masks.update(t.name for t in view.inputs[1:] if t.additive_mask)
        if drained is not None:
            view.extra["sentinel"] = first_bad(data["sentinel"], drained[1])
            view.extra["sentinel_input"] = self._sentinel_input
            view.extra["sentinel_where"] = drained[1]  # what each sentinel watched: (field, step) pairs
            if self._sentinel_grad is not None:
                view.extra["sentinel_grad"] = self._sentinel_grad[0]
        if self.cross_rank is not None:
            view.extra["rank"] = self.cross_rank.rank
            view.extra["ranks"] = self.cross_rank.exchange(view.step, data, view.params,
                                                             view.loss.value if view.loss else None,
                                                             view.inputs_nonfinite)
        self.history.absorb(view, loss_steps, data)
        self._run_rules(view)
        if w.forwards:
            self._audit_log.full(view)

    def _run_rules(self, view: StepView) -> None:
        found = []
        for rid, fn in self._rules["light" if view.event == "step" and not view.statistics else view.event]:
            try:
                found.extend(fn(view) or ())
            except Exception as e:  # one rule's bug must not stop training or the other rules
                self._internal_error(rid, e)
        # The event's findings are added in causal order: a step's root cause is in the set before what it explains.
        for f in ordered(found):
            self.findings.add(f)

    def _internal_error(self, where: str, error: Exception) -> None:
        """Record a failure of the watch itself once per place and type, and drop the step being collected."""
        key = (where, type(error).__name__)
        if key not in self.errors:
            self.errors[key] = f"{type(error).__name__}: {error}"
            with suppress(Exception):  # a ledger that stopped writing (disk gone, run closed) must not stop training
                if self._record is not None:
                    self._record("watch.error", {"where": where, "error": self.errors[key]}, self.step)
        if not where.startswith("TW"):
            self._window = None

    # ---- public surface (begin_forward, end_forward, observe: probes/capture.py) ------------------------------
    def close(self) -> None:
        """Remove every hook, judge the pending step and the window rules, and record the final tallies."""
        if self.closed:
            return
        self.closed = True
        try:
            w = self._window
            if w is not None and (w.forwards or len(w.pack) or self._losses):
                w.extra["unstepped"] = True  # the run ended before this step's optimizer step
                self._guarded_finish(w)
            elif self._losses or self._eval_rows or self._sentinel.pending or self._eval_trained is not None:
                self._guarded_finish(Window(step=self.step))
            self._run_rules(StepView(event="close", step=self.step, watch=self))
            if self.cross_rank is not None and self._record is not None:
                # Step counts are compared across shards after the run (no collective here: a rank that
                # stepped more or less than its peers would never meet them in one).
                self._record("train.steps", {"steps": self.step, "rank": self.cross_rank.rank}, self.step)
            self._audit_log.flush()
        finally:
            self._spy_stop(closing=True)
            unlisten(self)
            self._disarm()
            for h in self._handles:
                h.remove()
            self._handles.clear()
            self._leave_parts()
            self.findings.summarise()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
