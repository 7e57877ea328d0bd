"""``audit``: judge a model (and its optimizer, loss and data) built by a factory, in one of three phases.

- ``static``: the model as built, nothing else: its architecture (even kernels, all-zero filters, float64,
  no-op freezes, ...). No optimizer is looked at, no data flows. (Source code is ``torchwitness scan``'s job.)
- ``init``: the model with its optimizer and loss as constructed: the init rules (parameters missing from the
  optimizer, Adam with L2 decay, decay on norms and biases, ...).
- ``train``: ``steps`` training steps under :meth:`torchwitness.Run.watch`, every step audited by default.

Every finding is a ``finding`` record of ``run`` first; the returned list is ``run.findings()``.

>>> import tempfile, torch, torchwitness as tw
>>> from torchwitness.rules import Severity
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=0.01)
>>> with tw.Run(tempfile.mkdtemp()) as run:
...     found = audit(AuditTarget(model, opt), "init", run=run)
>>> [f.rule_id for f in found if f.severity >= Severity.WARN]
['TW302']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torchwitness.errors import AuditError, InputError
from torchwitness.integrations.factory import PHASES, AuditTarget, batch_stream, step_loss
from torchwitness.rules.catalogue import select_rules
from torchwitness.rules.findings import Finding


def audit(target: AuditTarget, phase: str, *, run: Any, steps: int = 20, select: Sequence[str] = (),
          ignore: Sequence[str] = (), every_n_steps: int = 1, first_steps: int = 5,
          thresholds: dict[str, float] | None = None, on_step: Callable[[int], None] | None = None) -> list[Finding]:
    """Audit ``target`` in ``phase`` inside ``run`` and return the run's de-duplicated findings."""
    if phase not in PHASES:
        raise InputError(f"unknown phase {phase!r}; use one of {', '.join(PHASES)}")
    if phase == "train":
        _train(target, run, steps, select=select, ignore=ignore, every_n_steps=every_n_steps,
               first_steps=first_steps, thresholds=thresholds, on_step=on_step)
    else:
        from torchwitness.rules.training import training_rules

        chosen = select_rules(select, ignore)
        at_init = [r.id for r in training_rules() if "init" in r.when and r.id in chosen]
        with_opt = phase == "init"
        # select=() would mean "every rule": an empty choice must judge nothing, so it is skipped instead.
        if at_init:
            run.watch(target.model, target.optimizer if with_opt else None,
                      loss_fn=target.loss_fn if with_opt else None, select=at_init, thresholds=thresholds).close()
    return run.findings()


def _train(target: AuditTarget, run: Any, steps: int, *, on_step: Callable[[int], None] | None,
           **watch: Any) -> None:
    if target.optimizer is None:
        raise InputError("--phase train needs an optimizer: return {'model': ..., 'optimizer': ..., ...}")
    if target.batches is None:
        raise InputError("--phase train needs batches: return {'model': ..., 'batches': a DataLoader or a callable}")
    if steps < 1:
        raise InputError("--steps must be at least 1")
    opt = target.optimizer
    with run.watch(target.model, opt, loss_fn=target.loss_fn, **watch) as w:
        stream = batch_stream(target.batches)
        for step in range(steps):
            try:
                batch = next(stream)
            except StopIteration:
                break
            except Exception as e:
                raise AuditError(f"the batch source raised {type(e).__name__} at step {step}: {e}") from e
            try:
                opt.zero_grad(set_to_none=True)
                step_loss(target, batch, w.observe).backward()
                opt.step()
            except InputError:
                raise
            except Exception as e:
                raise AuditError(f"training step {step} raised {type(e).__name__}: {e}") from e
            if on_step is not None:
                on_step(step)
