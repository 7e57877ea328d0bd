"""The obligations map (``obligations.json``) and what a run's records cover of it.

An obligation lists *needs*; a need is met by a record of one of its ``kinds``, a ``finding`` whose rule ID
starts with one of its ``rules`` prefixes, or a *control* (a record kind whose data carries a given field, e.g.
a fairness evaluation with a gate decision, or a given value of it: a retention policy declared by a provider).
All needs met: ``evidence``; some: ``partial``; none: ``none``.

>>> m = load_map()
>>> sorted({o.framework for o in m.obligations})
['EU-AI-Act', 'GDPR']
>>> [s["section"] for s in m.annex_iv]
[1, 2, 3, 4, 5, 6, 7, 8, 9]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

from torchwitness.report.evidence import Evidence, get

Status = Literal["evidence", "partial", "none"]


@dataclass(frozen=True)
class Need:
    label: str
    kinds: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    controls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Obligation:
    id: str
    framework: str
    article: str
    title: str
    annex_iv: tuple[int, ...]
    needs: tuple[Need, ...]


@dataclass(frozen=True)
class ObligationsMap:
    version: int
    annex_iv: tuple[dict[str, Any], ...]
    controls: dict[str, dict[str, str]]
    obligations: tuple[Obligation, ...]

    def section_kinds(self, section: int) -> tuple[str, ...]:
        """The record kinds that count as evidence for Annex IV section ``section``."""
        for s in self.annex_iv:
            if int(s["section"]) == section:
                return tuple(s.get("kinds", ()))
        raise KeyError(section)

    def get(self, obligation_id: str) -> Obligation:
        for o in self.obligations:
            if o.id == obligation_id:
                return o
        raise KeyError(obligation_id)


@lru_cache(maxsize=1)
def load_map() -> ObligationsMap:
    """The obligations map shipped with the package."""
    raw = json.loads(resources.files("torchwitness.report").joinpath("obligations.json").read_text())
    obligations = tuple(
        Obligation(id=o["id"], framework=o["framework"], article=o["article"], title=o["title"],
                   annex_iv=tuple(o.get("annex_iv", ())),
                   needs=tuple(Need(label=n["label"], kinds=tuple(n.get("kinds", ())), rules=tuple(n.get("rules", ())),
                                    controls=tuple(n.get("controls", ()))) for n in o["needs"]))
        for o in raw["obligations"])
    return ObligationsMap(raw["version"], tuple(raw["annex_iv"]), raw["controls"], obligations)


@dataclass(frozen=True)
class NeedCoverage:
    need: Need
    seqs: tuple[int, ...]

    @property
    def met(self) -> bool:
        return bool(self.seqs)


@dataclass(frozen=True)
class Coverage:
    obligation: Obligation
    needs: tuple[NeedCoverage, ...]

    @property
    def status(self) -> Status:
        met = sum(n.met for n in self.needs)
        return "evidence" if met == len(self.needs) else "partial" if met else "none"

    @property
    def seqs(self) -> tuple[int, ...]:
        return tuple(sorted({s for n in self.needs for s in n.seqs}))

    def needs_text(self) -> str:
        return "; ".join(f"{'✓' if n.met else '✗'} {n.need.label}" for n in self.needs)

    def seqs_text(self, limit: int = 20) -> str:
        seqs = self.seqs
        return (", ".join(map(str, seqs[:limit])) + (f" … (+{len(seqs) - limit})" if len(seqs) > limit else "")) \
            or "-"


def _need_seqs(ev: Evidence, need: Need, controls: dict[str, dict[str, str]]) -> tuple[int, ...]:
    seqs = {r["seq"] for k in need.kinds for r in ev.kind(k)}
    if need.rules:
        seqs |= {r["seq"] for r in ev.kind("finding")
                 if isinstance(get(r, "rule_id"), str) and get(r, "rule_id").startswith(need.rules)}
    for name in need.controls:
        control = controls[name]
        for r in ev.kind(control["kind"]):
            value = get(r, control["field"])
            if value is not None and ("equals" not in control or value == control["equals"]):
                seqs.add(r["seq"])
    return tuple(sorted(seqs))


def coverage(ev: Evidence, omap: ObligationsMap | None = None) -> list[Coverage]:
    """How far the run's records cover each obligation, with the seqs behind each need."""
    omap = omap or load_map()
    return [Coverage(o, tuple(NeedCoverage(n, _need_seqs(ev, n, omap.controls)) for n in o.needs))
            for o in omap.obligations]


def obligations_of_kind(kind: str, omap: ObligationsMap | None = None) -> list[str]:
    """IDs of the obligations a record of ``kind`` bears on."""
    omap = omap or load_map()
    return [o.id for o in omap.obligations
            if any(kind in n.kinds or any(omap.controls[c]["kind"] == kind for c in n.controls) for n in o.needs)]


def coverage_markdown(rows: list[Coverage]) -> str:
    """The coverage as a Markdown table: obligation, Annex IV sections, status, needs met, records."""
    lines = ["| obligation | Annex IV | status | needs | records |", "|---|---|---|---|---|"]
    for c in rows:
        lines.append(f"| {c.obligation.framework} {c.obligation.article} | "
                     f"{', '.join(map(str, c.obligation.annex_iv))} | {c.status} | {c.needs_text()} | "
                     f"{c.seqs_text()} |")
    return "\n".join(lines) + "\n"
