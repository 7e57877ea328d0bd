"""The end-to-end demo job. Later capabilities add their stages here, each writing into the same run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from torchwitness.controls.retention import declare_retention
from torchwitness.demo.adult import load_adult
from torchwitness.demo.agent import run_agent_demo
from torchwitness.demo.certify import certify_stage
from torchwitness.demo.code_evidence import record_code_evidence
from torchwitness.demo.deployment import deployment_stage
from torchwitness.demo.dossier import dossier_stage
from torchwitness.demo.governance import run_governance
from torchwitness.demo.progress import STAGES, DemoConsole, Stages, quiet_third_party
from torchwitness.ledger.verify import verify_run
from torchwitness.run import Run


def _model(d: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2))


def run_demo(out: str | Path = "evidence", *, epochs: int = 5, seed: int = 0, console: Console | None = None,
             stages: Stages | None = None) -> Path:
    """Train on Adult inside a ``Run``, then every other stage; print each stage and its time; return the run.

    ``stages``: the caller's (``torchwitness demo`` starts them before its imports, so that they are timed too).
    """
    if stages is not None:
        return _in_one_thread(Path(out), epochs=epochs, seed=seed, stages=stages)
    if console is not None and not isinstance(console, DemoConsole):  # a caller's console (tests)
        console = DemoConsole(file=console.file, width=console.width, quiet=console.quiet)
    with quiet_third_party(), Stages(console or DemoConsole()) as own:
        own.begin(STAGES[0])
        return _in_one_thread(Path(out), epochs=epochs, seed=seed, stages=own)


def _in_one_thread(out: Path, *, epochs: int, seed: int, stages: Stages) -> Path:
    threads = torch.get_num_threads()
    # The demo's models are small: one thread beats contended intra-op threads on a shared 2-core machine.
    torch.set_num_threads(1)
    try:
        return _run_demo(out, epochs=epochs, seed=seed, console=stages.console, stages=stages)
    finally:
        torch.set_num_threads(threads)


def _run_demo(out: Path, *, epochs: int, seed: int, console: DemoConsole, stages: Stages) -> Path:
    run_dir = out / "adult-run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    torch.manual_seed(seed)
    np.random.seed(seed)

    console.print("[bold]torchwitness demo[/]: a classifier on UCI Adult, recorded in signed ledgers from "
                  f"training to deployment; evidence in {out.resolve()}")
    stages.begin(STAGES[1])
    data = load_adult()
    x_train, y_train = torch.from_numpy(data.train.features), torch.from_numpy(data.train.labels)
    x_test, y_test = torch.from_numpy(data.test.features), torch.from_numpy(data.test.labels)
    config = {"model": "mlp-64-32", "epochs": epochs, "batch_size": 256, "lr": 1e-3, "optimizer": "AdamW",
              "weight_decay": 1e-4, "dataset": "uci-adult", "seed": seed}
    model = _model(x_train.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    loss_fn = nn.CrossEntropyLoss()
    batches = (len(x_train) + config["batch_size"] - 1) // config["batch_size"]

    with Run(run_dir, seed=seed) as run:
        declare_retention(run, logs_days=365, role="provider")  # Art. 19(1): the training logs
        run.log_params(config)
        adult = {"source": "UCI Machine Learning Repository: Adult (shipped with torchwitness)",
                 "license": "CC-BY-4.0", "personal_data": True, "special_categories": ["race"]}
        run.log_dataset("uci-adult", data=data.train.features, split="train", **adult)
        run.log_dataset("uci-adult", data=data.test.features, split="test", **adult)
        step = 0
        progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)
        # audited every 50 steps (the first 5 always); closed before the later stages hook the model again
        with progress, run.watch(model, opt, loss_fn=loss_fn, every_n_steps=50):
            task = progress.add_task("training", total=epochs * batches)
            for epoch in range(epochs):
                model.train()
                perm = torch.randperm(len(x_train))
                total = torch.zeros(())
                for i in range(batches):
                    idx = perm[i * config["batch_size"]:(i + 1) * config["batch_size"]]
                    loss = loss_fn(model(x_train[idx]), y_train[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.detach() * len(idx)
                    step += 1
                    progress.advance(task)
                model.eval()
                with torch.no_grad():
                    pred = model(x_test).argmax(1)
                metrics = {"train_loss": total / len(x_train), "test_accuracy": (pred == y_test).float().mean()}
                run.log_metrics(metrics, step=step, epoch=epoch)
                console.print(f"epoch {epoch + 1}/{epochs}: train loss {float(metrics['train_loss']):.4f}, "
                              f"test accuracy {float(metrics['test_accuracy']):.4f}")
        run.log_eval({"accuracy": (pred == y_test).float().mean()}, split="test", dataset="uci-adult",
                     rows=len(y_test), model=config["model"])
        weights = out / "model.pt"
        torch.save(model.state_dict(), weights)
        run.log_model(config["model"], model=model, files=[weights], version="demo",
                      intended_use="Demonstration of torchwitness on UCI Adult; not for decisions about people.",
                      limitations="Trained on 1994 US census data; how its errors and selection rates "
                                  "differ between groups is in the fairness evaluation.")
        stages.begin(STAGES[2])
        certify_stage(run, model, x_test, y_test, console)
        stages.begin(STAGES[3])
        rows = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))[:4000]
        deployment_stage(run, model, (x_train[rows], y_train[rows]), (x_test, y_test), data.feature_names, console)
        stages.begin(STAGES[4])
        record_code_evidence(run, model, (x_train[:256], y_train[:256]), loss_fn, out, console)
    console.print(f"[green]verified[/]: {verify_run(run_dir).summary()}")
    console.print(f"run folder: [bold]{run_dir.resolve()}[/]")
    stages.begin(STAGES[5])
    run_governance(out, seed=seed, console=console)
    stages.begin(STAGES[6])
    run_agent_demo(out, seed=seed, console=console)
    stages.begin(STAGES[7])
    dossier_stage(run_dir, out, console)
    return run_dir
