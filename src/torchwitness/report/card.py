"""A Hugging Face model card (YAML metadata + sections) generated from a run's ledger.

Sections follow the Hub's model-card template: details, uses, bias/risks/limitations, training, evaluation (with
fairness slices and their intervals), environmental figures where the ledger knows them, and the evidence
(root hash, signer) that lets a reader verify every figure. :func:`validate_card` checks a card offline with
``huggingface_hub`` (the Hub's own ``ModelCard.validate`` needs network access).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchwitness.errors import InputError
from torchwitness.ledger.verify import verify_run
from torchwitness.report.evidence import Evidence, dicts, get, mapping, number, strings
from torchwitness.report.model import Section, Statement, Table, fmt
from torchwitness.report.render import cite
from torchwitness.report.sections import development, functioning, risk

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
    return out or ["No evidence in this run's ledger."]


def _section(ev: Evidence, build: Any) -> Section:
    sec = Section(key="card", title="")
    build(ev, sec)
    return sec


def _eval_results(ev: Evidence, dataset: str) -> list[Any]:
    hf = _hf()
    results = []
    acc = ev.last("eval.summary")
    if acc is not None and number(get(acc, "accuracy")) is not None:
        results.append(hf.EvalResult(task_type="tabular-classification", dataset_type=dataset, dataset_name=dataset,
                                     dataset_split=str(get(acc, "split") or "test"), metric_type="accuracy",
                                     metric_value=number(get(acc, "accuracy")),
                                     metric_args={"ledger_seq": acc["seq"]}))
    fair = ev.last("fairness.eval")
    for _, view in dicts(get(fair, "views")) if fair else []:
        for _, d in dicts(view.get("disparities")):
            v = number(d.get("estimate"))
            if v is not None:
                results.append(hf.EvalResult(
                    task_type="tabular-classification", dataset_type=dataset, dataset_name=dataset,
                    dataset_split=str(get(fair, "split")), metric_type=str(d.get("metric")), metric_value=v,
                    metric_name=f"{d.get('metric')} ({'&'.join(strings(view.get('attributes')))})",
                    metric_args={"ledger_seq": fair["seq"]}))
    return results


def build_card(run_dir: str | Path, *, intended_use: str | None = None, license: str | None = None) -> str:
    """The model card of ``run_dir`` as text (YAML front matter + Markdown)."""
    hf = _hf()
    ev = Evidence.load(run_dir)
    result = verify_run(run_dir)
    start = ev.first("run.start")
    config = mapping(get(start, "config")) if start else {}
    sheet = ev.first("data.datasheet")  # a run that names its data only in a datasheet
    dataset = str(config.get("dataset") or (get(sheet, "name") if sheet else None) or "unknown")
    name = str(config.get("model") or f"run-{ev.run_id}")
    data = hf.ModelCardData(model_name=name, library_name="pytorch", license=license,
                            datasets=[dataset] if dataset != "unknown" else None,
                            metrics=["accuracy"] if ev.kind("eval.summary") else None,
                            tags=["torchwitness", "eu-ai-act-annex-iv"],
                            eval_results=_eval_results(ev, dataset) or None,
                            torchwitness={"run": ev.run_id, "root": "sha256:" + result.root.hex(),
                                          "signer": result.signer, "records": result.records})
    sd = mapping(start["data"]) if start else {}
    end = ev.last("run.end")
    lines = [f"# Model card: {name}", "",
             f"Generated from the signed ledger of run `{ev.run_id}`; every figure cites its record (seq).", "",
             "## Model Details", "",
             f"- Model: {name}; trained with torch {sd.get('torch', '?')} on {sd.get('platform', '?')}"
             + (f" [seq {start['seq']}]" if start else ""),
             *[f"- {k}: {v}" for k, v in sorted(config.items())], "",
             "## Uses", "",
             intended_use or "Intended use is not recorded in the ledger; the provider must state it (Art. 13).", "",
             "## Bias, Risks, and Limitations", "", *_blocks_md(_section(ev, risk)), "",
             "## Training Details", "", *_blocks_md(_section(ev, development), tables=False), "",
             "## Evaluation", "", *_blocks_md(_section(ev, functioning)), "",
             "## Environmental Impact", ""]
    duration = number(get(end, "duration_s")) if end else None
    lines.append(f"- Hardware: {', '.join(strings(sd.get('devices'))) or sd.get('machine', 'not recorded')}"
                 + (f" [seq {start['seq']}]" if start else ""))
    lines.append(f"- Training time: {fmt(duration)} s [seq {end['seq']}]" if duration is not None
                 else "- Training time: not recorded")
    lines += ["- Energy use and emissions: not recorded in the ledger.", "",
              "## Evidence", "", f"- Ledger: {result.summary()}",
              f"- Verify: `torchwitness verify RUN --key {result.signer}`", ""]
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
