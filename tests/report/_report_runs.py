"""Run folders for the report tests, recorded through ``torchwitness.Run``: the record vocabulary (params, dataset,
model, metrics, eval) and the record shapes the other capabilities use (fairness.eval, privacy.epsilon, finding,
edit.certificate, drift.*, review.decision, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import rfc8785
import torch

import torchwitness as tw
from torchwitness.controls.drift import DriftMonitor, DriftReference
from torchwitness.controls.fairness import GroupEncoder, confusion_counts, evaluate
from torchwitness.controls.oversight import ReviewQueue
from torchwitness.ledger.writer import now_us
from torchwitness.probes.retained import expire_inputs

GROUPS = ("sex=Female", "sex=Male")


def fairness_eval(rng: np.random.Generator, epoch: int, gap: float, *, reps: int = 200) -> dict[str, Any]:
    """A fairness.eval record of simulated predictions, evaluated by the library (intervals and test included)."""
    n = 600
    g = rng.integers(0, 2, n)
    y = rng.binomial(1, 0.3, n)
    p = rng.binomial(1, np.where(g == 1, 0.3 + gap, 0.3)).astype(np.int64)
    enc = GroupEncoder(categories={"sex": tuple(name.split("=")[1] for name in GROUPS)})
    result = msgspec.to_builtins(evaluate(confusion_counts(g, y, p, 2), enc, reps=reps, epoch=epoch, split="test"))
    dpd = result["views"][0]["disparities"][0]["estimate"]
    result["gate"] = {"metric": "demographic_parity_difference", "view": "sex", "bound": "estimate",
                      "threshold": 0.1, "value": dpd, "violated": bool(dpd > 0.1), "policy": "warn-0.1",
                      "action": "warned" if dpd > 0.1 else "passed", "reason": "estimate against threshold"}
    return result


def certificate(edit: str, delta: float, half: float) -> dict[str, Any]:
    return {"format": "torchwitness-edit-certificate/1", "task": "classifier",
            "statistics": {"metrics": {"accuracy_delta": {"estimate": delta, "interval": [delta - half, delta + half],
                                                          "margin": -0.01}}},
            "decision": {"verdict": "pass" if delta - half > -0.01 else "fail"}}


def finding(rule: str, severity: str, location: str, message: str, step: int, *, final: bool = False
            ) -> dict[str, Any]:
    return {"rule_id": rule, "severity": severity, "phase": "backward", "location": location, "message": message,
            "count": 3 if final else 1, "first_step": step, "last_step": step + (20 if final else 0), "ranks": [0],
            "fingerprint": f"sha256:{rule}{location}", "details": {}, "final": final}


def make_rich_run(path: Path, key_dir: Path, *, worse: bool = False, seed: int = 0) -> Path:
    """A run with evidence for most Annex IV sections. ``worse``: larger parity gap, a new ERROR finding,
    more epsilon spent."""
    rng = np.random.default_rng(seed)
    config = {"model": "mlp-64-32", "dataset": "uci-adult", "lr": 1e-3, "epochs": 4, "batch_size": 256}
    with tw.Run(path, seed=seed, key_dir=key_dir, checkpoint_every=64) as run:
        run.log_params(config)
        for split, rows in (("train", 30162), ("test", 15060)):
            run.log_dataset("uci-adult", split=split, rows=rows, features=97, source="UCI Adult",
                            license="CC-BY-4.0", personal_data=True, special_categories=["race"],
                            digest="sha256:" + "ef" * 32)
        run.log_model("mlp-64-32", model=torch.nn.Sequential(torch.nn.Linear(97, 64), torch.nn.ReLU(),
                                                             torch.nn.Linear(64, 2)),
                      intended_use="Report tests only.", limitations="Simulated figures.", license="mit")
        run.record("data.datasheet", {
            "name": "adult-train", "rows": 30162, "columns": [], "content_digest": "sha256:" + "ab" * 32,
            "sensitive_attributes": ["sex", "race"], "label_distribution": {"0": 22654, "1": 7508},
            "coverage": [{"attributes": ["sex"], "groups": [
                {"name": "sex=Female", "n": 9782, "share": 0.3243, "positive_rate": 0.1137, "status": "ok"},
                {"name": "sex=Male", "n": 20380, "share": 0.6757, "positive_rate": 0.3138, "status": "ok"}]}],
            "missing_values": 0, "min_group_size": 30, "source": "UCI Adult"})
        run.record("privacy.config", {"mechanism": "dp-sgd", "accountant": "rdp", "noise_multiplier": 1.1,
                                      "max_grad_norm": 1.0, "sample_rate": 0.0085, "delta": 1e-5,
                                      "epsilon_budget": 8.0, "poisson_sampling": True, "opacus": "1.5"})
        run.record("consent.grant", {"subject": tw.Personal("subject-0001"), "purpose": "training", "version": "v2",
                                     "start": 1_700_000_000.0, "end": None})
        step = 0
        loss = 0.69
        for epoch in range(4):
            audits = []
            for _ in range(10):
                step += 10
                loss *= 0.97 + 0.01 * rng.random()
                audits.append({"step": step, "forwards": 1, "loss": loss, "grad_norm": 2.0 * loss + 0.1 * rng.random(),
                               "max_update_ratio": 1e-3})
            # Batched as the training auditor writes them (one record per several audited steps).
            run.record("train.audit", {"steps": audits}, step=step)
            eps = (1.5 if worse else 1.0) * 0.9 * (epoch + 1) ** 0.5
            run.record("privacy.epsilon", {"epsilon": eps, "delta": 1e-5, "steps": step, "accountant": "rdp",
                                           "noise_multiplier": 1.1, "epsilon_budget": 8.0}, step=step)
            run.log_metrics({"train_loss": loss, "test_accuracy": 0.80 + 0.01 * epoch}, step=step, epoch=epoch)
            run.record("fairness.eval", fairness_eval(rng, epoch, (0.2 if worse else 0.04) + 0.01 * epoch),
                       step=step)
        run.record("finding", finding("TW301", "warn", "optimizer", "Adam with L2 weight decay", 10), step=10)
        if worse:
            run.record("finding", finding("TW101", "error", "loss", "loss is nan at step 30", 30), step=30)
        run.record("finding", finding("TW301", "warn", "optimizer", "Adam with L2 weight decay", 10, final=True),
                   step=30)
        run.record("consent.access", {"epoch": 0, "purpose": "training", "at": 1_700_000_100.0, "rows_served": 30150,
                                      "rows_withheld": 12, "withheld": {"revoked": 12},
                                      "served_digest": "sha256:" + "cd" * 32, "newly_withheld": []})
        run.record("repro.check", {"ok": not worse, "compared": 40, "first_mismatch": 17 if worse else None,
                                   "mismatch": ["0.weight"] if worse else [], "factory": "demo:factory", "seed": 0})
        run.log_eval({"accuracy": 0.8312 - (0.02 if worse else 0)}, split="test", dataset="uci-adult", rows=15060)
        for edit, delta in (("quant-int8", -0.001), ("quant-int4", -0.03)):
            cert = certificate(edit, delta, 0.006)
            digest = run.ledger.put_blob(rfc8785.dumps(cert))
            run.record("edit.certificate", {
                "certificate": digest, "verdict": cert["decision"]["verdict"], "reasons": [], "task": "classifier",
                "policy": "balanced", "policy_digest": "sha256:" + "cd" * 32, "baseline_weights": "sha256:" + "01" * 32,
                "subject_weights": "sha256:" + "02" * 32, "merkle_root": "sha256:" + "03" * 32,
                "metrics": {"accuracy_delta": delta}, "edit": edit, "action": None})
        # Deployment records come from the deployment code itself, so the reports read the shapes it writes:
        # serving, a drift monitor whose last three windows see ages 8 years higher, one reviewer's override.
        serve = run.serve(torch.nn.Linear(3, 2), retain_inputs=True, retain_seconds=30 * 86400)
        for _ in range(5):
            serve(torch.from_numpy(rng.normal(size=(4, 3)).astype(np.float32)))
        serve.close()
        expire_inputs(run, at_us=now_us() + 31 * 86400 * 10**6)  # a month later
        monitor = DriftMonitor(DriftReference.from_arrays({"age": rng.normal(40, 10, 2000)}), run=run, window=200,
                               psi_threshold=0.25)
        for w in range(6):
            monitor.update({"age": rng.normal(48 if w >= 3 else 40, 10, 200)})
        queue = ReviewQueue.for_run(run.path)
        queue.submit(serve.decision_id(3), "low_confidence", prediction=1, confidence=0.55)
        queue.decide(serve.decision_id(3), "override", reviewer="reviewer-a", label=0)
        queue.record_pending(run.record)
        queue.close()
        run.record("erasure.request", {"note": "unmapped kind, ignored by reports"})
    return Path(path)


def make_plain_run(path: Path, key_dir: Path) -> Path:
    """A run with the envelope records and one evaluation: the sections without them must say so."""
    with tw.Run(path, config={"model": "tiny"}, seed=1, key_dir=key_dir) as run:
        run.log_eval({"accuracy": 0.5}, rows=10)
    return Path(path)
