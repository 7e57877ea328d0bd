"""``emit``: filter findings (select/ignore, baseline, hints), render them in one format, compute the exit code.

Every command that produces findings calls this, so ``-f console|json|sarif -o FILE --baseline --select --ignore
--fail-level --hints --write-baseline`` mean the same everywhere (see ``torchwitness.cli._findings_options``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

from torchwitness.errors import InputError
from torchwitness.report.baseline import load_baseline, write_baseline
from torchwitness.report.console import FindingsView
from torchwitness.report.json_report import jsonable, to_json
from torchwitness.report.sarif import to_sarif
from torchwitness.rules.catalogue import Severity, select_rules
from torchwitness.rules.findings import Finding

FORMATS = ("console", "json", "sarif")
NEVER = "never"


@dataclass
class Outcome:
    """What :func:`emit` did: the findings shown, how many the baseline and the hint filter removed, the exit code."""

    shown: list[Finding] = field(default_factory=list)
    suppressed: int = 0
    hidden_hints: int = 0
    exit_code: int = 0


def parse_fail_level(text: str) -> Severity | None:
    """``error``/``warn``/``info``/``hint``, or ``never`` (always exit 0) → ``None``."""
    if text.strip().lower() == NEVER:
        return None
    try:
        return Severity.parse(text)
    except InputError:
        raise InputError(f"unknown --fail-level {text!r}; use one of "
                         f"{', '.join([*(s.name.lower() for s in Severity), NEVER])}") from None


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return fmt


def filter_findings(findings: Iterable[Finding], *, select: Sequence[str] = (), ignore: Sequence[str] = (),
                    baseline: frozenset[str] = frozenset(), show_hints: bool = False) -> Outcome:
    """Apply ``--select``/``--ignore`` (IDs or prefixes; unknown IDs raise), the baseline and the hint filter."""
    chosen = select_rules(select, ignore) if (select or ignore) else None
    out = Outcome()
    for f in (x for root in findings for x in _chosen(root, chosen)):
        if f.fingerprint in baseline:
            out.suppressed += 1
        elif f.severity is Severity.HINT and not show_hints:
            out.hidden_hints += 1
        else:
            out.shown.append(f)
    return out


def _chosen(root: Finding, chosen: set[str] | None) -> list[Finding]:
    """What ``--select``/``--ignore`` keep of a root and its consequences: a chosen root with its chosen
    consequences; of a root not chosen, its chosen consequences, each on its own (still naming its cause)."""
    if chosen is None:
        return [root]
    kept = [c for c in root.consequences if c.rule_id in chosen]
    if root.rule_id not in chosen:
        return kept
    return [root if len(kept) == len(root.consequences) else replace(root, consequences=kept)]


def emit(findings: Iterable[Finding], fmt: str = "console", output: str | Path | None = None, *,
         baseline: str | Path | None = None, select: Sequence[str] = (), ignore: Sequence[str] = (),
         fail_level: str = "error", show_hints: bool = False, write_baseline_to: str | Path | None = None,
         title: str | None = None, stream: TextIO | None = None, source_root: str | Path | None = None,
         anchor: tuple[str, int] | None = None) -> Outcome:
    """Render ``findings`` to ``output`` (a file) or ``stream`` (default stdout); return the :class:`Outcome`.

    ``exit_code`` is 1 when a shown finding is at least ``fail_level`` (``never`` disables this), else 0.
    ``write_baseline_to`` writes every finding left after ``--select``/``--ignore`` (hints included) as a new
    baseline. ``source_root`` and ``anchor`` are handed to :func:`~torchwitness.report.sarif.to_sarif`.
    """
    check_format(fmt)
    findings = list(findings)
    level = parse_fail_level(fail_level)
    prints = load_baseline(baseline) if baseline is not None else frozenset()
    out = filter_findings(findings, select=select, ignore=ignore, baseline=prints, show_hints=show_hints)
    if write_baseline_to is not None:
        kept = filter_findings(findings, select=select, ignore=ignore, show_hints=True).shown
        write_baseline(kept, write_baseline_to)
    shown = sorted(out.shown, key=lambda f: (-f.severity, f.rule_id, f.location))
    out.shown = shown
    if fmt == "console":
        _print_console(FindingsView(shown, title=title, suppressed=out.suppressed, hidden_hints=out.hidden_hints),
                       output, stream)
    else:
        if fmt == "json":
            text = to_json(shown, suppressed=out.suppressed, hidden_hints=out.hidden_hints)
        else:
            log = to_sarif(shown, source_root=source_root, anchor=anchor)
            text = json.dumps(log, indent=2, default=jsonable, ensure_ascii=False)
        _write(text + "\n", output, stream)
    out.exit_code = int(level is not None and any(f.severity >= level for f in shown))
    return out


def _write(text: str, output: str | Path | None, stream: TextIO | None) -> None:
    if output is not None:
        Path(output).write_text(text, encoding="utf-8")
    else:
        (stream or sys.stdout).write(text)


def _print_console(view: FindingsView, output: str | Path | None, stream: TextIO | None) -> None:
    from rich.console import Console

    if output is not None:
        with open(output, "w", encoding="utf-8") as fh:
            Console(file=fh, width=120, no_color=True, highlight=False).print(view)
    else:
        Console(file=stream, highlight=False).print(view)  # file=None: stdout
