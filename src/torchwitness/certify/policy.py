"""Certification policies: named tiers shipped as JSON data files, or the user's own file.

A policy declares the non-inferiority margins of each metric and whether it gates, the evidence required
(windows, tokens, replicates), the familywise error rate ``alpha`` (Holm across gated metrics) and the
diagnostic limits. Its digest (SHA-256 of the RFC 8785 form) goes into every certificate, and the certificate
embeds the whole document so a verifier re-derives the verdict from it.

>>> p = load_policy("balanced")
>>> p.name, p.metrics["ppl_ratio"].max, p.digest.startswith("sha256:")
('balanced', 1.05, True)
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import rfc8785

from torchwitness.errors import InputError
from torchwitness.jsonfile import read_json

BUILTIN = ("balanced", "strict", "lenient")


class Margin(msgspec.Struct, forbid_unknown_fields=True):
    """A metric's non-inferiority margin: at most ``max`` or at least ``min``; ``gate`` makes it decide."""

    max: float | None = None
    min: float | None = None
    gate: bool = True


class DiagnosticLimits(msgspec.Struct, forbid_unknown_fields=True):
    gate: bool = False
    max_weight_error: float = 0.25
    spectral_ratio: tuple[float, float] = (0.8, 1.25)
    max_new_outliers: int = 4
    max_activation_drift: float = 0.5
    calibration_windows: int = 4


class Policy(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    version: int
    alpha: float
    confidence: float
    replicates: int
    seed: int
    windows: int
    window_length: int
    cluster_size: int
    min_windows: int
    min_tokens: int
    metrics: dict[str, Margin]
    diagnostics: DiagnosticLimits = msgspec.field(default_factory=DiagnosticLimits)
    description: str = ""

    @property
    def document(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(rfc8785.dumps(self.document)).hexdigest()


def policy_from_document(doc: Any, where: str = "policy") -> Policy:
    """Validate a policy document; raise ``InputError`` naming the first problem."""
    try:
        policy = msgspec.convert(doc, Policy)
    except msgspec.ValidationError as e:
        raise InputError(f"{where}: {e}") from None
    if not 0 < policy.alpha < 0.5 or not 0.5 < policy.confidence < 1:
        raise InputError(f"{where}: alpha must lie in (0, 0.5) and confidence in (0.5, 1)")
    if policy.replicates < 100 or policy.min_windows < 2 or policy.windows < 2 or policy.window_length < 1:
        raise InputError(f"{where}: need replicates >= 100, windows and min_windows >= 2, window_length >= 1")
    for name, margin in policy.metrics.items():
        if (margin.max is None) == (margin.min is None):
            raise InputError(f"{where}: metric {name!r} needs exactly one of 'max' or 'min'")
    return policy


def load_policy(policy: str | Path | Policy = "balanced") -> Policy:
    """A built-in tier by name (``balanced``, ``strict``, ``lenient``), a JSON file, or a ``Policy``.

    A policy of one's own may not carry a built-in tier's name: a certificate saying "policy balanced" must
    mean the margins everyone reads under that name (verify-cert checks it too)."""
    if isinstance(policy, Policy):
        return _own_name(policy, "policy")
    if isinstance(policy, str) and policy in BUILTIN:
        return _builtin(policy)
    path = Path(policy)
    if not path.exists():
        raise InputError(f"no such policy {policy!r}: use one of {', '.join(BUILTIN)} or a JSON file")
    return _own_name(policy_from_document(read_json(path, "policy file"), str(path)), f"policy file {path}")


def _builtin(name: str) -> Policy:
    text = resources.files("torchwitness.certify").joinpath(f"policies/{name}.json").read_text()
    return policy_from_document(json.loads(text), name)


def impersonates(policy: Policy) -> bool:
    """The policy carries a built-in tier's name without being that tier."""
    return policy.name in BUILTIN and policy.digest != _builtin(policy.name).digest


def _own_name(policy: Policy, where: str) -> Policy:
    if impersonates(policy):
        raise InputError(f"{where} is named {policy.name!r} but differs from the built-in {policy.name} policy: "
                         "give it a name of its own")
    return policy
