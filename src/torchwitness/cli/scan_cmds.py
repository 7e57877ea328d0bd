"""scan (static analysis of training code), scan-model (model-file safety), replay-record / replay-check
(reproducibility)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from torchwitness.cli import _findings_options as fo
from torchwitness.cli._output import err_console, output_file
from torchwitness.rules.catalogue import select_rules


def scan(paths: list[Path] = typer.Argument(..., help="Python files or folders to scan.", show_default=False),
         fmt: str = fo.FORMAT, output: Path | None = fo.OUTPUT, baseline: Path | None = fo.BASELINE,
         select: list[str] | None = fo.SELECT, ignore: list[str] | None = fo.IGNORE,
         fail_level: str = fo.FAIL_LEVEL, hints: bool = fo.HINTS, write_baseline: Path | None = fo.WRITE_BASELINE,
         jobs: int = typer.Option(0, "-j", "--jobs", help="Worker processes (0: one per CPU)."),
         run: Path | None = typer.Option(None, "--run", help="Also record the findings in this run's ledger."),
         counts: bool = typer.Option(False, "--counts", help="Print the scan summary with the number of findings "
                                     "per rule instead of the findings."),
         rdf: Path | None = typer.Option(None, "--rdf", help="Also write an RDF (Turtle) view of the scan here.",
                                        callback=output_file),
         allow_unparsable: bool = typer.Option(False, "--allow-unparsable", help="Files that cannot be parsed are "
                                               "listed but do not make the exit code 2.")
         ) -> None:
    """Statically scan PyTorch training code (parsed, never executed) with the TW6xx rules.

    Exits 2 when a file could not be parsed (the scan did not cover it) unless --allow-unparsable; otherwise 1
    when a finding reaches the fail level."""
    from torchwitness.rules.static.engine import scan_paths, static_rules

    opts = fo.FindingsOptions(fmt, output, baseline, select, ignore, fail_level, hints, write_baseline).check()
    chosen = select_rules(select or (), ignore or ())
    ids = [r.id for r in static_rules() if r.id in chosen]
    with Progress(TextColumn("scanning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("scan", total=None)
        result = scan_paths(paths, rules=ids, jobs=jobs or None, facts=rdf is not None,
                            progress=lambda done, total: bar.update(task, completed=done, total=total))
    run_id = None
    if run is not None:
        from torchwitness.cli._record import open_run
        from torchwitness.rules.static.engine import record_scan

        with open_run(run) as r:
            record_scan(r, result)
            run_id = r.run_id
    if rdf is not None:
        from torchwitness.rules.static.graph import scan_graph

        scan_graph(result, run_id=run_id).serialize(destination=str(rdf), format="turtle")
    for e in result.errors:
        err_console.print(f"[yellow]skipped[/] {escape(str(e.path))}: {escape(str(e.error))}", highlight=False,
                          soft_wrap=True)
    incomplete = len(result.errors) if not allow_unparsable else 0
    if counts:  # the summary replaces the listing; the fail level still sets the exit code
        import io

        from torchwitness.report import emit

        typer.echo(json.dumps(result.summary(), indent=2))
        code = emit(result.findings, "json", stream=io.StringIO(), baseline=baseline, select=select or (),
                    ignore=ignore or (), fail_level=fail_level, show_hints=hints).exit_code
        fo.exit_if_incomplete(incomplete)
        raise typer.Exit(code)
    fo.report(result.findings, opts, title=f"{len(result.files)} files scanned", source_root=result.root,
              incomplete=incomplete)



def scan_model(files: list[Path] = typer.Argument(..., help="Model files, or folders holding .pt/.pth/.bin/.ckpt/.tar/"
                                                 ".pkl/.joblib/.npy/.npz/.safetensors files.",
                                                 show_default=False),
               allow: list[str] | None = typer.Option(None, "--allow", help="Also allow this import (module.Name)."),
               fmt: str = fo.FORMAT, output: Path | None = fo.OUTPUT, baseline: Path | None = fo.BASELINE,
               select: list[str] | None = fo.SELECT, ignore: list[str] | None = fo.IGNORE,
               fail_level: str = fo.FAIL_LEVEL, hints: bool = fo.HINTS,
               write_baseline: Path | None = fo.WRITE_BASELINE,
               run: Path | None = typer.Option(None, "--run", help="Also record the scan in this run's ledger.")
               ) -> None:
    """Check model files for code that would run on load (pickle opcodes, never unpickled) and safetensors
    header sanity.

    Safety is decided by an allow-list: what torch.load(weights_only=True) accepts is safe; classes that are only
    constructed need trust (TW702 WARN); any other call, and any file the scanner cannot read, is an ERROR
    (exit 1)."""
    from torchwitness.errors import InputError
    from torchwitness.rules.artifact import model_files
    from torchwitness.rules.artifact import scan_model as scan_one

    opts = fo.FindingsOptions(fmt, output, baseline, select, ignore, fail_level, hints, write_baseline).check()
    targets = model_files(files)
    if not targets:
        raise InputError("no model files found")
    scans = [scan_one(f, allow=allow or ()) for f in targets]
    findings = [f for s in scans for f in s.findings]
    if run is not None:
        from torchwitness.cli._record import open_run

        with open_run(run) as r:
            r.finding_set.extend(findings)
            for s in scans:
                r.record("model.scan", s.summary())
    for s in scans:
        err_console.print(f"{s.path}: {s.format}, {len(s.pickles)} pickle(s), {len(s.findings)} finding(s): "
                          f"{s.verdict.upper()}", highlight=False, soft_wrap=True, markup=False)
    fo.report(findings, opts, title=f"{len(scans)} model file(s) scanned")


FactoryOpt = typer.Option(None, "--factory", help="Replay with this factory instead of the recorded one "
                                                  "(package.module:function or file.py:function).")


def replay_record(run: Path = typer.Argument(..., help="The run folder to record into.", show_default=False),
                  factory: str = typer.Option(..., "--factory", help="The audit factory (package.module:function or "
                                              "file.py:function) returning model, optimizer, batches, loss."),
                  steps: int = typer.Option(10, "--steps", min=1, help="How many training steps to record."),
                  seed: int = typer.Option(0, "--seed", help="The seed the steps are drawn from.")) -> None:
    """Run N seeded training steps from a factory, recording loss and gradient digests per step."""
    from torchwitness.cli._record import open_run
    from torchwitness.probes.replay import record_replayable

    with open_run(run, seed=seed) as r:
        n = record_replayable(r, factory, steps=steps, seed=seed)
    typer.echo(f"recorded {n} replayable steps of {factory} (seed {seed}) in {run}")


def replay_check(run: Path = typer.Argument(..., help="A run with recorded replay steps.", show_default=False),
                 factory: str | None = FactoryOpt,
                 steps: int | None = typer.Option(None, "--steps", min=1, help="Compare only the first N steps."),
                 record: bool = typer.Option(True, "--record/--no-record", help="Record the outcome in the run.")
                 ) -> None:
    """Re-run the recorded steps from the recorded seed; exit 1 naming the first step whose digests differ."""
    from torchwitness.cli._record import open_run
    from torchwitness.probes.replay import record_check
    from torchwitness.probes.replay import replay_check as check

    result = check(run, factory=factory, steps=steps)
    if record:
        with open_run(run, seed=result.seed) as r:
            record_check(r, result)
    typer.echo(result.summary())
    if not result.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("replay-record")(replay_record)
    app.command("replay-check")(replay_check)
    app.command()(scan)
    app.command("scan-model")(scan_model)
