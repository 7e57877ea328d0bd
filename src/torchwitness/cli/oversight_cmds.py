"""review list|decide|stop|resume, and explain-decision: the human-oversight side of deployment."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from torchwitness.cli._output import console
from torchwitness.cli._record import recorded
from torchwitness.errors import InputError, LedgerBusy

review_app = typer.Typer(help="Human review of flagged decisions and the stop switch (EU AI Act Art. 14).",
                         no_args_is_help=True)
RunArg = typer.Argument(..., help="The run folder being served.", show_default=False)


def _queue(run: Path):
    from torchwitness.controls.oversight import ReviewQueue
    from torchwitness.ledger.layout import read_manifest

    read_manifest(run)
    return ReviewQueue.for_run(run)


def _record_now(run: Path, queue) -> str:
    """Record pending decisions if the ledger is free; a serving process records them otherwise."""
    from torchwitness.ledger.writer import Ledger

    try:
        with Ledger.open(run) as ledger:
            n = queue.record_pending(ledger.append)
    except LedgerBusy:
        return ("pending: a serving process with a review policy records it within a second, otherwise the next "
                "review command once the run is free")
    return f"recorded {n} decision(s) in the ledger" if n else "recorded in the ledger"


@review_app.command("list")
def list_requests(run: Path = RunArg, limit: int = typer.Option(50, "--limit")) -> None:
    """Open review requests, oldest first, with the strongest attributions of those explained."""
    from torchwitness.ledger.reader import iter_records

    requests = _queue(run).open_requests(limit)
    wanted = {r.decision_id for r in requests}
    explained = {e["data"]["decision_id"]: e["data"]["top"] for e in iter_records(run, kinds={"explain.attribution"})
                 if e["data"]["decision_id"] in wanted}
    table = Table(title=f"{len(requests)} open review request(s)")
    table.add_column("decision", no_wrap=True)  # an id to copy into review decide: never broken
    table.add_column("reason", no_wrap=True)
    for col in ("pred", "conf", "explanation"):
        table.add_column(col, overflow="fold")
    for r in requests:
        top = explained.get(r.decision_id, [])
        table.add_row(r.decision_id, r.reason, "" if r.prediction is None else str(r.prediction),
                      "" if r.confidence is None else f"{r.confidence:.3f}",
                      ", ".join(f"{name} {value:+.2f}" for name, value in top[:3]))
    console.print(table)


@review_app.command()
def decide(run: Path = RunArg, decision: str = typer.Option(..., "--decision", help="The decision id."),
           action: str = typer.Option(..., "--action", help="approve, override or escalate."),
           reviewer: str = typer.Option(..., "--reviewer", help="Reviewer id (stored only as a commitment)."),
           label: int | None = typer.Option(None, "--label", help="The corrected label for an override."),
           note: str = typer.Option("", "--note")) -> None:
    """Record a reviewer's decision on a flagged request."""
    queue = _queue(run)
    queue.decide(decision, action, reviewer=reviewer, label=label, note=note)
    typer.echo(f"{action} {decision}: {_record_now(run, queue)}")


@review_app.command()
def stop(run: Path = RunArg, who: str = typer.Option(..., "--who"), reason: str = typer.Option(..., "--reason")
         ) -> None:
    """Stop serving: the recorder refuses every request until resumed."""
    queue = _queue(run)
    queue.stop(who=who, reason=reason)
    typer.echo(f"stopped: {_record_now(run, queue)}")


@review_app.command()
def resume(run: Path = RunArg, who: str = typer.Option(..., "--who"),
           reason: str = typer.Option(..., "--reason")) -> None:
    """Resume serving after a stop."""
    queue = _queue(run)
    queue.resume(who=who, reason=reason)
    typer.echo(f"resumed: {_record_now(run, queue)}")


def explain_decision(run: Path = RunArg, decision: str = typer.Option(..., "--decision"),
                     factory: str = typer.Option(..., "--factory", help="pkg.module:fn returning the served model "
                                                 "(the one whose digest the inference record holds)."),
                     steps: int = typer.Option(64, "--steps"), top_k: int = typer.Option(5, "--top"),
                     seed: int = typer.Option(0, "--seed")) -> None:
    """Explain one stored decision with Integrated Gradients (Layer IG for token ids) and record the attribution.

    Needs the input: serve with ``retain_inputs=True`` (kept erasable in the run's private folder). The retained
    input is first checked against the keyed commitment recorded when it was served; one changed since is refused.
    """
    from torchwitness.cli._record import appending_to
    from torchwitness.integrations.captum import explain_input
    from torchwitness.integrations.factory import build_target
    from torchwitness.ledger.reader import iter_records
    from torchwitness.probes.inference import model_digest, verified_input
    from torchwitness.probes.retained import RetainedInputs, parse_decision_id

    run_id, stream, number = parse_decision_id(decision)
    records = [r for r in iter_records(run, kinds={"inference"}) if r["run"] == run_id
               and r["data"]["stream"] == stream
               and r["data"]["first_decision"] <= number < r["data"]["first_decision"] + r["data"]["decisions"]]
    if not records:
        raise InputError(f"no inference record holds decision {decision!r}")
    model = build_target(factory).model
    if model_digest(model) != records[-1]["data"]["model"]:
        raise InputError("the factory's model is not the one that made this decision (weights digest differs)")
    import torch

    with appending_to(run) as target:
        erased = {d for r in iter_records(run, kinds={"inputs.erasure"}) for d in r["data"]["decisions"]}
        row, checked = verified_input(RetainedInputs.for_run(run), records[-1], decision,
                                      target.personal.fingerprint, erased)
        explanation = explain_input(model, torch.from_numpy(row.copy()), n_steps=steps, top_k=top_k, seed=seed)
        seq = target.record("explain.attribution", {
            "decision_id": decision, "method": explanation.method, "target": explanation.target,
            "n_steps": explanation.n_steps, "baseline": explanation.baseline, "seed": explanation.seed,
            "delta": explanation.delta, "top": [[k, v] for k, v in explanation.top],
            "total": float(explanation.attributions.sum()), "input_checked": checked})
    if not checked:
        typer.echo("note: the retained input could not be checked against the ledger: it was not committed when "
                   "served (fingerprint='none' or not sampled), or another row of its request was erased since",
                   err=True)
    for name, value in explanation.top:
        typer.echo(f"{name}\t{value:+.4f}")
    typer.echo(f"class {explanation.target}, convergence delta {explanation.delta:.2e}, recorded "
               f"{recorded(target, seq)}")


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")
    app.command("explain-decision")(explain_decision)
