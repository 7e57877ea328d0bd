"""How section builders state things: every number cites the record it comes from (see :mod:`.model`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from torchwitness.report.evidence import Evidence, Session, get, mapping, number
from torchwitness.report.model import Section, Series, fmt

NO_EVIDENCE = "No evidence in this run's ledger."
MAX_POINTS = 400  # per chart series: enough to read a trajectory, small enough for every renderer


def when(record: dict[str, Any]) -> str:
    return dt.datetime.fromtimestamp(record["ts"] / 1e6, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def state(sec: Section, record: dict[str, Any] | None, path: str, template: str) -> bool:
    """Add ``template`` (with ``{v}``) stating the number at ``path`` of ``record``; False if it is absent."""
    if record is None:
        return False
    v = number(get(record, path))
    if v is None:
        return False
    sec.say(template.format(v=fmt(v)), [record["seq"]], value=v, field=path, basis="field")
    return True


def count(sec: Section, records: list[dict[str, Any]], template: str) -> None:
    sec.say(template.format(n=fmt(len(records))), [r["seq"] for r in records], value=len(records), basis="count")


def thin(pts: list[tuple[float, float, int]]) -> Series | None:
    """Evenly spaced points, first and last kept; the chart cites exactly the points it draws."""
    if not pts:
        return None
    if len(pts) > MAX_POINTS:
        pts = [pts[round(i * (len(pts) - 1) / (MAX_POINTS - 1))] for i in range(MAX_POINTS)]
    return Series("", [(x, y) for x, y, _ in pts], [s for _, _, s in pts])


def series(ev: Evidence, kinds: tuple[str, ...], path: str, label: str) -> Series | None:
    s = thin(ev.series(kinds, path))
    if s is not None:
        s.label = label
    return s


def metric_points(ev: Evidence) -> dict[str, list[tuple[float, float, int]]]:
    """``metrics`` records as ``{name: [(step, value, seq), ...]}``; with several sessions each name is kept
    apart per session (``name (session 2)``), since steps restart and values are never summed across them."""
    sessions = ev.sessions()
    out: dict[str, list[tuple[float, float, int]]] = {}
    for r in ev.kind("metrics"):
        session = next((s.number for s in sessions if s.holds(r["seq"])), 0)
        for name, value in mapping(get(r, "metrics")).items():
            y = number(value)
            if y is None:
                continue
            label = f"{name} (session {session})" if len(sessions) > 1 else str(name)
            pts = out.setdefault(label, [])
            step = r.get("step")
            pts.append((float(step) if isinstance(step, int) else float(len(pts)), y, r["seq"]))
    return out


def session_label(session: Session, sessions: list[Session]) -> str:
    return f"session {session.number} of {len(sessions)}" if len(sessions) > 1 else "this run"
