"""Demo stage: from the finished run, write the Annex IV dossier (HTML + PDF), the model card, the obligations
coverage table and an MLflow run (local sqlite tracking store, no server), and say where they are."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.console import Console

from torchwitness.integrations.mlflow_export import export_mlflow
from torchwitness.report.build import build_document
from torchwitness.report.card import build_card, validate_card
from torchwitness.report.evidence import Evidence
from torchwitness.report.obligations import coverage, coverage_markdown
from torchwitness.report.render import write_report


def dossier_stage(run_dir: Path, out: Path, console: Console) -> dict[str, Path]:
    """Write the dossier artefacts of ``run_dir`` into ``out/dossier``; return them by name."""
    folder = out / "dossier"
    folder.mkdir(parents=True, exist_ok=True)
    with console.status("writing the Annex IV dossier"):
        doc = build_document(run_dir)
        paths = {fmt: write_report(doc, folder / f"dossier.{fmt}", fmt) for fmt in ("html", "pdf")}  # type: ignore[arg-type]
    card = build_card(run_dir, intended_use="Demonstration of torchwitness on UCI Adult; not for decisions "
                                            "about people.")
    validate_card(card)
    paths["card"] = folder / "README.md"
    paths["card"].write_text(card)
    rows = coverage(Evidence.load(run_dir))
    paths["coverage"] = folder / "coverage.md"
    paths["coverage"].write_text(coverage_markdown(rows))
    with console.status("logging the run to MLflow"):
        db = (out / "mlflow.db").resolve()
        rid = export_mlflow(run_dir, tracking_uri=f"sqlite:///{db}", experiment="torchwitness-demo",
                            artifact_location=(out / "mlflow-artifacts").resolve())
    paths["mlflow"] = db
    counts = Counter(c.status for c in rows)
    console.print(f"obligations: {counts['evidence']} with evidence, {counts['partial']} partial, "
                  f"{counts['none']} without (see {paths['coverage']})")
    for name in ("html", "pdf", "card", "coverage"):
        console.print(f"{name}: [bold]{paths[name].resolve()}[/]")
    console.print(f"mlflow: run {rid} in [bold]sqlite:///{db}[/] (mlflow ui --backend-store-uri sqlite:///{db})")
    return paths
