"""The static scanner: find Python files, parse each once (never import or run them), apply the TW6xx rules.

Files are scanned in worker processes when there are many (parsing is CPU-bound and the GIL would serialise it).

>>> import pathlib, tempfile
>>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "t.py").write_text("import torch\\ntorch.load('m.pt')\\n")
>>> [f.rule_id for f in scan_paths([d]).findings]
['TW602']
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from torchwitness.errors import InputError
from torchwitness.ledger.schema import register_kind
from torchwitness.rules.catalogue import Phase, Rule, all_rules
from torchwitness.rules.findings import Finding, FindingSet
from torchwitness.rules.static import loading_rules, repro_rules, training_rules  # importing registers the rules
from torchwitness.rules.static.context import FileContext

SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".venv", "venv", "node_modules", ".tox", ".mypy_cache",
                       ".ruff_cache", ".pytest_cache", "build", "dist"})
_PARALLEL_MIN_FILES = 64
# Per-rule text pre-filters: a file is parsed only if one of a selected rule's substrings occurs in it (or facts
# are wanted), so most of a large tree is never parsed. Plain substrings, not regexes: `in` is memchr-fast.
TRIGGERS: dict[str, tuple[str, ...]] = {rid: needles for m in (loading_rules, repro_rules, training_rules)
                                        for rid, needles in m.TRIGGERS.items()}


@dataclass
class ApiUse:
    """A call of a library API (``torch.*``, pickle-family loaders) as the RDF view needs it."""

    name: str
    line: int
    scope: str


@dataclass
class FileResult:
    """What scanning one file produced; ``error`` is set (and nothing else) when it could not be parsed."""

    path: str
    sha256: str = ""
    findings: list[Finding] = field(default_factory=list)
    suppressed: int = 0
    parsed: bool = False  # False when no selected rule's trigger text occurs in the file (and no facts wanted)
    functions: list[tuple[str, int, int]] = field(default_factory=list)  # qualname, first and last line
    api_uses: list[ApiUse] = field(default_factory=list)
    error: str | None = None


@dataclass
class ScanResult:
    """All files of a scan. ``counts`` maps each rule ID that fired to its number of findings."""

    root: Path
    files: list[FileResult]
    duration_s: float
    rules: list[str]

    @property
    def findings(self) -> list[Finding]:
        return sorted((f for r in self.files for f in r.findings),
                      key=lambda f: (f.details.get("path", ""), f.details.get("line", 0), f.rule_id))

    @property
    def errors(self) -> list[FileResult]:
        return [r for r in self.files if r.error]

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(f.rule_id for r in self.files for f in r.findings).items()))

    @property
    def suppressed(self) -> int:
        return sum(r.suppressed for r in self.files)

    def summary(self) -> dict[str, object]:
        """The ``scan.summary`` record: what was scanned, how long it took and the count per rule."""
        return {"root": str(self.root), "files": len(self.files), "parsed": sum(r.parsed for r in self.files),
                "parse_errors": len(self.errors),
                "findings": sum(self.counts.values()), "suppressed": self.suppressed, "counts": self.counts,
                "rules": self.rules, "duration_s": round(self.duration_s, 3)}


def static_rules(rule_ids: Iterable[str] | None = None) -> list[Rule]:
    """The catalogue's static-phase rules, optionally only ``rule_ids``."""
    wanted = set(rule_ids) if rule_ids is not None else None
    return [r for r in all_rules() if r.phase is Phase.STATIC and r.check is not None
            and (wanted is None or r.id in wanted)]


def discover(paths: Sequence[str | Path]) -> tuple[Path, list[Path]]:
    """The ``.py`` files under ``paths`` (sorted) and the root their reported paths are relative to."""
    files: list[Path] = []
    resolved = [Path(p) for p in paths]
    for p in resolved:
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
                files.extend(Path(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
        else:
            raise InputError(f"no such file or folder: {p}")
    root = resolved[0] if len(resolved) == 1 and resolved[0].is_dir() else Path(
        os.path.commonpath([str(f.parent.absolute()) for f in files])) if files else Path(".")
    return root, sorted(set(files))


def scan_file(path: Path, root: Path, rule_ids: Sequence[str], facts: bool = False) -> FileResult:
    """Scan one file; a syntax or decoding error is reported in the result, never raised.

    A file in which no selected rule's trigger text occurs is hashed but not parsed (unless ``facts``)."""
    rel = _relative(path, root)
    try:
        data = path.read_bytes()
    except OSError as e:
        return FileResult(rel, error=f"cannot read: {e.strerror or e}")
    result = FileResult(rel, sha256="sha256:" + hashlib.sha256(data).hexdigest())
    try:
        text = importlib.util.decode_source(data)
    except (SyntaxError, UnicodeDecodeError, ValueError) as e:
        result.error = f"{type(e).__name__}: {getattr(e, 'msg', None) or e}"
        return result
    active = [r for r in static_rules(rule_ids)
              if r.id not in TRIGGERS or any(needle in text for needle in TRIGGERS[r.id])]
    if not active and not facts:
        return result
    result.parsed = True
    try:
        ctx = FileContext.parse(rel, text)
    except (SyntaxError, ValueError) as e:
        result.error = f"{type(e).__name__}: {getattr(e, 'msg', None) or e}"
        return result
    for r in active:
        for f in r.check(ctx):
            if ctx.is_suppressed(f.rule_id, f.details.get("line", 0)):
                result.suppressed += 1
            else:
                result.findings.append(f)
    if facts:
        result.functions = [(q, n.lineno, n.end_lineno or n.lineno) for q, n in ctx.functions.items()]
        result.api_uses = [ApiUse(c.name, c.line, c.scope) for c in ctx.calls if c.name and _is_api(c.name)]
    return result


def scan_paths(paths: Sequence[str | Path], *, rules: Iterable[str] | None = None, jobs: int | None = None,
               facts: bool = False, progress: Callable[[int, int], None] | None = None) -> ScanResult:
    """Scan every Python file under ``paths``. ``jobs`` worker processes (default: CPU count; 1 = in process).

    ``facts`` also collects functions and API uses for :mod:`torchwitness.rules.static.graph`. ``progress`` is
    called with (files done, files total).
    """
    start = time.perf_counter()
    root, files = discover(paths)
    ids = [r.id for r in static_rules(rules)]
    if rules is not None and not ids:
        raise InputError("no static rule selected")
    jobs = jobs or os.cpu_count() or 1
    results: list[FileResult] = []
    if jobs <= 1 or len(files) < _PARALLEL_MIN_FILES:
        for i, f in enumerate(files, 1):
            results.append(scan_file(f, root, ids, facts))
            if progress:
                progress(i, len(files))
    else:
        chunk = max(1, min(32, len(files) // (jobs * 8)))
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for i, r in enumerate(pool.map(scan_file, files, [root] * len(files), [ids] * len(files),
                                           [facts] * len(files), chunksize=chunk), 1):
                results.append(r)
                if progress:
                    progress(i, len(files))
    return ScanResult(root=root, files=results, duration_s=time.perf_counter() - start, rules=ids)


class ScanSummary(msgspec.Struct):
    """A ``scan.summary`` record: one static scan, its per-rule counts and the digest of every file scanned."""

    root: str
    files: int
    parsed: int
    parse_errors: int
    findings: int
    suppressed: int
    counts: dict[str, int]
    rules: list[str]
    duration_s: float
    file_digests: dict[str, str] = {}


register_kind("scan.summary", ScanSummary)


def record_scan(run: Any, result: ScanResult) -> None:
    """Put a scan into ``run``'s ledger: every finding as a ``finding`` record, then the ``scan.summary``."""
    findings = getattr(run, "finding_set", None)  # an empty set is falsy: test for None
    (findings if findings is not None else FindingSet(record=run.record)).extend(result.findings)
    run.record("scan.summary", {**result.summary(), "file_digests": {r.path: r.sha256 for r in result.files
                                                                     if r.sha256}})


def _relative(path: Path, root: Path) -> str:
    try:
        return path.absolute().relative_to(root.absolute()).as_posix()
    except ValueError:
        return path.as_posix()


def _is_api(name: str) -> bool:
    head = name.split(".", 1)[0]
    return head in ("torch", "pickle", "joblib", "dill", "cloudpickle", "numpy", "safetensors", "lightning",
                    "transformers")
