"""Write ``docs/reference/rules.md``, the rule catalogue, from the rules themselves (ID, severity, phase, the
docstring that defines each, its fix): ``python scripts/rules_page.py``. The page is kept in the checkout, where a
reader of the repository finds it too; ``tests/test_docs.py`` fails when it differs from the rules.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reference" / "rules.md"
sys.path.insert(0, str(ROOT / "src"))  # the checkout's own package, whichever torchwitness is installed

INTRO = """# Rule catalogue

Every rule torchwitness ships, written from the rules themselves by `scripts/rules_page.py` (a test fails when this
page and the rules differ). `torchwitness rules` lists them in a terminal and `torchwitness explain TW101` prints
one.

- **Severities.** A run's report shows ERROR, WARN and INFO by default; ERROR exits 1 (`--fail-level warn` makes
  WARN exit 1 too); HINT (performance) is shown only with `--hints`.
- **Root causes.** A finding that another explains is listed under that root, not on its own: see
  [root causes](../topics/auditor.md).
- **Settings.** Thresholds named in a rule (`dead_fraction`, say) are set with `run.watch(..., thresholds={...})`
  (every name and default: [thresholds](#thresholds)); rules are chosen with
  `run.watch(..., select=[...], ignore=[...])`.
"""


def render() -> str:
    from torchwitness.rules.catalogue import all_rules

    rules = sorted((r for r in all_rules() if r.source == "torchwitness" and r.id.startswith("TW")), key=lambda r: r.id)
    parts = [INTRO, "| ID | name | what it finds | severity | phase |", "|---|---|---|---|---|"]
    parts += [f"| [{r.id}](#{r.id.lower()}) | `{r.name}` | {r.title} | {r.severity} | {r.phase} |" for r in rules]
    for r in rules:
        doc = (r.doc or "(no documentation)").strip()
        parts += ["", f"## {r.id}", "", f"**`{r.name}`: {r.title}.** Severity {r.severity}, phase {r.phase}, "
                  f"category {r.category}.", "", doc]
        if r.remediation:
            parts += ["", f"**Fix.** {r.remediation}"]
        if r.obligations:
            parts += ["", "**Bears on** " + ", ".join(r.obligations) + "."]
    return "\n".join(parts + thresholds()) + "\n"


def thresholds() -> list[str]:
    """The table of ``run.watch(thresholds=...)`` names, defaults and meanings, from ``probes/config.py`` (the
    meaning is the comment on each line of ``DEFAULT_THRESHOLDS``)."""
    from torchwitness.probes.config import DEFAULT_THRESHOLDS

    source = (ROOT / "src" / "torchwitness" / "probes" / "config.py").read_text()
    meaning = dict(re.findall(r'^\s*"(\w+)": [^#\n]*# (.*)$', source, flags=re.M))
    rows = [f"| `{name}` | {value:g} | {meaning.get(name, '').replace('|', chr(92) + '|')} |"
            for name, value in DEFAULT_THRESHOLDS.items()]
    return ["", "## Thresholds", "", "| name | default | meaning |", "|---|---|---|", *rows]


if __name__ == "__main__":
    PAGE.write_text(render())
    print(f"wrote {PAGE.relative_to(ROOT)}")
