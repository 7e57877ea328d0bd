"""Paired evaluation: both models see identical inputs; per-window sums come back to the host once.

Causal LMs: per token, the log-loss of each model, ``KL(baseline || subject)`` of the next-token distributions
and whether their top-1 predictions agree. Classifiers: per example, whether each model is right. Results are
accumulated on the device and copied to the host in one transfer at the end (no per-batch sync).

>>> import torch
>>> m = torch.nn.Sequential(torch.nn.Embedding(5, 5))
>>> rows = evaluate_lm(m, m, torch.randint(0, 5, (3, 9)).numpy())
>>> rows[0]["nll_baseline"] == rows[0]["nll_subject"], rows[0]["kl"] == 0, rows[0]["agree"]
(True, True, 8)
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from torchwitness.ledger.encoding import encode_float


def logits_of(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Logits from a plain module, a Hugging Face model (``.logits``) or one returning a tuple."""
    out = model(inputs)
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def evaluate_lm(baseline: nn.Module, subject: nn.Module, windows: np.ndarray, *, batch_size: int = 16,
                progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Per-window rows for ``[count, length + 1]`` token windows (see :mod:`.windows`)."""
    device = _device_of(baseline)
    tokens = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.int64))
    sums, deltas = [], []
    for start in range(0, len(tokens), batch_size):
        chunk = tokens[start:start + batch_size].to(device, non_blocking=True)
        x, y = chunk[:, :-1], chunk[:, 1:]
        lp_b = torch.log_softmax(logits_of(baseline, x).float(), dim=-1)
        lp_s = torch.log_softmax(logits_of(subject, x).float(), dim=-1)
        nll_b = -lp_b.gather(-1, y[..., None]).squeeze(-1)
        nll_s = -lp_s.gather(-1, y[..., None]).squeeze(-1)
        # KL(p_b || p_s) per token; identical logits give exactly zero.
        kl = (lp_b.exp() * (lp_b - lp_s)).sum(-1)
        agree = (lp_b.argmax(-1) == lp_s.argmax(-1)).double()
        sums.append(torch.stack([nll_b.double().sum(1), nll_s.double().sum(1), kl.double().sum(1),
                                 agree.sum(1)], dim=1))
        deltas.append(nll_s - nll_b)
        if progress is not None:
            progress(len(chunk))
    table = torch.cat(sums).cpu().numpy()
    delta = torch.cat(deltas).cpu().numpy().astype("<f4")
    length = tokens.shape[1] - 1
    return [{"i": i, "tokens": length, "nll_baseline": encode_float(float(t[0])),
             "nll_subject": encode_float(float(t[1])), "kl": encode_float(float(t[2])), "agree": int(t[3]),
             "delta": base64.b64encode(delta[i].tobytes()).decode()}
            for i, t in enumerate(table)]


@torch.no_grad()
def evaluate_classifier(baseline: nn.Module, subject: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *,
                        cluster_size: int, batch_size: int = 4096) -> list[dict[str, Any]]:
    """Per-cluster rows: consecutive blocks of ``cluster_size`` examples are the resampling units."""
    device = _device_of(baseline)
    preds_b, preds_s = [], []
    for start in range(0, len(inputs), batch_size):
        x = inputs[start:start + batch_size].to(device, non_blocking=True)
        preds_b.append(logits_of(baseline, x).argmax(-1))
        preds_s.append(logits_of(subject, x).argmax(-1))
    y = labels.to(device)
    pb, ps = torch.cat(preds_b), torch.cat(preds_s)
    per_example = torch.stack([pb == y, ps == y, (pb == y) & (ps != y), (pb != y) & (ps == y), pb == ps], 1)
    n = len(labels)
    cluster = torch.arange(n, device=device) // cluster_size
    counts = torch.zeros(int((n + cluster_size - 1) // cluster_size), 5, dtype=torch.int64, device=device)
    counts.index_add_(0, cluster, per_example.long())
    table = counts.cpu().numpy()
    return [{"i": i, "offset": i * cluster_size, "examples": min(cluster_size, n - i * cluster_size),
             "correct_baseline": int(t[0]), "correct_subject": int(t[1]), "baseline_only": int(t[2]),
             "subject_only": int(t[3]), "agree": int(t[4])} for i, t in enumerate(table)]
