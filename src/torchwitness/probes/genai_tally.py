"""Usage and token statistics of ``llm.generation`` records as GenAI and ``torchwitness.llm.*`` span attributes."""

from __future__ import annotations

import math
from typing import Any

from torchwitness.ledger.encoding import decode_float


class GenerationTally:
    """GenAI and ``torchwitness.llm.*`` span attributes of one or more ``llm.generation`` records.

    Usage adds up; token statistics are token-weighted over all requests (perplexity from the summed logprobs).
    """

    def __init__(self) -> None:
        self._attrs: dict[str, Any] = {}
        self._tokens = 0
        self._sums = dict.fromkeys(("logprob_sum", "entropy_mean", "margin_mean", "rank_mean", "top1_fraction"),
                                   0.0)
        self._entropy_max = float("-inf")
        self._margin_min = float("inf")

    def add(self, data: dict[str, Any]) -> None:
        a = self._attrs
        a["gen_ai.operation.name"] = "chat"
        a["gen_ai.provider.name"] = data["provider"]
        a["gen_ai.usage.input_tokens"] = a.get("gen_ai.usage.input_tokens", 0) + data["input_tokens"]
        a["gen_ai.usage.output_tokens"] = a.get("gen_ai.usage.output_tokens", 0) + data["output_tokens"]
        if data["stop_reason"] is not None:
            a["gen_ai.response.finish_reasons"] = [*a.get("gen_ai.response.finish_reasons", []), data["stop_reason"]]
        if data["model"]:
            a.setdefault("gen_ai.request.model", data["model"])
            a["gen_ai.response.model"] = data["model"]
        a["gen_ai.response.id"] = data["request"]
        for key, value in data["sampling"].items():
            if key in ("temperature", "top_k", "top_p"):
                a.setdefault(f"gen_ai.request.{key}", value)
            elif key == "max_new_tokens":
                a.setdefault("gen_ai.request.max_tokens", value)
        stats = {k: decode_float(v) for k, v in data["stats"].items()}
        n = int(stats["length"])
        if not n:
            return
        self._tokens += n
        self._sums["logprob_sum"] += stats["logprob_sum"]
        for key in ("entropy_mean", "margin_mean", "rank_mean", "top1_fraction"):
            self._sums[key] += stats[key] * n
        self._entropy_max = max(self._entropy_max, stats["entropy_max"])
        self._margin_min = min(self._margin_min, stats["margin_min"])
        t = self._tokens
        a.update({
            "torchwitness.llm.distribution": data["distribution"],
            "torchwitness.llm.tokens": t,
            "torchwitness.llm.logprob_mean": self._sums["logprob_sum"] / t,
            "torchwitness.llm.perplexity": math.exp(min(-self._sums["logprob_sum"] / t, 700.0)),
            "torchwitness.llm.entropy_mean": self._sums["entropy_mean"] / t,
            "torchwitness.llm.entropy_max": self._entropy_max,
            "torchwitness.llm.margin_mean": self._sums["margin_mean"] / t,
            "torchwitness.llm.margin_min": self._margin_min,
            "torchwitness.llm.rank_mean": self._sums["rank_mean"] / t,
            "torchwitness.llm.top1_fraction": self._sums["top1_fraction"] / t,
        })

    def attributes(self) -> dict[str, Any]:
        return dict(self._attrs)
