"""Annex IV.6 (changes through the lifecycle) and IV.9 (post-market monitoring, incidents, retention)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from torchwitness.controls.incidents import incident_status
from torchwitness.report.evidence import Evidence, get, mapping, number
from torchwitness.report.model import Chart, Section, Series, Table, fmt
from torchwitness.report.statements import count, state, when


def changes(ev: Evidence, sec: Section) -> None:
    certs = ev.kind("edit.certificate")
    if certs:
        t = Table("Edits certified", ["seq", "edit", "verdict", "action", "policy", "subject weights"], [], [])
        for c in certs:
            t.add([str(c["seq"]), get(c, "edit"), get(c, "verdict"), get(c, "action"),
                   get(c, "policy"), get(c, "subject_weights")], [c["seq"]])
        sec.blocks.append(t)
        for c in certs:
            state(sec, c, "metrics.accuracy_delta", f"{get(c, 'edit')}: accuracy change {{v}} ({get(c, 'verdict')}).")
        rows = [(c, d) for c in certs for d in [_cert_interval(ev, c)] if d]
        if rows:
            s = Series("accuracy change", [(float(i), d[0]) for i, (_, d) in enumerate(rows)],
                       [c["seq"] for c, _ in rows], [d[1] for _, d in rows], [d[2] for _, d in rows])
            sec.blocks.append(Chart("Certificate intervals (accuracy change, edited minus baseline)", "edit",
                                    "difference", [s], style="interval",
                                    categories=[str(get(c, "edit")) for c, _ in rows]))
    erasures = ev.kind("erasure")
    if erasures:
        count(sec, erasures, "{n} erasure records (personal data crypto-shredded; the ledger still verifies).")
    for kind, text in (("consent.revoke", "{n} consent withdrawals."),
                       ("provenance.erasure", "{n} erasures of a data subject's training provenance."),
                       ("inputs.erasure", "{n} erasures of retained serving inputs.")):
        if ev.kind(kind):
            count(sec, ev.kind(kind), text)


def _cert_interval(ev: Evidence, cert: dict[str, Any]) -> tuple[float, float, float] | None:
    """Estimate and interval of the accuracy change, read from the certificate blob the record names."""
    import json

    digest = get(cert, "certificate")
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        return None
    blob = ev.root / "blobs" / f"sha256-{digest.removeprefix('sha256:')}"
    try:
        doc = json.loads(blob.read_bytes())
    except (OSError, ValueError):
        return None
    m = mapping(mapping(mapping(mapping(doc).get("statistics")).get("metrics")).get("accuracy_delta"))
    iv = m.get("interval") if isinstance(m.get("interval"), list) and len(m["interval"]) == 2 else [None, None]
    est, lo, hi = number(m.get("estimate")), number(iv[0]), number(iv[1])
    return (est, lo, hi) if None not in (est, lo, hi) else None  # type: ignore[return-value]


def incidents(ev: Evidence, sec: Section) -> None:
    """Serious incidents (Art. 73) with their deadlines, as of when the document is built."""
    found = incident_status(ev.kind("incident", "incident.report"))
    if not found:
        return
    now = dt.datetime.now(dt.timezone.utc)
    t = Table("Serious incidents (Art. 73)", ["incident", "category", "deadline", "reported", "status"], [], [])
    for i in found:
        t.add([i.incident, i.category, i.deadline.strftime("%Y-%m-%d %H:%M UTC"),
               i.reported.strftime("%Y-%m-%d %H:%M UTC") if i.reported else None, i.status(now)], list(i.seqs))
    sec.blocks.append(t)
    count(sec, ev.kind("incident"), "{n} serious incidents recorded (as of " + now.strftime("%Y-%m-%d") + ").")


def post_market(ev: Evidence, sec: Section) -> None:
    ref = ev.kind("drift.reference")
    if ref:
        count(sec, ref, "{n} drift reference snapshots recorded.")
    alerts = ev.kind("drift.alert")
    if alerts:
        # drift.alert (controls/drift/monitor.py): the statistic's name, its value, the threshold it crossed (a
        # p-value threshold for the KS, MMD and prediction-shift tests, the value's own for PSI) and the window.
        count(sec, alerts, "{n} drift alerts raised.")
        # one series per feature and statistic: a KS distance and a prediction-shift p-value on one line zig-zag
        by_feature: dict[str, Series] = {}
        for i, r in enumerate(alerts):
            x, v = number(get(r, "window")), number(get(r, "value"))
            if v is None:
                continue
            label = f"{get(r, 'feature')} ({get(r, 'statistic')})"
            s = by_feature.setdefault(label, Series(label, [], []))
            s.points.append((float(i) if x is None else x, v))
            s.seqs.append(r["seq"])
        if by_feature:
            sec.blocks.append(Chart("Drift statistics at alerts, per feature", "window", "statistic",
                                    list(by_feature.values())[:8]))
        t = Table("Drift alerts", ["seq", "recorded", "window", "feature", "statistic", "value", "p-value",
                                   "threshold"], [], [])
        for r in alerts:
            name = get(r, "statistic")
            t.add([str(r["seq"]), when(r), number(get(r, "window")), get(r, "feature"),
                   name if isinstance(name, str) else None, number(get(r, "value")), number(get(r, "p_value")),
                   number(get(r, "threshold"))], [r["seq"]])
        sec.blocks.append(t)
    for kind, text in (("inference", "{n} inference records (deployer monitoring, Art. 26(5))."),
                       ("llm.generation", "{n} LLM generation records."), ("agent.step", "{n} agent step records.")):
        rs = ev.kind(kind)
        if rs:
            count(sec, rs, text)
    incidents(ev, sec)
    oldest = ev.seq(0)
    for r in ev.kind("retention.policy"):
        days, role, storage = number(get(r, "logs_days")), get(r, "role"), get(r, "storage")
        if days is None or oldest is None:
            continue
        article = "Art. 26(6)" if role == "deployer" else "Art. 19(1)"
        where = f", in {storage}" if isinstance(storage, str) and storage else ""
        try:
            until = dt.datetime.fromtimestamp(oldest["ts"] / 1e6 + days * 86400, dt.timezone.utc).strftime("%Y-%m-%d")
            kept = f": the oldest record, of {when(oldest)[:10]}, until at least {until}"
        except (OverflowError, ValueError, OSError):  # beyond the calendar datetime knows: kept for good
            kept = ""
        sec.say(f"The {role} keeps this run's logs at least {fmt(days)} days ({article}{where}){kept}.", [r["seq"]],
                value=days, field="logs_days", basis="field")
    for r in ev.kind("serve.start"):
        if get(r, "retain_inputs") is not True:
            continue
        seconds = number(get(r, "retain_seconds"))
        if seconds is None:
            sec.say(f"The serving stream started at seq {r['seq']} keeps the raw inputs it serves until they are "
                    "erased: no retention period is set (GDPR Art. 5(1)(e)).", [r["seq"]])
        else:
            sec.say(f"The serving stream started at seq {r['seq']} keeps the raw inputs it serves for "
                    f"{fmt(seconds)} s ({fmt(seconds / 86400, 3)} days), then deletes them (GDPR Art. 5(1)(e)).",
                    [r["seq"]], value=seconds, field="retain_seconds", basis="field")
    expiries = ev.kind("inputs.expiry")
    if expiries:
        deleted = sum(number(get(r, "count")) or 0 for r in expiries)
        sec.say(f"{fmt(deleted)} retained inputs were deleted at the end of their retention period.",
                [r["seq"] for r in expiries])
    reviews = ev.kind("review.decision")
    if reviews:
        outcomes = Counter(str(get(r, "action")) for r in reviews)  # approve, override or escalate
        count(sec, reviews, "{n} human review decisions (" + ", ".join(f"{n} {k}" for k, n in
                                                                        sorted(outcomes.items())) + ").")
