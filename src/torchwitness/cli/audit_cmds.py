"""audit MODULE:FACTORY --phase static|init|train (judge what a factory builds) and findings RUN (report a run's
recorded findings, e.g. from a training callback)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from torchwitness.cli import _findings_options as fo
from torchwitness.cli._output import err_console, require_verified


def audit(factory: str = typer.Argument(..., help="package.module:function (or file.py:function) returning a "
                                         "model, or a dict/tuple with model, optimizer, loss_fn, batches.",
                                         show_default=False),
          phase: str = typer.Option("init", "--phase", help="static (model only), init (model, optimizer, loss) "
                                    "or train (N steps under run.watch)."),
          steps: int = typer.Option(20, "--steps", min=1, help="Training steps for --phase train."),
          every: int = typer.Option(1, "--every", min=1, help="Audit every N-th step (the first 5 always)."),
          run_dir: Path | None = typer.Option(None, "--run", help="Keep the evidence in this run folder "
                                              "(default: a temporary one, deleted afterwards)."),
          fmt: str = fo.FORMAT, output: Path | None = fo.OUTPUT, baseline: Path | None = fo.BASELINE,
          select: list[str] | None = fo.SELECT, ignore: list[str] | None = fo.IGNORE,
          fail_level: str = fo.FAIL_LEVEL, hints: bool = fo.HINTS, write_baseline: Path | None = fo.WRITE_BASELINE
          ) -> None:
    """Build the model with FACTORY and audit it; exit 1 if a finding reaches --fail-level."""
    from torchwitness.cli._record import open_run
    from torchwitness.errors import InputError
    from torchwitness.integrations.audit import audit as run_audit
    from torchwitness.integrations.factory import PHASES, build_target

    if phase not in PHASES:
        raise InputError(f"unknown phase {phase!r}; use one of {', '.join(PHASES)}")
    opts = fo.FindingsOptions(fmt, output, baseline, select, ignore, fail_level, hints, write_baseline).check()
    target = build_target(factory)
    with _run_folder(run_dir) as folder, open_run(folder, config={"audit": factory, "phase": phase}) as run, \
            _progress(phase, steps) as on_step:
        findings = run_audit(target, phase, run=run, steps=steps, select=select or (), ignore=ignore or (),
                             every_n_steps=every, on_step=on_step)
    if run_dir is not None:
        err_console.print(f"evidence in {run_dir} (torchwitness verify {run_dir})", highlight=False, soft_wrap=True,
                          markup=False)
    fo.report(findings, opts, title=f"audit {factory} --phase {phase}", source_root=Path.cwd(),
              anchor=target.source)


def findings(run: Path = typer.Argument(..., help="The run folder.", show_default=False),
             fmt: str = fo.FORMAT, output: Path | None = fo.OUTPUT, baseline: Path | None = fo.BASELINE,
             select: list[str] | None = fo.SELECT, ignore: list[str] | None = fo.IGNORE,
             fail_level: str = fo.FAIL_LEVEL, hints: bool = fo.HINTS,
             write_baseline: Path | None = fo.WRITE_BASELINE,
             key: str | None = typer.Option(None, "--key", help="The signer's fingerprint (sha256:...) to pin."),
             draft: bool = typer.Option(False, "--draft", help="Report even if the ledger does not verify.")) -> None:
    """Report the findings recorded in a run's ledger (run.watch, callbacks, audit --run); exit 1 at --fail-level,
    3 if the ledger does not verify (unless --draft)."""
    from torchwitness.report import run_findings

    require_verified(run, key=key, draft=draft)
    opts = fo.FindingsOptions(fmt, output, baseline, select, ignore, fail_level, hints, write_baseline).check()
    fo.report(run_findings(run), opts, title=f"findings recorded in {run}")


@contextlib.contextmanager
def _run_folder(run_dir: Path | None) -> Iterator[Path]:
    if run_dir is not None:
        yield run_dir
        return
    with tempfile.TemporaryDirectory(prefix="torchwitness-audit-") as tmp:
        yield Path(tmp) / "run"


@contextlib.contextmanager
def _progress(phase: str, steps: int) -> Iterator[object]:
    if phase != "train":
        yield None
        return
    with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("steps", total=steps)
        yield lambda _step: bar.advance(task)


def register(app: typer.Typer) -> None:
    app.command()(audit)
    app.command()(findings)
