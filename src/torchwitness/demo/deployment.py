"""Demo stage: serve the Adult model on the test split with drift induced halfway, route flagged decisions to
human review with explanations of the least confident, decide some, and stop and resume serving."""

from __future__ import annotations

import datetime as dt
import time

import torch
from rich.console import Console
from torch import nn

from torchwitness.controls.drift import DriftMonitor, DriftReference
from torchwitness.controls.oversight import ReviewPolicy, ReviewQueue
from torchwitness.controls.retention import declare_retention
from torchwitness.demo.adult import NUMERIC
from torchwitness.errors import ServingStopped
from torchwitness.ledger.reader import iter_records
from torchwitness.run import Run

BATCH = 128
AGE = NUMERIC.index("age")


def _features(x: torch.Tensor, probs: torch.Tensor) -> dict[str, torch.Tensor]:
    # fnlwgt is the census sampling weight, not a property of the person; its distribution changes along the
    # test file's order, so monitoring it would report the file's layout rather than drift in who is served.
    cols = {name: x[:, i] for i, name in enumerate(NUMERIC) if name != "fnlwgt"}
    cols["score"] = probs[:, 1]
    return cols


def deployment_stage(run: Run, model: nn.Module, reference: tuple[torch.Tensor, torch.Tensor],
                     served: tuple[torch.Tensor, torch.Tensor], feature_names: list[str], console: Console) -> None:
    """Serve ``served`` (rows, and the outcomes that become known for them) against a ``reference`` sample of
    the training data (rows, labels)."""
    model.eval()
    (reference_x, reference_y), (test_x, test_y) = reference, served
    with torch.no_grad():
        ref_probs = torch.softmax(model(reference_x), -1)
    drift_reference = DriftReference.from_arrays(_features(reference_x, ref_probs), predictions=ref_probs.argmax(-1),
                                                 labels=reference_y, num_classes=2)
    monitor = DriftMonitor(drift_reference, run=run, window=512)
    declare_retention(run, logs_days=365, role="deployer")  # the logs of use, Art. 26(6)
    # Flagged rows' inputs are kept 30 days (GDPR Art. 5(1)(e)) so the two least confident of each window can be
    # explained for their reviewer.
    serve = run.serve(model, retain_inputs=True, retain_seconds=dt.timedelta(days=30),
                      policy=ReviewPolicy(min_confidence=0.55, audit_rate=0.002, explain=2,
                                          feature_names=tuple(feature_names)))
    half = len(test_x) // 2
    alerts = []
    for start in range(0, len(test_x), BATCH):
        x = test_x[start:start + BATCH].clone()
        if start >= half:  # the induced shift: everyone served from here on is 1.5 standard deviations older
            x[:, AGE] += 1.5
        probs = serve(x)
        serve.drift_flag = False
        # Outcomes are known for the served rows here (the test split's labels): accuracy is monitored too.
        found = monitor.update(_features(x, probs), predictions=probs.argmax(-1), labels=test_y[start:start + BATCH])
        if found:
            serve.drift_flag = True  # the next batch goes to a human in full
        if found and not alerts:
            alerts = found
            console.print(f"[yellow]drift alert[/] in window {found[0].window} (rows {start}..): "
                          + ", ".join(f"{a.feature} {a.statistic}={a.value:.3f}" for a in found[:3]))
    serve.flush()  # the last window's flagged rows reach the queue
    queue = ReviewQueue.for_run(run.path)
    # The on-call engineer stops serving over the alert (Art. 14(4)(e)); the recorder refuses until resumed.
    queue.stop(who="oncall-3@example.org", reason="drift alert: served ages shifted")
    time.sleep(0.25)  # the recorder looks at the switch at most every 0.2 s
    try:
        serve(test_x[:1])
    except ServingStopped as e:
        console.print(f"[red]refused[/]: {e}")
    queue.resume(who="oncall-3@example.org", reason="shift traced to a data-entry change")
    pending = queue.open_requests(5)
    for i, request in enumerate(pending[:3]):
        action = "override" if i == 2 else "approve"
        queue.decide(request.decision_id, action, reviewer="reviewer-17@example.org",
                     label=1 - (request.prediction or 0) if action == "override" else None,
                     note="demo review")
    serve.close()  # records the reviewers' decisions and the explanations still being computed
    run.flush()
    explained = [r["data"] for r in iter_records(run.path, kinds={"explain.attribution"})]
    for e in explained[:1]:
        top = ", ".join(f"{name} {value:+.2f}" for name, value in e["top"][:3])
        console.print(f"explained {len(explained)} flagged decisions for their reviewers, e.g. {e['decision_id']}: "
                      f"{top} (delta {e['delta']:.1e})")
    console.print(f"served {len(test_x)} rows: {monitor.windows_seen} drift windows, "
                  f"{monitor.windows_alerting} alerting; {len(queue.open_requests(100_000))} requests await review")
