"""Shared loaders for the newcomer-25 trial (MNIST test set, UCI Adult)."""
import gzip
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"   # ../shared/data beside the checkout


def mnist(n=2048, seed=0):
    with gzip.open(DATA / "mnist" / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(DATA / "mnist" / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    idx = np.random.default_rng(seed).permutation(len(labels))[:n]
    x = torch.from_numpy(images[idx].astype(np.float32) / 255.0)
    x = (x - 0.1307) / 0.3081
    return x, torch.from_numpy(labels[idx].astype(np.int64))


ADULT_COLS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
              "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country",
              "income"]


def adult(n=4000):
    import pandas as pd
    df = pd.read_csv(DATA / "adult" / "adult.data", names=ADULT_COLS, skipinitialspace=True, na_values="?")
    return df.dropna().head(n).reset_index(drop=True)
