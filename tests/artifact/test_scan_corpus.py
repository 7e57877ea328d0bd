"""The benchmark's corpus (benchmarks/scan_models.py): every gadget style and carrier format is an ERROR with exit
1 and never runs while scanned, though each does run when loaded; benign checkpoints are never an ERROR."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from torchwitness.cli import app
from torchwitness.rules.artifact import scan_model

_SPEC = importlib.util.spec_from_file_location("tw_bench_scan_models",
                                               Path(__file__).resolve().parents[2] / "benchmarks" / "scan_models.py")
assert _SPEC is not None and _SPEC.loader is not None
bench = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = bench
_SPEC.loader.exec_module(bench)

# every sample loads in one process per loader kind: a payload that raises after running cannot stop the others
_LOAD_ALL = """
import json, sys
for loader, path in json.loads(sys.argv[1]):
    try:
        if loader == "pickle":
            import pickle; pickle.load(open(path, "rb"))
        elif loader == "torch":
            import torch; torch.load(path, weights_only=False)
        elif loader == "numpy":
            import numpy; d = numpy.load(path, allow_pickle=True); [d[k] for k in d.files] if hasattr(d, "files") else d
        else:
            import joblib; joblib.load(path)
    except Exception:
        pass
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return bench.build_payloads(root / "payloads"), bench.build_benign(root / "benign", hf=False)


def test_every_payload_is_an_error_never_runs_when_scanned_and_runs_when_loaded(corpus):
    payloads, _ = corpus
    assert len(payloads) >= 30 and len({s.style for s in payloads}) == len(payloads)
    for s in payloads:
        scan = scan_model(s.path)
        assert scan.verdict == "error", (s.name, [f.message for f in scan.findings])
        assert {f.rule_id for f in scan.findings} & {"TW701", "TW703", "TW704"}, s.name
    assert not [s.name for s in payloads if s.marker.exists()]  # the scanner imported or called nothing
    folder = payloads[0].path.parent
    result = CliRunner().invoke(app, ["scan-model", str(folder), "-f", "json"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert not [s.name for s in payloads if s.marker.exists()]
    # control: the payloads are live, each creates its marker when its loader reads it
    args = json.dumps([[s.loader, str(s.path)] for s in payloads])
    subprocess.run([sys.executable, "-c", _LOAD_ALL, args], capture_output=True, timeout=300,
                   cwd=folder, stdin=subprocess.DEVNULL)
    assert not [s.name for s in payloads if not s.marker.exists()]
    for s in payloads:
        s.marker.unlink()


def test_benign_checkpoints_are_never_an_error(corpus):
    _, benign = corpus
    assert len(benign) >= 10
    verdicts = {s.name: scan_model(s.path).verdict for s in benign}
    assert "error" not in verdicts.values(), verdicts
    assert verdicts["whole-module"] == "warn" and verdicts["state-dict"] == "ok"
    assert verdicts["legacy-tar"] == verdicts["legacy-state-dict"] == verdicts["joblib-arrays"] == "ok"
    assert verdicts["tensor-pickle"] == "ok"  # each storage's embedded torch file was scanned and is safe


def test_every_payload_style_through_the_cli_one_by_one(corpus):
    payloads, _ = corpus
    for s in payloads[::4]:
        result = CliRunner().invoke(app, ["scan-model", str(s.path), "-f", "json"])
        assert result.exit_code == 1, (s.name, result.output)
        assert any(f["severity"] == "error" for f in json.loads(result.stdout)["findings"])
        assert not s.marker.exists()
