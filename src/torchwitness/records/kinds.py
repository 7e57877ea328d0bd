"""Schemas of the vocabulary kinds (and of the other documented kinds reports read). No torch import.

Values written as numbers may arrive as ``{"$array": ...}`` (a 0-d tensor handed to ``log_metrics``, copied
without a host sync) or ``{"$float": "nan"}``: the fields that take numbers are typed ``Any`` for that reason and
documented as numbers.
"""

from __future__ import annotations

from typing import Any

import msgspec

from torchwitness.ledger.schema import register_kind


class Params(msgspec.Struct, forbid_unknown_fields=True):
    """``run.log_params``: hyperparameters and settings, flattened to dotted names (``optimizer.lr``)."""

    params: dict[str, Any]


class Metrics(msgspec.Struct, forbid_unknown_fields=True):
    """``run.log_metrics``: named numbers at one step (the record's ``step``); ``epoch`` when the caller gave it."""

    metrics: dict[str, Any]
    epoch: int | None = None


class Dataset(msgspec.Struct, forbid_unknown_fields=True):
    """``run.log_dataset``: a data set the run used, and in which role (``split``).

    ``digest`` is ``sha256:<hex>`` of the content (see :mod:`torchwitness.records.describe`); ``personal_data``
    is None when not stated; ``special_categories`` names GDPR Art. 9 categories it holds (e.g. ``"health"``).
    """

    name: str
    split: str | None = None
    source: str | None = None
    digest: str | None = None
    rows: int | None = None
    features: int | None = None
    feature_names: list[str] | None = None
    license: str | None = None
    personal_data: bool | None = None
    special_categories: list[str] = []


class ModelFile(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    digest: str
    bytes: int


class Model(msgspec.Struct, forbid_unknown_fields=True):
    """``run.log_model``: what was trained (architecture, size, configuration), its files with digests, and what
    the provider states it is for and where it falls short."""

    name: str
    files: list[ModelFile] = []
    architecture: str | None = None
    parameters: int | None = None
    config: dict[str, Any] | None = None
    version: str | None = None
    intended_use: str | None = None
    limitations: str | None = None
    license: str | None = None


class Eval(msgspec.Struct, forbid_unknown_fields=True):
    """``run.log_eval``: the results of one evaluation: metrics on a split of a named data set."""

    metrics: dict[str, Any]
    split: str | None = None
    dataset: str | None = None
    rows: int | None = None
    model: str | None = None


class AuditedStep(msgspec.Struct):
    step: int
    forwards: int
    loss: Any = None  # a number, or null when the step's loss was not seen
    grad_norm: Any = None
    max_update_ratio: Any = None


class TrainAudit(msgspec.Struct, forbid_unknown_fields=True):
    """``run.watch``: summaries of audited training steps, batched (up to 32 steps per record). A run with these
    and no ``finding`` records was audited and found clean."""

    steps: list[AuditedStep]


class TrainSteps(msgspec.Struct, forbid_unknown_fields=True):
    """``run.watch`` under ``torch.distributed``: the optimizer steps one rank took (ranks are compared after the
    run)."""

    steps: int
    rank: int


class WatchError(msgspec.Struct, forbid_unknown_fields=True):
    """``run.watch`` failed in one place (a probe or a rule) and went on without it; recorded once per place."""

    where: str
    error: str


class StandardsApplied(msgspec.Struct):
    """``run.record("standards.applied", ...)``: harmonised standards or common specifications applied (Annex
    IV.7)."""

    standards: list[str]


class ConformityDeclaration(msgspec.Struct):
    """``run.record("conformity.declaration", ...)``: where the EU declaration of conformity is (Annex IV.8)."""

    reference: str


VOCABULARY = {"params": Params, "metrics": Metrics, "dataset": Dataset, "model": Model, "eval": Eval}

for _kind, _struct in {**VOCABULARY, "train.audit": TrainAudit, "train.steps": TrainSteps, "watch.error": WatchError,
                       "standards.applied": StandardsApplied, "conformity.declaration": ConformityDeclaration}.items():
    register_kind(_kind, _struct)
