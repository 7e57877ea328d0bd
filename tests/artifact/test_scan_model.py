"""scan-model: malicious pickles are flagged without being executed; normal checkpoints pass; corrupt files fail
with one line."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from torchwitness.cli import app
from torchwitness.errors import ModelFileError
from torchwitness.ledger import iter_records, verify_run
from torchwitness.rules.artifact import scan_model


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


def rules_of(scan) -> list[str]:
    return sorted(f.rule_id for f in scan.findings)


def test_malicious_pickle_is_flagged_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"weights": [1.0], "x": Payload(marker)}))
    scan = scan_model(evil)
    (f,) = scan.findings
    assert f.rule_id == "TW701" and f.details["called"] and f.details["import"] in ("posix.system", "nt.system")
    assert not marker.exists()
    # control: the payload is real, a plain pickle.load in another process does run it
    subprocess.run([sys.executable, "-c", "import pickle,sys; pickle.load(open(sys.argv[1], 'rb'))", str(evil)],
                   check=True)
    assert marker.exists()


def test_malicious_torch_zip_via_cli_exits_nonzero_without_side_effect(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "model.pt"
    torch.save({"state": torch.zeros(2), "hook": Payload(marker)}, ckpt)
    result = CliRunner().invoke(app, ["scan-model", str(ckpt), "-f", "json"])
    assert result.exit_code == 1, result.output
    found = json.loads(result.stdout)["findings"]
    assert [f["rule_id"] for f in found] == ["TW701"] and found[0]["location"].startswith("model.pt!")
    assert not marker.exists()
    sarif = CliRunner().invoke(app, ["scan-model", str(ckpt), "-f", "sarif"])
    (res,) = json.loads(sarif.stdout)["runs"][0]["results"]
    assert res["ruleId"] == "TW701" and res["level"] == "error"


def test_normal_state_dicts_pass_in_every_torch_format(tmp_path, small_model):
    opt = torch.optim.AdamW(small_model.parameters())
    small_model(torch.randn(5, 4)).sum().backward()
    opt.step()
    payload = {"model": small_model.state_dict(), "opt": opt.state_dict(), "dtype": torch.bfloat16}
    torch.save(payload, tmp_path / "zip.pt")
    torch.save(payload, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    zipped, legacy = scan_model(tmp_path / "zip.pt"), scan_model(tmp_path / "legacy.pt")
    assert (zipped.format, legacy.format) == ("torch-zip", "torch-legacy")
    assert zipped.findings == [] and legacy.findings == []
    assert "torch._utils._rebuild_tensor_v2" in zipped.summary()["imports"]
    assert len(legacy.pickles) == 5  # magic, protocol, sys info, object, storage keys


def test_whole_module_pickle_is_an_unknown_import(tmp_path, small_model):
    torch.save(small_model, tmp_path / "full.pt")
    scan = scan_model(tmp_path / "full.pt")
    assert set(rules_of(scan)) == {"TW702"}
    assert "torch.nn.modules.linear.Linear" in {f.details["import"] for f in scan.findings}
    allowed = scan_model(tmp_path / "full.pt", allow=[f.details["import"] for f in scan.findings])
    assert allowed.findings == []


def test_numpy_pickles_pass(tmp_path):
    import numpy as np

    (tmp_path / "a.pkl").write_bytes(pickle.dumps({"a": np.arange(3), "s": np.float32(1)}, protocol=2))
    assert scan_model(tmp_path / "a.pkl").findings == []


def test_memoised_stack_global_is_resolved(tmp_path):
    # PROTO 4; "os" MEMOIZE; "system" MEMOIZE; POP; POP; BINGET 0; BINGET 1; STACK_GLOBAL; ("x",) REDUCE; STOP
    body = (b"\x80\x04\x8c\x02os\x94\x8c\x06system\x9400h\x00h\x01\x93\x8c\x01x\x85R.")
    (tmp_path / "m.pkl").write_bytes(body)
    (f,) = scan_model(tmp_path / "m.pkl").findings
    assert f.rule_id == "TW701" and f.details["import"] == "os.system" and f.details["called"]


def test_computed_import_is_unresolved(tmp_path):
    (tmp_path / "ext.pkl").write_bytes(b"\x80\x02\x82\x01)R.")  # EXT1 1, (), REDUCE
    assert rules_of(scan_model(tmp_path / "ext.pkl")) == ["TW703"]


def test_corrupt_and_unknown_files_fail_closed(tmp_path, small_model):
    good = tmp_path / "ok.pt"
    torch.save(small_model.state_dict(), good, _use_new_zipfile_serialization=False)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:40])
    scan = scan_model(truncated)
    assert scan.verdict == "error" and "TW704" in rules_of(scan)
    assert any("truncated" in u or "malformed" in u for u in scan.unreadable)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    proc = subprocess.run([sys.executable, "-c", "from torchwitness.cli import main; main()", "scan-model",
                           str(junk), "-f", "json"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (f,) = json.loads(proc.stdout)["findings"]
    assert f["rule_id"] == "TW704" and "not a known model format" in f["message"]
    missing = subprocess.run([sys.executable, "-c", "from torchwitness.cli import main; main()", "scan-model",
                              str(tmp_path / "absent.pt")], capture_output=True, text=True,
                             env={**os.environ, "COLUMNS": "200"})
    assert missing.returncode == 2 and missing.stdout == "" and len(missing.stderr.strip().splitlines()) == 1
    with pytest.raises(ModelFileError, match=r"absent\.pt"):
        scan_model(tmp_path / "absent.pt")


def _safetensors(header: dict, buffer: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + buffer


def test_safetensors_header_checks(tmp_path):
    save_file({"w": torch.ones(2, 3), "b": torch.zeros(3)}, tmp_path / "ok.safetensors")
    assert scan_model(tmp_path / "ok.safetensors").findings == []
    cases = {
        "overlap": ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                     "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12), ["TW710"]),
        "beyond": ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8), ["TW710"]),
        "size": ({"a": {"dtype": "F16", "shape": [4], "data_offsets": [0, 4]}}, bytes(4), ["TW710"]),
        "dtype": ({"a": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}, bytes(4), ["TW710"]),
        "gap": ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(10), ["TW711"]),
    }
    for name, (header, buffer, expected) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(_safetensors(header, buffer))
        assert rules_of(scan_model(path)) == expected, name
    bad_len = tmp_path / "len.safetensors"
    bad_len.write_bytes(struct.pack("<Q", 10**6) + b"{}")
    assert rules_of(scan_model(bad_len)) == ["TW710"]


def test_folders_are_expanded_to_model_files(tmp_path, small_model):
    (tmp_path / "ckpt").mkdir()
    torch.save(small_model.state_dict(), tmp_path / "ckpt" / "a.pt")
    save_file({"w": torch.ones(2)}, tmp_path / "ckpt" / "b.safetensors")
    (tmp_path / "ckpt" / "notes.txt").write_text("not a model")
    result = CliRunner().invoke(app, ["scan-model", str(tmp_path / "ckpt"), "-f", "json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["findings"] == []
    assert "a.pt: torch-zip" in result.stderr and "b.safetensors: safetensors" in result.stderr


def test_scan_model_records_into_a_run(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Payload(marker)))
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["scan-model", str(tmp_path / "evil.pkl"), "--run", str(run_dir)])
    assert result.exit_code == 1
    kinds = [r["kind"] for r in iter_records(run_dir)]
    assert kinds == ["run.start", "finding", "model.scan", "run.end"]
    scan = next(iter_records(run_dir, kinds={"model.scan"}))["data"]
    assert scan["counts"] == {"TW701": 1} and scan["sha256"].startswith("sha256:")
    verify_run(run_dir, deep=True)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 1, 2, 5])
def test_payload_found_under_every_protocol(tmp_path, protocol):
    marker = tmp_path / "pwned"
    (tmp_path / "p.pkl").write_bytes(pickle.dumps([1, Payload(marker)], protocol=protocol))
    assert rules_of(scan_model(tmp_path / "p.pkl")) == ["TW701"]
    assert not marker.exists()


def test_inst_opcode_is_an_import_and_a_call(tmp_path):
    (tmp_path / "inst.pkl").write_bytes(b"(S'echo hi'\nisubprocess\ncall\n.")  # MARK; arg; INST; STOP
    (f,) = scan_model(tmp_path / "inst.pkl").findings
    assert f.details["import"] == "subprocess.call" and f.details["opcode"] == "INST" and f.details["called"]


def test_a_second_pickle_after_the_first_is_analysed_too(tmp_path):
    (tmp_path / "two.pkl").write_bytes(pickle.dumps({"ok": 1}, protocol=4) + pickle.dumps(Payload(tmp_path / "x")))
    scan = scan_model(tmp_path / "two.pkl")
    assert len(scan.pickles) == 2 and rules_of(scan) == ["TW701"]


def test_npy_object_arrays_are_pickles(tmp_path):
    import numpy as np

    marker = tmp_path / "pwned"
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = 1, Payload(marker)
    np.save(tmp_path / "obj.npy", arr, allow_pickle=True)
    np.save(tmp_path / "plain.npy", np.arange(4.0))
    obj, plain = scan_model(tmp_path / "obj.npy"), scan_model(tmp_path / "plain.npy")
    assert (obj.format, rules_of(obj)) == ("npy", ["TW701"])
    assert (plain.format, plain.findings, plain.pickles) == ("npy", [], [])
    assert not marker.exists()


def test_torchscript_archive_classes_are_its_own(tmp_path, small_model):
    torch.jit.script(small_model).save(str(tmp_path / "ts.pt"))
    scan = scan_model(tmp_path / "ts.pt")
    assert scan.format == "torchscript-zip" and scan.verdict == "warn"  # its code/ runs when it is loaded
    assert {f.rule_id for f in scan.findings} == {"TW702"}
    assert all(f.details["import"].startswith("__torch__.") for f in scan.findings)
