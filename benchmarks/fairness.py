"""Streaming fairness metrics vs fairlearn, against a bare ``numpy.bincount`` pass measured in the same process.

    python benchmarks/fairness.py                 # 1M rows vs fairlearn; bootstrap on 10M rows (~1 min)
    python benchmarks/fairness.py --rows 10000000 # fairlearn on 10M rows too (about 4 minutes for fairlearn)

Two sensitive attributes (2 x 5 = 10 intersectional groups). Prints the times, the ratios and the largest
difference between our numbers and fairlearn's.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from torchwitness.controls.fairness import FairnessAccumulator, GroupEncoder, disparity_intervals


def _data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n, dtype=np.int64)
    b = rng.integers(0, 5, n, dtype=np.int64)
    y = (rng.random(n) < 0.3 + 0.05 * b).astype(np.int64)
    yhat = (rng.random(n) < np.where(y == 1, 0.7 + 0.05 * a, 0.2 + 0.02 * b)).astype(np.int64)
    return {"a": a, "b": b, "y": y, "yhat": yhat}


def _best(fn, repeat: int = 5) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _bare_bincount(d: dict[str, np.ndarray], group: np.ndarray) -> np.ndarray:
    return np.bincount((group * 2 + d["y"]) * 2 + d["yhat"], minlength=40)


def _ours(enc: GroupEncoder, t: dict[str, torch.Tensor], key: str = "group") -> FairnessAccumulator:
    acc = FairnessAccumulator(enc, min_group_size=1, reps=0)
    acc.update(t["yhat"], t["y"], t[key])
    return acc


def _fairlearn(d: dict[str, np.ndarray]) -> dict[str, float]:
    import pandas as pd
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    sf = pd.DataFrame({"a": d["a"], "b": d["b"]})
    kw = {"y_true": d["y"], "y_pred": d["yhat"], "sensitive_features": sf}
    frame = MetricFrame(metrics={"selection_rate": selection_rate, "tpr": true_positive_rate,
                                 "fpr": false_positive_rate}, **kw)
    return {"demographic_parity_difference": demographic_parity_difference(**kw),
            "equalized_odds_difference": equalized_odds_difference(**kw),
            "tpr_difference": float(frame.difference()["tpr"])}


def _step_overhead(enc: GroupEncoder) -> tuple[float, float]:
    """Seconds per training step of the demo MLP (batch 256, 104 features) and per accumulator update."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(104, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(256, 104), torch.randint(0, 2, (256,))
    groups = torch.randint(0, 10, (256,))
    acc = FairnessAccumulator(enc, reps=0)

    def train(k: int = 200) -> None:
        for _ in range(k):
            out = model(x)
            loss = nn.functional.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def update(k: int = 200) -> None:
        out = model(x).detach()
        for _ in range(k):
            acc.update(out, y, groups)

    return _best(train)[0] / 200, _best(update)[0] / 200


def _encoding(rows: int) -> tuple[float, float]:
    """Seconds for pandas.factorize and for GroupEncoder.fit + encode on one column of race strings."""
    import pandas as pd

    names = np.array(["White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"], dtype=object)
    column = pd.Series(names[np.random.default_rng(2).integers(0, 5, rows)])
    t_fact, _ = _best(lambda: pd.factorize(column), repeat=3)
    t_enc, _ = _best(lambda: GroupEncoder.fit({"race": column}).encode({"race": column}), repeat=3)
    return t_fact, t_enc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows compared with fairlearn")
    parser.add_argument("--boot-rows", type=int, default=10_000_000, help="rows for the bootstrap timing")
    parser.add_argument("--reps", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)  # same single thread as numpy's bincount: a like-for-like ratio

    d = _data(args.rows)
    enc = GroupEncoder(categories={"a": ("0", "1"), "b": ("0", "1", "2", "3", "4")})
    codes = np.stack([d["a"], d["b"]], 1)
    group = enc.flat(codes)  # the intersectional group column, carried beside the batch like a label
    t = {"yhat": torch.from_numpy(d["yhat"]), "y": torch.from_numpy(d["y"]), "codes": torch.from_numpy(codes),
         "group": torch.from_numpy(group)}
    base, ref_counts = _best(lambda: _bare_bincount(d, group))
    ours, acc = _best(lambda: _ours(enc, t))
    ours_codes, acc_codes = _best(lambda: _ours(enc, t, "codes"))
    assert np.array_equal(acc.counts.numpy(), ref_counts), "streaming counts differ from the bare bincount"
    assert np.array_equal(acc_codes.counts.numpy(), ref_counts), "per-attribute codes give other counts"
    t_metrics, result = _best(lambda: acc.compute())
    t_fl, fl = _best(lambda: _fairlearn(d), repeat=1)
    inter = result.views[-1]
    got = {x.metric: x.estimate for x in inter.disparities}
    got["tpr_difference"] = got["equal_opportunity_difference"]
    worst = max(abs(got[k] - v) for k, v in fl.items())
    print(f"rows: {args.rows:,}  groups: 10 intersectional (2 x 5)")
    print(f"bare numpy.bincount pass:            {base * 1e3:9.2f} ms")
    print(f"ours: accumulate (torch.bincount):   {ours * 1e3:9.2f} ms   ratio to bincount {ours / base:6.2f}x")
    print(f"ours: from [n, 2] attribute codes:   {ours_codes * 1e3:9.2f} ms   "
          f"ratio to bincount {ours_codes / base:6.2f}x")
    print(f"ours: + metrics of all views:        {(ours + t_metrics) * 1e3:9.2f} ms   "
          f"ratio to bincount {(ours + t_metrics) / base:6.2f}x")
    print(f"fairlearn DP + EO + 3-metric frame:  {t_fl * 1e3:9.2f} ms   "
          f"fairlearn / ours {t_fl / (ours + t_metrics):9.0f}x")
    print(f"largest |ours - fairlearn|:          {worst:.2e}")

    big = _data(args.boot_rows, seed=1)
    tb = {"yhat": torch.from_numpy(big["yhat"]), "y": torch.from_numpy(big["y"]),
          "group": torch.from_numpy(enc.flat(np.stack([big["a"], big["b"]], 1)))}
    t_acc, big_acc = _best(lambda: _ours(enc, tb), repeat=3)
    counts = big_acc.counts.numpy().reshape(-1, 2, 2)
    t_ci, ci = _best(lambda: disparity_intervals(counts, reps=args.reps, seed=0), repeat=3)
    lo, hi, p = ci["demographic_parity_difference"]
    print(f"intervals and tests, {args.reps:,} draws, {args.boot_rows:,} rows: accumulate {t_acc:.3f} s + "
          f"intervals {t_ci:.3f} s = {t_acc + t_ci:.3f} s  (DP difference 95% CI [{lo:.4f}, {hi:.4f}], p = {p:.3g})")

    t_fact, t_enc = _encoding(args.boot_rows)
    print(f"GroupEncoder fit + encode of {args.boot_rows:,} string rows: {t_enc:.2f} s; pandas.factorize "
          f"{t_fact:.2f} s ({t_enc / t_fact:.2f}x)")

    step, update = _step_overhead(enc)
    print(f"demo MLP training step {step * 1e3:.3f} ms; accumulator update {update * 1e3:.3f} ms "
          f"= {100 * update / step:.2f} % of a step")


if __name__ == "__main__":
    main()
