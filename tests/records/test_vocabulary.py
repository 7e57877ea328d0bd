"""The record vocabulary: what each Run.log_* method writes, computed digests, one-sentence refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import torchwitness as tw
from torchwitness.errors import InputError
from torchwitness.ledger import iter_records, verify_run
from torchwitness.records.describe import describe_data


def _records(path: Path, kind: str) -> list[dict]:
    return [r for r in iter_records(path) if r["kind"] == kind]


def test_each_method_writes_its_kind_and_fits_its_schema(tmp_path: Path) -> None:
    weights = tmp_path / "m.pt"
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    torch.save(model.state_dict(), weights)
    frame = pd.DataFrame({"age": [30, 41, 52], "city": ["a", "b", "c"]})
    with tw.Run(tmp_path / "run") as run:
        run.log_params({"lr": 1e-3, "optimizer": {"name": "AdamW", "betas": (0.9, 0.99)}, "dtype": torch.float16,
                        "steps": np.int64(10)})
        run.log_metrics({"loss": torch.tensor(0.25), "acc": np.float32(0.5)}, step=7, epoch=1)
        run.log_dataset("people", data=frame, split="train", license="CC-BY-4.0", personal_data=True,
                        special_categories=["health"])
        run.log_model("mlp", model=model, files=[weights], intended_use="tests", limitations="none known")
        run.log_eval({"accuracy": 0.75}, dataset="people", rows=np.int64(3), step=7)
    run_dir = tmp_path / "run"
    (params,) = _records(run_dir, "params")
    assert params["data"]["params"] == {"lr": 1e-3, "optimizer.name": "AdamW", "optimizer.betas": "(0.9, 0.99)",
                                        "dtype": "torch.float16", "steps": 10}
    (metrics,) = _records(run_dir, "metrics")
    assert metrics["step"] == 7 and metrics["data"] == {"metrics": {"loss": 0.25, "acc": 0.5}, "epoch": 1}
    (dataset,) = _records(run_dir, "dataset")
    assert dataset["data"]["rows"] == 3 and dataset["data"]["features"] == 2
    assert dataset["data"]["feature_names"] == ["age", "city"] and dataset["data"]["special_categories"] == ["health"]
    assert dataset["data"]["digest"] == describe_data(frame).digest
    (m,) = _records(run_dir, "model")
    assert m["data"]["architecture"] == "Sequential(Linear, ReLU, Linear)" and m["data"]["parameters"] == 26
    assert m["data"]["files"] == [{"path": str(weights), "bytes": weights.stat().st_size,
                                   "digest": "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()}]
    (ev,) = _records(run_dir, "eval")
    assert ev["data"] == {"metrics": {"accuracy": 0.75}, "split": "test", "dataset": "people", "rows": 3}
    verify_run(run_dir, deep=True)  # every record fits its published schema


def test_digests_follow_content_order_and_names() -> None:
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert describe_data(a).digest == describe_data(torch.from_numpy(a.copy())).digest
    assert describe_data(a).digest != describe_data(a.tolist()).digest  # a list reads as float64: another dtype
    assert describe_data(a).digest != describe_data(a[::-1]).digest
    frame = pd.DataFrame(a, columns=["x", "y", "z"])
    assert describe_data(frame).digest != describe_data(frame.rename(columns={"x": "w"})).digest
    facts = describe_data(a)
    assert (facts.rows, facts.features) == (4, 3)


def test_a_folder_is_hashed_file_by_file(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "a.bin").write_bytes(b"a")
    (tmp_path / "ckpt" / "b.json").write_text("{}")
    with tw.Run(tmp_path / "run") as run:
        run.log_model("m", files=[tmp_path / "ckpt"])
        run.log_dataset("files", data=tmp_path / "ckpt")
    (m,) = _records(tmp_path / "run", "model")
    assert [Path(f["path"]).name for f in m["data"]["files"]] == ["a.bin", "b.json"]
    (d,) = _records(tmp_path / "run", "dataset")
    assert d["data"]["source"] == str(tmp_path / "ckpt") and d["data"]["digest"].startswith("sha256:")


@pytest.mark.parametrize(("call", "message"), [
    (lambda run: run.log_params([1, 2]), "log_params takes a dict"),
    (lambda run: run.log_metrics({"loss": "low"}), "metric 'loss' must be a number"),
    (lambda run: run.log_metrics({"loss": torch.ones(3)}), "metric 'loss' must be a number"),
    (lambda run: run.log_dataset("", rows=3), "log_dataset needs a name"),
    (lambda run: run.log_dataset("d", rows="many"), "rows must be an int"),
    (lambda run: run.log_dataset("d", personal_data="yes"), "personal_data must be bool"),
    (lambda run: run.log_dataset("d", data={1, 2}), "data= must hold rows"),
    (lambda run: run.log_model("m", files=["/nonexistent/w.pt"]), "no such file or folder"),
    (lambda run: run.log_model("m", model=object()), "model= takes an nn.Module"),
    (lambda run: run.log_eval({}), "log_eval needs at least one metric"),
])
def test_wrong_arguments_are_one_sentence_naming_them(tmp_path: Path, call, message: str) -> None:
    with tw.Run(tmp_path / "run") as run:
        with pytest.raises(InputError, match=message) as e:
            call(run)
        assert "\n" not in str(e.value)
    assert [r["kind"] for r in iter_records(tmp_path / "run")] == ["run.start", "run.end"]  # nothing half-written


def test_the_schema_command_publishes_the_vocabulary(cli) -> None:
    code, out, _ = cli("schema")
    assert code == 0
    kinds = json.loads(out)["kinds"]
    for kind in ("params", "metrics", "dataset", "model", "eval", "train.audit"):
        assert kind in kinds and kinds[kind]["$defs"], kind
