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


def _train(tmp_path: Path, model: torch.nn.Module, callback: object, steps: int = 10) -> transformers.Trainer:
    transformers.logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=steps,
                                          per_device_train_batch_size=16, learning_rate=5e-4, logging_steps=1000,
                                          save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
                                          seed=0)
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


def test_missing_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'torchwitness\[transformers\]'"):
        tw_hf._build()
