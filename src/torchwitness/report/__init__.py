"""Views over findings: rich console, JSON, SARIF 2.1.0, baselines, and the one entry point :func:`emit`.

Reporters read :class:`~torchwitness.rules.findings.Finding` lists and never change them; the CLI commands that
produce findings (``audit``, ``scan``, ``scan-model``) all render through :func:`emit`, so they share the same
``-f console|json|sarif -o FILE --baseline --select --ignore --fail-level`` behaviour.

>>> from torchwitness.rules.findings import Finding
>>> from torchwitness.rules.catalogue import Phase, Severity
>>> f = Finding("TW101", Severity.ERROR, Phase.FORWARD, "model", "loss is NaN", first_step=3, last_step=3)
>>> import io
>>> out = io.StringIO()
>>> emit([f], "json", stream=out, fail_level="error").exit_code
1
>>> read_findings(out.getvalue())[0].fingerprint == f.fingerprint
True
"""

from torchwitness.report.baseline import load_baseline, write_baseline
from torchwitness.report.console import FindingsView
from torchwitness.report.emit import FORMATS, Outcome, emit, filter_findings
from torchwitness.report.from_run import run_findings
from torchwitness.report.json_report import read_findings, to_json
from torchwitness.report.sarif import load_sarif_schema, to_sarif

__all__ = ["FORMATS", "FindingsView", "Outcome", "emit", "filter_findings", "load_baseline", "load_sarif_schema",
           "read_findings", "run_findings", "to_json", "to_sarif", "write_baseline"]
