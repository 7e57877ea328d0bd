"""Step 4: UCI Adult in pandas -> tensors -> an MLP loop; tuning select/ignore/thresholds/sampling."""
import sys

import numpy as np
import torch
from nc25_data import adult
from torch import nn

import torchwitness as tw

NUMERIC = ["age", "education_num", "capital_gain", "capital_loss", "hours_per_week"]


def tensors(n=4000, standardise=True, leak=False):
    df = adult(n)
    feats = df[NUMERIC].astype("float32")
    if standardise:
        feats = (feats - feats.mean()) / feats.std()
    cats = pd_dummies(df)
    table = feats.join(cats)
    y = (df["income"] == ">50K").astype("int64")
    if leak:
        table = table.assign(target_copy=y.astype("float32"))   # planted: the label left among the features
    return torch.tensor(table.to_numpy(dtype=np.float32)), torch.tensor(y.to_numpy())


def pd_dummies(df):
    import pandas as pd
    return pd.get_dummies(df[["workclass", "sex", "race"]], dtype="float32")


def train(run_dir, x, y, epochs=3, weight_decay=0.01, **watch_options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(x.shape[1], 64), nn.LayerNorm(64), nn.ReLU(), nn.Linear(64, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    with tw.Run(run_dir) as run:
        run.watch(model, opt, loss_fn=loss_fn, **watch_options)
        for _ in range(epochs):
            order = torch.randperm(len(x))
            for i in range(0, len(x), 128):
                idx = order[i:i + 128]
                opt.zero_grad()
                loss_fn(model(x[idx]), y[idx]).backward()
                opt.step()
    return run


if __name__ == "__main__":
    x, y = tensors(standardise="raw" not in sys.argv, leak="leak" in sys.argv)
    wd = 0.1 if "decay" in sys.argv else 0.01
    run = train(sys.argv[1], x, y, weight_decay=wd)
    for f in run.findings():
        print(f.rule_id, f.severity.name, f.first_step, f.location, "|", f.message)
        for c in f.consequences:
            print("   ->", c.rule_id, c.message)
