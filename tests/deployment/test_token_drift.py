"""Token-statistics drift reuses the generic monitor: a perplexity shift alerts, calm traffic does not."""

from __future__ import annotations

import numpy as np

import torchwitness as tw
from torchwitness.controls.drift import DriftMonitor
from torchwitness.controls.drift.tokens import token_features, token_reference
from torchwitness.ledger import iter_records


def _generations(rng: np.random.Generator, n: int, ppl_shift: float = 0.0) -> list[dict]:
    ent = rng.gamma(4.0, 0.5, n)
    return [{"stats": {"entropy_mean": float(e), "margin_mean": float(rng.beta(2, 5)),
                       "perplexity": float(np.exp(e / 2) + ppl_shift), "length": int(rng.integers(8, 64))}}
            for e in ent]


def test_perplexity_shift_alerts_through_the_shared_monitor(tmp_path) -> None:
    rng = np.random.default_rng(0)
    with tw.Run(tmp_path / "run") as run:
        monitor = DriftMonitor(token_reference(_generations(rng, 2000)), run=run, window=200)
        calm = [monitor.update(token_features(_generations(rng, 200))) for _ in range(10)]
        shifted = monitor.update(token_features(_generations(rng, 200, ppl_shift=3.0)))
    assert not any(calm)
    assert {a.feature for a in shifted} >= {"perplexity"}
    alerts = [r["data"] for r in iter_records(tmp_path / "run", kinds={"drift.alert"})]
    assert alerts and alerts[0]["window"] == 10


def test_non_finite_requests_are_left_out() -> None:
    gens = [{"stats": {"entropy_mean": 1.0, "margin_mean": 0.5, "perplexity": {"$float": "Infinity"},
                       "length": 3}},
            {"stats": {"entropy_mean": 1.0, "margin_mean": 0.5, "perplexity": 4.0, "length": 3}}]
    assert len(token_features(gens)["perplexity"]) == 1
