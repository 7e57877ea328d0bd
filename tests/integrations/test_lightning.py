"""The Lightning callback, with real (tiny, CPU) ``Trainer.fit`` runs."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import torchwitness as tw
from torchwitness.ledger import iter_records
from torchwitness.rules import Severity

pl = pytest.importorskip("lightning.pytorch")
from torchwitness.integrations import lightning as tw_lightning  # noqa: E402


def _loaders() -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(320, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(1)
    train = torch.utils.data.TensorDataset(x[:256], y[:256])
    val = torch.utils.data.TensorDataset(x[256:], y[256:])
    return (torch.utils.data.DataLoader(train, batch_size=32, shuffle=True),
            torch.utils.data.DataLoader(val, batch_size=32))


class Classifier(pl.LightningModule):
    def __init__(self, *, softmax_into_ce: bool = False, optimise_first_layer_only: bool = False,
                 via_forward: bool = False, loss: str = "loss_fn", lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.via_forward = via_forward
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 3))
        self.loss = loss  # "functional", or the attribute holding the loss module (any name)
        if loss != "functional":
            setattr(self, loss, nn.CrossEntropyLoss())
        self.softmax_into_ce, self.first_only = softmax_into_ce, optimise_first_layer_only
        self.grad_norms: list[float] = []  # the oracle for what the watch records

    def compute_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss == "functional":
            return nn.functional.cross_entropy(out, y)
        return getattr(self, self.loss)(out, y)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> torch.Tensor:
        x, y = batch
        out = self(x) if self.via_forward else self.net(x)
        loss = self.compute_loss(out.softmax(-1) if self.softmax_into_ce else out, y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> None:
        self.log("val_loss", self.compute_loss(self.net(batch[0]), batch[1]))
        self.log("val_acc", (self.net(batch[0]).argmax(1) == batch[1]).float().mean())

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> None:
        self.log("test_acc", (self.net(batch[0]).argmax(1) == batch[1]).float().mean())

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        self.grad_norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = self.net[0].parameters() if self.first_only else self.parameters()
        return torch.optim.AdamW(params, lr=self.hparams.lr)


def _fit(module: pl.LightningModule, callback: pl.Callback, steps: int = 12, checkpoints: Path | None = None
         ) -> pl.Trainer:
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    saving = [pl.callbacks.ModelCheckpoint(dirpath=checkpoints, every_n_train_steps=6, save_top_k=-1)] \
        if checkpoints else []
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=bool(checkpoints), enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[callback, *saving], val_check_interval=6,
                         num_sanity_val_steps=1, log_every_n_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, *_loaders())
    return trainer


@pytest.mark.parametrize("via_forward", [False, True])
def test_healthy_fit_is_quiet_and_records_true_gradients(tmp_path: Path, via_forward: bool) -> None:
    module = Classifier(via_forward=via_forward)
    with tw.Run(tmp_path / "run") as run:
        _fit(module, tw_lightning.WitnessCallback(run, every_n_steps=4, first_steps=2))
        loud = [f for f in run.findings() if f.severity >= Severity.WARN]
    assert loud == []
    audits = {a["step"]: a for r in iter_records(tmp_path / "run", kinds={"train.audit"})
              for a in r["data"]["steps"]}  # audited-step summaries, batched into records
    assert sorted(audits) == [0, 1, 4, 8]  # first 2 steps, then every 4th; validation is never a step
    for step, data in audits.items():  # gradients judged are this step's, not the previous one's
        assert data["grad_norm"] == pytest.approx(module.grad_norms[step], rel=1e-4)
        assert data["loss"] is not None
        assert data["forwards"] == 1  # a training_step calling self(x) is not counted twice


@pytest.mark.parametrize(("bug", "rule"), [({"softmax_into_ce": True}, "TW150"),
                                           ({"softmax_into_ce": True, "loss": "crit"}, "TW150"),
                                           ({"softmax_into_ce": True, "loss": "functional"}, "TW150"),
                                           ({"optimise_first_layer_only": True}, "TW301")])
def test_buggy_fit_is_caught_and_recorded(tmp_path: Path, bug: dict, rule: str) -> None:
    """Probabilities fed to cross-entropy are caught whatever holds the loss: any attribute, or F.cross_entropy."""
    _fit(Classifier(**bug), tw_lightning.WitnessCallback(path=tmp_path / "run", every_n_steps=5), steps=6)
    found = {r["data"]["rule_id"]: r["data"]["severity"] for r in iter_records(tmp_path / "run", kinds={"finding"})}
    assert found.get(rule) == "error"
    assert [r["data"]["status"] for r in iter_records(tmp_path / "run", kinds={"run.end"})] == ["ok"]
    assert tw.verify_run(tmp_path / "run").uncovered == 0  # raises if the ledger does not verify


def test_a_fit_records_params_metrics_evaluations_data_model_and_checkpoints(tmp_path: Path) -> None:
    import hashlib

    from _consistency import check_dossier

    from torchwitness.report.build import build_document
    from torchwitness.report.evidence import Evidence, get

    module = Classifier(lr=2e-3)
    trainer = _fit(module, tw_lightning.WitnessCallback(path=tmp_path / "run", every_n_steps=4),
                   checkpoints=tmp_path / "ckpt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.test(module, dataloaders=_loaders()[1])  # after the fit closed the run: a resumed session
    ev = Evidence.load(tmp_path / "run")
    params = get(ev.first("params"), "params")
    assert params["hparams.lr"] == 2e-3 and params["trainer.max_steps"] == 12 and params["optimizer.name"] == "AdamW"
    steps = [r["step"] for r in ev.kind("metrics") if "train_loss_step" in get(r, "metrics")]
    assert steps == [1, 3, 5, 7, 9, 11]  # every log_every_n_steps, at the step Lightning gives its loggers
    evals = ev.kind("eval")
    assert [get(r, "split") for r in evals] == ["validation", "test"] and "val_acc" in get(evals[0], "metrics")
    assert evals[0]["step"] == 5 and len(ev.sessions()) == 2 and ev.sessions()[1].holds(evals[1]["seq"])  # 0-based
    assert [(get(r, "dataset"), get(r, "rows")) for r in evals] == [("TensorDataset", 64)] * 2
    assert {(get(r, "split"), get(r, "rows")) for r in ev.kind("dataset")} == {("train", 256), ("validation", 64),
                                                                               ("test", 64)}
    models = ev.kind("model")
    assert get(models[0], "name") == "Classifier" and get(models[0], "parameters") == 8 * 32 + 32 + 32 * 3 + 3
    saved = sorted((tmp_path / "ckpt").iterdir())
    files = [f for r in models[1:] for f in get(r, "files")]
    assert len(saved) == len(files) == 2
    for f in files:
        assert f["digest"] == "sha256:" + hashlib.sha256(Path(f["path"]).read_bytes()).hexdigest()
    assert trainer.checkpoint_callback.dirpath == str(tmp_path / "ckpt")
    check_dossier(tmp_path / "run")
    doc = build_document(tmp_path / "run", proofs=0)
    for n in (1, 2, 3, 4, 5):  # general, training and data, evaluation, metrics, monitoring: all filled
        assert doc.sections[n - 1].has_evidence, n


def test_default_checkpoint_and_log_folders_do_not_move(tmp_path: Path) -> None:
    """With logger=False the callback's logger is the only one: Lightning's default folders must stay put."""
    from torchwitness.report.evidence import Evidence, get

    seen: list[str | None] = []

    class LogDir(pl.Callback):
        def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            seen.append(trainer.log_dir)

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path / "root",
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[tw_lightning.WitnessCallback(path=tmp_path / "run"), LogDir()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Classifier(), *_loaders())
    saved = list((tmp_path / "root" / "checkpoints").glob("*.ckpt"))
    assert len(saved) == 1 and seen == [str(tmp_path / "root")]
    files = [f["path"] for r in Evidence.load(tmp_path / "run").kind("model") for f in get(r, "files") or []]
    assert files == [str(saved[0])]


def test_callback_errors_are_one_sentence(tmp_path: Path) -> None:
    from torchwitness.errors import InputError, RunExists

    with pytest.raises(InputError, match="exactly one of run= or path=") as e:
        tw_lightning.WitnessCallback()
    assert "\n" not in str(e.value)
    with tw.Run(tmp_path / "run"):
        pass
    with pytest.raises(RunExists, match=r"already holds run .*resume=True") as e:  # a new fit never appends silently
        _fit(Classifier(), tw_lightning.WitnessCallback(path=tmp_path / "run"), steps=2)
    assert "\n" not in str(e.value)
    _fit(Classifier(), tw_lightning.WitnessCallback(path=tmp_path / "run", run_options={"resume": True}), steps=2)
    assert len(list(iter_records(tmp_path / "run", kinds={"run.start"}))) == 2


def test_missing_lightning_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    with pytest.raises(ImportError, match=r"pip install 'torchwitness\[lightning\]'"):
        tw_lightning._build()


def test_callback_takes_the_watch_options_by_their_names(tmp_path):
    """statistics_every reaches the watch, and a select given as one string is one pattern (not its letters)."""
    seen = []

    class Peek(tw_lightning.WitnessCallback):
        def on_train_batch_end(self, *args, **kwargs):
            seen.append(self.watch.statistics_every)
            return super().on_train_batch_end(*args, **kwargs)

    with tw.Run(tmp_path / "r") as run:
        callback = Peek(run, every_n_steps=1, first_steps=0, statistics_every=4, select="TW15")
        _fit(Classifier(softmax_into_ce=True), callback, steps=8)
    assert seen and set(seen) == {4}, seen
    found = {f.rule_id for f in run.findings()}
    assert "TW150" in found and all(r.startswith("TW15") for r in found), found
