"""Annex IV.1 (general description), IV.7 (standards) and IV.8 (declaration of conformity)."""

from __future__ import annotations

from torchwitness.report.evidence import Evidence, get, mapping, number, strings
from torchwitness.report.model import Section, Table
from torchwitness.report.statements import count, state, when


def general(ev: Evidence, sec: Section) -> None:
    start = ev.first("run.start")
    if start is not None:
        _environment(ev, start, sec)
    _models(ev, sec)
    params = ev.kind("params")
    if params:
        # every value a name took, with the session that set it: a resumed run may change a setting, and its
        # earlier sessions' figures were obtained with the earlier value
        sessions = ev.sessions()
        several = len(sessions) > 1
        t = Table("Hyperparameters and settings (params)", ["name", "value", *(["session"] if several else [])],
                  [], [])
        values: dict[str, list[tuple[object, int]]] = {}
        for r in params:
            for k, v in mapping(get(r, "params")).items():
                seen = values.setdefault(str(k), [])
                if not seen or seen[-1][0] != v:
                    seen.append((v, r["seq"]))
        for k, history in sorted(values.items()):
            for v, seq in history:
                shown = v if isinstance(v, int | float) and not isinstance(v, bool) else str(v)
                session = next((s.number for s in sessions if s.first <= seq <= s.last), 1)
                t.add([k, shown, *([session] if several else [])], [seq])
        sec.blocks.append(t)
    _sessions(ev, sec)


def _environment(ev: Evidence, start: dict, sec: Section) -> None:
    d = mapping(start["data"])
    sec.say(f"Run {ev.run_id} started on {when(start)} with torch {d.get('torch', '?')}, Python "
            f"{d.get('python', '?')} on {d.get('platform', '?')} ({d.get('machine', '?')}).", [start["seq"]])
    devices = strings(d.get("devices"))
    if devices:
        sec.say(f"Compute devices: {', '.join(map(str, devices))}.", [start["seq"]])
    git = d.get("git")
    if isinstance(git, dict) and git.get("commit"):
        sec.say(f"Source version: git commit {git['commit']}{' (uncommitted changes)' if git.get('dirty') else ''}.",
                [start["seq"]])
    config = d.get("config")
    if isinstance(config, dict) and config:
        t = Table("Configuration recorded at start", ["setting", "value"], [], [])
        for k, v in sorted(config.items()):
            t.add([k, v if isinstance(v, int | float) and not isinstance(v, bool) else str(v)], [start["seq"]])
        sec.blocks.append(t)


def _models(ev: Evidence, sec: Section) -> None:
    for r in ev.kind("model"):
        d = mapping(r["data"])
        version = f", version {d['version']}" if d.get("version") else ""
        sec.say(f"Model: {d.get('name', '?')}{version}.", [r["seq"]])
        if isinstance(d.get("intended_use"), str):
            sec.say(f"Intended use, as the provider states it: {d['intended_use']}", [r["seq"]])


def _sessions(ev: Evidence, sec: Section) -> None:
    """Every session of the run, so figures counted in one are never read as the run's total."""
    sessions = ev.sessions()
    if not sessions:
        return
    t = Table("Sessions of this run", ["session", "started", "resumed", "ended", "status", "duration (s)"], [], [])
    for s in sessions:
        end = s.end
        t.add([s.number, when(s.start), "yes" if get(s.start, "resumed") is True else "no",
               when(end) if end else "never closed", str(get(end, "status")) if end else "—",
               number(get(end, "duration_s")) if end else None],
              [s.start["seq"]] + ([end["seq"]] if end else []))
    sec.blocks.append(t)
    starts = [s.start for s in sessions]
    if len(sessions) > 1:
        count(sec, starts, "The ledger holds {n} sessions of this run (later ones opened with "
                           "Run(path, resume=True)); counts below are given per session, never summed across them.")
    for s in sessions:
        if s.end is not None:
            state(sec, s.end, "duration_s", f"Session {s.number} ran {{v}} s and ended '{get(s.end, 'status')}'.")


def standards(ev: Evidence, sec: Section) -> None:
    declared = ev.kind("standards.applied")
    if not declared:
        sec.say("No harmonised standard or common specification is declared in this run's ledger.")
    for r in declared:
        sec.say(f"Standards declared: {', '.join(strings(get(r, 'standards')))}.", [r["seq"]])
    start = ev.first("run.start")
    if start is not None:
        sec.say("Other solutions adopted for record-keeping: records are RFC 8785 canonical JSON in an RFC 9162 "
                "Merkle tree with C2SP checkpoints signed with Ed25519 (verifiable with 'torchwitness verify').",
                [start["seq"]])


def declaration(ev: Evidence, sec: Section) -> None:
    for r in ev.kind("conformity.declaration"):
        sec.say(f"EU declaration of conformity recorded: {get(r, 'reference')}.", [r["seq"]])


