"""``optimizer.step(closure)``: the watch judges the gradients the closure produces, not the previous step's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import torchwitness as tw
from torchwitness.ledger import iter_records


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.LBFGS])
def test_closure_steps_record_this_steps_gradients(tmp_path: Path, opt_cls: type) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2))
    opt = opt_cls(model.parameters(), lr=0.1) if opt_cls is torch.optim.SGD else opt_cls(model.parameters(),
                                                                                          max_iter=3)
    loss_fn = nn.CrossEntropyLoss()
    x, y = torch.randn(64, 6), torch.randint(0, 2, (64,))
    first_grad_norms: list[float] = []  # oracle: the norm after the first closure call of each step

    with tw.Run(tmp_path / "run") as run:
        run.watch(model, opt, loss_fn=loss_fn, every_n_steps=1)
        for step in range(4):
            rows = slice(step * 16, (step + 1) * 16)

            def closure(rows: slice = rows, calls: list[int] = []) -> torch.Tensor:  # noqa: B006 (fresh per step)
                opt.zero_grad()
                loss = loss_fn(model(x[rows]), y[rows])
                loss.backward()
                if not calls:
                    norms = [p.grad.norm() for p in model.parameters()]
                    first_grad_norms.append(float(torch.linalg.vector_norm(torch.stack(norms))))
                calls.append(1)
                return loss

            opt.step(closure)
    audits = {a["step"]: a["grad_norm"] for r in iter_records(tmp_path / "run", kinds={"train.audit"})
              for a in r["data"]["steps"]}  # audited-step summaries, batched into records
    assert sorted(audits) == [0, 1, 2, 3]
    assert [audits[s] for s in range(4)] == pytest.approx(first_grad_norms, rel=1e-5)
