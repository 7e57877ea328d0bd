"""The PDF dossier's navigation (page numbers, a bookmark per section, citations linked to a table of the cited
records) and the charts' layout (one drift series per feature and statistic; fairness ratios and differences on
charts of their own)."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from torchwitness.ledger import iter_records
from torchwitness.report.build import build_document
from torchwitness.report.render import write_report


@pytest.fixture(scope="module")
def doc(rich_run: Path):
    return build_document(rich_run, proofs=2)


@pytest.mark.skipif(not shutil.which("pdftohtml") or not shutil.which("pdfinfo"), reason="poppler-utils missing")
def test_pdf_has_page_numbers_bookmarks_and_linked_citations(doc, tmp_path: Path) -> None:
    pdf = write_report(doc, tmp_path / "dossier.pdf", "pdf")
    pages = int(re.search(r"Pages:\s+(\d+)", subprocess.run(["pdfinfo", str(pdf)], capture_output=True,
                                                             text=True, check=True).stdout).group(1))
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    numbers = [int(n) for n in re.findall(r"page (\d+)\s*$", text, flags=re.M)]
    assert numbers == list(range(1, pages + 1))
    raw = pdf.read_bytes()
    xml = subprocess.run(["pdftohtml", "-xml", "-stdout", "-i", "-q", str(pdf)], capture_output=True, text=True,
                         check=True).stdout
    outline = html.unescape(xml[xml.index("<outline>"):xml.rindex("</outline>")])
    titles = re.findall(r">([^<]+)</item>", outline)
    assert titles == [*(sec.title for sec in doc.sections), "Cited records"]  # a bookmark per section
    # every citation is a link into the appendix: its destination is a page of "Cited records"
    kids = re.search(rb"/Kids \[([^\]]*)\]", raw).group(1)
    page_ids = [int(n) for n in re.findall(rb"(\d+) 0 R", kids)]
    appendix_first = next(i for i, page in enumerate(text.split("\f")) if "Cited records" in page)
    links = re.findall(rb"/Dest \[ (\d+) 0 R [^\]]*\] /Rect [^>]*/Subtype /Link", raw)  # not outline entries
    targets = [page_ids.index(int(n)) for n in links]
    cited = doc.cited()
    cited_statements = sum(1 for b in doc.statements() if b.cites)
    assert len(targets) >= cited_statements and min(targets) >= appendix_first
    kinds = {r["seq"]: r["kind"] for r in iter_records(doc.run_dir)}
    appendix = " ".join(text[text.rindex("Cited records"):].split())
    for s in cited[:20]:
        assert f"{s} {kinds[s]}" in appendix


def test_drift_chart_has_one_series_per_feature_and_statistic(doc) -> None:
    chart = next(c for c in doc.charts() if c.title.startswith("Drift statistics"))
    labels = [s.label for s in chart.series]
    assert labels and len(labels) == len(set(labels))
    alerts = list(iter_records(doc.run_dir, kinds={"drift.alert"}))
    expected = {f"{a['data']['feature']} ({a['data']['statistic']})" for a in alerts}
    assert set(labels) == expected
    for s in chart.series:  # a series' points are its own feature's alerts, in window order
        xs = [x for x, _ in s.points]
        assert xs == sorted(xs)


@pytest.fixture(scope="module")
def gated_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs of a real fairness gate over a sex x race intersection (every disparity, ratios included)."""
    import numpy as np
    import torch

    import torchwitness as tw
    from torchwitness.controls.fairness import FairnessAccumulator, FairnessGate, GroupEncoder

    rng = np.random.default_rng(0)
    sensitive = {"sex": rng.choice(["f", "m"], 2000), "race": rng.choice(["a", "b"], 2000)}
    enc = GroupEncoder.fit(sensitive)
    groups = torch.from_numpy(enc.flat(enc.encode(sensitive)))
    y = torch.from_numpy(rng.integers(0, 2, 2000))
    path = tmp_path_factory.mktemp("gated") / "run"
    with tw.Run(path) as run:
        gate = FairnessGate(run, metric="demographic_parity_difference", threshold=0.1, attributes=["sex"],
                            policy="warn")
        for epoch in range(2):
            acc = FairnessAccumulator(enc, min_group_size=30, reps=100, seed=0)
            acc.update(torch.from_numpy(rng.integers(0, 2, 2000)), y, groups)
            gate.evaluate(acc, epoch=epoch)
    return path


def test_fairness_ratios_and_differences_are_on_separate_charts(gated_run: Path) -> None:
    charts = {c.title: c for c in build_document(gated_run, proofs=0).charts() if c.title.startswith("Fairness")}
    differences = charts["Fairness disparities over epochs: differences (with intervals)"]
    ratios = charts["Fairness disparities over epochs: ratios (with intervals)"]
    assert all("_ratio" in s.label for s in ratios.series)
    assert differences.series and all("_ratio" not in s.label for s in differences.series)
    assert ratios.y_label.startswith("ratio") and differences.y_label.startswith("difference")
