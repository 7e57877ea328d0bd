"""``torchwitness rules`` and ``explain``, including a third-party rule package found by its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from torchwitness.rules import catalogue
from torchwitness.rules.catalogue import all_rules, get_rule

Cli = Callable[..., tuple[int, str, str]]
SRC = Path(__file__).resolve().parents[2] / "src"


def test_rules_lists_the_catalogue_with_sources(cli: Cli) -> None:
    rc, out, _ = cli("rules", "--json")
    listed = {r["id"]: r for r in json.loads(out)}
    assert rc == 0 and set(listed) == {r.id for r in all_rules()}
    assert listed["TW302"] == {"id": "TW302", "name": "adam-weight-decay", "title": get_rule("TW302").title,
                               "severity": "warn", "phase": "init", "category": "correctness",
                               "source": "torchwitness", "obligations": list(get_rule("TW302").obligations)}
    rc, out, _ = cli("rules", "--phase", "init")
    assert rc == 0 and "TW302" in out and "TW101" not in out
    rc, _, err = cli("rules", "--phase", "sideways")
    assert rc == 2 and "unknown phase 'sideways'" in err


def test_explain_prints_doc_fix_and_obligations(cli: Cli) -> None:
    r = get_rule("TW304")
    rc, out, _ = cli("explain", "TW304")
    flat = " ".join(out.split())
    assert rc == 0 and r.title in flat and "Fix." in flat and "EU-AI-Act:Art.15" in flat
    assert " ".join(r.doc.split()[:8]) in flat
    rc, by_name, _ = cli("explain", "zero-grad-forgotten")
    assert rc == 0 and by_name == out


def test_explain_unknown_id_is_one_line(cli: Cli) -> None:
    rc, out, err = cli("explain", "TW9999")
    assert rc == 2 and out == "" and "unknown rule ID 'TW9999'" in err and err.strip().count("\n") == 0


PLUGIN = '''
"""A third-party rule package: one rule registered on import, one from a callable."""
from torchwitness.rules.catalogue import Phase, Rule, Severity, rule


@rule("ACME101", name="acme-module-rule", title="Registered on import", severity="warn", phase="init",
      remediation="Nothing to fix.")
def acme_module_rule(view):
    """A rule registered when the plugin module is imported."""
    return []


def more_rules():
    return [Rule(id="ACME102", name="acme-callable-rule", title="From a callable", severity=Severity.INFO,
                 phase=Phase.STEP, check=None, remediation="Nothing to fix.")]
'''


def install_plugin(root: Path) -> Path:
    """A real (unpacked) distribution: package + dist-info with entry points, as pip would leave it."""
    (root / "acme_rules").mkdir(parents=True)
    (root / "acme_rules" / "__init__.py").write_text(PLUGIN)
    info = root / "acme_rules-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-rules\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [torchwitness.rules]
        module = acme_rules
        callable = acme_rules:more_rules
        """))
    return root


@pytest.fixture
def fresh_registry() -> Iterator[None]:
    """Entry points are loaded once per process: reload them here and restore the catalogue afterwards."""
    saved = dict(catalogue._REGISTRY.rules)
    catalogue._REGISTRY.plugins_loaded = False
    yield
    catalogue._REGISTRY.rules.clear()
    catalogue._REGISTRY.rules.update(saved)
    sys.modules.pop("acme_rules", None)


def test_plugin_rules_show_with_their_source(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             fresh_registry: None) -> None:
    monkeypatch.syspath_prepend(str(install_plugin(tmp_path / "site")))
    rc, out, _ = cli("rules", "--json", "--source", "acme-rules")
    assert rc == 0
    assert [(r["id"], r["source"]) for r in json.loads(out)] == [("ACME101", "acme-rules"), ("ACME102", "acme-rules")]
    rc, out, _ = cli("rules")
    assert "ACME101" in out and "acme-rules" in out and "TW101" in out
    rc, out, _ = cli("explain", "ACME101")
    assert rc == 0 and "registered when the plugin module is imported" in out


def test_plugin_in_a_fresh_process(tmp_path: Path) -> None:
    site = install_plugin(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(SRC)]), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-c", "from torchwitness.cli import main; main()", "rules", "--json"],
                          capture_output=True, text=True, env=env, timeout=120, check=True)
    sources = {r["id"]: r["source"] for r in json.loads(done.stdout)}
    assert sources["ACME101"] == sources["ACME102"] == "acme-rules" and sources["TW101"] == "torchwitness"
