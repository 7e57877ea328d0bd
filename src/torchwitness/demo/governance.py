"""Demo stage: data governance on UCI Adult (consent, datasheets, fairness gate, provenance, DP-SGD).

``sex`` and ``race`` are the declared sensitive attributes: carried beside each batch as a group index,
never among the model's inputs. Every row is a data subject ``adult-NNNNN``; 2 % never consented, 50 revoke
during the first epoch (effective from the second), and one of them then asks for erasure.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import warnings
from pathlib import Path

import msgspec
import numpy as np
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchwitness.controls.consent import ConsentRegistry
from torchwitness.controls.consented_data import ConsentedDataset
from torchwitness.controls.datasheet import datasheet
from torchwitness.controls.fairness import FairnessAccumulator, FairnessGate, GroupEncoder
from torchwitness.controls.privacy import DPTraining
from torchwitness.controls.provenance import ProvenanceRecorder
from torchwitness.controls.provenance_query import erase_subject, query
from torchwitness.demo.adult import AdultSplit, load_adult
from torchwitness.errors import PrivacyBudgetExhausted
from torchwitness.ledger.verify import verify_run
from torchwitness.run import Run


def _model(d: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2))


def _subjects(split: AdultSplit, prefix: str) -> list[str]:
    return [f"{prefix}-{i:05d}" for i in split.row_ids]


def _fairness(model: nn.Module, acc: FairnessAccumulator, x: torch.Tensor, y: torch.Tensor,
              groups: torch.Tensor) -> None:
    acc.reset()
    model.eval()
    with torch.no_grad():
        for i in range(0, len(x), 4096):
            acc.update(model(x[i:i + 4096]), y[i:i + 4096], groups[i:i + 4096])
    model.train()


def _dp_variant(run: Run, dataset: ConsentedDataset, epoch: int, test: tuple, acc: FairnessAccumulator,
                console: Console) -> None:
    """The same task under DP-SGD with an epsilon budget of 1.8: training stops before the step that crosses it."""
    model = _model(test[0].shape[1])
    dataset.begin_epoch(epoch)
    with warnings.catch_warnings():
        # Opacus' notes on its non-cryptographic RNG and on hooks over inputs without grad: known, not findings
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        dp = DPTraining(run, model, torch.optim.SGD(model.parameters(), lr=0.5), DataLoader(dataset, batch_size=512),
                        noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5, epsilon_budget=1.8)
        try:
            for _ in range(10):
                for xb, yb, _, _ in dp.data_loader:
                    dp.optimizer.zero_grad(set_to_none=True)
                    nn.functional.cross_entropy(dp.module(xb), yb).backward()
                    dp.step()
                dp.record()
        except PrivacyBudgetExhausted as e:
            console.print(f"DP-SGD variant ({dp.accountant_name} accountant): {e}")
    _fairness(model, acc, *test)
    result = acc.compute(split="test-dp")
    run.record("fairness.eval", msgspec.to_builtins(result))
    dpd = next(d for d in result.views[0].disparities if d.metric == "demographic_parity_difference")
    console.print(f"DP model: DP difference by sex {dpd.estimate:.3f} (95% CI {dpd.ci_low:.3f}-{dpd.ci_high:.3f})")


def run_governance(out: str | Path = "evidence", *, epochs: int = 3, seed: int = 0,
                   console: Console | None = None) -> Path:
    """Write ``OUT/governance-run`` and return it; prints a short account of each control on the console."""
    threads = torch.get_num_threads()
    # a 2-layer MLP on 256-row batches runs faster on one thread than on contended intra-op threads
    torch.set_num_threads(1)
    try:
        return _run(Path(out), epochs=epochs, seed=seed, console=console or Console())
    finally:
        torch.set_num_threads(threads)


def _run(out: Path, *, epochs: int, seed: int, console: Console) -> Path:
    run_dir = out / "governance-run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = load_adult()
    enc = GroupEncoder.fit(data.train.sensitive)
    x, y = torch.from_numpy(data.train.features), torch.from_numpy(data.train.labels)
    groups = torch.from_numpy(enc.flat(enc.encode(data.train.sensitive)))
    xt, yt = torch.from_numpy(data.test.features), torch.from_numpy(data.test.labels)
    gt = torch.from_numpy(enc.flat(enc.encode(data.test.sensitive)))
    subjects = _subjects(data.train, "adult")
    never = set(rng.choice(len(subjects), len(subjects) // 50, replace=False).tolist())
    consenting = [s for i, s in enumerate(subjects) if i not in never]
    revoking = [consenting[i] for i in rng.choice(len(consenting), 50, replace=False)]

    console.print("\n[bold]governance[/]: Adult with sex & race as sensitive attributes, consent, fairness gate")
    config = {"stage": "governance", "dataset": "uci-adult", "epochs": epochs, "seed": seed}
    with Run(run_dir, config=config, seed=seed) as run:
        for name, split in (("adult.train", data.train), ("adult.test", data.test)):
            sheet = datasheet(name, features=split.features, labels=split.labels, sensitive=split.sensitive,
                              feature_names=data.feature_names, source="UCI Adult (Becker & Kohavi, 1996)")
            run.record("data.datasheet", msgspec.to_builtins(sheet))
        registry = ConsentRegistry(run)
        registry.grant_many(consenting, "training", version="consent-text-v3")
        dataset = ConsentedDataset(TensorDataset(x, y, groups), subjects=subjects, registry=registry,
                                   purpose="training", run=run)
        prov = ProvenanceRecorder(run, subjects)
        model = _model(x.shape[1])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        acc = FairnessAccumulator(enc, min_group_size=50, reps=1000, seed=seed)
        gate = FairnessGate(run, metric="demographic_parity_difference", threshold=0.2, attributes=["sex"],
                            bound="ci_high", policy="block_checkpoint")
        ckpt_dir = out / "governance-checkpoints"
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        step = 0
        for epoch in range(epochs):
            access = dataset.begin_epoch(epoch)
            for i, (xb, yb, _, rows) in enumerate(DataLoader(dataset, batch_size=256, shuffle=True)):
                loss = nn.functional.cross_entropy(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                prov.record_batch(step, rows)
                step += 1
                if epoch == 0 and i == 10:
                    for s in revoking:
                        registry.revoke(s, "training")
            prov.end_epoch(epoch)
            _fairness(model, acc, xt, yt, gt)
            decision = gate.evaluate(acc, epoch=epoch, step=step - 1, split="test")
            d = decision.decision
            saved = "checkpoint saved"
            if decision.checkpoint_allowed:
                buf = io.BytesIO()
                torch.save(model.state_dict(), buf)
                (ckpt_dir / f"epoch-{epoch}.pt").write_bytes(buf.getvalue())
                prov.checkpoint_saved(step - 1, epoch=epoch, name=f"epoch-{epoch}.pt",
                                      digest="sha256:" + hashlib.sha256(buf.getvalue()).hexdigest())
            else:
                saved = "[yellow]checkpoint blocked[/]"
            console.print(f"epoch {epoch}: served {access.rows_served:,} rows (withheld {access.rows_withheld:,}: "
                          f"{access.withheld}); DP difference by sex upper 95% bound "
                          f"{d.value:.3f} vs {d.threshold} -> {saved}")

        _dp_variant(run, dataset, epochs, (xt, yt, gt), acc, console)

    who = revoking[0]
    answer = query(run_dir, who)
    console.print(f"provenance of {who} (revoked in epoch 0): epochs {answer.epochs}, {len(answer.steps)} steps "
                  f"({answer.verified_steps} checked against the ledger), checkpoints {answer.checkpoints or 'none'}")
    report = erase_subject(run_dir, who)
    console.print(f"erased {who}: consent revoked for {report.purposes_revoked}; checkpoints to retrain or "
                  f"unlearn: {report.affected_checkpoints or 'none'}")
    console.print(f"[green]verified[/]: {verify_run(run_dir).summary()}")
    return run_dir
