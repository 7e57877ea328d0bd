"""Where the damage is: every subject layer compared with the *baseline's same layer*, plus invariants.

Per weight matrix (parameters of two or more dimensions, viewed as ``[out, -1]``):

- ``weight_error``: ``||W_s - W_b||_F / ||W_b||_F``;
- ``spectral_ratio``: ``sigma_max(W_s) / sigma_max(W_b)`` by power iteration from the same start vector;
- Marchenko-Pastur outliers: singular values above the bulk edge ``sigma (sqrt(m) + sqrt(n))`` of a random
  matrix with the *baseline's* entry scale ``sigma``, counted in both models from the eigenvalues of the smaller
  Gram matrix (matrices up to ``_MP_MAX`` entries; larger ones report null rather than pay for the
  decomposition);
- ``activation_drift``: ``var(out_s) / var(out_b) - 1`` of each module's output on calibration inputs.

Matrices the edit left bit-identical are reported as such without iterating. Layers are ranked by
``damage = max(weight_error, |1 - spectral_ratio|)``: both are local to the layer, whereas activation drift is
inherited from every layer upstream and would blame innocent successors.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from torchwitness.certify.evaluate import logits_of
from torchwitness.certify.external import effective_tensors
from torchwitness.certify.policy import DiagnosticLimits

_POWER_ITERS = 60
_MP_MAX = 2_000_000


def _matrix(t: torch.Tensor) -> torch.Tensor:
    return t.detach().float().reshape(t.shape[0], -1)


def spectral_norm(w: torch.Tensor, v0: torch.Tensor, iters: int = _POWER_ITERS) -> float:
    """Largest singular value by power iteration from ``v0``, stopping once it changes by < 1e-7 (relative)."""
    v = v0 / v0.norm()
    sigma, previous = torch.zeros((), device=w.device), -1.0
    for i in range(iters):
        u = w @ v
        sigma = u.norm()
        v = w.t() @ (u / sigma.clamp_min(1e-30))
        v = v / v.norm().clamp_min(1e-30)
        if i % 10 == 9:  # one host sync every ten steps, not every step
            current = float(sigma)
            if current == 0.0 or abs(current - previous) <= 1e-7 * current:
                break
            previous = current
    return float(sigma)


def spectral_norms(a: torch.Tensor, b: torch.Tensor, iters: int = _POWER_ITERS,
                   sigma_a: float | None = None) -> tuple[float, float]:
    """Largest singular values of two same-shape matrices, by power iteration from one seeded vector
    (``sigma_a``: ``a``'s, already known from an earlier call with the same ``a``)."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    v0 = torch.randn(a.shape[1], generator=gen).to(a.device)
    return (spectral_norm(a, v0, iters) if sigma_a is None else sigma_a), spectral_norm(b, v0, iters)


def _count_above(w: torch.Tensor, edge: float) -> int:
    """Singular values of ``w`` above ``edge``, from the eigenvalues of the smaller Gram matrix."""
    gram = w.t() @ w if w.shape[0] >= w.shape[1] else w @ w.t()
    return int((torch.linalg.eigvalsh(gram) > edge * edge).sum())


def mp_outliers(base: torch.Tensor, subj: torch.Tensor | None,
                count_b: int | None = None) -> tuple[int, int] | None:
    """Singular values above the baseline's Marchenko-Pastur bulk edge, in baseline and subject.

    ``subj=None`` means the subject's matrix is identical to the baseline's; ``count_b`` is the baseline's count
    when an earlier call already made it.
    """
    if base.numel() > _MP_MAX or min(base.shape) < 2:
        return None
    m, n = base.shape
    edge = float(base.std()) * (math.sqrt(m) + math.sqrt(n))
    if count_b is None:
        count_b = _count_above(base, edge)
    return count_b, count_b if subj is None else _count_above(subj, edge)


class _BaselineMemo:
    """Per baseline (keyed by its model digest): each layer's outlier count and spectral norm, and its activation
    variances per calibration input, so a second subject pays only for its own side. Four baselines at most."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def get(self, key: str | None) -> dict[str, Any]:
        if key is None:
            return {}
        entry = self._entries.setdefault(key, {})
        self._entries.move_to_end(key)
        while len(self._entries) > 4:
            self._entries.popitem(last=False)
        return entry

    def clear(self) -> None:
        self._entries.clear()


baseline_memo = _BaselineMemo()


def tied_groups(model: nn.Module) -> list[list[str]]:
    """Names that share one tensor (e.g. a language model's input and output embeddings)."""
    groups: dict[int, list[str]] = {}
    for name, (key, _t) in effective_tensors(model, parameters_only=True).items():
        groups.setdefault(key, []).append(name)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def invariants(baseline: nn.Module, subject: nn.Module) -> tuple[dict[str, Any], list[str]]:
    """Shapes, dtypes, finiteness, tied weights and parameter counts; returns the record and the violations.

    Both models are seen as their forwards use them (:func:`.external.effective_tensors`): a pruned weight as
    its mask leaves it, a torchao weight dequantized, under the unedited names.
    """
    sb = {k: t for k, (_, t) in effective_tensors(baseline).items()}
    ss = {k: t for k, (_, t) in effective_tensors(subject).items()}
    bad: list[str] = []
    if sb.keys() != ss.keys():
        missing, extra = sorted(sb.keys() - ss.keys()), sorted(ss.keys() - sb.keys())
        bad.append(f"tensor names differ (missing {missing[:3]}, extra {extra[:3]})")
    common = sorted(sb.keys() & ss.keys())
    bad += [f"{k}: shape {list(ss[k].shape)} != baseline {list(sb[k].shape)}" for k in common
            if ss[k].shape != sb[k].shape]
    bad += [f"{k}: dtype {ss[k].dtype} != baseline {sb[k].dtype}" for k in common if ss[k].dtype != sb[k].dtype]
    bad += [f"{k}: non-finite values" for k in common
            if ss[k].is_floating_point() and not bool(torch.isfinite(ss[k]).all())]
    tb, ts = tied_groups(baseline), tied_groups(subject)
    if tb != ts:
        bad.append(f"tied weights differ: baseline {tb}, subject {ts}")
    count_b = sum(p.numel() for p in baseline.parameters())
    count_s = sum(p.numel() for p in subject.parameters())
    if count_b != count_s:
        bad.append(f"parameter count {count_s} != baseline {count_b}")
    record = {"tensors": len(sb), "parameters": count_b, "tied": tb, "violations": bad}
    return record, bad


@torch.no_grad()
def activation_variances(model: nn.Module, inputs: torch.Tensor) -> dict[str, float]:
    """Output variance of every module that owns parameters, on ``inputs`` (one host transfer)."""
    names, values, handles = [], [], []

    def hook(name: str):
        def fn(_mod: nn.Module, _inp: Any, out: Any) -> None:
            t = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() > 1:
                names.append(name)
                values.append(t.detach().double().var())
        return fn

    for name, mod in model.named_modules():
        if name and any(True for _ in mod.parameters(recurse=False)):
            handles.append(mod.register_forward_hook(hook(name)))
    try:
        logits_of(model, inputs)
    finally:
        for h in handles:
            h.remove()
    host = torch.stack(values).cpu().tolist() if values else []
    out: dict[str, float] = {}
    for n, v in zip(names, host, strict=True):
        out.setdefault(n, v)  # a module called twice keeps its first call
    return out


@torch.no_grad()  # not inference_mode: torchao's tensors cannot be detached in it
def layer_diagnostics(baseline: nn.Module, subject: nn.Module, calibration: torch.Tensor | None,
                      limits: DiagnosticLimits, baseline_key: str | None = None
                      ) -> tuple[list[dict[str, Any]], list[str]]:
    """Per-layer diagnostics ranked by damage (worst first), and the limits they break.

    With ``baseline_key`` (the baseline's model digest) the baseline's side is remembered in
    :data:`baseline_memo` and reused by the next subject.
    """
    memo = baseline_memo.get(baseline_key)
    pb = effective_tensors(baseline, parameters_only=True)
    ps = {k: t for k, (_, t) in effective_tensors(subject, parameters_only=True).items()}
    drift: dict[str, float] = {}
    if calibration is not None:
        calib_key = ("activations", calibration.shape, hashlib.sha256(calibration.cpu().numpy().tobytes()).digest())
        vb = memo.get(calib_key) or activation_variances(baseline, calibration)
        memo[calib_key] = vb
        vs = activation_variances(subject, calibration)
        drift = {k: (vs[k] / vb[k] - 1.0 if vb[k] > 0 else (0.0 if vs[k] == 0 else math.inf))
                 for k in vb.keys() & vs.keys()}
    layers, seen = [], set()
    for name, (key, wb) in pb.items():
        ws = ps.get(name)
        if wb.dim() < 2 or ws is None or ws.shape != wb.shape or key in seen:
            continue
        seen.add(key)
        mb, ms = _matrix(wb), _matrix(ws)
        known = memo.setdefault(name, {})
        if torch.equal(mb, ms):  # untouched by the edit (e.g. embeddings): nothing to iterate on
            err, ratio, mp = 0.0, 1.0, mp_outliers(mb, None, known.get("outliers"))
        elif not bool(torch.isfinite(ms).all()):  # the invariants fail it; rank it first, skip the linear algebra
            err, ratio, mp = math.inf, math.nan, None
        else:
            norm_b = float(mb.norm())
            err = float((ms - mb).norm()) / norm_b if norm_b > 0 else float(ms.norm() > 0)
            sb, ss = spectral_norms(mb, ms, sigma_a=known.get("sigma"))
            known["sigma"] = sb
            ratio = ss / sb if sb > 0 else (1.0 if ss == 0 else math.inf)
            mp = mp_outliers(mb, ms, known.get("outliers"))
        if mp is not None:
            known["outliers"] = mp[0]
        module = name.rsplit(".", 1)[0] if "." in name else name
        layers.append({"layer": name, "shape": list(wb.shape), "weight_error": err, "spectral_ratio": ratio,
                       "outliers_baseline": None if mp is None else mp[0],
                       "outliers_subject": None if mp is None else mp[1],
                       "activation_drift": drift.get(module),
                       "damage": math.inf if math.isnan(ratio) else max(err, abs(1.0 - ratio))})
    layers.sort(key=lambda r: (-r["damage"], r["layer"]))
    return layers, _limit_failures(layers, limits)


def _limit_failures(layers: list[dict[str, Any]], limits: DiagnosticLimits) -> list[str]:
    out = []
    lo, hi = limits.spectral_ratio
    for r in layers:
        name = r["layer"]
        if r["weight_error"] > limits.max_weight_error:
            out.append(f"{name}: weight error {r['weight_error']:.3g} > {limits.max_weight_error:g}")
        if not lo <= r["spectral_ratio"] <= hi:  # NaN (non-finite weights) falls outside too
            out.append(f"{name}: spectral norm ratio {r['spectral_ratio']:.3g} outside [{lo:g}, {hi:g}]")
        if r["outliers_baseline"] is not None and \
                r["outliers_subject"] - r["outliers_baseline"] > limits.max_new_outliers:
            out.append(f"{name}: {r['outliers_subject'] - r['outliers_baseline']} new spectral outliers "
                       f"> {limits.max_new_outliers}")
        drift = r["activation_drift"]
        if drift is not None and not abs(drift) <= limits.max_activation_drift:
            out.append(f"{name}: activation variance drift {drift:+.3g} beyond ±{limits.max_activation_drift:g}")
    return out
