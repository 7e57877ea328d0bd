"""Findings read back from a run folder's ``finding`` records, so any report can be rendered after the fact.

>>> import tempfile, torchwitness as tw
>>> from torchwitness.rules.findings import Finding
>>> folder = tempfile.mkdtemp()
>>> with tw.Run(folder) as run:
...     _ = run.finding_set.add(Finding.of("TW101", "loss", "loss is nan at step 3", step=3))
...     _ = run.finding_set.add(Finding.of("TW101", "loss", "loss is nan at step 9", step=9))
...     run.finding_set.summarise()
>>> [(f.rule_id, f.count, f.first_step, f.last_step) for f in run_findings(folder)]
[('TW101', 2, 3, 9)]
"""

from __future__ import annotations

from pathlib import Path

from torchwitness.ledger.reader import iter_records
from torchwitness.rules.findings import Finding


def run_findings(run_dir: str | Path) -> list[Finding]:
    """One finding per fingerprint: its latest final tally, or its first occurrence when the run recorded none
    (a run still in progress, or one that crashed before closing)."""
    latest: dict[str, Finding] = {}
    for r in iter_records(Path(run_dir), kinds={"finding"}):
        data = r["data"]
        f = Finding.from_dict(data)
        if data.get("final") or f.fingerprint not in latest:
            latest[f.fingerprint] = f
    return sorted(latest.values(), key=lambda f: (-f.severity, f.rule_id, f.location))
