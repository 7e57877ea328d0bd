"""Demo stage: code and artefact evidence for the demo run (static scan, model-file scan, operator inventory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from torchwitness.probes.operators import OperatorInventory
from torchwitness.rules.artifact import scan_model
from torchwitness.rules.static.engine import record_scan, scan_paths


def record_code_evidence(run: Any, model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
                         loss_fn: Any, out: Path, console: Console) -> None:
    """Scan the demo's own training code, save and scan the trained weights, audit one gradient step's operators."""
    scan = scan_paths([Path(__file__).parent], jobs=1)
    record_scan(run, scan)
    weights = out / "adult-model.pt"
    torch.save(model.state_dict(), weights)
    checked = scan_model(weights)
    run.finding_set.extend(checked.findings)
    run.record("model.scan", checked.summary())
    with OperatorInventory(run) as inventory:
        loss_fn(model(batch[0]), batch[1]).backward()
    model.zero_grad(set_to_none=True)
    console.print(f"code evidence: {len(scan.files)} files scanned ({scan.summary()['findings']} findings), "
                  f"{weights.name} {checked.format} with {len(checked.findings)} unsafe imports, "
                  f"{inventory.summary()['total']} aten ops on an audited step")
