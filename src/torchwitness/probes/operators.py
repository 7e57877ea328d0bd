"""Operator inventory: which aten operators a step ran, seen by a ``TorchDispatchMode`` (below autograd, so
backward kernels are seen too, which module hooks cannot see).

On an audited step it counts each operator overload with the dtypes and devices of its tensor arguments, and
checks each against :mod:`.nondeterminism` for the device it ran on. Reading ``dtype``/``device`` never syncs the
device; the record is written once, when the step's context closes.

Example (explicit blocks; or ``with OperatorInventory(run, every=100).attach(model, opt):`` around an untouched
loop)::

    import torchwitness as tw
    from torchwitness.probes.operators import OperatorInventory

    with tw.Run("runs/ops", seed=0) as run:
        inventory = OperatorInventory(run, every=100)
        for step, (x, y) in enumerate(batches):
            with inventory.step(step):     # active on steps 0, 100, 200...
                loss = loss_fn(model(x), y)
                loss.backward()
            opt.step(); opt.zero_grad()
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from torchwitness.errors import InputError
from torchwitness.ledger.schema import register_kind
from torchwitness.probes import nondeterminism
from torchwitness.probes.hookref import detachable
from torchwitness.probes.repro import determinism_requested, determinism_state, record_environment
from torchwitness.rules.catalogue import Phase, Severity, rule
from torchwitness.rules.findings import Finding, FindingSet

_OBLIGATIONS = ("eu-ai-act:15(1)", "eu-ai-act:annex-iv:2(g)")


class OpStats(msgspec.Struct):
    count: int
    dtypes: list[str]
    devices: list[str]


class NondeterministicOp(msgspec.Struct):
    op: str
    device: str
    reason: str
    count: int


class OpsInventory(msgspec.Struct):
    """An ``ops.inventory`` record: the operators one audited step ran."""

    ops: dict[str, OpStats]
    total: int
    nondeterministic: list[NondeterministicOp]
    random_ops: list[str]
    determinism_requested: bool
    deterministic_algorithms: bool


register_kind("ops.inventory", OpsInventory)


@rule("TW750", name="nondeterministic-op", title="nondeterministic operator ran in a run that asked for determinism",
      severity=Severity.WARN, phase=Phase.STEP, category="reproducibility", obligations=_OBLIGATIONS,
      remediation="Call torch.use_deterministic_algorithms(True) (and set CUBLAS_WORKSPACE_CONFIG on CUDA), or "
                  "replace the operator; otherwise results will not replay bit for bit.")
def nondeterministic_op(inventory: OperatorInventory) -> Iterator[Finding]:
    """The run recorded a seed or turned on a determinism switch, yet an operator ran that is nondeterministic
    on its device in the current mode (e.g. ``index_put`` with ``accumulate=True`` on CPU, the backward of
    advanced indexing, ``scatter_add_`` or ``index_add_`` on CUDA).
    """
    if not inventory.requested:
        return
    for (op, device, why), count in sorted(inventory.nondeterministic.items()):
        yield Finding.of("TW750", f"ops:{op}@{device}", f"{why}: nondeterministic although the run asked for "
                         "determinism", step=inventory.current_step, details={"op": op, "device": device,
                                                                             "count": count})


@rule("TW751", name="unseeded-randomness", title="random operators ran in a run that recorded no seed",
      severity=Severity.INFO, phase=Phase.STEP, category="reproducibility", obligations=_OBLIGATIONS,
      remediation="Pass seed= to tw.Run and call torch.manual_seed(seed) before building the model and data.")
def unseeded_randomness(inventory: OperatorInventory) -> Iterator[Finding]:
    """Dropout, ``randn``, ``randperm``... ran, but the run has no recorded seed: the step cannot be replayed."""
    if inventory.random_ops and getattr(inventory.run, "seed", None) is None:
        names = sorted(inventory.random_ops)
        yield Finding.of("TW751", "ops:random", f"random operators ran ({', '.join(names[:5])}) and the run "
                         "recorded no seed", step=inventory.current_step, details={"ops": names})


@dataclass
class _Counts:
    count: int = 0
    dtypes: set[str] = field(default_factory=set)
    devices: set[str] = field(default_factory=set)


class _Mode:
    """The dispatch mode proper; built lazily so importing this module does not import torch."""

    @staticmethod
    def make(inventory: OperatorInventory) -> Any:
        from torch.utils._python_dispatch import TorchDispatchMode

        class InventoryMode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                inventory._see(func, args, kwargs)
                return func(*args, **kwargs)

        return InventoryMode()


class OperatorInventory:
    """Records an ``ops.inventory`` record for each audited step of ``run``.

    ``every``: audit steps whose index is a multiple of it (``step(i)`` is a no-op otherwise). ``findings``: where
    findings go (default: ``run.finding_set``, shared with ``run.watch``). Use it directly as a context manager for
    a single audited block, or call :meth:`start`/:meth:`stop` from a driver such as ``Run.watch``.
    """

    def __init__(self, run: Any, *, every: int = 1, findings: FindingSet | None = None) -> None:
        self.run = run
        self.every = max(1, every)
        if findings is None:  # share the run's de-duplicating set when it has one (tw.Run does)
            findings = getattr(run, "finding_set", None)
        self.findings = findings if findings is not None else FindingSet(record=run.record)
        self.current_step: int | None = None
        self._reset()
        self._mode: Any = None
        self._handles: list[Any] = []
        self._steps = 0

    def _reset(self) -> None:
        self.ops: dict[str, _Counts] = {}
        self.nondeterministic: dict[tuple[str, str, str], int] = {}
        self.random_ops: set[str] = set()
        self.requested = False
        self._state: dict[str, Any] = {}

    def _see(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        import torch

        name = str(func)
        c = self.ops.get(name)
        if c is None:
            c = self.ops[name] = _Counts()
        c.count += 1
        device = "cpu"
        for a in _tensors(args, kwargs, torch.Tensor):
            c.dtypes.add(str(a.dtype).removeprefix("torch."))
            c.devices.add(a.device.type)
            device = a.device.type
        packet = func.overloadpacket.__name__
        if packet in nondeterminism.RANDOM_OPS:
            self.random_ops.add(packet)
        if packet in nondeterminism.TABLE:
            why = nondeterminism.reason(packet, device, (args, kwargs), mode=self._state["deterministic_algorithms"],
                                        warn_only=self._state["deterministic_warn_only"])
            if why:
                key = (packet, device, why)
                self.nondeterministic[key] = self.nondeterministic.get(key, 0) + 1

    def start(self, step: int | None = None) -> None:
        """Begin auditing (what ``Run.watch`` calls on an audited step)."""
        if self._mode is not None:
            raise InputError("this OperatorInventory is already active; stop() it first")
        record_environment(self.run)
        self._reset()
        self.current_step = step
        self._state = determinism_state()
        self.requested = determinism_requested(self.run, self._state)
        self._mode = _Mode.make(self)
        self._mode.__enter__()

    def stop(self) -> None:
        """End auditing: record ``ops.inventory`` and any findings."""
        mode, self._mode = self._mode, None
        if mode is None:
            return
        mode.__exit__(None, None, None)
        self.run.record("ops.inventory", self.summary(), step=self.current_step)
        for check in (nondeterministic_op, unseeded_randomness):
            self.findings.extend(check(self))

    def summary(self) -> dict[str, Any]:
        return {
            "ops": {k: {"count": v.count, "dtypes": sorted(v.dtypes), "devices": sorted(v.devices)}
                    for k, v in sorted(self.ops.items())},
            "total": sum(v.count for v in self.ops.values()),
            "nondeterministic": [{"op": op, "device": dev, "reason": why, "count": n}
                                 for (op, dev, why), n in sorted(self.nondeterministic.items())],
            "random_ops": sorted(self.random_ops),
            "determinism_requested": self.requested,
            "deterministic_algorithms": bool(self._state.get("deterministic_algorithms")),
        }

    @contextlib.contextmanager
    def step(self, step: int) -> Iterator[bool]:
        """Audit this block if ``step`` is due (yields whether it is)."""
        due = step % self.every == 0
        if due:
            self.start(step)
        try:
            yield due
        finally:
            if due:
                self.stop()

    def attach(self, model: Any, optimizer: Any) -> OperatorInventory:
        """Audit a training loop through native hooks, without touching it: on due steps the mode starts at the
        model's first training-mode forward and stops after ``optimizer.step()`` (steps are counted by the
        optimizer's step hook, as ``Run.watch`` counts them). :meth:`detach` (or leaving ``with``) removes them."""
        self._handles = [model.register_forward_pre_hook(detachable(self._on_forward)),
                         optimizer.register_step_post_hook(detachable(self._on_step))]
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.stop()

    def _on_forward(self, module: Any, args: Any) -> None:
        if self._mode is None and module.training and self._steps % self.every == 0:
            self.start(self._steps)

    def _on_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.stop()
        self._steps += 1

    def __enter__(self) -> OperatorInventory:
        if not self._handles:
            self.start(self.current_step)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handles:
            self.detach()
        else:
            self.stop()


def _tensors(args: tuple[Any, ...], kwargs: dict[str, Any], tensor_type: type) -> Iterator[Any]:
    # one level of lists/tuples covers aten signatures (Tensor[] and Tensor?[] arguments)
    for a in (*args, *kwargs.values()):
        if isinstance(a, tensor_type):
            yield a
        elif isinstance(a, (list, tuple)):
            yield from (x for x in a if isinstance(x, tensor_type))
