"""The typed, versioned record schema: the envelope plus one ``msgspec.Struct`` per known record kind.

Kinds not registered here (a user's own ``run.record("my.metric", ...)``) carry free-form data; registered
kinds are validated by ``torchwitness verify --deep`` and published by ``torchwitness schema``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from torchwitness.errors import InputError

SCHEMA_VERSION = 1


class Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """Every record: ``{v, seq, run, rank, ts, kind, step, data}``, serialised as RFC 8785 JSON.

    ``ts`` is microseconds since the Unix epoch (UTC); ``step`` is the training step or null.
    """

    v: int
    seq: int
    run: str
    rank: int
    ts: int
    kind: str
    step: int | None
    data: Any


class GitState(msgspec.Struct):
    commit: str
    dirty: bool


class RunStart(msgspec.Struct):
    """Environment of a run session: versions, packages digest, platform, git state, seeds, config digest."""

    python: str
    implementation: str
    platform: str
    machine: str
    cpu_count: int | None
    torch: str
    cuda: str | None
    cuda_available: bool
    devices: list[str]
    cudnn: int | None
    packages_digest: str
    packages_count: int
    git: GitState | None
    argv0: str | None
    seeds: dict[str, Any]  # large seeds arrive as {"$int": "..."}
    determinism: dict[str, bool]
    rank: int
    world_size: int
    config_digest: str | None = None
    config: Any = None
    resumed: bool = False  # a later session of a run folder opened with ``Run(path, resume=True)``


class RunEnd(msgspec.Struct):
    """How a run session ended: ``ok``, ``error`` (with the exception) or ``interrupted``."""

    status: str
    duration_s: float
    error: dict[str, Any] | None = None


class AdoptedRange(msgspec.Struct):
    first_seq: int
    last_seq: int
    leaves_sha256: str


class LedgerRecovered(msgspec.Struct):
    """Reopening after an unclean stop truncated a torn line, repaired the leaf index and/or adopted records that
    no checkpoint covered (``adopted``: their seq range and ``sha256`` of their leaf hashes; verify reports them as
    signed late)."""

    torn_bytes: int
    index_entries_added: int
    index_entries_removed: int
    records: int
    adopted: AdoptedRange | None = None


class LedgerDropped(msgspec.Struct):
    """Records discarded under ``on_full="drop"`` since the previous such record."""

    count: int
    total: int


class LedgerErrorRecord(msgspec.Struct):
    """A record whose data could not be encoded on the writer thread; the seq is kept."""

    kind: str
    error: str


class Erasure(msgspec.Struct):
    """Personal payloads crypto-shredded: their commitments stay, their salts and cleartexts are gone."""

    commitments: list[str]
    count: int
    reason: str


_KINDS: dict[str, type] = {}

# Modules that register the schemas of the record kinds they emit. Imported on the first schema lookup, so
# `torchwitness schema` and `verify --deep` know every built-in kind (some of these import torch; the fast
# verification path never looks schemas up).
_BUILTIN_KIND_MODULES = (
    "torchwitness.certify.certificate", "torchwitness.controls.consent", "torchwitness.controls.consented_data",
    "torchwitness.controls.datasheet", "torchwitness.controls.drift.monitor",
    "torchwitness.controls.fairness.report", "torchwitness.controls.incidents", "torchwitness.controls.oversight",
    "torchwitness.controls.privacy", "torchwitness.controls.provenance", "torchwitness.controls.provenance_query",
    "torchwitness.controls.retention", "torchwitness.integrations.captum", "torchwitness.probes.agent",
    "torchwitness.probes.generation", "torchwitness.probes.inference", "torchwitness.probes.inference_records",
    "torchwitness.probes.operators",
    "torchwitness.probes.replay", "torchwitness.probes.retained", "torchwitness.probes.repro",
    "torchwitness.records.kinds", "torchwitness.rules.artifact.model_file", "torchwitness.rules.findings",
    "torchwitness.rules.static.engine", "torchwitness.secure.session", "torchwitness.witness.client",
)
_builtins_loaded = False


def _load_builtin_kinds() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    import importlib

    for name in _BUILTIN_KIND_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional extra is missing: its kinds stay free-form
            continue


def register_kind(kind: str, struct: type, *, force: bool = False) -> None:
    """Declare the data schema of a record kind. Refuses to replace an existing one unless ``force``."""
    if kind in _KINDS and not force and _KINDS[kind] is not struct:
        raise InputError(f"record kind {kind!r} is already registered")
    _KINDS[kind] = struct


def kinds() -> dict[str, type]:
    _load_builtin_kinds()
    return dict(_KINDS)


def validate(kind: str, data: Any) -> None:
    """Raise ``msgspec.ValidationError`` if ``data`` does not fit the registered schema of ``kind``."""
    _load_builtin_kinds()
    struct = _KINDS.get(kind)
    if struct is not None:
        msgspec.convert(data, struct)


def json_schemas(kind: str | None = None) -> dict[str, Any]:
    """JSON Schemas of the envelope and every registered kind (or one kind)."""
    _load_builtin_kinds()
    if kind is not None and kind not in _KINDS:
        raise InputError(f"unknown record kind {kind!r}; known: {', '.join(sorted(_KINDS))}")
    selected = {kind: _KINDS[kind]} if kind else dict(sorted(_KINDS.items()))
    out: dict[str, Any] = {"version": SCHEMA_VERSION}
    if kind is None:
        out["envelope"] = msgspec.json.schema(Envelope)
    out["kinds"] = {k: msgspec.json.schema(v) for k, v in selected.items()}
    return out


for _kind, _struct in {"run.start": RunStart, "run.end": RunEnd, "ledger.recovered": LedgerRecovered,
                       "ledger.dropped": LedgerDropped, "ledger.error": LedgerErrorRecord,
                       "erasure": Erasure}.items():
    register_kind(_kind, _struct)
