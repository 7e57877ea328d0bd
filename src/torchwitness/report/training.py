"""Annex IV.2 (development: data, model, training, tests) and IV.4 (the performance metrics used)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from torchwitness.report.evidence import Evidence, dicts, entries, get, mapping, number, strings
from torchwitness.report.model import Chart, Section, Series, Table, fmt
from torchwitness.report.statements import count, metric_points, series, state, thin, when

TEST_LOGS = "Test logs (Annex IV 2(g)): dated test records"
TEST_KINDS = ("eval", "fairness.eval", "edit.certificate")


def development(ev: Evidence, sec: Section) -> None:
    _datasets(ev, sec)
    _datasheets(ev, sec)
    _model_files(ev, sec)
    _training(ev, sec)
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
    tests = ev.kind(*TEST_KINDS)
    if tests:
        t = Table(TEST_LOGS, ["seq", "recorded", "kind", "summary"], [], [])
        for r in tests:
            t.add([str(r["seq"]), when(r), r["kind"], _summary(r)], [r["seq"]])
        sec.blocks.append(t)
    for kind, text in (("model.scan", "Cybersecurity: {n} model-file scans recorded."),
                       ("scan.summary", "{n} static scans of the training code recorded.")):
        if ev.kind(kind):
            count(sec, ev.kind(kind), text)


def _datasets(ev: Evidence, sec: Section) -> None:
    sets = ev.kind("dataset")
    if not sets:
        return
    t = Table("Data sets used", ["name", "split", "rows", "features", "source", "licence", "personal data",
                                 "digest"], [], [])
    for r in sets:
        d = mapping(r["data"])
        personal = {True: "yes", False: "no"}.get(d.get("personal_data"), "not stated")  # type: ignore[arg-type]
        if d.get("personal_data") is True and strings(d.get("special_categories")):
            personal += f" (special categories: {', '.join(strings(d['special_categories']))})"
        t.add([d.get("name"), d.get("split"), number(d.get("rows")), number(d.get("features")), d.get("source"),
               d.get("license"), personal, d.get("digest")], [r["seq"]])
    sec.blocks.append(t)
    for r in sets:
        role = f" ({get(r, 'split')})" if isinstance(get(r, "split"), str) else ""
        state(sec, r, "rows", f"Data set {get(r, 'name')}{role}: {{v}} rows.")


def _datasheets(ev: Evidence, sec: Section) -> None:
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
                       g.get("status")], [sheet["seq"]])
            sec.blocks.append(t)


def _model_files(ev: Evidence, sec: Section) -> None:
    described: set[tuple[str, str, str]] = set()
    for r in ev.kind("model"):
        d = mapping(r["data"])
        arch = d.get("architecture")
        key = (str(d.get("name")), str(arch), str(d.get("parameters")))
        if key in described:  # a checkpoint of a model already described: its files only
            _files_and_config(sec, r, d)
            continue
        described.add(key)
        if not state(sec, r, "parameters", f"Architecture of {d.get('name', 'the model')}: {arch or 'not stated'}, "
                                           "{v} parameters."):
            sec.say(f"Architecture of {d.get('name', 'the model')}: {arch or 'not stated'}.", [r["seq"]])
        _files_and_config(sec, r, d)


def _files_and_config(sec: Section, r: dict[str, Any], d: dict[str, Any]) -> None:
    files = dicts(d.get("files"))
    if files:
        version = f" ({d['version']})" if d.get("version") else ""
        t = Table(f"Model files of {d.get('name', 'the model')}{version}", ["file", "bytes", "digest"], [], [])
        for _, f in files:
            t.add([f.get("path"), number(f.get("bytes")), f.get("digest")], [r["seq"]])
        sec.blocks.append(t)
    config = mapping(d.get("config"))
    if config:
        t = Table(f"Model configuration of {d.get('name', 'the model')}", ["setting", "value"], [], [])
        for k, v in sorted(config.items()):
            t.add([k, v if isinstance(v, int | float) and not isinstance(v, bool) else str(v)], [r["seq"]])
        sec.blocks.append(t)


def _training(ev: Evidence, sec: Section) -> None:
    named = metric_points(ev)
    losses = [s for s in (_label(thin(p), n) for n, p in named.items() if "loss" in n.lower()) if s]
    audited = series(ev, ("train.audit",), "loss", "loss (audited step, run.watch)")
    # one chart each: a logged metric's step is whatever the caller passed (often the epoch), run.watch's is the
    # optimizer step, and on one axis the two read as one history
    if losses:
        sec.blocks.append(Chart("Training loss, as logged (run.log_metrics)", "step as logged", "loss", losses[:8]))
    if audited:
        sec.blocks.append(Chart("Training loss at audited optimizer steps (run.watch)", "optimizer step", "loss",
                                [audited]))
    others = [s for s in (_label(thin(p), n) for n, p in named.items() if "loss" not in n.lower()) if s]
    if others:
        sec.blocks.append(Chart("Other metrics during training", "step", "value", others[:8]))
    grad = series(ev, ("train.audit",), "grad_norm", "global gradient norm")
    if grad:
        sec.blocks.append(Chart("Gradient norm", "step", "L2 norm", [grad]))
    metrics = ev.kind("metrics")
    for session in ev.sessions() or [None]:
        rs = [r for r in metrics if session is None or session.holds(r["seq"])]
        if not rs:
            continue
        steps = [r["step"] for r in rs if isinstance(r.get("step"), int)]
        epochs = sorted({e for r in rs for e in [get(r, "epoch")] if isinstance(e, int) and not isinstance(e, bool)})
        where = f"Session {session.number}" if session and len(ev.sessions()) > 1 else "Training"
        span = (f", {_span('step', min(steps), max(steps))}" if steps else "") + (
            f", {_span('epoch', epochs[0], epochs[-1])}" if epochs else "")
        count(sec, rs, where + " recorded {n} metrics records" + span + ".")
        last = rs[-1]
        at = f" at step {last['step']}" if isinstance(last.get("step"), int) else ""
        for name in sorted(mapping(get(last, "metrics")))[:8]:
            state(sec, last, f"metrics.{name}", f"{where}: last recorded {name} {{v}}{at}.")
    audits = ev.kind("train.audit")
    if audits:
        steps = [e.get("step") for r in audits for _, e in entries(r) if isinstance(e.get("step"), int)]
        span = f" covering {fmt(len(steps))} audited steps ({_span('step', min(steps), max(steps))})" if steps else ""
        count(sec, audits, "run.watch recorded {n} training-audit records" + span + ".")


def _span(unit: str, lo: int, hi: int) -> str:
    return f"{unit} {lo}" if lo == hi else f"{unit}s {lo} to {hi}"


def _label(s: Series | None, label: str) -> Series | None:
    if s is not None:
        s.label = label
    return s


def _summary(r: dict[str, Any]) -> str:
    d = mapping(r.get("data"))
    if r["kind"] == "eval":
        values = ", ".join(f"{k} {fmt(number(v))}" for k, v in sorted(mapping(d.get("metrics")).items())[:6])
        return f"{d.get('split') or 'evaluation'}{' of ' + str(d['dataset']) if d.get('dataset') else ''}: {values}"
    if r["kind"] == "fairness.eval":  # an evaluation outside training has no epoch; a gate that let it pass, no action
        gate = mapping(d.get("gate"))
        action = gate.get("action")
        return ", ".join([*([f"epoch {d['epoch']}"] if d.get("epoch") is not None else []), f"{d.get('rows')} rows",
                          *([f"gate {'no action' if action == 'none' else action}"] if gate else [])])
    return f"{d.get('edit')}: {d.get('verdict')}"


def privacy(ev: Evidence, sec: Section) -> None:
    secure_inference(ev, sec)
    eps = ev.kind("privacy.epsilon")
    config = ev.last("privacy.config")
    if config is not None:
        state(sec, config, "noise_multiplier", f"DP-SGD configured ({get(config, 'accountant')} accountant): noise "
                                               "multiplier {v}.")
    if not eps:
        return
    s = series(ev, ("privacy.epsilon",), "epsilon", "epsilon")
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
        state(sec, r, "rows", f"Secure inference (GDPR Art. 25): {{v}} rows evaluated under encryption "
                              f"(declared check rows included) with {get(r, 'library')} "
                              f"{get(r, 'version')} ({get(r, 'parameters.scheme')}); the model owner saw "
                              f"{get(r, 'owner_sees')}; {checked}.")


def metrics(ev: Evidence, sec: Section) -> None:
    names: Counter[str] = Counter()
    seqs: dict[str, list[int]] = {}

    def note(name: str, seq: int) -> None:
        names[name] += 1
        if seq not in seqs.setdefault(name, [])[-1:]:
            seqs[name].append(seq)

    for r in ev.kind("metrics"):
        for k, v in mapping(get(r, "metrics")).items():
            if number(v) is not None:
                note(f"training: {k}", r["seq"])
    for r in ev.kind("eval"):
        for k, v in mapping(get(r, "metrics")).items():
            if number(v) is not None:
                note(f"evaluation ({get(r, 'split') or 'unnamed split'}): {k}", r["seq"])
    for r in ev.kind("train.audit"):
        for _, entry in entries(r):
            for k in ("loss", "grad_norm", "max_update_ratio"):
                if number(entry.get(k)) is not None:
                    note(f"training audit: {k}", r["seq"])
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
