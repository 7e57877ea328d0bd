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

import torch

TOKEN_FIELDS = ("logprob", "entropy", "margin", "rank")
SEQUENCE_FIELDS = ("length", "logprob_sum", "logprob_mean", "perplexity", "entropy_mean", "entropy_max",
                   "margin_mean", "margin_min", "rank_mean", "rank_max", "top1_fraction")


def token_statistics(logits: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-token ``logprob``, ``entropy``, ``margin`` and ``rank`` for ``logits [B, T, V]`` and ``tokens [B, T]``.

    Computed in float64 on the logits' device (float32 on Apple MPS, which has no float64): a float32
    log-softmax over a 50k vocabulary is off by ~2e-5 nats, more than the statistics are meant to resolve.
    Returns ``[B, T]`` tensors.
    """
    z = logits.float() if logits.device.type == "mps" else logits.double()
    logp = torch.log_softmax(z, dim=-1)
    chosen = tokens.unsqueeze(-1)
    logprob = logp.gather(-1, chosen).squeeze(-1)
    p = logp.exp()
    # xlogy gives 0 where p == 0, so masked-out (-inf) logits add nothing instead of NaN.
    entropy = -torch.special.xlogy(p, p).sum(-1)
    top2 = p.topk(2, dim=-1).values if p.shape[-1] > 1 else torch.cat([p, torch.zeros_like(p)], -1)
    margin = top2[..., 0] - top2[..., 1]
    rank = (z > z.gather(-1, chosen)).sum(-1).to(z.dtype) + 1
    return {"logprob": logprob, "entropy": entropy, "margin": margin, "rank": rank}


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
