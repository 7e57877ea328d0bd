"""A Hugging Face model card (YAML metadata + sections) generated from a run's ledger.

Sections follow the Hub's model-card template: details, uses, bias/risks/limitations, training, evaluation (with
fairness slices and their intervals), environmental figures where the ledger knows them, and the evidence
(root hash, signer) that lets a reader verify every figure. :func:`validate_card` checks a card offline with
``huggingface_hub`` (the Hub's own ``ModelCard.validate`` needs network access).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchwitness.errors import InputError, VerificationError
from torchwitness.ledger.verify import verify_run
from torchwitness.report.evidence import Evidence, dicts, get, mapping, number, strings
from torchwitness.report.model import Section, Statement, Table, fmt
from torchwitness.report.obligations import load_map
from torchwitness.report.render import cite
from torchwitness.report.sections import NO_EVIDENCE, build_section

REQUIRED_SECTIONS = ("## Model Details", "## Uses", "## Bias, Risks, and Limitations", "## Training Details",
                     "## Evaluation", "## Environmental Impact", "## Evidence")


def _hf() -> Any:
    try:
        import huggingface_hub
    except ImportError as e:
        raise ImportError("model cards need huggingface_hub: pip install 'torchwitness[reports]'") from e
    return huggingface_hub


def _blocks_md(sec: Section, *, tables: bool = True) -> list[str]:
    out = []
    for b in sec.blocks:
        if isinstance(b, Statement):
            out.append(f"- {b.text}" + (f" [{cite(b.cites)}]" if b.cites else ""))
        elif isinstance(b, Table) and tables:
            out += ["", f"**{b.title}**", "", "| " + " | ".join(b.columns) + " |",
                    "|" + "---|" * len(b.columns)]
            out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Table) and b.rows:  # kept short: named, with its records, the rows are in the dossier
            seqs = sorted({q for row in b.row_cites for q in row})
            out.append(f"- {b.title}: {len(b.rows)} rows in the dossier [{cite(seqs)}]")
    if out:
        return out
    return [f"{NO_EVIDENCE} Records that would document it: {', '.join(sec.missing)}."]


def _section(ev: Evidence, number: int) -> Section:
    """Annex IV section ``number`` as the dossier builds it, from the same evidence table."""
    return build_section(ev, Section(key="card", title=""), number, load_map().section_kinds(number))


def _eval_results(ev: Evidence, dataset: str, task: str) -> list[Any]:
    hf = _hf()
    results = []
    for r in ev.kind("eval"):
        name = str(get(r, "dataset") or dataset)
        for metric, value in sorted(mapping(get(r, "metrics")).items()):
            v = number(value)
            if v is not None:
                results.append(hf.EvalResult(task_type=task, dataset_type=name, dataset_name=name,
                                             dataset_split=str(get(r, "split") or "test"), metric_type=str(metric),
                                             metric_value=v, metric_args={"ledger_seq": r["seq"]}))
    fair = ev.last("fairness.eval")
    for _, view in dicts(get(fair, "views")) if fair else []:
        for _, d in dicts(view.get("disparities")):
            v = number(d.get("estimate"))
            if v is not None:
                results.append(hf.EvalResult(
                    task_type=task, dataset_type=dataset, dataset_name=dataset,
                    dataset_split=str(get(fair, "split")), metric_type=str(d.get("metric")), metric_value=v,
                    metric_name=f"{d.get('metric')} ({'&'.join(strings(view.get('attributes')))})",
                    metric_args={"ledger_seq": fair["seq"]}))
    return results


def _verified(run_dir: str | Path, draft: bool, key: str | None = None) -> Any:
    """The verification result, or None for a draft of a ledger that does not verify (which is refused
    otherwise: a card must not present figures from a tampered ledger as evidence)."""
    try:
        return verify_run(run_dir, key=key)
    except VerificationError:
        if not draft:
            raise
        return None


def build_card(run_dir: str | Path, *, intended_use: str | None = None, license: str | None = None,
               task: str = "other", draft: bool = False, key: str | None = None) -> str:
    """The model card of ``run_dir`` as text (YAML front matter + Markdown), from the documented record kinds:
    ``model`` (name, architecture, intended use, limitations, licence), ``dataset``, ``eval``, ``fairness.eval``,
    the training audit and the sessions' environment.

    ``intended_use`` and ``license`` override what the ``model`` record states. A ledger that does not verify
    raises :class:`~torchwitness.errors.VerificationError` unless ``draft``: then the card is marked NOT VERIFIED.
    """
    hf = _hf()
    ev = Evidence.load(run_dir)
    result = _verified(run_dir, draft, key)
    start = ev.first("run.start")
    model = ev.last("model")
    md = mapping(model["data"]) if model else {}
    names = list(dict.fromkeys([str(get(r, "name")) for r in ev.kind("dataset", "data.datasheet")
                                if isinstance(get(r, "name"), str)]))
    dataset = names[0] if names else "unknown"
    name = str(md.get("name") or f"run-{ev.run_id}")
    license = license or (md["license"] if isinstance(md.get("license"), str) else None)
    results = _eval_results(ev, dataset, task)
    evidence = {"run": ev.run_id, "verified": result is not None}
    if result is not None:
        evidence.update(root="sha256:" + result.root.hex(), signer=result.signer, records=result.records)
    data = hf.ModelCardData(model_name=name, library_name="pytorch", license=license, datasets=names or None,
                            metrics=sorted({r.metric_type for r in results}) or None,
                            tags=["torchwitness", "eu-ai-act-annex-iv"], eval_results=results or None,
                            torchwitness=evidence)
    sd = mapping(start["data"]) if start else {}
    at = f" [seq {model['seq']}]" if model else ""
    use = intended_use or (f"{md['intended_use']}{at}" if isinstance(md.get("intended_use"), str) else
                           "Intended use is not recorded in the ledger; the provider must state it (Art. 13): "
                           "run.log_model(intended_use=...) or torchwitness card --intended-use.")
    details = [f"- Model: {name}" + (f", {md['architecture']}" if md.get("architecture") else "")
               + (f", {fmt(number(md.get('parameters')))} parameters" if number(md.get("parameters")) else "")
               + (f", version {md['version']}" if md.get("version") else "") + at,
               f"- Trained with torch {sd.get('torch', '?')} on {sd.get('platform', '?')}"
               + (f" [seq {start['seq']}]" if start else "")]
    limits = [f"- Limitations, as the provider states them: {md['limitations']}{at}"] \
        if isinstance(md.get("limitations"), str) else []
    lines = ([f"> **NOT VERIFIED**: the ledger of run `{ev.run_id}` does not verify; this draft's figures are not "
              "evidence.", ""] if result is None else []) + [
             f"# Model card: {name}", "",
             f"Generated from the signed ledger of run `{ev.run_id}`; every figure cites its record (seq).", "",
             "## Model Details", "", *details, "",
             "## Uses", "", use, "",
             "## Bias, Risks, and Limitations", "", *limits, *_blocks_md(_section(ev, 5)), "",
             "## Training Details", "", *_blocks_md(_section(ev, 2), tables=False), "",
             "## Evaluation", "", *_blocks_md(_section(ev, 3)), "",
             "## Environmental Impact", ""]
    lines.append(f"- Hardware: {', '.join(strings(sd.get('devices'))) or sd.get('machine', 'not recorded')}"
                 + (f" [seq {start['seq']}]" if start else ""))
    sessions = [s for s in ev.sessions() if s.end is not None and number(get(s.end, "duration_s")) is not None]
    lines += [f"- Training time, session {s.number}: {fmt(number(get(s.end, 'duration_s')))} s [seq {s.end['seq']}]"
              for s in sessions if s.end is not None] or ["- Training time: not recorded"]
    lines += ["- Energy use and emissions: not recorded in the ledger.", "", "## Evidence", ""]
    lines += ([f"- Ledger: {result.summary()}", f"- Verify: `torchwitness verify RUN --key {result.signer}`"]
              if result is not None else ["- Ledger: NOT VERIFIED (`torchwitness verify RUN` names the first bad "
                                          "record)."]) + [""]
    return hf.ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)).content


def validate_card(text: str) -> Any:
    """Load ``text`` with ``huggingface_hub.ModelCard`` (strict metadata) and check the required sections.

    Returns the loaded card; raises :class:`InputError` naming the first problem.
    """
    hf = _hf()
    try:
        card = hf.ModelCard(text, ignore_metadata_errors=False)
    except ValueError as e:
        raise InputError(f"model card metadata is invalid: {e}") from None
    missing = [s for s in REQUIRED_SECTIONS if s not in card.text]
    if missing:
        raise InputError(f"model card lacks sections: {', '.join(missing)}")
    return card
