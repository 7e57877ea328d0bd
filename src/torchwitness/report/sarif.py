"""SARIF 2.1.0 (OASIS Standard, errata 01) logs for GitHub code scanning and other SARIF viewers.

- ``tool.driver.rules``: one reporting descriptor per rule that has a result, with its ID, name, title, the
  first paragraph of its documentation, and help text made of the remediation and the full documentation.
- ``results``: level ``error``/``warning``/``note`` from ERROR/WARN/INFO (HINT → ``note``); the finding's
  fingerprint in ``partialFingerprints`` under ``torchwitness/v1``; count and steps in ``properties``.
- locations: a physical location (file, line, column) for findings located in source (``path.py:LINE[:COL]``,
  or ``details`` holding ``path``/``line``), else a logical location (the module path inside the model), with
  the ``anchor`` file (for ``audit``: the factory's definition) as its physical location when one is given.

The official schema ships with the package (``schemas/sarif-schema-2.1.0.json.gz``, the OASIS file
``https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json``, unchanged;
Copyright © OASIS Open 2020, distributed under the OASIS IPR Policy) so outputs can be validated offline.

>>> from torchwitness.rules.findings import Finding
>>> from torchwitness.rules.catalogue import Phase, Severity
>>> log = to_sarif([Finding("TW101", Severity.ERROR, Phase.FORWARD, "model", "loss is NaN")])
>>> log["runs"][0]["results"][0]["level"]
'error'
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path, PurePath
from typing import Any

from torchwitness import __version__
from torchwitness.report._rules import rule_or_none
from torchwitness.report.baseline import SARIF_FINGERPRINT_KEY
from torchwitness.report.json_report import jsonable
from torchwitness.rules.catalogue import Rule, Severity
from torchwitness.rules.findings import Finding

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
LEVEL = {Severity.ERROR: "error", Severity.WARN: "warning", Severity.INFO: "note", Severity.HINT: "note"}
# GitHub code scanning ranks alerts by this property of the rule.
PROBLEM_SEVERITY = {Severity.ERROR: "error", Severity.WARN: "warning", Severity.INFO: "recommendation",
                    Severity.HINT: "recommendation"}
SOURCE_ROOT = "%SRCROOT%"
_SOURCE_LOCATION = re.compile(r"^(?P<path>.+?\.(?:py|pyi|ipynb)):(?P<line>\d+)(?::(?P<col>\d+))?$")


@cache
def load_sarif_schema() -> dict[str, Any]:
    """The official SARIF 2.1.0 JSON schema shipped inside the package."""
    data = resources.files("torchwitness.report").joinpath("schemas/sarif-schema-2.1.0.json.gz").read_bytes()
    return json.loads(gzip.decompress(data))


def to_sarif(findings: Sequence[Finding], *, source_root: str | Path | None = None,
             anchor: tuple[str, int] | None = None) -> dict[str, Any]:
    """A SARIF log (as a dict) with one run holding ``findings``.

    ``source_root`` is the folder relative source paths are resolved against (``%SRCROOT%``). ``anchor`` (file,
    line) is where findings located only inside a model also point physically (``audit`` passes the factory's
    definition), since code-scanning services show only results with a file.
    """
    rule_ids = sorted({f.rule_id for f in findings})
    index = {rid: i for i, rid in enumerate(rule_ids)}
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "torchwitness", "version": __version__, "semanticVersion": __version__,
                            "informationUri": "https://pypi.org/project/torchwitness/",
                            "rules": [_descriptor(rid) for rid in rule_ids]}},
        "columnKind": "unicodeCodePoints",
        "results": [_result(f, index[f.rule_id], anchor) for f in findings],
    }
    if source_root is not None:
        run["originalUriBaseIds"] = {SOURCE_ROOT: {"uri": Path(source_root).resolve().as_uri() + "/"}}
    return {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}


def _descriptor(rule_id: str) -> dict[str, Any]:
    r = rule_or_none(rule_id)
    if r is None:  # a finding from a rule not installed here: say so rather than invent documentation
        return {"id": rule_id, "shortDescription": {"text": f"{rule_id} (rule not installed where this log "
                                                            "was written)"}}
    doc = r.doc or r.title
    first = doc.split("\n\n", 1)[0].replace("\n", " ")
    help_text = f"{r.remediation}\n\n{doc}" if r.remediation else doc
    props: dict[str, Any] = {"tags": [r.category, str(r.phase)], "problem.severity": PROBLEM_SEVERITY[r.severity],
                             "source": r.source}
    if r.obligations:
        props["obligations"] = list(r.obligations)
    return {"id": r.id, "name": _pascal(r.name), "shortDescription": {"text": r.title},
            "fullDescription": {"text": first}, "help": {"text": help_text, "markdown": _markdown(r, doc)},
            "defaultConfiguration": {"level": LEVEL[r.severity]}, "properties": props}


def _markdown(r: Rule, doc: str) -> str:
    parts = [f"**{r.title}**", doc, f"**Fix.** {r.remediation}" if r.remediation else ""]
    if r.obligations:
        parts.append("Bears on: " + ", ".join(r.obligations))
    if r.references:
        parts.append("References: " + ", ".join(r.references))
    return "\n\n".join(p for p in parts if p)


def _pascal(name: str) -> str:
    # SARIF recommends a PascalCase rule name ("NonfiniteLoss") rather than our kebab-case slug.
    return "".join(w[:1].upper() + w[1:] for w in re.split(r"[-_ ]+", name) if w) or name


def _result(f: Finding, rule_index: int, anchor: tuple[str, int] | None) -> dict[str, Any]:
    props: dict[str, Any] = {"severity": str(f.severity), "phase": str(f.phase), "count": f.count}
    if f.first_step is not None:
        props["firstStep"] = f.first_step
    if f.last_step is not None:
        props["lastStep"] = f.last_step
    if f.ranks:
        props["ranks"] = list(f.ranks)
    if f.details:
        props["details"] = json.loads(json.dumps(f.details, default=jsonable))
    if f.consequences:  # findings this root cause explains, nested rather than reported as results of their own
        props["consequences"] = [{"ruleId": c.rule_id, "level": LEVEL[c.severity], "location": c.location,
                                  "message": c.message, "firstStep": c.first_step, "count": c.count}
                                 for c in f.consequences]
    return {"ruleId": f.rule_id, "ruleIndex": rule_index, "level": LEVEL[f.severity],
            "message": {"text": f.message}, "locations": [_location(f, anchor)],
            "partialFingerprints": {SARIF_FINGERPRINT_KEY: f.fingerprint}, "properties": props}


def _location(f: Finding, anchor: tuple[str, int] | None) -> dict[str, Any]:
    path, line, col = f.details.get("path"), f.details.get("line"), f.details.get("col")
    m = _SOURCE_LOCATION.match(f.location)
    if path is None and m is not None:
        path, line, col = m["path"], int(m["line"]), int(m["col"]) if m["col"] else None
    if path is not None:
        return {"physicalLocation": _physical(str(path), line, col)}
    name = f.location
    located: dict[str, Any] = {"logicalLocations": [{"fullyQualifiedName": name, "name": name.rpartition(".")[2],
                                                     "kind": "module"}]}
    if anchor is not None:
        located["physicalLocation"] = _physical(anchor[0], anchor[1], None)
    return located


def _physical(path: str, line: Any, col: Any) -> dict[str, Any]:
    p = PurePath(path)
    artifact = {"uri": Path(p).as_uri()} if p.is_absolute() else {"uri": p.as_posix(), "uriBaseId": SOURCE_ROOT}
    physical: dict[str, Any] = {"artifactLocation": artifact}
    if isinstance(line, int) and line >= 1:
        physical["region"] = {"startLine": line, **({"startColumn": col} if isinstance(col, int) and col >= 1
                                                    else {})}
    return physical
