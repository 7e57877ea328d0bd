"""The run as reports see it: its records grouped by kind, plus the signed tree head. Read-only.

Reporters never trust a record's shape: the kinds recorded by other capabilities evolve, so every accessor
returns ``None`` or an empty list where a field is missing instead of raising.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchwitness.errors import InputError
from torchwitness.ledger.layout import Layout, read_manifest
from torchwitness.ledger.reader import iter_records


def number(value: Any) -> float | None:
    """A finite float from a record value (plain numbers, 0-d ``$array`` tensors, ``$float`` tags) or ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, dict):
        if "$array" in value:
            data = mapping(value["$array"]).get("data")
            while isinstance(data, list) and len(data) == 1:
                data = data[0]
            return number(data)
        if "$int" in value:
            try:
                return float(int(value["$int"]))
            except ValueError:
                return None
    return None


def get(record: dict[str, Any] | None, path: str) -> Any:
    """``data`` field at a dotted ``path`` (``"metrics.accuracy_delta"``), or ``None`` when absent. A key that
    itself holds dots (a metric named ``"val.loss"``) is found whole: ``"metrics.val.loss"``."""
    return _walk(record.get("data"), path) if isinstance(record, dict) else None


def _walk(node: Any, path: str) -> Any:
    if isinstance(node, dict) and path in node:
        return node[path]
    part, dot, rest = path.partition(".")
    if isinstance(node, dict) and part in node:
        node = node[part]
    elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
        node = node[int(part)]
    else:
        return None
    return _walk(node, rest) if dot else node


def mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is a dict, else an empty one (so a malformed record reads as missing fields)."""
    return value if isinstance(value, dict) else {}


def dicts(value: Any) -> list[tuple[int, dict[str, Any]]]:
    """``(index, item)`` for the dict items of a list; anything else yields nothing."""
    return [(i, v) for i, v in enumerate(value) if isinstance(v, dict)] if isinstance(value, list) else []


def strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def entries(record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A record's measurement entries, each with its path prefix into ``data``. Batched records
    (``{"steps": [{...}, ...]}``, as ``train.audit`` writes one per 32 audited steps) give one entry per step."""
    data = mapping(record.get("data"))
    steps = dicts(data.get("steps"))
    return [(f"steps.{i}.", e) for i, e in steps] if steps else [("", data)]


@dataclass(frozen=True)
class Session:
    """One ``Run`` session: its ``run.start``, its ``run.end`` (None if it never closed) and the seqs it spans
    (up to the next session's start)."""

    number: int
    start: dict[str, Any]
    end: dict[str, Any] | None
    first: int
    last: int

    def holds(self, seq: int) -> bool:
        return self.first <= seq <= self.last


@dataclass
class Evidence:
    """All records of one run folder, in seq order and by kind."""

    root: Path
    manifest: dict[str, Any]
    records: list[dict[str, Any]]
    by_kind: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: str | Path) -> Evidence:
        root = Path(run_dir)
        if not root.is_dir():
            raise InputError(f"no such run folder: {root}")
        manifest = read_manifest(Layout(root).root)
        records = list(iter_records(root))
        by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in records:
            by_kind[r["kind"]].append(r)
        return cls(root, manifest, records, dict(by_kind))

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run") or self.manifest.get("run_id") or self.root.name)

    def kind(self, *kinds: str) -> list[dict[str, Any]]:
        """Records of any of ``kinds`` in seq order."""
        if len(kinds) == 1:
            return list(self.by_kind.get(kinds[0], []))
        return sorted((r for k in kinds for r in self.by_kind.get(k, [])), key=lambda r: r["seq"])

    def first(self, kind: str) -> dict[str, Any] | None:
        rs = self.by_kind.get(kind)
        return rs[0] if rs else None

    def last(self, kind: str) -> dict[str, Any] | None:
        rs = self.by_kind.get(kind)
        return rs[-1] if rs else None

    def seq(self, seq: int) -> dict[str, Any] | None:
        if 0 <= seq < len(self.records) and self.records[seq]["seq"] == seq:
            return self.records[seq]
        return next((r for r in self.records if r["seq"] == seq), None)

    def sessions(self) -> list[Session]:
        """The run's sessions in order: one per ``run.start`` (a resumed run has several)."""
        starts = self.kind("run.start")
        ends = self.kind("run.end")
        out = []
        for i, start in enumerate(starts):
            last = starts[i + 1]["seq"] - 1 if i + 1 < len(starts) else self.records[-1]["seq"]
            end = next((e for e in ends if start["seq"] < e["seq"] <= last), None)
            out.append(Session(i + 1, start, end, start["seq"], last))
        return out

    def findings(self) -> list[dict[str, Any]]:
        """The final tally of each finding when one was recorded, else its first occurrence."""
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for r in self.kind("finding"):
            rid, loc = get(r, "rule_id"), get(r, "location")
            if not isinstance(rid, str):
                continue
            key = (rid, str(loc))
            if key not in latest or get(r, "final") or not get(latest[key], "final"):
                latest[key] = r
        return sorted(latest.values(), key=lambda r: r["seq"])

    def series(self, kinds: Iterable[str], path: str) -> list[tuple[float, float, int]]:
        """``(x, y, seq)`` points of a numeric field over records and their batched entries (x = the entry's or
        record's step, else the position)."""
        points = []
        for r in self.kind(*kinds):
            for prefix, _ in entries(r):
                y = number(get(r, prefix + path))
                if y is None:
                    continue
                x = get(r, prefix + "step") if prefix else r.get("step")
                x = x if isinstance(x, int) and not isinstance(x, bool) else r.get("step")
                points.append((float(x) if isinstance(x, int) else float(len(points)), y, r["seq"]))
        return points
