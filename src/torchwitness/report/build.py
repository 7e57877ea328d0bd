"""Assemble the Annex IV dossier's document model from a run folder (every format renders this one model).

Example::

    from torchwitness.report import build_document, write_report
    doc = build_document("evidence/adult-run")
    write_report(doc, "dossier.html", "html")   # or "pdf", "md"
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

from torchwitness.errors import InputError, TorchWitnessError
from torchwitness.ledger.proof import Prover
from torchwitness.ledger.verify import verify_run
from torchwitness.report.evidence import Evidence
from torchwitness.report.model import Document, Section, Table
from torchwitness.report.obligations import coverage, load_map
from torchwitness.report.sections import TEST_LOGS, build_section


def annex_heading(number: int, title: str) -> str:
    return f"Annex IV.{number} {title}"


def build_document(run_dir: str | Path, *, proofs: int = 24, seed: int = 0, key: str | None = None) -> Document:
    """The dossier of ``run_dir``: Annex IV sections 1-9, obligations coverage and embedded verification data.

    ``proofs`` inclusion proofs of cited records (chosen with ``seed``) are embedded for re-verification.
    """
    ev = Evidence.load(run_dir)
    omap = load_map()
    sections = []
    for entry in omap.annex_iv:
        n = int(entry["section"])
        sec = Section(key=f"annex-iv-{n}", title=annex_heading(n, entry["title"]), scope=entry["scope"],
                      obligations=[o.id for o in omap.obligations if n in o.annex_iv])
        sections.append(build_section(ev, sec, n, omap.section_kinds(n)))
    sections.append(_coverage_section(ev))
    doc = Document(title="Technical documentation (EU AI Act Art. 11, Annex IV)", run_id=ev.run_id,
                   run_dir=str(Path(run_dir)), generated=dt.datetime.now(dt.timezone.utc).strftime(
                       "%Y-%m-%d %H:%M:%S UTC"), sections=sections, verification={})
    doc.verification = _verification(Path(run_dir), doc.cited(), proofs, seed, key)
    if not doc.verification["ok"]:  # every rendering leads with it: this document is a draft, not evidence
        doc.title = f"NOT VERIFIED: {doc.title}"
    _sign_off_test_logs(sections[1], doc.verification)
    return doc


def _sign_off_test_logs(sec: Section, verification: dict[str, Any]) -> None:
    """Annex IV 2(g) asks for signed test logs: say so only for test records a verified checkpoint covers."""
    table = next((b for b in sec.blocks if isinstance(b, Table) and b.title == TEST_LOGS), None)
    if table is None or not verification.get("ok"):
        return
    seqs = sorted({s for row in table.row_cites for s in row})
    signed = [s for s in seqs if s < verification["covered"]]
    sec.say(f"{len(signed)} of these {len(seqs)} test records are included in the Merkle tree of "
            f"{verification['covered']} records whose checkpoint is signed by {verification['signer']} "
            "(verified when this dossier was generated).", signed, value=len(signed), basis="count")


def _coverage_section(ev: Evidence) -> Section:
    sec = Section(key="coverage", title="Obligations coverage (EU AI Act 2024/1689, GDPR)",
                  scope="which obligations this run holds evidence for, partially or not at all")
    t = Table("Coverage", ["obligation", "title", "status", "needs"], [], [])
    for c in coverage(ev):
        t.add([f"{c.obligation.article} ({c.obligation.framework})", c.obligation.title, c.status,
               c.needs_text()], list(c.seqs))
    sec.blocks.append(t)
    return sec


def _verification(run_dir: Path, cited: list[int], proofs: int, seed: int, key: str | None) -> dict[str, Any]:
    """Python-side verification result plus the signed checkpoint and a sample of inclusion proofs for the
    browser to re-check; a run that does not verify yields the failure, never a silent pass."""
    out: dict[str, Any] = {"proofs": []}
    try:
        result = verify_run(run_dir, key=key)
    except TorchWitnessError as e:
        out.update(ok=False, summary=f"verification failed: {e}")
        return out
    out.update(ok=True, summary=result.summary(), root="sha256:" + result.root.hex(), signer=result.signer,
               records=result.records, covered=result.covered)
    provable = [s for s in cited if s < result.covered]
    sample = sorted(random.Random(seed).sample(provable, min(proofs, len(provable))))
    prover = Prover(run_dir) if sample else None
    for seq in sample:
        try:
            p = prover.prove(seq)
        except InputError:
            continue
        out["checkpoint"], out["verifier_key"] = p["checkpoint"], p["verifier_key"]
        out["proofs"].append({"seq": seq, "record": p["record"], "tree_size": p["tree_size"], "path": p["path"]})
    return out
