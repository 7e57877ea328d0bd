"""Screenshots of the demo's own dossier for the README and the docs: ``docs/dossier-page{1,2,3}.png``.

    make demo                       # writes evidence/dossier/dossier.html
    python scripts/screenshots.py   # [--dossier evidence/dossier/dossier.html] [--out docs]

Opens the dossier in headless Chromium (Debian's ``chromium``, driven by Playwright), waits for its in-browser
verification to finish, and captures 1100x1400 views: the top of the document (verification, general description,
training loss), Annex IV.6 (certificates of the edits) and Annex IV.9 (post-market monitoring, with the drift chart
per feature). Exits 1 when the page does not say "verified".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWS = (("dossier-page1.png", None), ("dossier-page2.png", "annex-iv-6"), ("dossier-page3.png", "annex-iv-9"))
WIDTH, HEIGHT = 1100, 1400


def capture(dossier: Path, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        page.goto(dossier.resolve().as_uri())
        page.wait_for_function("document.getElementById('tw-verify-status').textContent !== 'checking…'",
                               timeout=30_000)
        state = page.inner_text("#tw-verify-status")
        if not state.startswith("verified"):
            browser.close()
            raise SystemExit(f"error: {dossier} says {state!r}, not 'verified'; no screenshots taken")
        total = page.evaluate("document.documentElement.scrollHeight")
        for name, section in VIEWS:
            top = 0 if section is None else page.evaluate(
                f"document.getElementById('{section}').getBoundingClientRect().top + window.scrollY")
            top = max(0, min(top, total - HEIGHT))
            path = out / name
            page.screenshot(path=str(path), full_page=True, clip={"x": 0, "y": top, "width": WIDTH, "height": HEIGHT})
            written.append(path)
        browser.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dossier", type=Path, default=Path("evidence/dossier/dossier.html"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    args = parser.parse_args(argv)
    if not args.dossier.is_file():
        print(f"error: {args.dossier} not found; run `make demo` first", file=sys.stderr)
        return 2
    for path in capture(args.dossier, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
