"""scan-model's allow-list and roles, opcode by opcode, and its robustness: what weights_only accepts is safe, a
class only constructed needs trust, any other call, in-place change or attribute chain is an ERROR, and no input
ends in a traceback or an OK it did not earn."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from torchwitness.cli import app
from torchwitness.rules.artifact import scan_model
from torchwitness.rules.artifact.allowlist import WEIGHTS_ONLY
from torchwitness.rules.artifact.formats import STORAGE_SIZES


def verdict_of(tmp_path: Path, data: bytes, name: str = "x.pkl") -> tuple[str, list[str]]:
    p = tmp_path / name
    p.write_bytes(data)
    scan = scan_model(p)
    return scan.verdict, sorted({f.rule_id for f in scan.findings})


def test_safe_set_is_what_torch_weights_only_accepts():
    from torch import _weights_only_unpickler as wo
    from torch.serialization import StorageType

    assert set(wo._get_allowed_globals()) == WEIGHTS_ONLY
    for name, size in STORAGE_SIZES.items():
        if name != "Untyped":
            assert torch._utils._element_size(StorageType(f"{name}Storage").dtype) == size, name


@pytest.mark.parametrize(("data", "expected"), [
    # GLOBAL os.environ; SETITEMS on it: changes the environment without calling anything
    (b"cos\nenviron\n(VLD_PRELOAD\nV/tmp/x.so\nu.", ("error", ["TW701"])),
    # BUILD on the torch.Tensor class itself (allow-listed, but patched in place)
    (b"\x80\x02ctorch\nTensor\n}X\x01\x00\x00\x00aK\x01sb.", ("error", ["TW701"])),
    # copyreg._reconstructor(cls, base, state) with a base whose __init__ would run
    (b"\x80\x02ccopyreg\n_reconstructor\ncmymod\nNet\ncmymod\nBase\nN\x87R.", ("error", ["TW701", "TW702"])),
    # ... and over object: only object.__new__(cls) runs, so cls only needs trust
    (b"\x80\x02ccopyreg\n_reconstructor\ncmymod\nNet\nc__builtin__\nobject\nN\x87R.", ("warn", ["TW702"])),
    # NEWOBJ of a nested class (protocol 4 qualname) needs trust; an attribute chain through a module does not pass
    (b"\x80\x04\x8c\x05mymod\x8c\x0bOuter.Inner\x93)\x81.", ("warn", ["TW702"])),
    (b"\x80\x04\x8c\x05torch\x8c\x0enn.Linear.call\x93)\x81.", ("error", ["TW701"])),
    # a function placed in the object without being called; a class referenced the same way
    (b"\x80\x02}X\x01\x00\x00\x00fcmymod\nhelper\ns.", ("error", ["TW701"])),
    (b"\x80\x02}X\x01\x00\x00\x00fcmymod\nHelper\ns.", ("warn", ["TW702"])),
    # _rebuild_from_type_v2 calls the function it is given
    (b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\n(cos\nsystem\nctorch\nTensor\nX\x02\x00\x00\x00id\x85}tR.",
     ("error", ["TW701"])),
    # STACK_GLOBAL of a string the pickle computes, EXT through the copyreg registry: cannot be followed
    (b"\x80\x04\x8c\x02os(t\x93)R.", ("error", ["TW703"])),
    (b"\x80\x02\x82\x01)R.", ("error", ["TW703"])),
    # a REDUCE whose callable is the result of another call
    (b"\x80\x02c__builtin__\nlist\n)R)R.", ("error", ["TW703"])),
    # a package's __main__ runs its command line on import, whatever is taken from it
    (b"\x80\x02cvenv.__main__\nX\n)\x81.", ("error", ["TW701"])),
    (b"\x80\x02cmypkg.__main__\nConfig\n)\x81.", ("error", ["TW701"])),
    # protocol 0 names are renamed as pickle renames them: __builtin__.set is builtins.set
    (b"c__builtin__\nset\n(]tR.", ("ok", [])),
    # stdlib value types are data; a defaultdict's factory is a referenced value, judged on its own
    (pickle.dumps({"t": __import__("datetime").datetime(2024, 1, 2), "d": __import__("collections").defaultdict(
        list, a=[1])}, protocol=2), ("ok", [])),
    (pickle.dumps(__import__("collections").defaultdict(os.getcwd), protocol=2), ("error", ["TW701"])),
])
def test_roles_decide_the_verdict(tmp_path, data, expected):
    assert verdict_of(tmp_path, data) == expected


def test_a_payload_hidden_in_joblib_padding_is_found_both_ways(tmp_path):
    """A joblib file whose array padding holds opcodes: joblib.load skips them, pickle.load runs them."""
    joblib.dump({"w": np.arange(4.0)}, tmp_path / "ok.joblib")
    data = (tmp_path / "ok.joblib").read_bytes()
    at = data.index(b"ub", data.index(b"numpy_array_alignment_bytes")) + 2  # the padding-length byte
    n = data[at]
    assert data[at + 1:at + 1 + n] == b"\xff" * n
    marker = tmp_path / "m"
    payload = f"(Vtouch {marker}\nios\nsystem\n.".encode()
    crafted = data[:at] + b"\x80\x02" + payload.ljust(127, b" ") + data[at + 1 + n:]  # joblib skips 128 bytes
    (tmp_path / "poly.pkl").write_bytes(crafted)
    scan = scan_model(tmp_path / "poly.pkl")
    assert scan.verdict == "error" and "os.system" in {f.details.get("import") for f in scan.findings}
    (tmp_path / "poly.joblib").write_bytes(crafted)
    named = scan_model(tmp_path / "poly.joblib")  # judged as joblib reads it: the padding is not joblib's
    assert named.verdict == "error" and "TW704" in {f.rule_id for f in named.findings}
    assert verdict_of(tmp_path, data, "ok.joblib")[0] == "ok"
    assert not marker.exists()
    pickle.loads(crafted)  # control: pickle.load runs the hidden opcodes
    assert marker.exists()


def test_every_zip_entry_is_read_even_under_a_repeated_name(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pt")
    with zipfile.ZipFile(tmp_path / "ok.pt") as z:
        entries = [(i, z.read(i)) for i in z.infolist()]
    evil = tmp_path / "dup.pt"
    with zipfile.ZipFile(evil, "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
        for info, body in entries:
            z.writestr(info, body)
        data_pkl = next(i.filename for i, _ in entries if i.filename.endswith("data.pkl"))
        z.writestr(data_pkl, b"\x80\x02cos\nsystem\nX\x01\x00\x00\x00x\x85R.")
    scan = scan_model(evil)
    assert scan.verdict == "error" and any("repeats entry names" in n for n in scan.notes)


def test_a_legacy_tar_member_that_is_a_link_is_not_followed(tmp_path):
    import tarfile

    with tarfile.open(tmp_path / "link.pt", "w") as tar:
        for name in ("storages", "tensors"):
            info = tarfile.TarInfo(name)
            data = pickle.dumps(0, protocol=2)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("pickle")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/elsewhere.pkl"
        tar.addfile(link)
    scan = scan_model(tmp_path / "link.pt")
    assert scan.format == "torch-tar" and scan.verdict == "error" and "link" in scan.unreadable[0]


@pytest.mark.parametrize("compress", ["zlib", "gzip", "bz2", "xz", "lzma"])
def test_compressed_joblib_files_are_read(tmp_path, compress):
    joblib.dump({"w": np.arange(8.0)}, tmp_path / "ok.joblib", compress=(compress, 1))
    joblib.dump({"w": np.arange(8.0), "x": print}, tmp_path / "bad.joblib", compress=(compress, 1))
    ok, bad = scan_model(tmp_path / "ok.joblib"), scan_model(tmp_path / "bad.joblib")
    assert (ok.format, ok.verdict) == (f"joblib-{compress}", "ok")
    assert bad.verdict == "error" and "builtins.print" in {f.details.get("import") for f in bad.findings}


def test_lz4_and_unknown_formats_are_not_ok(tmp_path):
    assert verdict_of(tmp_path, b"\x04\x22\x4d\x18" + bytes(40), "m.joblib") == ("error", ["TW704"])
    assert verdict_of(tmp_path, b"GGUF" + bytes(64), "m.gguf") == ("error", ["TW704"])
    assert verdict_of(tmp_path, b"", "m.pt") == ("error", ["TW704"])


def _seeds() -> list[bytes]:
    out = [pickle.dumps({"a": [1, 2.5, "s"], "b": (None, True)}, protocol=p) for p in range(6)]
    out.append(pickle.dumps({"w": np.arange(3.0)}, protocol=2))
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf, _use_new_zipfile_serialization=False)
    out.append(buf.getvalue())
    # containers: a torch zip, a deflated .npz with an object array, gzip and plain joblib files
    for write in (lambda b: torch.save({"w": torch.ones(2)}, b),
                  lambda b: np.savez_compressed(b, a=np.arange(4), o=np.array([1, "x"], dtype=object)),
                  lambda b: joblib.dump({"w": np.arange(3.0)}, b, compress=("gzip", 1)),
                  lambda b: joblib.dump({"w": np.arange(3.0), "o": np.array([None], dtype=object)}, b)):
        buf = io.BytesIO()
        write(buf)
        out.append(buf.getvalue())
    return out


SEEDS = _seeds()


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data) - 1))
        how = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if how == "flip":
            data[i] = draw(st.integers(0, 255))
        elif how == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif how == "delete" and len(data) > 2:
            del data[i]
        elif how == "truncate":
            del data[max(i, 1):]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=300), mutated()))
def test_random_and_mutated_bytes_get_a_verdict_never_a_traceback(tmp_path, data):
    p = tmp_path / "fuzz.pkl"
    p.write_bytes(data)
    scan = scan_model(p)  # raises nothing
    assert scan.verdict in ("ok", "warn", "error")
    if scan.unreadable or scan.format in ("unknown", "empty"):
        assert scan.verdict == "error"
    if scan.verdict == "ok":  # earned: the pickle every loader reads parsed to its STOP (bytes after it that are
        # not a pickle are noted; what they would run before failing is judged like the rest)
        assert scan.pickles and scan.pickles[0][1].error is None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=200), mutated()))
def test_the_cli_never_shows_a_traceback(tmp_path, data):
    p = tmp_path / "fuzz.pt"
    p.write_bytes(data)
    result = CliRunner().invoke(app, ["scan-model", str(p), "-f", "json"])
    assert result.exit_code in (0, 1) and "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_nothing_runs_while_scanning_a_file_that_would_create_a_marker(tmp_path):
    marker = tmp_path / "marker"
    data = b"\x80\x02cbuiltins\nexec\nX" + len(code := f"open({str(marker)!r}, 'w').close()").to_bytes(4, "little") \
        + code.encode() + b"\x85R."
    assert verdict_of(tmp_path, data) == ("error", ["TW701"])
    assert not marker.exists()
    pickle.loads(data)  # control: it is live
    assert marker.exists()
    os.unlink(marker)


def test_the_scanner_imports_nothing_the_file_names(tmp_path, monkeypatch):
    import subprocess
    import sys

    marker = tmp_path / "imported"
    (tmp_path / "tw_side_effect_mod.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Net: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = b"\x80\x02ctw_side_effect_mod\nNet\n)\x81."
    assert verdict_of(tmp_path, data) == ("warn", ["TW702"])
    assert not marker.exists() and "tw_side_effect_mod" not in sys.modules
    subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.loads(bytes.fromhex(sys.argv[1]))",
                    data.hex()], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)}, check=True)
    assert marker.exists()  # control: loading imports the module, which runs its code


def test_a_tar_whose_header_is_also_a_pickle_is_read_both_ways(tmp_path):
    import tarfile

    hidden = "cos\nsystem\n(S'true'\ntR."  # the first member's name: pickle.load reads it as opcodes
    with tarfile.open(tmp_path / "poly.pt", "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in (hidden, "pickle"):
            data = pickle.dumps({"w": 1}, protocol=2)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert pickle.loads((tmp_path / "poly.pt").read_bytes()) == 0  # control: os.system('true') ran and returned
    scan = scan_model(tmp_path / "poly.pt")
    assert scan.format == "torch-tar" and scan.verdict == "error"
    assert "os.system" in {f.details.get("import") for f in scan.findings}


def test_unpadded_joblib_array_bytes_that_are_opcodes_are_judged_even_in_a_joblib_file(tmp_path):
    """joblib writes no padding to a stream it cannot tell() in; the array's bytes then follow the wrapper
    directly, and to pickle.load they are opcodes: here an array whose bytes run os.system."""
    marker = tmp_path / "m"

    class Unseekable(io.RawIOBase):
        def __init__(self, f):
            self.f = f

        def writable(self):
            return True

        def write(self, b):
            return self.f.write(b)

        def tell(self):
            raise io.UnsupportedOperation("no tell")

    payload = np.frombuffer(f"(Vtouch {marker}\nios\nsystem\n.".encode(), dtype=np.uint8)
    with open(tmp_path / "poly.joblib", "wb") as f:
        joblib.dump({"w": payload}, Unseekable(f))
    data = (tmp_path / "poly.joblib").read_bytes()
    assert np.array_equal(joblib.load(tmp_path / "poly.joblib")["w"], payload)  # a valid joblib file
    scan = scan_model(tmp_path / "poly.joblib")
    assert scan.verdict == "error" and "os.system" in {f.details.get("import") for f in scan.findings}
    assert not marker.exists()
    pickle.loads(data)  # control: to pickle.load the array's bytes are opcodes
    assert marker.exists()


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


@pytest.mark.parametrize("second_state", [
    # a first BUILD plants __setstate__ (a class the file names), the second BUILD calls it with its argument
    b"}" + _unicode("__setstate__") + b"cmailbox\nMaildir\ns" + b"b" + _unicode("/tmp/never") + b"b",
    # a second BUILD at all: pickle never writes two on one object
    b"}" + _unicode("a") + b"K\x01s" + b"b" + b"}" + _unicode("b") + b"K\x02s" + b"b",
], ids=["planted-setstate", "second-build"])
def test_build_that_plants_or_repeats_a_setstate_is_an_error(tmp_path, second_state):
    payload = b"\x80\x02ccollections\nOrderedDict\n)\x81" + second_state + b"."
    path = tmp_path / "gadget.pkl"
    path.write_bytes(payload)
    findings = scan_model(path).findings
    assert any(f.severity.name == "ERROR" for f in findings), [(f.rule_id, f.message) for f in findings]
    assert CliRunner().invoke(app, ["scan-model", str(path)]).exit_code == 1


def test_a_class_constructed_with_arguments_is_an_error(tmp_path):
    # NEWOBJ numpy.memmap('/tmp/...', 'uint8', 'w+', 0, (4,)): __new__ opens and maps a file the pickle names,
    # and SETITEMs then write through it (a file-write primitive with no call of a denied module)
    args = b"(" + _unicode(str(tmp_path / "never")) + _unicode("uint8") + _unicode("w+") + b"K\x00K\x04\x85t"
    payload = b"\x80\x02cnumpy\nmemmap\n" + args + b"\x81" + b"(K\x00K\x41K\x01K\x42u" + b"."
    path = tmp_path / "memmap.pkl"
    path.write_bytes(payload)
    findings = scan_model(path).findings
    assert any(f.severity.name == "ERROR" and "__new__" in f.message for f in findings), \
        [(f.rule_id, f.message) for f in findings]
    assert not (tmp_path / "never").exists()
