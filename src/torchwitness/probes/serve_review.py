"""Routing a served window's rows to human review: which rows a review policy flags, and which get explained."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from torchwitness.controls.oversight import ReviewPolicy, ReviewQueue


def flag_rows(policy: ReviewPolicy, review: ReviewQueue, rng: torch.Generator, ids: list[str],
              prediction: torch.Tensor, confidence: torch.Tensor, drift: list[bool],
              sensitive: list[bool]) -> list[tuple[int, float]]:
    """Send the window's flagged rows to the review queue; returns them as (decision number offset within the
    window, confidence)."""
    conf = confidence.detach().cpu().tolist()
    pred = prediction.detach().cpu().tolist()
    audit = (torch.rand(len(ids), generator=rng) < policy.audit_rate).tolist()
    rows, flagged = [], []
    for i, decision in enumerate(ids):
        reason = ("drift" if drift[i] and policy.on_drift else
                  "low_confidence" if conf[i] < policy.min_confidence else
                  "sensitive_group" if sensitive[i] else
                  "audit_sample" if audit[i] else None)
        if reason:
            rows.append((decision, reason, int(pred[i]), float(conf[i])))
            flagged.append((i, conf[i]))
    if rows:
        review.submit_many(rows)
    return flagged


def explain_rows(explainer: Any, limit: int, decision_id: Callable[[int], str], flagged: list[tuple[int, float]],
                 first: int, retained: list[tuple[int, int]], batch: torch.Tensor) -> None:
    """Hand the least confident ``policy.explain`` flagged rows whose inputs were retained (``retained``: the
    first decision number and rows of each retained request, in ``batch`` order) to the explanation worker."""
    where, offset = {}, 0
    for start, n in retained:
        where.update({start - first + j: offset + j for j in range(n)})
        offset += n
    chosen = sorted((c, i) for i, c in flagged if i in where)[:limit]
    with torch.inference_mode(False):  # the worker differentiates through it
        for _, i in chosen:
            explainer.submit(decision_id(first + i), batch[where[i]].detach().clone())
