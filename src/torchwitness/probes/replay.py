"""Replay: record per-step digests of loss and gradients from a seeded run, re-run the same steps later and name
the first step whose bits differ.

The training step is supplied as the same factory ``torchwitness audit`` takes (``package.module:function`` or
``file.py:function``, see :mod:`torchwitness.integrations.factory`): it must return a model, an optimizer, batches
and either ``loss_fn`` (a criterion) or ``loss`` (``loss(model, batch)``). The factory is called after seeding, so
everything it builds draws from the seed.

Example (``mypkg/train.py``)::

    def setup():
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 2))
        data = torch.utils.data.TensorDataset(torch.randn(64, 8), torch.randint(0, 2, (64,)))
        return {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
                "batches": torch.utils.data.DataLoader(data, batch_size=8, shuffle=True),
                "loss": lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1])}

    # torchwitness replay-record runs/r --factory mypkg.train:setup --steps 8 --seed 0
    # torchwitness replay-check runs/r

Digests hash exact bytes (``sha256`` over each tensor's storage), so "equal" means bit-identical. This is an
audit path: each step copies the loss and gradients to the host once.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from torchwitness.errors import InputError
from torchwitness.ledger.schema import register_kind
from torchwitness.probes.repro import record_environment


class ReplaySetup(msgspec.Struct):
    """A ``repro.replay`` record: how to re-run this run's recorded steps."""

    factory: str
    seed: int
    steps: int


class StepDigest(msgspec.Struct):
    """A ``repro.step`` record: bit-exact digests of one training step."""

    loss_digest: str
    grad_digest: str
    loss: float


class ReplayCheck(msgspec.Struct):
    """A ``repro.check`` record: the outcome of replaying a run's steps."""

    ok: bool
    compared: int
    first_mismatch: int | None
    mismatch: list[str]
    factory: str
    seed: int


for _kind, _struct in {"repro.replay": ReplaySetup, "repro.step": StepDigest, "repro.check": ReplayCheck}.items():
    register_kind(_kind, _struct)


@dataclass
class ReplayResult:
    """``first_mismatch`` is the first step whose loss or gradients differ (None when all ``compared`` match)."""

    compared: int
    first_mismatch: int | None = None
    mismatch: list[str] = field(default_factory=list)  # "loss" and/or "grad"
    factory: str = ""
    seed: int = 0

    @property
    def ok(self) -> bool:
        return self.first_mismatch is None and self.compared > 0

    def summary(self) -> str:
        if self.ok:
            return f"replay ok: {self.compared} steps bit-identical (seed {self.seed}, {self.factory})"
        if self.compared == 0:
            return "replay compared no steps"
        return (f"replay differs at step {self.first_mismatch} ({' and '.join(self.mismatch)}); "
                f"steps before it matched")


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's (if installed) and torch's generators (all devices)."""
    import torch

    random.seed(seed)
    with contextlib.suppress(ImportError):
        import numpy as np

        np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def tensor_digest(tensors: Any) -> str:
    """``sha256`` over the raw bytes (with dtype and shape) of each tensor in order; None entries count too."""
    import torch

    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"\x00none")
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(dtype=torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()


def step_digest(loss: Any, model: Any) -> dict[str, Any]:
    """The ``repro.step`` payload for a step whose ``loss.backward()`` has run."""
    grads = [p.grad for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0])]
    return {"loss_digest": tensor_digest([loss]), "grad_digest": tensor_digest(grads),
            "loss": float(loss.detach().cpu())}


def run_steps(factory: str, seed: int, steps: int) -> Iterator[dict[str, Any]]:
    """Seed, build the training set-up from ``factory``, and yield the digest of each of the first ``steps`` steps."""
    from torchwitness.integrations.factory import as_target, batch_stream, load_factory, step_loss

    fn = load_factory(factory)
    seed_everything(seed)
    target = as_target(fn(), factory)
    if target.optimizer is None or target.batches is None:
        raise InputError(f"{factory} must return an optimizer and batches to be replayed")
    target.model.train()
    batches = batch_stream(target.batches)
    for _ in range(steps):
        batch = next(batches, None)
        if batch is None:
            return
        target.optimizer.zero_grad(set_to_none=True)
        loss = step_loss(target, batch, lambda **_: None)
        loss.backward()
        yield step_digest(loss, target.model)
        target.optimizer.step()


def record_replayable(run: Any, factory: str, *, steps: int, seed: int | None = None) -> int:
    """Run ``steps`` steps of ``factory`` inside ``run``, recording ``repro.replay`` and one ``repro.step`` per
    step; returns how many steps ran. ``seed`` defaults to the run's seed."""
    seed = seed if seed is not None else getattr(run, "seed", None)
    if seed is None:
        raise InputError("a replayable run needs a seed: pass seed= here or to tw.Run")
    record_environment(run)
    run.record("repro.replay", {"factory": factory, "seed": seed, "steps": steps})
    n = 0
    for i, digest in enumerate(run_steps(factory, seed, steps)):
        run.record("repro.step", digest, step=i)
        n += 1
    return n


@contextlib.contextmanager
def _recorded_determinism(env: Mapping[str, Any] | None) -> Iterator[None]:
    """Re-apply the recorded determinism switches while replaying, then restore the caller's."""
    import torch

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if env:
        torch.use_deterministic_algorithms(bool(env.get("deterministic_algorithms")),
                                           warn_only=bool(env.get("deterministic_warn_only")))
        torch.backends.cudnn.deterministic = bool(env.get("cudnn_deterministic"))
        torch.backends.cudnn.benchmark = bool(env.get("cudnn_benchmark"))
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def replay_check(run_dir: str | Path, *, factory: str | None = None, steps: int | None = None) -> ReplayResult:
    """Re-run the steps recorded in ``run_dir`` and compare digests step by step (stops at the first mismatch).

    ``factory`` overrides the recorded one (e.g. a patched training step); ``steps`` limits how many to compare.
    """
    from torchwitness.ledger.reader import iter_records

    setup: dict[str, Any] | None = None
    env: dict[str, Any] | None = None
    recorded: dict[int, dict[str, Any]] = {}
    for r in iter_records(run_dir, kinds={"repro.replay", "repro.step", "repro.environment"}):
        if r["kind"] == "repro.replay":
            setup, recorded = r["data"], {}  # the newest recording wins
        elif r["kind"] == "repro.environment":
            env = r["data"]
        elif setup is not None:
            recorded[r["step"]] = r["data"]
    if setup is None or not recorded:
        raise InputError(f"{run_dir} has no recorded replay steps (record them with record_replayable / "
                         "'torchwitness replay-record')")
    spec = factory or setup["factory"]
    n = min(steps or len(recorded), len(recorded))
    result = ReplayResult(compared=0, factory=spec, seed=setup["seed"])
    with _recorded_determinism(env):
        for i, digest in enumerate(run_steps(spec, setup["seed"], n)):
            result.compared += 1
            want = recorded.get(i)
            if want is None:
                raise InputError(f"{run_dir} has no repro.step record for step {i}")
            diff = [k for k, key in (("loss", "loss_digest"), ("grad", "grad_digest")) if digest[key] != want[key]]
            if diff:
                result.first_mismatch, result.mismatch = i, diff
                break
    if result.compared < n and result.first_mismatch is None:
        result.first_mismatch, result.mismatch = result.compared, ["missing step: the batches ran out"]
    return result


def record_check(run: Any, result: ReplayResult) -> None:
    """Put a replay outcome into ``run``'s ledger as ``repro.check``."""
    run.record("repro.check", {"ok": result.ok, "compared": result.compared, "first_mismatch": result.first_mismatch,
                               "mismatch": result.mismatch, "factory": result.factory, "seed": result.seed})
