"""``certify``: compare a subject with its baseline, decide, sign, record, and roll back a failed edit.

Example (a causal LM on a token stream; ``subject`` may be omitted when an ``edit`` makes it)::

    import torchwitness as tw
    from torchwitness.certify import certify

    with tw.Run("runs/quant") as run:
        result = certify(model, edit="quant-int8", tokens=stream, policy="balanced", run=run, apply=True)
    print(result.verdict, result.reasons)   # a failed edit leaves ``model`` bit-for-bit as it was
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import torchwitness
from torchwitness.certify.certificate import FORMAT, cert_digest, rows_root, sign, to_bytes
from torchwitness.certify.diagnostics import invariants, layer_diagnostics
from torchwitness.certify.edits import Edit, EditSession, apply_edit, weights_digest
from torchwitness.certify.evaluate import evaluate_classifier, evaluate_lm, vocabulary_size
from torchwitness.certify.policy import Policy, load_policy
from torchwitness.certify.runtime import model_digest, threads_for
from torchwitness.certify.sources import Source, load_source
from torchwitness.certify.stats import compute_statistics, decide
from torchwitness.certify.windows import make_windows, stream_digest, window_count
from torchwitness.errors import InputError
from torchwitness.ledger.encoding import snapshot
from torchwitness.ledger.keys import SigningKey

_MAX_THREADS = 4096  # torch's own setter overflows far above any machine's core count


@dataclass
class CertifyResult:
    certificate: dict[str, Any]
    digest: str
    seq: int | None = None
    action: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return self.certificate["decision"]["verdict"]

    @property
    def reasons(self) -> list[str]:
        return self.certificate["decision"]["reasons"]

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


def _model_info(src: Source, model: nn.Module, weights: str, edit: Edit | None = None) -> dict[str, Any]:
    info = {"weights": weights, "parameters": sum(p.numel() for p in model.parameters()),
            "source": src.description, "tokenizer": src.tokenizer_digest}
    if edit is not None:
        info["edit"] = edit.describe()
    return info


def _signing_key(ledger: Any, key_dir: str | Path | None) -> SigningKey:
    directory = Path(key_dir) if key_dir else None
    if ledger is None:
        return SigningKey.load_or_create(directory)
    return SigningKey.find(ledger.public_key.fingerprint, directory)


def certify(baseline: nn.Module | Source | str | Path, subject: nn.Module | Source | str | Path | None = None, *,
            edit: str | Edit | Callable[[nn.Module], Any] | None = None, tokens: np.ndarray | None = None,
            inputs: torch.Tensor | None = None,
            labels: torch.Tensor | None = None, policy: str | Path | Policy = "balanced", run: Any = None,
            apply: bool = False, windows: int | None = None, window_length: int | None = None,
            data_source: str = "in-memory", factory: str | None = None, key_dir: str | Path | None = None,
            batch_size: int | None = None, threads: int | None = None,
            progress: Callable[[int], None] | None = None) -> CertifyResult:
    """Certify ``subject`` (or ``edit`` applied to ``baseline``) against ``baseline`` under ``policy``.

    ``edit`` is a name (see :class:`.edits.Edit`: built-in RTN and pruning, ``torchao-int8``/``torchao-int4``,
    ``prune-l1-P``, ``lora:ADAPTER``) or a function that edits the model in place, e.g.
    ``lambda m: torchao.quantization.quantize_(m, Int8WeightOnlyConfig())``.
    Causal LMs take ``tokens`` (a 1-D token stream, windowed deterministically); classifiers take ``inputs``
    and ``labels``. With ``run`` (a ``Run`` or ``Ledger``) the certificate is stored as a blob and an
    ``edit.certificate`` record, signed with the run's key; otherwise with the user's default key.
    ``apply=True`` edits ``baseline`` in place and restores it bit-for-bit when the verdict fails.
    ``threads`` fixes torch's thread count for the call (default: the free cores, see :mod:`.runtime`);
    ``batch_size`` defaults to what keeps one batch's logits small (:func:`.evaluate.batch_size_for`).
    """
    if (tokens is None) == (inputs is None):
        raise InputError("pass either tokens (causal LM) or inputs and labels (classifier)")
    if inputs is not None and labels is None:
        raise InputError("a classifier needs labels beside its inputs")
    if (subject is None) == (edit is None):
        raise InputError("pass either a subject model or an edit to apply to the baseline")
    if apply and edit is None:
        raise InputError("apply=True needs an edit")
    check_counts(windows=windows, window_length=window_length, threads=threads, batch_size=batch_size)
    pol = load_policy(policy)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    base_src = load_source(baseline, factory=factory)
    parsed = Edit.parse(edit) if edit is not None else None
    session = None
    if parsed is None:
        subj_src = load_source(subject, factory=factory)
        reference, edited = base_src.model, subj_src.model
    elif apply:
        reference = copy.deepcopy(base_src.model)
        session = EditSession(base_src.model)
        edited = base_src.model
        subj_src = Source(edited, f"{base_src.description} + {parsed.spec}", base_src.tokenizer,
                          base_src.tokenizer_digest)
    else:
        reference, edited = base_src.model, copy.deepcopy(base_src.model)
        subj_src = Source(edited, f"{base_src.description} + {parsed.spec}", base_src.tokenizer,
                          base_src.tokenizer_digest)
    modes = (reference.training, edited.training)
    try:
        if parsed is not None:
            apply_edit(edited, parsed)
        reference.eval()
        edited.eval()
        timings["prepare_s"] = time.perf_counter() - t0
        with threads_for(threads) as machine:
            cert = _evaluate(base_src, subj_src, reference, edited, parsed, pol, tokens=tokens, inputs=inputs,
                             labels=labels, windows=windows, window_length=window_length,
                             data_source=data_source, batch_size=batch_size, progress=progress, timings=timings,
                             machine=machine)
    except BaseException:
        if session is not None:
            session.rollback()
        raise
    finally:
        reference.train(modes[0])
        edited.train(modes[1])
    action = None
    if session is not None:
        if cert["decision"]["verdict"] == "pass":
            session.commit()
            action = "kept"
        else:
            session.rollback()
            action = "rolled-back"
    ledger = getattr(run, "ledger", run)
    if ledger is not None:
        cert["run"] = {"id": ledger.run_id, "origin": ledger.origin}
    cert = sign(cert, _signing_key(ledger, key_dir))
    digest = cert_digest(cert)
    seq = None
    if ledger is not None:
        ledger.put_blob(to_bytes(cert))
        metrics = {k: v["estimate"] for k, v in cert["statistics"]["metrics"].items() if "estimate" in v}
        seq = ledger.append("edit.certificate", {
            "certificate": digest, "verdict": cert["decision"]["verdict"], "reasons": cert["decision"]["reasons"],
            "task": cert["task"], "policy": pol.name, "policy_digest": pol.digest,
            "baseline_weights": cert["baseline"]["weights"], "subject_weights": cert["subject"]["weights"],
            "merkle_root": cert["statistics"]["merkle_root"], "metrics": metrics,
            "edit": parsed.spec if parsed else None, "action": action})
    timings["total_s"] = time.perf_counter() - t0
    return CertifyResult(cert, digest, seq, action, timings)


def check_counts(**counts: int | None) -> None:
    """Each count given (windows, window_length, threads, batch_size) is at least 1; threads at most 4096."""
    for name, value in counts.items():
        most = _MAX_THREADS if name == "threads" else None
        if value is not None and (value < 1 or (most is not None and value > most)):
            label = name.replace("_", "-")
            raise InputError(f"--{label} must be at least 1{f' and at most {most}' if most else ''}, not {value}")


def check_ids(stream: np.ndarray, model: nn.Module, source: str) -> None:
    """Token ids the model's embedding cannot look up fail here, named, not as an IndexError inside it."""
    vocab = vocabulary_size(model)
    if stream.ndim != 1 or not len(stream):
        raise InputError(f"data {source}: token ids must be a non-empty 1-D sequence, not shape {stream.shape}")
    lo, hi = int(stream.min()), int(stream.max())
    if lo < 0 or (vocab is not None and hi >= vocab):
        raise InputError(f"data {source}: token ids span [{lo}, {hi}], outside the model's vocabulary "
                         f"[0, {vocab - 1 if vocab else '?'}]")


def _evaluate(base_src: Source, subj_src: Source, reference: nn.Module, edited: nn.Module, edit: Edit | None,
              pol: Policy, *, tokens, inputs, labels, windows, window_length, data_source, batch_size, progress,
              timings, machine) -> dict[str, Any]:
    t = time.perf_counter()
    weights = {"baseline": weights_digest(reference)}
    weights["subject"] = weights["baseline"] if edited is reference else weights_digest(edited)
    baseline_key = model_digest(reference, weights["baseline"])
    if tokens is not None:
        task = "causal-lm"
        stream = np.asarray(tokens, dtype=np.int64)
        check_ids(stream, reference, data_source)
        length = window_length or pol.window_length
        win = make_windows(stream, length=length, count=window_count(len(stream), length, windows or pol.windows))
        rows = evaluate_lm(reference, edited, win.tokens, batch_size=batch_size, progress=progress,
                           baseline_digest=baseline_key)
        for row, offset in zip(rows, win.offsets, strict=True):
            row["offset"] = int(offset)
        calibration = torch.from_numpy(win.tokens[:pol.diagnostics.calibration_windows, :-1])
        data = {"digest": win.data_digest, "source": data_source, "windows": win.describe()}
    else:
        task = "classifier"
        x, y = torch.as_tensor(inputs), torch.as_tensor(labels)
        if len(x) != len(y):
            raise InputError(f"{len(x)} inputs but {len(y)} labels")
        rows = evaluate_classifier(reference, edited, x, y, cluster_size=pol.cluster_size)
        calibration = x[:pol.cluster_size * pol.diagnostics.calibration_windows]
        digest = stream_digest(np.concatenate([x.detach().cpu().numpy().astype("<f8").ravel().view("<i8"),
                                               y.detach().cpu().numpy().astype("<i8").ravel()]))
        data = {"digest": digest, "source": data_source,
                "clusters": {"count": len(rows), "size": pol.cluster_size, "examples": len(y),
                             "selection": "consecutive blocks in the given order"}}
    timings["evaluate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    inv, violations = invariants(reference, edited)
    device = next(reference.parameters()).device
    layers, failures = layer_diagnostics(reference, edited, calibration.to(device), pol.diagnostics, baseline_key)
    timings["diagnostics_s"] = time.perf_counter() - t
    t = time.perf_counter()
    stats = compute_statistics(task, rows, pol)
    timings["statistics_s"] = time.perf_counter() - t
    verdict, reasons, rejected = decide(stats, pol, invariants=violations, diagnostic_failures=failures)
    cert = {
        "format": FORMAT, "task": task, "created_us": time.time_ns() // 1000,
        "baseline": _model_info(base_src, reference, weights["baseline"]),
        "subject": _model_info(subj_src, edited, weights["subject"], edit),
        "data": data, "policy": {"name": pol.name, "digest": pol.digest, "document": pol.document},
        "statistics": {"merkle_root": rows_root(rows), "rows": rows, **stats},
        "diagnostics": {"layers": layers, "invariants": inv, "failures": failures,
                        "gate": pol.diagnostics.gate},
        "decision": {"verdict": verdict, "reasons": reasons, "holm": rejected, "alpha": pol.alpha},
        "environment": {"torchwitness": torchwitness.__version__, "torch": torch.__version__,
                        "numpy": np.__version__, "device": str(device), **machine},
        "run": None,
    }
    return snapshot(cert)[0]  # tags non-finite numbers (e.g. an infinite drift) so RFC 8785 accepts them
