"""Findings read back from a run folder's ``finding`` records, so any report can be rendered after the fact.

>>> import tempfile, torchwitness as tw
>>> from torchwitness.rules.findings import Finding, nest
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

from torchwitness.ledger.distributed import read_run_manifest
from torchwitness.ledger.reader import iter_records
from torchwitness.rules.findings import Finding, nest


def _shard_findings(folder: Path) -> tuple[list[Finding], int | None]:
    latest: dict[str, Finding] = {}
    steps = None
    for r in iter_records(folder, kinds={"finding", "train.steps"}):
        data = r["data"]
        if r["kind"] == "train.steps":
            steps = data["steps"]
            continue
        f = Finding.from_dict(data)
        if data.get("final") or f.fingerprint not in latest:
            latest[f.fingerprint] = f
    return list(latest.values()), steps


def run_findings(run_dir: str | Path) -> list[Finding]:
    """One finding per fingerprint: its latest final tally, or its first occurrence when the run recorded none
    (a run still in progress, or one that crashed before closing).

    For a distributed run (one shard per rank) the same finding on several ranks is merged into one that names
    them all, and ranks that ended after different step counts are reported (TW806).
    """
    root = Path(run_dir)
    manifest = root / "run.json"
    if not manifest.exists():
        return _sorted(nest(_shard_findings(root)[0]))
    merged: dict[str, Finding] = {}
    steps: dict[int, int] = {}
    for rank in range(read_run_manifest(root)["world_size"]):
        found, count = _shard_findings(root / f"rank-{rank}")
        if count is not None:
            steps[rank] = count
        for f in found:
            f.ranks = f.ranks or (rank,)
            other = merged.get(f.fingerprint)
            if other is None:
                merged[f.fingerprint] = f
            else:
                other.count += f.count
                other.ranks = tuple(sorted(set(other.ranks) | set(f.ranks)))
                other.severity = max(other.severity, f.severity)
                firsts = [s for s in (other.first_step, f.first_step) if s is not None]
                lasts = [s for s in (other.last_step, f.last_step) if s is not None]
                other.first_step, other.last_step = min(firsts, default=None), max(lasts, default=None)
    from torchwitness.rules.training.distributed import uneven_steps

    return _sorted([*nest(merged.values()), *uneven_steps(steps)])


def _sorted(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (-f.severity, f.rule_id, f.location))
