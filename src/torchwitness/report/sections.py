"""The nine Annex IV sections, each built only from records; a section with nothing recorded says so."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from torchwitness.controls.incidents import incident_status
from torchwitness.report.evidence import Evidence, dicts, entries, get, mapping, number, strings
from torchwitness.report.model import Chart, Section, Series, Table, fmt

NO_EVIDENCE = "No evidence in this run's ledger."
TEST_LOGS = "Test logs (Annex IV 2(g)): dated test records"


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


MAX_POINTS = 400  # per chart series: enough to read a trajectory, small enough for every renderer


def _series(ev: Evidence, kinds: tuple[str, ...], path: str, label: str) -> Series | None:
    pts = ev.series(kinds, path)
    if not pts:
        return None
    if len(pts) > MAX_POINTS:  # evenly spaced, first and last kept; the chart cites exactly the points it draws
        pts = [pts[round(i * (len(pts) - 1) / (MAX_POINTS - 1))] for i in range(MAX_POINTS)]
    return Series(label, [(x, y) for x, y, _ in pts], [s for _, _, s in pts])


def general(ev: Evidence, sec: Section) -> None:
    start = ev.first("run.start")
    if start is None:
        return
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
    sessions = ev.kind("run.start")
    if len(sessions) > 1:
        count(sec, sessions, "The ledger holds {n} sessions of this run.")


def development(ev: Evidence, sec: Section) -> None:
    summary = ev.last("data.summary")
    state(sec, summary, "train_rows", "Training data: {v} rows.")
    state(sec, summary, "test_rows", "Test data: {v} rows.")
    state(sec, summary, "features", "Input features: {v}.")
    for sheet in ev.kind("data.datasheet"):
        d = mapping(sheet["data"])
        state(sec, sheet, "rows", f"Datasheet of {d.get('name', 'a data set')}: {{v}} rows, content digest "
                                  f"{d.get('content_digest', '?')}.")
        attrs = strings(d.get("sensitive_attributes"))
        if attrs:
            sec.say(f"Sensitive attributes examined: {', '.join(map(str, attrs))}.", [sheet["seq"]])
        for _, view in dicts(d.get("coverage")):
            t = Table(f"Group coverage ({d.get('name', '')}, {' & '.join(strings(view.get('attributes')))})",
                      ["group", "n", "share", "positive rate", "status"], [], [])
            for _, g in dicts(view.get("groups")):
                t.add([g.get("name"), *(number(g.get(k)) for k in ("n", "share", "positive_rate")),
                       g.get("status")],
                      [sheet["seq"]])
            sec.blocks.append(t)
    lines = [s for s in (_series(ev, ("train.epoch",), "train_loss", "train loss (epoch)"),
                         _series(ev, ("train.audit", "train.step"), "loss", "loss (audited step)")) if s]
    if lines:
        sec.blocks.append(Chart("Training loss", "step", "loss", lines))
    grad = _series(ev, ("train.audit", "train.step"), "grad_norm", "global gradient norm")
    if grad:
        sec.blocks.append(Chart("Gradient norm", "step", "L2 norm", [grad]))
    epochs = ev.kind("train.epoch")
    if epochs:
        count(sec, epochs, "Training recorded {n} epochs.")
        state(sec, epochs[-1], "train_loss", "Final training loss: {v}.")
    privacy(ev, sec)
    for kinds, text in ((("consent.grant", "consent.grant_batch"),
                         "{n} consent records (subjects stored only as erasable commitments)."),
                        (("consent.access",), "{n} consent-checked data access records."),
                        (("data.provenance",), "{n} records commit, per training step, to the set of data subjects "
                                               "used (Merkle roots of keyed commitments).")):
        rs = ev.kind(*kinds)
        if rs:
            count(sec, rs, text)
    for r in ev.kind("repro.check"):
        outcome = "bit-identical" if get(r, "ok") is True else f"first difference at step {get(r, 'first_mismatch')}"
        state(sec, r, "compared", f"Replay check of {get(r, 'factory')}: {{v}} steps compared, {outcome}.")
    tests = ev.kind("eval.summary", "fairness.eval", "edit.certificate")
    if tests:
        t = Table(TEST_LOGS,
                  ["seq", "recorded", "kind", "summary"], [], [])
        for r in tests:
            t.add([str(r["seq"]), when(r), r["kind"], _summary(r)], [r["seq"]])
        sec.blocks.append(t)
    scans = ev.kind("model.scan")
    if scans:
        count(sec, scans, "Cybersecurity: {n} model-file scans recorded.")


def _summary(r: dict[str, Any]) -> str:
    d = mapping(r.get("data"))
    if r["kind"] == "eval.summary":
        return f"{d.get('split', '')} accuracy {fmt(number(d.get('accuracy')))}"
    if r["kind"] == "fairness.eval":  # an evaluation outside training has no epoch; a gate that let it pass, no action
        gate = mapping(d.get("gate"))
        action = gate.get("action")
        return ", ".join([*([f"epoch {d['epoch']}"] if d.get("epoch") is not None else []), f"{d.get('rows')} rows",
                          *([f"gate {'no action' if action == 'none' else action}"] if gate else [])])
    return f"{d.get('edit')}: {d.get('verdict')}"


def privacy(ev: Evidence, sec: Section) -> None:
    secure_inference(ev, sec)
    eps = ev.kind("privacy.epsilon")
    if not eps:
        return
    s = _series(ev, ("privacy.epsilon",), "epsilon", "epsilon")
    if s:
        budget = number(get(eps[-1], "epsilon_budget"))
        chart = Chart("Privacy loss (epsilon) over steps", "step", "epsilon", [s])
        if budget is not None:
            chart.series.append(Series("budget", [(s.points[0][0], budget), (s.points[-1][0], budget)],
                                       [eps[-1]["seq"]] * 2))
        sec.blocks.append(chart)
    state(sec, eps[-1], "epsilon", f"Differential privacy: epsilon {{v}} at delta {fmt(number(get(eps[-1], 'delta')))}"
                                   f" after {get(eps[-1], 'steps')} steps.")
    state(sec, eps[-1], "epsilon_budget", "Privacy budget: epsilon {v}.")


def secure_inference(ev: Evidence, sec: Section) -> None:
    """Sessions served on encrypted inputs: evidence of data protection by design (GDPR Art. 25)."""
    for r in ev.kind("secure.inference"):
        error = number(get(r, "max_abs_error"))
        checked = (f"largest difference from plaintext probabilities on {get(r, 'check_rows')} declared check rows: "
                   f"{fmt(error)}" if error is not None else "no check rows declared, so its error is not measured")
        state(sec, r, "rows", f"Secure inference (GDPR Art. 25): {{v}} rows served with {get(r, 'library')} "
                              f"{get(r, 'version')} ({get(r, 'parameters.scheme')}); the model owner saw "
                              f"{get(r, 'owner_sees')}; {checked}.")


def _disparities(view: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return dicts(view.get("disparities"))


def functioning(ev: Evidence, sec: Section) -> None:
    state(sec, ev.last("eval.summary"), "accuracy", "Accuracy on the test split: {v}.")
    evals = ev.kind("fairness.eval")
    if evals:
        last = evals[-1]
        for vi, view in dicts(get(last, "views")):
            name = " & ".join(strings(view.get("attributes")))
            t = Table(f"Accuracy and selection rate per group ({name})", ["group", "n", "accuracy", "selection rate",
                                                                          "TPR", "FPR", "status"], [], [])
            for _, g in dicts(view.get("groups")):
                t.add([g.get("name"), *(number(g.get(k)) for k in ("n", "accuracy", "selection_rate", "tpr",
                                                                         "fpr")), g.get("status")], [last["seq"]])
            sec.blocks.append(t)
            for di, d in _disparities(view):
                if number(d.get("estimate")) is None:
                    continue
                confidence = number(get(last, "confidence")) or 0.95
                ci = (f" ({fmt(confidence)} interval {fmt(number(d.get('ci_low')))} to "
                      f"{fmt(number(d.get('ci_high')))})" if number(d.get("ci_low")) is not None else "")
                state(sec, last, f"views.{vi}.disparities.{di}.estimate",
                      f"{d.get('metric')} across {name}: {{v}}{ci}{_test_verdict(d, confidence)}.")
            if strings(view.get("insufficient")):
                sec.say(f"Groups too small to assess ({name}): {', '.join(strings(view['insufficient']))}.",
                        [last["seq"]])
        fairness_chart(ev, evals, sec)
    attributions = ev.kind("explain.attribution")
    if attributions:
        count(sec, attributions, "{n} explanation (attribution) records.")


_NULL_HYPOTHESES = {"demographic_parity": "equal selection rates", "equalized_odds": "equal TPR and FPR",
                    "equal_opportunity": "equal TPR", "predictive_parity": "equal precision",
                    "accuracy": "equal accuracy"}


def _test_verdict(d: dict[str, Any], confidence: float) -> str:
    """The words follow the test, never the point estimate: 'no disparity detected' only when it does not reject."""
    p = number(d.get("p_value"))
    if p is None:
        return ""
    hypothesis = next((h for k, h in _NULL_HYPOTHESES.items() if str(d.get("metric")).startswith(k)), "no disparity")
    found = "a disparity is detected" if p < 1 - confidence else "no disparity detected"
    return f"; {found} (test of {hypothesis}: p = {fmt(p, 3)})"


def fairness_chart(ev: Evidence, evals: list[dict[str, Any]], sec: Section) -> None:
    """Each (view, metric) disparity over epochs with its interval as error bars."""
    lines: dict[str, Series] = {}
    for i, r in enumerate(evals):
        x = number(get(r, "epoch"))
        x = float(i) if x is None else x
        for _, view in dicts(get(r, "views")):
            for _, d in _disparities(view):
                est = number(d.get("estimate"))
                if est is None:
                    continue
                label = f"{d.get('metric')} ({'&'.join(strings(view.get('attributes')))})"
                s = lines.setdefault(label, Series(label, [], [], [], []))
                s.points.append((x, est))
                s.seqs.append(r["seq"])
                lo, hi = number(d.get("ci_low")), number(d.get("ci_high"))
                s.lows.append(est if lo is None else lo)  # type: ignore[union-attr]
                s.highs.append(est if hi is None else hi)  # type: ignore[union-attr]
    if lines:
        sec.blocks.append(Chart("Fairness disparities over epochs (with intervals)", "epoch", "disparity",
                                list(lines.values())[:6]))


def metrics(ev: Evidence, sec: Section) -> None:
    names: Counter[str] = Counter()
    seqs: dict[str, list[int]] = {}
    for kind in ("train.epoch", "eval.summary", "train.audit"):
        for r in ev.kind(kind):
            for _, entry in entries(r):
                for k, v in entry.items():
                    if number(v) is not None and k not in ("epoch", "step", "rows", "forwards"):
                        names[f"{kind}: {k}"] += 1
                        if r["seq"] not in seqs.setdefault(f"{kind}: {k}", [])[-1:]:
                            seqs[f"{kind}: {k}"].append(r["seq"])
    if names:
        t = Table("Performance metrics recorded", ["metric", "values"], [], [])
        for name, n in sorted(names.items()):
            t.add([name, n], seqs[name][:50])
        sec.blocks.append(t)
    evals = ev.kind("fairness.eval")
    if evals:
        last = evals[-1]
        method = get(last, "method")
        how = f"intervals and a test of no disparity ({method})" if method else "percentile bootstrap intervals"
        state(sec, last, "confidence", f"Fairness disparities are reported with {how} at confidence {{v}}.")
        state(sec, last, "min_group_size", "Groups smaller than {v} are reported as insufficient, never dropped.")
    for cert in ev.kind("edit.certificate"):
        ms = mapping(get(cert, "metrics"))
        if ms:
            sec.say(f"Certificate for {get(cert, 'edit')} tests metrics {', '.join(sorted(ms))} under policy "
                    f"{get(cert, 'policy')}.", [cert["seq"]])


def risk(ev: Evidence, sec: Section) -> None:
    findings = ev.findings()
    if findings:
        sev = Counter(str(get(f, "severity")) for f in findings)
        count(sec, findings, "The training audit raised {n} distinct findings ("
              + ", ".join(f"{n} {s}" for s, n in sorted(sev.items())) + ").")
        t = Table("Findings", ["rule", "severity", "location", "count", "first step", "message"], [], [])
        for f in findings:
            t.add([get(f, "rule_id"), get(f, "severity"), get(f, "location"), get(f, "count"),
                   get(f, "first_step"), get(f, "message")], [f["seq"]])
        sec.blocks.append(t)
    for r in ev.kind("fairness.eval"):
        gate = get(r, "gate")
        if isinstance(gate, dict):
            limit = fmt(number(gate.get("threshold")))
            state(sec, r, "gate.value", f"Fairness gate ({gate.get('policy')}): {gate.get('metric')} on "
                                        f"{gate.get('view')} = {{v}} against threshold {limit} "
                                        f"({gate.get('bound')}); action: {gate.get('action')}.")
    eps = ev.last("privacy.epsilon")
    if eps is not None and get(eps, "exhausted"):
        sec.say("The privacy budget was exhausted; the crossing step was refused.", [eps["seq"]])
    certs = ev.kind("edit.certificate")
    failed = [c for c in certs if get(c, "verdict") == "fail"]
    if certs:
        count(sec, failed, f"{{n}} of {len(certs)} edit certificates failed their policy.")


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
    revokes = ev.kind("consent.revoke")
    if revokes:
        count(sec, revokes, "{n} consent withdrawals.")


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
        pts = [(x if x is not None else float(i), v, r["seq"]) for i, r in enumerate(alerts)
               for x, v in [(number(get(r, "window")), number(get(r, "value")))] if v is not None]
        if pts:
            sec.blocks.append(Chart("Drift statistics at alerts", "window", "statistic",
                                    [Series("drift statistic", [(x, y) for x, y, _ in pts], [s for *_, s in pts])]))
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


BUILDERS = {1: general, 2: development, 3: functioning, 4: metrics, 5: risk, 6: changes, 7: standards,
            8: declaration, 9: post_market}
