"""Demo stage: quantize the Adult classifier to int8 and int4 and certify both against the trained model.

Uses the classifier path (paired accuracy difference with a window-cluster BCa interval, McNemar) under the
``balanced`` policy. Certificates land in the run as blobs with ``edit.certificate`` records, and as readable
copies in ``RUN/certificates/``.
"""

from __future__ import annotations

import torch
from rich.console import Console
from torch import nn

from torchwitness.certify import certify
from torchwitness.certify.certificate import to_bytes
from torchwitness.run import Run

EDITS = ("quant-int8", "quant-int4")


def certify_stage(run: Run, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                  console: Console) -> dict[str, str]:
    """Certify each edit of ``model`` on the test split; return ``{edit: verdict}``."""
    folder = run.path / "certificates"
    folder.mkdir(exist_ok=True)
    verdicts = {}
    for edit in EDITS:
        result = certify(model, edit=edit, inputs=inputs, labels=labels, policy="balanced", run=run,
                         data_source="uci-adult test split")
        (folder / f"{edit}.json").write_bytes(to_bytes(result.certificate))
        metrics = result.certificate["statistics"]["metrics"]
        delta = metrics["accuracy_delta"]
        colour = "green" if result.passed else "red"
        console.print(f"certify {edit}: [{colour}]{result.verdict}[/] accuracy change {delta['estimate']:+.4f} "
                      f"(95% BCa [{delta['interval'][0]:+.4f}, {delta['interval'][1]:+.4f}], margin "
                      f"{delta['margin']:+g}), McNemar p = {metrics['mcnemar']['p_value']:.3g}")
        for reason in result.reasons:
            console.print(f"  reason: {reason}", highlight=False)
        verdicts[edit] = result.verdict
    return verdicts
