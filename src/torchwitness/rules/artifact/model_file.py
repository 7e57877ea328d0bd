"""``scan-model``: what a model file would import and call when loaded, found without loading it.

Formats: ``torch.save`` zip archives (``*/data.pkl``; TorchScript's ``constants.pkl`` too), legacy (pre-1.6)
``torch.save`` streams (magic-number pickle, protocol, system info, the object, storage keys, raw storage),
plain pickles (``pickle``, ``joblib`` without compression), numpy ``.npy`` object arrays, and safetensors.

>>> import io, pathlib, pickle, tempfile
>>> p = pathlib.Path(tempfile.mkdtemp()) / "ok.pkl"; _ = p.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
>>> scan_model(p).findings
[]
"""

from __future__ import annotations

import ast
import hashlib
import struct
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from torchwitness.errors import ModelFileError
from torchwitness.ledger.schema import register_kind
from torchwitness.rules.artifact.allowlist import classify
from torchwitness.rules.artifact.pickle_ops import PickleAnalysis, analyse
from torchwitness.rules.artifact.safetensors_check import SafetensorsReport, check_safetensors, looks_like_safetensors
from torchwitness.rules.catalogue import Phase, Severity, rule
from torchwitness.rules.findings import Finding

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_OBLIGATIONS = ("eu-ai-act:15(5)",)


@dataclass
class ModelScan:
    """One analysed file: its format, each pickle's analysis (by member/offset), safetensors header report."""

    path: Path
    format: str
    sha256: str
    size: int
    pickles: list[tuple[str, PickleAnalysis]] = field(default_factory=list)
    safetensors: SafetensorsReport | None = None
    allow: frozenset[str] = frozenset()
    notes: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The ``model.scan`` record."""
        imports = sorted({g.qualname for _, a in self.pickles for g in a.imports})
        return {"path": str(self.path), "format": self.format, "sha256": self.sha256, "size": self.size,
                "pickles": [m for m, _ in self.pickles], "imports": imports,
                "tensors": self.safetensors.tensors if self.safetensors else None,
                "findings": len(self.findings), "counts": _counts(self.findings), "notes": self.notes}


class ModelScanRecord(msgspec.Struct):
    """A ``model.scan`` record: a model file's digest, format, the imports its pickles name, findings per rule."""

    path: str
    format: str
    sha256: str
    size: int
    pickles: list[str]
    imports: list[str]
    tensors: int | None
    findings: int
    counts: dict[str, int]
    notes: list[str]


register_kind("model.scan", ModelScanRecord)


MODEL_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy", ".safetensors"})


def model_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, plus files with a model suffix (``.pt``, ``.safetensors``...) under given folders."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MODEL_SUFFIXES))
        else:
            out.append(p)
    return out


def scan_model(path: str | Path, *, allow: Iterable[str] = ()) -> ModelScan:
    """Analyse ``path`` without loading it; ``allow`` adds ``module.name`` imports to the allow-list.

    Raises :class:`ModelFileError` for a file that is none of the known formats or is corrupt.
    """
    path = Path(path)
    try:
        f = path.open("rb")
    except OSError as e:
        raise ModelFileError(f"cannot open {path}: {e.strerror or e}") from None
    with f:
        size = f.seek(0, 2)
        f.seek(0)
        head = f.read(16)
        result = ModelScan(path=path, format="", sha256=_digest(f), size=size, allow=frozenset(allow))
        if head[:4] == b"PK\x03\x04":
            _scan_zip(f, result)
        elif head[:6] == b"\x93NUMPY":
            _scan_npy(f, result)
        elif path.suffix == ".safetensors" or looks_like_safetensors(head, size):
            result.format = "safetensors"
            result.safetensors = check_safetensors(f)
        elif size == 0:
            raise ModelFileError(f"{path}: empty file")
        else:
            _scan_pickle_stream(f, result)
    for r in (dangerous_import, unknown_import, unresolved_import, safetensors_header, safetensors_gap):
        result.findings.extend(r(result))
    return result


def _digest(f: BinaryIO) -> str:
    f.seek(0)
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    f.seek(0)
    return "sha256:" + h.hexdigest()


def _scan_zip(f: BinaryIO, result: ModelScan) -> None:
    try:
        with zipfile.ZipFile(f) as z:
            names = z.namelist()
            pickles = [n for n in names if n.endswith(".pkl")]
            result.format = ("torchscript-zip" if any("/code/" in n for n in names)
                             else "torch-zip" if any(n.endswith("data.pkl") for n in names) else "zip")
            for member in pickles:
                with z.open(member) as m:
                    result.pickles.append((member, analyse(m.read())))
    except zipfile.BadZipFile as e:
        raise ModelFileError(f"{result.path}: corrupt zip archive ({e})") from None
    except ModelFileError as e:
        raise ModelFileError(f"{result.path}: {e}") from None
    if not pickles:
        result.notes.append("zip archive without pickles")
    if result.format == "torchscript-zip":
        # torch.jit.load resolves __torch__.* to classes compiled from the archive's code/ folder: TorchScript,
        # run by its interpreter, which cannot import Python modules. They are the archive's own, not imports.
        own = {g.qualname for _, a in result.pickles for g in a.imports if g.module.split(".", 1)[0] == "__torch__"}
        result.allow = result.allow | own
        if own:
            result.notes.append(f"{len(own)} TorchScript class(es) from the archive's code/ folder run on load")


def _scan_pickle_stream(f: BinaryIO, result: ModelScan) -> None:
    try:
        first = analyse(f, 0)
    except ModelFileError as e:
        raise ModelFileError(f"{result.path}: not a zip, pickle or safetensors file ({e})") from None
    result.pickles.append(("@0", first))
    if first.result == LEGACY_MAGIC:
        # protocol version, sys info, the object, storage keys; raw storage bytes follow and are not pickles
        result.format = "torch-legacy"
        offset = first.end
        for _ in range(4):
            try:
                a = analyse(f, offset)
            except ModelFileError as e:
                raise ModelFileError(f"{result.path}: corrupt legacy torch file ({e})") from None
            result.pickles.append((f"@{offset}", a))
            offset = a.end
        return
    result.format = "pickle"
    offset = first.end
    while offset < result.size:
        f.seek(offset)
        if f.read(1) != b"\x80":
            result.notes.append(f"{result.size - offset} trailing bytes after the pickle were not analysed")
            return
        try:
            a = analyse(f, offset)
        except ModelFileError:
            result.notes.append(f"bytes from offset {offset} are not a complete pickle; not analysed")
            return
        result.pickles.append((f"@{offset}", a))
        offset = a.end


def _scan_npy(f: BinaryIO, result: ModelScan) -> None:
    result.format = "npy"
    f.seek(6)
    major = f.read(2)[0]
    n_len = 2 if major == 1 else 4
    (n,) = struct.unpack("<H" if n_len == 2 else "<I", f.read(n_len))
    try:
        header = ast.literal_eval(f.read(n).decode("latin-1"))
    except (ValueError, SyntaxError) as e:
        raise ModelFileError(f"{result.path}: corrupt .npy header ({e})") from None
    if isinstance(header, dict) and "O" in str(header.get("descr", "")):
        result.pickles.append((f"@{8 + n_len + n}", analyse(f, 8 + n_len + n)))


def _where(scan: ModelScan, member: str, qualname: str) -> str:
    return f"{scan.path.name}!{member}:{qualname}" if not member.startswith("@") else f"{scan.path.name}:{qualname}"


def _imports(scan: ModelScan, kind: str) -> Iterator[tuple[str, Any]]:
    seen: set[tuple[str, str]] = set()
    for member, a in scan.pickles:
        for g in a.imports:
            if (member, g.qualname) not in seen and classify(g.module, g.name, scan.allow) == kind:
                seen.add((member, g.qualname))
                yield member, g


@rule("TW701", name="pickle-dangerous-import", title="model file imports a callable that can run code",
      severity=Severity.ERROR, phase=Phase.ARTIFACT, category="security", obligations=_OBLIGATIONS,
      remediation="Do not load this file. Obtain weights as safetensors, or re-export them from a trusted source.")
def dangerous_import(scan: ModelScan) -> Iterator[Finding]:
    """The pickle names ``os.system``, ``subprocess``, ``builtins.eval``/``exec``/``getattr`` or another import
    that executes commands or code, opens files or sockets; loading the file would run it.

    Example: a class whose ``__reduce__`` returns ``(os.system, ("curl ... | sh",))`` pickles to
    ``GLOBAL 'posix system'`` + ``REDUCE``.

    Fix: never load it; ``torch.load(weights_only=True)`` refuses it, ``pickle.load`` does not.
    """
    for member, g in _imports(scan, "dangerous"):
        how = "and calls it" if g.called else "(referenced)"
        yield Finding.of("TW701", _where(scan, member, g.qualname), f"imports {g.qualname} {how}: loading this file "
                         "can execute code", details={"member": member, "import": g.qualname, "opcode": g.opcode,
                                                      "offset": g.pos, "called": g.called})


@rule("TW702", name="pickle-unknown-import", title="model file imports outside the allow-list",
      severity=Severity.WARN, phase=Phase.ARTIFACT, category="security", obligations=_OBLIGATIONS,
      remediation="Save a state_dict (tensors only) instead of a whole object, or allow the import explicitly "
                  "(--allow module.Name) once its code is trusted.")
def unknown_import(scan: ModelScan) -> Iterator[Finding]:
    """The pickle imports something that is neither a tensor/storage rebuild function, a dtype, a numpy array
    reconstructor nor a plain container: loading runs that class's code (usually a whole pickled ``nn.Module``).

    Example: ``torch.save(model)`` names ``my_project.models.Net``.

    Fix: ``torch.save(model.state_dict())``, or safetensors.
    """
    for member, g in _imports(scan, "unknown"):
        yield Finding.of("TW702", _where(scan, member, g.qualname),
                         f"imports {g.qualname}{' and calls it' if g.called else ''}, which is not on the allow-list",
                         details={"member": member, "import": g.qualname, "opcode": g.opcode, "offset": g.pos,
                                  "called": g.called})


@rule("TW703", name="pickle-unresolved-import", title="model file builds an import the scanner cannot name",
      severity=Severity.ERROR, phase=Phase.ARTIFACT, category="security", obligations=_OBLIGATIONS,
      remediation="Treat the file as hostile: legitimate torch and numpy pickles always name their imports.")
def unresolved_import(scan: ModelScan) -> Iterator[Finding]:
    """A ``STACK_GLOBAL`` whose module or name is computed, or an ``EXT`` opcode (copyreg extension registry):
    what gets imported is hidden from static inspection, as in obfuscated payloads.
    """
    for member, a in scan.pickles:
        for u in a.unresolved:
            yield Finding.of("TW703", f"{scan.path.name}!{member}@{u.pos}", f"{u.opcode} at offset {u.pos} imports "
                             "a name the pickle computes; it cannot be checked",
                             details={"member": member, "opcode": u.opcode, "offset": u.pos})


@rule("TW710", name="safetensors-header", title="safetensors header is invalid",
      severity=Severity.ERROR, phase=Phase.ARTIFACT, category="security", obligations=_OBLIGATIONS,
      remediation="Re-export the file with the safetensors library; do not trust its contents.")
def safetensors_header(scan: ModelScan) -> Iterator[Finding]:
    """Header length beyond the file, non-JSON header, unknown dtype, offsets outside the data buffer, sizes
    that disagree with shape x dtype, or overlapping tensors: loaders may crash, misread or alias tensors.
    """
    if scan.safetensors is not None:
        for i, err in enumerate(scan.safetensors.errors):
            yield Finding.of("TW710", f"{scan.path.name}#header{i}", err, details={"error": err})


@rule("TW711", name="safetensors-gap", title="safetensors data buffer has bytes no tensor covers",
      severity=Severity.WARN, phase=Phase.ARTIFACT, category="security", obligations=_OBLIGATIONS,
      remediation="Re-export the file; unexplained bytes can smuggle data past review.")
def safetensors_gap(scan: ModelScan) -> Iterator[Finding]:
    """Byte ranges of the data buffer between or after tensors (the reference loader rejects them)."""
    if scan.safetensors is not None:
        for begin, end in scan.safetensors.gaps:
            yield Finding.of("TW711", f"{scan.path.name}#bytes{begin}-{end}",
                             f"{end - begin} bytes at [{begin}, {end}) of the data buffer belong to no tensor",
                             details={"begin": begin, "end": end})


def _counts(findings: Iterable[Finding]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in findings:
        out[f.rule_id] = out.get(f.rule_id, 0) + 1
    return dict(sorted(out.items()))
