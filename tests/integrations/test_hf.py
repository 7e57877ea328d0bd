"""The Hugging Face Trainer callback, with real (tiny, CPU, offline) ``Trainer.train`` runs."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import pytest
import torch

import torchwitness as tw
from torchwitness.ledger import iter_records
from torchwitness.rules import Severity

transformers = pytest.importorskip("transformers")
from torchwitness.integrations import hf as tw_hf  # noqa: E402


class Tokens(torch.utils.data.Dataset):
    """Sequences whose label is whether token 7 occurs: learnable by a one-layer BERT."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 50, (n, 12), generator=g)
        self.labels = (self.ids == 7).any(1).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(12, dtype=torch.long),
                "labels": self.labels[i]}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=16, num_labels=2)
    return transformers.BertForSequenceClassification(cfg)


def _train(tmp_path: Path, model: torch.nn.Module, callback: object, steps: int = 10, *, save: bool = False
           ) -> transformers.Trainer:
    transformers.logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    saving = {"save_strategy": "steps", "save_steps": 5, "eval_strategy": "steps", "eval_steps": 5,
              "logging_steps": 2} if save else {"save_strategy": "no", "logging_steps": 1000}
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=steps,
                                          per_device_train_batch_size=16, learning_rate=5e-4, report_to=[],
                                          use_cpu=True, disable_tqdm=True, seed=0, **saving)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(160, 0),
                                   eval_dataset=Tokens(32, 1), callbacks=[callback])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
        trainer.evaluate()
    return trainer


def test_healthy_trainer_run_is_quiet_and_recorded(tmp_path: Path) -> None:
    with tw.Run(tmp_path / "run") as run:
        _train(tmp_path, _model(), tw_hf.WitnessCallback(run, every_n_steps=4, first_steps=2))
        loud = [f for f in run.findings() if f.severity >= Severity.WARN]
    assert loud == []
    audits = {a["step"]: a for r in iter_records(tmp_path / "run", kinds={"train.audit"})
              for a in r["data"]["steps"]}  # audited-step summaries, batched into records
    assert sorted(audits) == [0, 1, 4, 8]  # evaluation forwards are not counted as steps
    assert all(a["grad_norm"] > 0 for a in audits.values())


def _noop_freeze(model: torch.nn.Module) -> None:
    model.bert.requires_grad = False  # the classic mistake: an attribute, not requires_grad_(False)


def _nan_head(model: torch.nn.Module) -> None:
    with torch.no_grad():
        model.classifier.bias[0] = float("nan")  # the model's own loss (labels in the batch) becomes NaN


@pytest.mark.parametrize(("bug", "rule"), [(_noop_freeze, "TW305"), (_nan_head, "TW101")])
def test_buggy_trainer_run_is_caught(tmp_path: Path, bug: object, rule: str) -> None:
    model = _model()
    bug(model)
    callback = tw_hf.WitnessCallback(path=tmp_path / "run", every_n_steps=5)
    _train(tmp_path, model, callback, steps=3)
    found = {r["data"]["rule_id"]: r["data"]["severity"] for r in iter_records(tmp_path / "run", kinds={"finding"})}
    assert found.get(rule) == "error"
    roots = callback.run.findings()  # the NaN loss is reported under its root cause (the classifier's output)
    assert rule in {f.rule_id for f in roots} | {c.rule_id for f in roots for c in f.consequences}
    assert tw.verify_run(tmp_path / "run").uncovered == 0  # raises if the ledger does not verify


def test_a_trainer_run_records_arguments_logs_evaluations_data_config_and_checkpoints(tmp_path: Path) -> None:
    import hashlib

    from _consistency import check_dossier

    from torchwitness.report.build import build_document
    from torchwitness.report.evidence import Evidence, get

    _train(tmp_path, _model(), tw_hf.WitnessCallback(path=tmp_path / "run", every_n_steps=4), save=True)
    ev = Evidence.load(tmp_path / "run")
    params = get(ev.first("params"), "params")
    assert params["learning_rate"] == 5e-4 and params["max_steps"] == 10 and params["save_steps"] == 5
    logged = [(r["step"], sorted(get(r, "metrics"))) for r in ev.kind("metrics")]
    assert [s for s, names in logged if "loss" in names] == [2, 4, 6, 8, 10]
    assert all("learning_rate" in names for s, names in logged if s != 10 or "loss" in names)
    evals = ev.kind("eval")  # at steps 5 and 10, and the evaluate() after training, in a resumed session
    assert [(r["step"], get(r, "split"), get(r, "rows")) for r in evals] == [(5, "validation", 32),
                                                                             (10, "validation", 32),
                                                                             (10, "validation", 32)]
    assert "eval_loss" in get(evals[0], "metrics") and len(ev.sessions()) == 2
    assert {(get(r, "split"), get(r, "rows")) for r in ev.kind("dataset")} == {("train", 160), ("validation", 32)}
    model = ev.first("model")
    assert get(model, "name") == "BertForSequenceClassification" and get(model, "config.hidden_size") == 32
    saved = [r for r in ev.kind("model") if get(r, "files")]
    assert [get(r, "version") for r in saved] == ["step 5", "step 10"]
    for r in saved:
        files = get(r, "files")
        assert any(f["path"].endswith("model.safetensors") for f in files)
        for f in files:
            assert f["digest"] == "sha256:" + hashlib.sha256(Path(f["path"]).read_bytes()).hexdigest()
    check_dossier(tmp_path / "run")
    doc = build_document(tmp_path / "run", proofs=0)
    for n in (1, 2, 3, 4, 5):  # general, training and data, evaluation, metrics, monitoring: all filled
        assert doc.sections[n - 1].has_evidence, n


def test_missing_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'torchwitness\[transformers\]'"):
        tw_hf._build()
