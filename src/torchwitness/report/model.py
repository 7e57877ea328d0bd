"""The one structured document model every dossier format renders: sections of statements, tables and charts.

Each statement that states a number cites the record(s) behind it: ``value`` is either the number found at
``field`` in the first cited record (``basis="field"``) or the count of cited records (``basis="count"``), so a
reader (or a test) can re-derive every number from the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


def fmt(value: float | int | None, digits: int = 4) -> str:
    """The one way numbers are printed in dossiers (``None`` as an em dash)."""
    if value is None:
        return "—"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e15):
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


@dataclass
class Statement:
    text: str
    cites: list[int] = field(default_factory=list)
    value: float | None = None
    field: str | None = None  # dotted path into the first cited record's data that holds ``value``
    basis: Literal["field", "count"] | None = None


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    row_cites: list[list[int]]

    def add(self, cells: list[Any], cites: list[int]) -> None:
        """Append a row: numbers through :func:`fmt`, ``None`` as an em dash, anything else as text."""
        self.rows.append([fmt(c) if c is None or (isinstance(c, int | float) and not isinstance(c, bool)) else str(c)
                          for c in cells])
        self.row_cites.append(cites)


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    seqs: list[int]
    lows: list[float] | None = None  # interval bounds per point (charts draw error bars)
    highs: list[float] | None = None


@dataclass
class Chart:
    title: str
    x_label: str
    y_label: str
    series: list[Series]
    style: Literal["line", "interval"] = "line"  # "interval": one labelled row per point, e.g. certificates
    categories: list[str] | None = None

    @property
    def cites(self) -> list[int]:
        return sorted({s for series in self.series for s in series.seqs})


Block = Statement | Table | Chart


@dataclass
class Section:
    key: str
    title: str
    scope: str = ""
    blocks: list[Block] = field(default_factory=list)
    obligations: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # what this section would show, had it been recorded

    @property
    def has_evidence(self) -> bool:
        return any(b.cites if isinstance(b, Statement | Chart) else any(b.row_cites) for b in self.blocks)

    def cited(self) -> list[int]:
        seqs: set[int] = set()
        for b in self.blocks:
            seqs.update(b.cites if isinstance(b, Statement | Chart) else (x for r in b.row_cites for x in r))
        return sorted(seqs)

    def say(self, text: str, cites: list[int] | None = None, *, value: float | None = None,
            field: str | None = None, basis: Literal["field", "count"] | None = None) -> Statement:
        s = Statement(text, list(cites or []), value, field, basis)
        self.blocks.append(s)
        return s


@dataclass
class Document:
    title: str
    run_id: str
    run_dir: str
    generated: str
    sections: list[Section]
    verification: dict[str, Any]  # checkpoint note, verifier key, inclusion proofs, Python-side result

    def statements(self) -> list[Statement]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Statement)]

    def charts(self) -> list[Chart]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Chart)]

    def cited(self) -> list[int]:
        return sorted({q for s in self.sections for q in s.cited()})
