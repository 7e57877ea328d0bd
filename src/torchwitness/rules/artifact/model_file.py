"""``scan-model``: what a model file would import, call and construct when loaded, found without loading it.

Safety is decided by an allow-list (:mod:`~torchwitness.rules.artifact.allowlist`): what ``torch.load(
weights_only=True)`` accepts is safe, a class that is only constructed or referenced needs trust (TW702 WARN),
anything else is an ERROR (TW701), as is what the scanner cannot follow (TW703) or read (TW704). Formats: see
:mod:`~torchwitness.rules.artifact.formats`.

>>> import io, pathlib, pickle, tempfile
>>> p = pathlib.Path(tempfile.mkdtemp()) / "ok.pkl"; _ = p.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
>>> scan_model(p).findings
[]
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from torchwitness.errors import ModelFileError
from torchwitness.ledger.schema import register_kind
from torchwitness.rules.artifact.allowlist import ERROR, WARN, judge
from torchwitness.rules.artifact.formats import read_contents
from torchwitness.rules.artifact.pickle_ops import GlobalRef, PickleAnalysis
from torchwitness.rules.artifact.safetensors_check import SafetensorsReport
from torchwitness.rules.catalogue import Phase, Severity, rule
from torchwitness.rules.findings import Finding

_OBLIGATIONS = ("eu-ai-act:15(5)",)


@dataclass
class ModelScan:
    """One analysed file: its format, each pickle's analysis (by member/offset), safetensors header report, and
    ``unreadable``: why parts of it could not be checked (each one a TW704 finding)."""

    path: Path
    format: str
    sha256: str
    size: int
    pickles: list[tuple[str, PickleAnalysis]] = field(default_factory=list)
    safetensors: SafetensorsReport | None = None
    allow: frozenset[str] = frozenset()
    notes: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The ``model.scan`` record."""
        imports = sorted({g.qualname for _, a in self.pickles for _, n in a.walk() for g in n.imports})
        return {"path": str(self.path), "format": self.format, "sha256": self.sha256, "size": self.size,
                "pickles": [m for m, _ in self.pickles], "imports": imports,
                "tensors": self.safetensors.tensors if self.safetensors else None,
                "findings": len(self.findings), "counts": _counts(self.findings),
                "notes": self.notes + [f"unreadable: {u}" for u in self.unreadable]}

    @property
    def verdict(self) -> str:
        """``"error"``, ``"warn"`` or ``"ok"``: the worst finding."""
        severities = {f.severity for f in self.findings}
        return "error" if Severity.ERROR in severities else "warn" if severities else "ok"


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


MODEL_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".joblib", ".jbl", ".z", ".npy",
                            ".npz", ".tar", ".sav", ".safetensors"})


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

    A file that is none of the known formats, or is corrupt, is not proven safe: it gets a TW704 ERROR finding.
    Raises :class:`ModelFileError` only when the file cannot be opened or read.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            digest = _digest(f)
            contents = read_contents(f, size, path.suffix.lower())
    except OSError as e:
        raise ModelFileError(f"cannot read {path}: {e.strerror or e}") from None
    result = ModelScan(path=path, format=contents.format, sha256=digest, size=size, pickles=contents.pickles,
                       safetensors=contents.safetensors, allow=frozenset(allow), notes=contents.notes,
                       unreadable=contents.unreadable)
    for r in (dangerous_import, unknown_import, unresolved_import, unreadable_file, safetensors_header,
              safetensors_gap):
        result.findings.extend(r(result))
    return result


def _digest(f: BinaryIO) -> str:
    f.seek(0)
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    f.seek(0)
    return "sha256:" + h.hexdigest()


def _where(scan: ModelScan, member: str, qualname: str) -> str:
    plain = re.fullmatch(r"@\d+", member) is not None  # the file's own first pickle(s): the file names it
    return f"{scan.path.name}:{qualname}" if plain else f"{scan.path.name}!{member}:{qualname}"


def _judged(scan: ModelScan, verdict: str) -> Iterator[tuple[str, GlobalRef, str]]:
    """(member, import, reason) of each import with ``verdict``, once per name (a file read two ways, as joblib
    and as a plain pickle, names most imports twice)."""
    seen: set[str] = set()
    torchscript = scan.format == "torchscript-zip"
    for member, top in scan.pickles:
        for inner, a in top.walk():
            where = f"{member}>{inner}" if inner else member
            for g in a.imports:
                v, why = judge(g, scan.allow, torchscript=torchscript)
                if v == verdict and g.qualname not in seen:
                    seen.add(g.qualname)
                    yield where, g, why


def _details(member: str, g: GlobalRef, why: str) -> dict[str, Any]:
    return {"member": member, "import": g.qualname, "opcode": g.opcode, "offset": g.pos, "called": g.called,
            "roles": sorted(g.roles), "reason": why, **({"written_as": g.raw} if g.raw else {})}


@rule("TW701", name="pickle-dangerous-import", title="model file runs code outside the allow-list when loaded",
      severity=Severity.ERROR, phase=Phase.ARTIFACT, category="security", obligations=_OBLIGATIONS,
      remediation="Do not load this file. Obtain weights as safetensors, or re-export them from a trusted source.")
def dangerous_import(scan: ModelScan) -> Iterator[Finding]:
    """Loading the file calls an import outside the allow-list with arguments the file chooses (``REDUCE``,
    ``INST``, ``OBJ``), modifies an imported object in place, reaches an import through an attribute chain
    (``builtins`` + ``eval.__call__``), imports from a module that gives command, code, file or network access, or
    places a function outside the allow-list in the loaded object.

    Example: a class whose ``__reduce__`` returns ``(cProfile.run, ("import os; os.system(...)",))`` pickles to
    ``GLOBAL 'cProfile run'`` + ``REDUCE``.

    Fix: never load it; ``torch.load(weights_only=True)`` refuses it, ``pickle.load`` does not.
    """
    for member, g, why in _judged(scan, ERROR):
        yield Finding.of("TW701", _where(scan, member, g.qualname), f"imports {g.qualname}: {why}",
                         details=_details(member, g, why))


@rule("TW702", name="pickle-unknown-import", title="model file constructs a class outside the allow-list",
      severity=Severity.WARN, phase=Phase.ARTIFACT, category="security", obligations=_OBLIGATIONS,
      remediation="Save a state_dict (tensors only) instead of a whole object, or allow the class explicitly "
                  "(--allow module.Name) once its code is trusted.")
def unknown_import(scan: ModelScan) -> Iterator[Finding]:
    """The pickle constructs (``NEWOBJ``, ``copyreg._reconstructor``) or references a class that is not a tensor,
    storage, dtype, numpy array or plain container: loading imports its module and runs its ``__new__`` and
    ``__setstate__``, so the file is only as safe as that code (usually a whole pickled ``nn.Module``).

    Example: ``torch.save(model)`` names ``torch.nn.modules.linear.Linear`` and ``my_project.models.Net``.

    Fix: ``torch.save(model.state_dict())``, or safetensors.
    """
    for member, g, why in _judged(scan, WARN):
        yield Finding.of("TW702", _where(scan, member, g.qualname), f"imports {g.qualname}: {why}",
                         details=_details(member, g, why))


@rule("TW703", name="pickle-unresolved-import", title="model file does something the scanner cannot follow",
      severity=Severity.ERROR, phase=Phase.ARTIFACT, category="security", obligations=_OBLIGATIONS,
      remediation="Treat the file as hostile: legitimate torch and numpy pickles name their imports plainly.")
def unresolved_import(scan: ModelScan) -> Iterator[Finding]:
    """A ``STACK_GLOBAL`` whose module or name is computed, an ``EXT`` opcode (copyreg extension registry), a call
    of a value that is not a named import, or arguments of a construction helper that cannot be followed: what
    runs is hidden from static inspection, as in obfuscated payloads.
    """
    seen: set[tuple[int, str]] = set()
    for member, top in scan.pickles:
        for inner, a in top.walk():
            where = f"{member}>{inner}" if inner else member
            for u in a.problems:
                if (u.pos, u.reason) in seen and member.endswith("(as a plain pickle)"):
                    continue
                seen.add((u.pos, u.reason))
                yield Finding.of("TW703", f"{scan.path.name}!{where}@{u.pos}", f"{u.opcode} at offset {u.pos}: "
                                 f"{u.reason}", details={"member": where, "opcode": u.opcode, "offset": u.pos,
                                                         "reason": u.reason})


@rule("TW704", name="model-file-unreadable", title="model file is not a format the scanner can check",
      severity=Severity.ERROR, phase=Phase.ARTIFACT, category="security", obligations=_OBLIGATIONS,
      remediation="Do not load a file that cannot be checked; re-export it as safetensors or a torch.save state "
                  "dict.")
def unreadable_file(scan: ModelScan) -> Iterator[Finding]:
    """The file is none of the known formats, is truncated or corrupt, or holds a part the scanner cannot follow
    (an lz4 stream, a joblib array of a structured dtype): nothing proves it safe, so it fails closed.
    """
    for i, why in enumerate(scan.unreadable):
        yield Finding.of("TW704", f"{scan.path.name}#unreadable{i}", why, details={"reason": why})


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
