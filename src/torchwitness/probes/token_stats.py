"""Token-level statistics of a language model's next-token distributions (pure functions, on device).

For each scored position ``t`` with logits ``z_t`` over the vocabulary and chosen token ``y_t``:

=============  ==========================================================================================
statistic      definition
=============  ==========================================================================================
``logprob``    ``log softmax(z_t)[y_t]`` (natural log)
``entropy``    ``-sum_v p_v log p_v`` in nats, with ``0 log 0 = 0`` (top-k / top-p leave ``-inf`` logits)
``margin``     ``p_(1) - p_(2)``: probability of the most likely token minus that of the runner-up
``rank``       ``1 + #{v : z_t[v] > z_t[y_t]}``; 1 when the chosen token is the arg-max (ties count for it)
=============  ==========================================================================================

Per sequence: ``length`` (scored tokens), ``perplexity = exp(-mean logprob)`` and means / extremes of the above.

>>> import torch
>>> logits = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]])
>>> stats = token_statistics(logits, torch.tensor([[0, 1]]))
>>> [round(v, 4) for v in stats["rank"][0].tolist()]
[1.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

TOKEN_FIELDS = ("logprob", "entropy", "margin", "rank")
SEQUENCE_FIELDS = ("length", "logprob_sum", "logprob_mean", "perplexity", "entropy_mean", "entropy_max",
                   "margin_mean", "margin_min", "rank_mean", "rank_max", "top1_fraction")


def token_statistics(logits: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-token ``logprob``, ``entropy``, ``margin`` and ``rank`` for ``logits [B, T, V]`` and ``tokens [B, T]``.

    Returns float64 ``[B, T]`` tensors on the logits' device (float32 on Apple MPS, which has no float64).
    Elementwise work stays in the logits' precision (at least float32); every sum over the vocabulary
    accumulates in float64, because a float32 log-softmax over a 50k vocabulary is off by ~2e-5 nats,
    more than these statistics are meant to resolve.
    """
    acc = torch.float32 if logits.device.type == "mps" else torch.float64
    z = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    chosen = tokens.unsqueeze(-1)
    peak = z.amax(-1, keepdim=True)
    shifted = z - peak  # <= 0; -inf where a processor removed a token
    e = shifted.exp()
    total = e.sum(-1, dtype=acc)
    log_total = total.log()
    logprob = (z.gather(-1, chosen).to(acc) - peak.to(acc)).squeeze(-1) - log_total
    # H = log S - sum(e * shifted) / S; e * shifted is 0 * -inf = NaN for removed tokens, which add nothing.
    entropy = log_total - torch.where(e > 0, e * shifted, 0.0).sum(-1, dtype=acc) / total
    if z.shape[-1] > 1:
        top2 = shifted.topk(2, dim=-1).values.to(acc).exp()
        margin = (top2[..., 0] - top2[..., 1]) / total
    else:
        margin = torch.ones_like(total)
    rank = (z > z.gather(-1, chosen)).sum(-1).to(acc) + 1
    return {"logprob": logprob, "entropy": entropy, "margin": margin, "rank": rank}


def token_statistics_chunked(logits: torch.Tensor | Sequence[torch.Tensor], tokens: torch.Tensor, *,
                             max_elements: int = 1 << 20) -> dict[str, torch.Tensor]:
    """:func:`token_statistics` of ``[B, T, V]`` logits or of ``T`` step logits ``[B, V]`` (what ``generate``
    returns), a few positions at a time: each chunk of at most ``max_elements`` logits stays in cache, and no
    ``[B, T, V]`` copy of the steps is made (on CPU this is several times faster for a 50k vocabulary).
    """
    b, t = tokens.shape
    v = logits[0].shape[-1] if isinstance(logits, (list, tuple)) else logits.shape[-1]
    size = max(1, max_elements // max(1, b * v))
    parts = []
    for i in range(0, t, size):
        chunk = torch.stack(logits[i:i + size], 1) if isinstance(logits, (list, tuple)) else logits[:, i:i + size]
        parts.append(token_statistics(chunk, tokens[:, i:i + size]))
    return {k: torch.cat([p[k] for p in parts], 1) for k in TOKEN_FIELDS}


def sequence_statistics(stats: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Aggregate per-token ``stats`` over the positions where ``mask [B, T]`` is true; returns ``[B]`` tensors.

    A row with no scored token gets length 0 and NaN for the means (there is nothing to average).
    """
    m = mask.to(stats["logprob"].dtype)
    n = m.sum(-1)
    inf = torch.tensor(float("inf"), dtype=m.dtype, device=m.device)

    def mean(x: torch.Tensor) -> torch.Tensor:
        return (x * m).sum(-1) / n

    lp_sum = (stats["logprob"] * m).sum(-1)
    return {
        "length": n,
        "logprob_sum": lp_sum,
        "logprob_mean": lp_sum / n,
        "perplexity": torch.exp(-lp_sum / n),
        "entropy_mean": mean(stats["entropy"]),
        "entropy_max": torch.where(mask, stats["entropy"], -inf).amax(-1),
        "margin_mean": mean(stats["margin"]),
        "margin_min": torch.where(mask, stats["margin"], inf).amin(-1),
        "rank_mean": mean(stats["rank"]),
        "rank_max": torch.where(mask, stats["rank"], -inf).amax(-1),
        "top1_fraction": mean((stats["rank"] == 1).to(m.dtype)),
    }
