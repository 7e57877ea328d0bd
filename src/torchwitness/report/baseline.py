"""Baselines: a file of finding fingerprints whose findings are suppressed in later reports.

A fingerprint hashes a finding's rule ID and location, not its message or numbers, so a known problem stays
suppressed while its counts change; a new location or rule shows up again. ``load_baseline`` also accepts a
JSON findings report or a SARIF log written by torchwitness, so any earlier report can serve as the baseline.

>>> import tempfile, pathlib
>>> from torchwitness.rules.findings import Finding
>>> from torchwitness.rules.catalogue import Phase, Severity
>>> f = Finding("TW101", Severity.ERROR, Phase.FORWARD, "model", "loss is NaN")
>>> path = pathlib.Path(tempfile.mkdtemp()) / "baseline.json"
>>> write_baseline([f], path)
>>> f.fingerprint in load_baseline(path)
True
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torchwitness.errors import InputError
from torchwitness.jsonfile import read_json
from torchwitness.rules.findings import Finding

BASELINE_FORMAT = "torchwitness.baseline/v1"
SARIF_FINGERPRINT_KEY = "torchwitness/v1"


def write_baseline(findings: Iterable[Finding], path: str | Path) -> None:
    """Write the fingerprints (with rule ID and location, for people reading the file) of ``findings``."""
    entries = sorted({f.fingerprint: {"fingerprint": f.fingerprint, "rule_id": f.rule_id, "location": f.location}
                      for f in findings}.values(), key=lambda e: (e["rule_id"], e["location"]))
    Path(path).write_text(json.dumps({"format": BASELINE_FORMAT, "fingerprints": entries}, indent=2) + "\n")


def load_baseline(path: str | Path) -> frozenset[str]:
    """The fingerprints in a baseline file, a JSON findings report or a torchwitness SARIF log."""
    p = Path(path)
    doc = read_json(p, "baseline file", expect=None)
    prints = _fingerprints(doc)
    if prints is None:
        raise InputError(f"baseline {p} is neither a torchwitness baseline, a JSON findings report nor SARIF")
    return frozenset(prints)


def _fingerprints(doc: Any) -> list[str] | None:
    if isinstance(doc, dict) and doc.get("format") == BASELINE_FORMAT:
        return [e["fingerprint"] if isinstance(e, dict) else e for e in doc.get("fingerprints", [])]
    if isinstance(doc, dict) and isinstance(doc.get("runs"), list):  # SARIF
        return [r.get("partialFingerprints", {}).get(SARIF_FINGERPRINT_KEY) for run in doc["runs"]
                for r in run.get("results", []) if r.get("partialFingerprints", {}).get(SARIF_FINGERPRINT_KEY)]
    findings = doc.get("findings") if isinstance(doc, dict) else doc
    if isinstance(findings, list) and all(isinstance(f, dict) and "fingerprint" in f for f in findings):
        return [f["fingerprint"] for f in findings]
    return None
