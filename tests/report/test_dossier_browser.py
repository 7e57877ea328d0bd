"""The HTML dossier in headless Chromium: no console errors, charts drawn, WebCrypto verification says
"verified", and tampered copies say "not verified"."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from torchwitness.report.build import build_document
from torchwitness.report.evidence import Evidence
from torchwitness.report.render import render_html

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
EVIDENCE = re.compile(r'(<script type="application/json" id="tw-evidence">)(.*?)(</script>)', re.S)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def html(rich_run: Path) -> str:
    return render_html(build_document(rich_run))


def open_page(browser, path: Path, *, viewport: dict | None = None):
    page = browser.new_page(viewport=viewport or {"width": 1100, "height": 1400})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    # Self-contained: the only thing the page may load is itself.
    page.on("request", lambda r: problems.append(f"request: {r.url}") if r.url != path.as_uri() else None)
    page.goto(path.as_uri())
    page.wait_for_function("document.getElementById('tw-verify-status').textContent !== 'checking…'",
                           timeout=15_000)
    return page, problems


def status(browser, tmp_path: Path, text: str, name: str) -> tuple[str, str]:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    page, _ = open_page(browser, path)
    try:
        return page.inner_text("#tw-verify-status"), page.inner_text("#tw-verify-detail")
    finally:
        page.close()


def test_dossier_verifies_and_charts_render(browser, html: str, rich_run: Path, tmp_path: Path) -> None:
    path = tmp_path / "dossier.html"
    path.write_text(html, encoding="utf-8")
    page, problems = open_page(browser, path)
    assert page.inner_text("#tw-verify-status") == "verified", page.inner_text("#tw-verify-detail")
    assert "24 inclusion proofs" in page.inner_text("#tw-verify-detail")
    assert problems == []
    charts = page.eval_on_selector_all("svg.chart", "els => els.map(e => [e.getAttribute('aria-label'), "
                                       "e.querySelectorAll('circle.pt').length, e.getBoundingClientRect().width])")
    assert len(charts) >= 6
    assert all(n > 0 and width > 100 for _, n, width in charts), charts
    seqs = page.eval_on_selector_all("svg.chart circle.pt", "els => els.map(e => Number(e.dataset.seq))")
    ev = Evidence.load(rich_run)
    assert all(ev.seq(s) is not None for s in seqs)
    shots = Path(os.environ.get("TW_SCREENSHOTS_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    for i, anchor in enumerate(("annex-iv-1", "annex-iv-2", "annex-iv-3"), start=1):
        page.evaluate("window.scrollTo(0, 0)" if i == 1 else f"document.getElementById('{anchor}').scrollIntoView()")
        page.screenshot(path=str(shots / f"dossier-page{i}.png"))
        assert (shots / f"dossier-page{i}.png").stat().st_size > 10_000
    page.close()


def test_tampered_record_is_not_verified(browser, html: str, tmp_path: Path) -> None:
    m = EVIDENCE.search(html)
    data = json.loads(m.group(2))
    record = json.loads(data["proofs"][-1]["record"])
    record["ts"] += 1  # one microsecond later: still a well-formed record, no longer the one that was signed
    data["proofs"][-1]["record"] = json.dumps(record, separators=(",", ":"), sort_keys=True)
    tampered = html[:m.start(2)] + json.dumps(data).replace("<", "\\u003c") + html[m.end(2):]
    result, detail = status(browser, tmp_path, tampered, "tampered-record.html")
    assert result == "not verified" and f"seq {record['seq']} is not included" in detail


def test_tampered_statement_is_not_verified(browser, html: str, tmp_path: Path) -> None:
    proven = {p["seq"] for p in json.loads(EVIDENCE.search(html).group(2))["proofs"]}
    for m in re.finditer(r'data-seq="(\d+)" data-field="[^"]+" data-value="([^"]+)"', html):
        if int(m.group(1)) in proven:
            break
    else:
        pytest.fail("no statement cites a proven record")
    forged = str(float(m.group(2)) * 0.5 + 0.001)
    tampered = html[:m.start(2)] + forged + html[m.end(2):]
    result, detail = status(browser, tmp_path, tampered, "tampered-statement.html")
    assert result == "not verified" and f"statement citing seq {m.group(1)}" in detail


def test_tampered_checkpoint_is_not_verified(browser, html: str, tmp_path: Path) -> None:
    m = EVIDENCE.search(html)
    data = json.loads(m.group(2))
    lines = data["checkpoint"].split("\n")
    lines[1] = str(int(lines[1]) + 1)  # claim a larger tree under the same signature
    data["checkpoint"] = "\n".join(lines)
    tampered = html[:m.start(2)] + json.dumps(data).replace("<", "\\u003c") + html[m.end(2):]
    result, detail = status(browser, tmp_path, tampered, "tampered-checkpoint.html")
    assert result == "not verified" and "signature" in detail


def test_page_root_must_be_the_signed_root(browser, html: str, tmp_path: Path) -> None:
    m = EVIDENCE.search(html)
    data = json.loads(m.group(2))
    data["root"] = "sha256:" + "0" * 64
    tampered = html[:m.start(2)] + json.dumps(data).replace("<", "\\u003c") + html[m.end(2):]
    result, detail = status(browser, tmp_path, tampered, "tampered-root.html")
    assert result == "not verified" and "not the signed root" in detail
