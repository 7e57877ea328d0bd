"""Annex IV.3 (functioning: declared performance, per-group results, stated limitations) and IV.5 (risk)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from torchwitness.report.evidence import Evidence, dicts, get, mapping, number, strings
from torchwitness.report.model import Chart, Section, Series, Table, fmt
from torchwitness.report.statements import count, state


def _evaluations(ev: Evidence, sec: Section) -> None:
    """The latest evaluation per (split, data set, model): each metric as declared performance."""
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in ev.kind("eval"):
        latest[(str(get(r, "split")), str(get(r, "dataset")), str(get(r, "model")))] = r
    for r in sorted(latest.values(), key=lambda r: r["seq"]):
        split, dataset, rows = get(r, "split"), get(r, "dataset"), number(get(r, "rows"))
        where = " ".join([*([f"the {split} split"] if isinstance(split, str) else []),
                          *([f"of {dataset}"] if isinstance(dataset, str) else [])])
        on = f" on {where}" if where else ""
        size = f" ({fmt(rows)} rows)" if rows is not None else ""
        for name in sorted(mapping(get(r, "metrics"))):
            state(sec, r, f"metrics.{name}", f"{name}{on}{size}: {{v}}.")


def _disparities(view: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return dicts(view.get("disparities"))


def functioning(ev: Evidence, sec: Section) -> None:
    _evaluations(ev, sec)
    for r in ev.kind("model"):
        if isinstance(get(r, "limitations"), str):
            sec.say(f"Limitations of {get(r, 'name')}, as the provider states them: {get(r, 'limitations')}",
                    [r["seq"]])
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
    """Each (view, metric) disparity over epochs with its interval as error bars: ratios (parity at 1)
    and differences (parity at 0) on charts of their own, since on one axis the differences flatten to a line."""
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
    ratios = [s for label, s in lines.items() if "_ratio" in label]
    differences = [s for label, s in lines.items() if "_ratio" not in label]
    if differences:
        sec.blocks.append(Chart("Fairness disparities over epochs: differences (with intervals)", "epoch",
                                "difference (0 = parity)", differences[:6]))
    if ratios:
        sec.blocks.append(Chart("Fairness disparities over epochs: ratios (with intervals)", "epoch",
                                "ratio (1 = parity)", ratios[:6]))


def risk(ev: Evidence, sec: Section) -> None:
    findings = ev.findings()
    audits = ev.kind("train.audit")
    if audits:  # a clean audit is evidence too: the training was monitored and nothing was found
        steps = sum(len(dicts(get(r, "steps"))) or 1 for r in audits)
        outcome = "it raised the findings below" if findings else "it raised no finding"
        count(sec, audits, f"run.watch audited {fmt(steps)} training steps ({{n}} audit records); {outcome}.")
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
            compared = {"ci_high": "the upper end of the interval of", "ci_low": "the lower end of the interval of",
                        "estimate": "the estimate of"}.get(str(gate.get("bound")), f"{gate.get('bound')} of")
            state(sec, r, "gate.value", f"Fairness gate ({gate.get('policy')}) compared {compared} "
                                        f"{gate.get('metric')} on {gate.get('view')}, {{v}}, with the threshold "
                                        f"{limit}; action: {gate.get('action')}.")
    eps = ev.last("privacy.epsilon")
    if eps is not None and get(eps, "exhausted"):
        sec.say("The privacy budget was exhausted; the crossing step was refused.", [eps["seq"]])
    certs = ev.kind("edit.certificate")
    failed = [c for c in certs if get(c, "verdict") == "fail"]
    if certs:
        count(sec, certs, f"{len(failed)} of {{n}} edit certificates failed their policy.")


