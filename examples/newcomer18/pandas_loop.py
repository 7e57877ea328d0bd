"""A plain PyTorch loop on a pandas DataFrame (UCI Adult: categorical + numeric columns), under run.watch.

    python examples/newcomer18/pandas_loop.py [--bug shuffled_labels|nan_rows|label_leak] [--run runs/adult]

Written from the README's quick start and the training-auditor guide only.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

import torchwitness as tw

DATA = Path("/work/shared/data/adult/adult.data")
COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
]
CATEGORICAL = ["workclass", "education", "marital_status", "occupation", "relationship", "native_country"]
NUMERIC = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
BUGS = ("shuffled_labels", "nan_rows", "label_leak")


def load_frame(rows: int = 4096) -> pd.DataFrame:
    frame = pd.read_csv(DATA, names=COLUMNS, sep=r",\s*", engine="python", na_values="?", nrows=rows)
    return frame.dropna().reset_index(drop=True)


class AdultTable(torch.utils.data.Dataset):
    """Categorical columns as integer codes (for embeddings), numeric columns standardized."""

    def __init__(self, frame: pd.DataFrame, bug: str | None = None, batch_size: int = 64) -> None:
        self.codes = torch.tensor(
            np.stack([frame[c].astype("category").cat.codes.to_numpy() for c in CATEGORICAL], axis=1), dtype=torch.long
        )
        labels = (frame["income"] == ">50K").to_numpy().astype(np.int64)
        # label_leak: the target, one-hot encoded with the other columns, stays among the features
        columns = [*NUMERIC, "leak"] if bug == "label_leak" else NUMERIC
        numeric = frame.assign(leak=labels)[columns].to_numpy(dtype=np.float32)
        numeric = (numeric - numeric.mean(0)) / numeric.std(0)
        if bug == "shuffled_labels":  # labels re-ordered apart from their rows (a bad merge)
            labels = np.random.default_rng(1).permutation(labels)
        if bug == "nan_rows":  # a corrupt shard: every row from step 40 on has a missing value
            numeric[40 * batch_size :, 1] = np.nan
        self.numeric = torch.from_numpy(numeric)
        self.labels = torch.from_numpy(labels)
        self.cardinalities = [int(frame[c].astype("category").cat.categories.size) for c in CATEGORICAL]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.codes[i], self.numeric[i], self.labels[i]


class TabularNet(nn.Module):
    def __init__(self, cardinalities: list[int], n_numeric: int) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(n, 4) for n in cardinalities)
        self.mlp = nn.Sequential(nn.Linear(4 * len(cardinalities) + n_numeric, 64), nn.ReLU(), nn.Linear(64, 2))

    def forward(self, codes: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        embedded = [emb(codes[:, i]) for i, emb in enumerate(self.embeddings)]
        return self.mlp(torch.cat([*embedded, numeric], dim=1))


def main(run_dir: str | Path, bug: str | None = None, epochs: int = 2, seed: int = 0, every_n_steps: int | None = None):
    torch.manual_seed(seed)
    frame = load_frame()
    data = AdultTable(frame, bug)
    # shuffle=False for nan_rows so the corrupt rows really arrive from step 40; shuffled otherwise
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=bug != "nan_rows")
    model = TabularNet(data.cardinalities, data.numeric.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    with tw.Run(run_dir) as run:
        run.log_params({"lr": 3e-3, "epochs": epochs, "batch_size": 64, "bug": bug or "none"})
        run.log_dataset("adult", data=frame, split="train", source=str(DATA), license="CC-BY-4.0", personal_data=True)
        # every_n_steps=None keeps the documented default sampling
        run.watch(model, opt, loss_fn=loss_fn, **({} if every_n_steps is None else {"every_n_steps": every_n_steps}))
        step = 0
        for epoch in range(epochs):
            for codes, numeric, labels in loader:
                opt.zero_grad()
                loss = loss_fn(model(codes, numeric), labels)
                loss.backward()
                opt.step()
                run.log_metrics({"train_loss": loss.detach()}, step=step, epoch=epoch)
                step += 1
        signer = run.ledger.public_key.fingerprint
    return run, signer


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--bug", choices=BUGS)
    parser.add_argument("--every-n-steps", type=int, default=None)
    parser.add_argument("--run", default=None)
    args = parser.parse_args()
    run, signer = main(args.run or Path(tempfile.mkdtemp()) / "run", args.bug, every_n_steps=args.every_n_steps)
    for f in run.findings():
        print(
            f.rule_id, f.severity.name, f.first_step, f.location, f.message, "->", [c.rule_id for c in f.consequences]
        )
    print("signer:", signer)
