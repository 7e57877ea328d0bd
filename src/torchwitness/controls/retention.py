"""How long a run's logs are kept: a ``retention.policy`` record (EU AI Act Art. 19(1), Art. 26(6)).

Providers (Art. 19(1)) and deployers (Art. 26(6)) of a high-risk system keep its automatically generated logs
"for a period appropriate to the intended purpose ..., of at least six months, unless provided otherwise in the
applicable Union or national law". The ledger is append-only and torchwitness never deletes a record (erasure
crypto-shreds personal payloads, not records), so what a run needs is the declaration itself: how long its run
folder is kept, by whom, where, and, for a period under six months, the law that provides otherwise. The
obligations map counts it towards both articles; the Annex IV dossier states until when the oldest record is kept.

Example::

    from torchwitness.controls.retention import declare_retention

    with tw.Run("runs/serve") as run:
        declare_retention(run, logs_days=365, role="deployer", storage="s3://audit-logs (object lock, 1 year)")
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from torchwitness.errors import InputError
from torchwitness.ledger.schema import register_kind

Role = Literal["provider", "deployer"]
# Six calendar months last 181 to 184 days (31 Aug to 28 Feb is the shortest, 31 Jul to 31 Jan among the longest):
# 184 days is six months from whichever day a log is written.
SIX_MONTHS_DAYS = 184


class RetentionPolicy(msgspec.Struct):
    """``retention.policy``: how long this run's logs (its run folder: records, checkpoints, keys) are kept."""

    logs_days: int
    six_months: bool  # logs_days >= 184: at least six months from any day
    role: str  # "provider" (Art. 19(1)) or "deployer" (Art. 26(6))
    storage: str | None  # where the kept copy lives
    basis: str | None  # for a shorter period: the Union or national law that provides otherwise


register_kind("retention.policy", RetentionPolicy)


def declare_retention(run: Any, *, logs_days: int = SIX_MONTHS_DAYS, role: Role = "provider",
                      storage: str | None = None, basis: str | None = None) -> int | None:
    """Record how long ``run``'s logs are kept; returns the record's sequence number.

    A period under six months (184 days) is refused unless ``basis`` names the law that provides otherwise.
    """
    if type(logs_days) is not int or logs_days < 1:
        raise InputError(f"logs_days must be a whole number of days >= 1, not {logs_days!r}")
    if role not in ("provider", "deployer"):
        raise InputError(f"role must be 'provider' (Art. 19) or 'deployer' (Art. 26(6)), not {role!r}")
    if logs_days < SIX_MONTHS_DAYS and not basis:
        raise InputError(f"logs must be kept at least six months ({SIX_MONTHS_DAYS} days; EU AI Act Art. 19(1), "
                         f"26(6)) unless Union or national law provides otherwise: pass basis= naming that law")
    return run.record("retention.policy", {"logs_days": logs_days, "six_months": logs_days >= SIX_MONTHS_DAYS,
                                           "role": role, "storage": storage, "basis": basis})
