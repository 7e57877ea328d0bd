"""Paired evaluation: both models see identical inputs; per-window sums come back to the host once.

Causal LMs: per token, the log-loss of each model, ``KL(baseline || subject)`` of the next-token distributions
and whether their top-1 predictions agree. Classifiers: per example, whether each model is right. Results are
accumulated on the device and copied to the host in one transfer at the end (no per-batch sync).

Speed (see docs/topics/certification.md): forwards run under ``inference_mode`` in batches sized so one batch's
logits stay near ``_BATCH_LOGITS`` elements; the per-token statistics walk the logits ``_CHUNK_ELEMENTS`` at a
time, so their several passes over a large vocabulary hit the cache instead of memory. The baseline's logits
are kept (up to ``cache_budget`` bytes) under a key of its weights, structure and the windows, so certifying a
second subject against the same baseline and data pays only the subject's forward.

>>> import torch
>>> m = torch.nn.Sequential(torch.nn.Embedding(5, 5))
>>> rows = evaluate_lm(m, m, torch.randint(0, 5, (3, 9)).numpy())
>>> rows[0]["nll_baseline"] == rows[0]["nll_subject"], rows[0]["kl"] == 0, rows[0]["agree"]
(True, True, 8)
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import nn

from torchwitness.ledger.encoding import encode_float

_BATCH_LOGITS = 1 << 21  # logits per forward batch: 16 windows of a char-level model, 1 of a 50k vocabulary
_MAX_BATCH = 16  # measured on a 1M GPT-2: larger batches fall out of cache and run slower on CPU
_CHUNK_ELEMENTS = 1 << 18  # 1 MiB of fp32 per operand: the statistics' passes stay in L2
_CACHE_ENV = "TORCHWITNESS_CERTIFY_CACHE_MB"
_DEFAULT_CACHE_MB = 256


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


def vocabulary_size(model: nn.Module) -> int | None:
    """The output vocabulary from a Hugging Face config or the output embedding, if the model says."""
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    if isinstance(size, int) and size > 0:
        return size
    head = getattr(model, "get_output_embeddings", lambda: None)()
    return getattr(head, "out_features", None)


def batch_size_for(model: nn.Module, length: int) -> int:
    vocab = vocabulary_size(model)
    if vocab is None:
        return _MAX_BATCH
    return max(1, min(_MAX_BATCH, _BATCH_LOGITS // (length * vocab)))


class _BaselineCache:
    """Baseline logits per batch, least recently used dropped first, within a byte budget."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, list[torch.Tensor]] = OrderedDict()

    @staticmethod
    def budget() -> int:
        try:
            return int(float(os.environ.get(_CACHE_ENV, _DEFAULT_CACHE_MB)) * 2**20)
        except ValueError:
            return _DEFAULT_CACHE_MB * 2**20

    def get(self, key: str) -> list[torch.Tensor] | None:
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
        return hit

    def put(self, key: str, logits: list[torch.Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in logits)
        budget = self.budget()
        if size > budget:
            return
        self._entries[key] = logits
        while sum(t.numel() * t.element_size() for v in self._entries.values() for t in v) > budget:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


baseline_cache = _BaselineCache()


def cache_key(model_digest: str, windows: np.ndarray, batch_size: int, device: torch.device, threads: int) -> str:
    """Everything the baseline's logits depend on: model, windows, batching, device and its forward's threads."""
    h = hashlib.sha256(np.ascontiguousarray(windows, dtype="<i8").tobytes())
    return f"{model_digest}|{h.hexdigest()}|{windows.shape}|{batch_size}|{device}|{threads}"


def _token_stats(zb: torch.Tensor, zs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[tokens, 4]``: log-loss of each model, KL(b || s) and top-1 agreement, ``_CHUNK_ELEMENTS`` at a time."""
    rows = max(1, _CHUNK_ELEMENTS // zb.shape[-1])
    out = torch.empty(zb.shape[0], 4, dtype=torch.float32, device=zb.device)
    for r in range(0, zb.shape[0], rows):
        lb = torch.log_softmax(zb[r:r + rows].float(), dim=-1)
        ls = lb if zs is zb else torch.log_softmax(zs[r:r + rows].float(), dim=-1)
        t = y[r:r + rows, None]
        out[r:r + rows, 0] = -lb.gather(-1, t).squeeze(-1)
        out[r:r + rows, 1] = -ls.gather(-1, t).squeeze(-1)
        # KL(p_b || p_s) per token; identical logits give exactly zero.
        out[r:r + rows, 2] = 0.0 if ls is lb else (lb.exp() * (lb - ls)).sum(-1)
        out[r:r + rows, 3] = 1.0 if ls is lb else (lb.argmax(-1) == ls.argmax(-1)).float()
    return out


def _forward(model: nn.Module, x: torch.Tensor, tokens: int) -> torch.Tensor:
    with torch.inference_mode():  # thread-local: the worker thread enters it too
        return logits_of(model, x).reshape(tokens, -1)


def evaluate_lm(baseline: nn.Module, subject: nn.Module, windows: np.ndarray, *, batch_size: int | None = None,
                progress: Callable[[int], None] | None = None, baseline_digest: str | None = None
                ) -> list[dict[str, Any]]:
    """Per-window rows for ``[count, length + 1]`` token windows (see :mod:`.windows`).

    With ``baseline_digest`` (weights and structure), the baseline's logits are looked up in and kept in
    :data:`baseline_cache`. ``subject is baseline`` evaluates once. On a CPU given two or more threads, when
    both models must run, they run side by side on a thread each with half the intra-op threads: whole
    forwards in parallel scale better than splitting each small matrix product, and each forward's result is
    bit-identical to a one-thread run.
    """
    device = _device_of(baseline)
    tokens = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.int64))
    length = tokens.shape[1] - 1
    size = batch_size or batch_size_for(baseline, length)
    threads = torch.get_num_threads()
    pair = device.type == "cpu" and subject is not baseline and threads >= 2
    baseline_threads = threads // 2 if pair else threads  # what the baseline's forward runs with, if it runs
    key = cache_key(baseline_digest, windows, size, device, baseline_threads) if baseline_digest else None
    cached = baseline_cache.get(key) if key else None
    pool = None
    if pair and cached is None:
        torch.set_num_threads(baseline_threads)
        pool = ThreadPoolExecutor(1, thread_name_prefix="torchwitness-baseline")
    kept: list[torch.Tensor] | None = [] if key and cached is None else None
    budget = baseline_cache.budget()
    stats = []
    try:
        with torch.inference_mode():
            for k, start in enumerate(range(0, len(tokens), size)):
                chunk = tokens[start:start + size].to(device, non_blocking=True)
                x, y = chunk[:, :-1], chunk[:, 1:].reshape(-1)
                pending = pool.submit(_forward, baseline, x, y.numel()) if pool is not None else None
                zb = cached[k] if cached is not None else None
                if zb is None and pending is None:
                    zb = _forward(baseline, x, y.numel())
                zs = zb if subject is baseline else _forward(subject, x, y.numel())
                if pending is not None:
                    zb = pending.result()
                    zs = zb if subject is baseline else zs
                stats.append(_token_stats(zb, zs, y).reshape(len(chunk), length, 4))
                if kept is not None:
                    kept.append(zb)
                    if sum(t.numel() * t.element_size() for t in kept) > budget:
                        kept = None  # too large to keep: the next subject recomputes the baseline
                if progress is not None:
                    progress(len(chunk))
            table = torch.cat(stats)
            sums = table.double().sum(1).cpu().numpy()
            delta = (table[..., 1] - table[..., 0]).cpu().numpy().astype("<f4")
    finally:
        if pool is not None:
            pool.shutdown()
        torch.set_num_threads(threads)
    if kept is not None:
        baseline_cache.put(key, kept)
    return [{"i": i, "tokens": length, "nll_baseline": encode_float(float(t[0])),
             "nll_subject": encode_float(float(t[1])), "kl": encode_float(float(t[2])), "agree": int(t[3]),
             "delta": base64.b64encode(delta[i].tobytes()).decode()}
            for i, t in enumerate(sums)]


@torch.inference_mode()
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
