"""``torchwitness doctor``: preflight of certification inputs and policy, with stable codes.

Every check yields one :class:`Check`; ``error`` means ``certify`` would fail or could not be trusted.

=======  =====================================================================
code     meaning
=======  =====================================================================
TWD001   the baseline cannot be loaded
TWD002   the subject cannot be loaded
TWD003   neither a subject nor an edit (or both) was given
TWD004   the edit is not a known edit
TWD010   the policy is unknown or invalid
TWD020   the data file is missing or unreadable
TWD021   text data but no tokenizer to encode it
TWD022   too little data for the policy's minimum windows or tokens
TWD023   fewer windows than the policy asks for (certify uses what exists)
TWD024   token ids beyond the model's vocabulary
TWD030   baseline and subject differ in names, shapes, dtypes, ties or counts
TWD031   non-finite weights
TWD032   baseline and subject weights are identical
TWD040   signing key: found, or will be created on first use
TWD050   an optional dependency is missing
TWD099   all checks passed
=======  =====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from torchwitness.errors import InputError


@dataclass(frozen=True)
class Check:
    code: str
    level: str  # "ok", "info", "warning", "error"
    message: str


def _embedding_rows(model: nn.Module) -> int | None:
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            return m.num_embeddings
    return None


def preflight(baseline: Any, subject: Any = None, *, edit: str | None = None, data: str | Path | None = None,
              policy: str | Path = "balanced", factory: str | None = None,
              key_dir: str | Path | None = None) -> list[Check]:
    """Run every check that does not need a forward pass; never raises for bad inputs, reports them."""
    from torchwitness.certify.diagnostics import invariants
    from torchwitness.certify.edits import Edit, weights_digest
    from torchwitness.certify.policy import load_policy
    from torchwitness.certify.sources import load_source
    from torchwitness.certify.windows import load_stream

    out: list[Check] = []
    pol = None
    try:
        pol = load_policy(policy)
        out.append(Check("TWD010", "ok", f"policy {pol.name} ({pol.digest[:19]}...)"))
    except InputError as e:
        out.append(Check("TWD010", "error", str(e)))
    if (subject is None) == (edit is None):
        out.append(Check("TWD003", "error", "give exactly one of --subject or --edit"))
    if edit is not None:
        try:
            Edit.parse(edit)
        except InputError as e:
            out.append(Check("TWD004", "error", str(e)))
    sources = {}
    for code, role, spec in (("TWD001", "baseline", baseline), ("TWD002", "subject", subject)):
        if spec is None:
            continue
        try:
            sources[role] = load_source(spec, factory=factory)
            out.append(Check(code, "ok", f"{role}: {sources[role].description}"))
        except ImportError as e:
            out.append(Check("TWD050", "error", f"{role}: {e}"))
        except (InputError, OSError, ValueError) as e:
            out.append(Check(code, "error", f"{role}: {e}"))
    for role, src in sources.items():
        bad = [n for n, t in src.model.state_dict().items() if t.is_floating_point() and
               not bool(torch.isfinite(t).all())]
        if bad:
            out.append(Check("TWD031", "error", f"{role}: non-finite values in {', '.join(bad[:3])}"))
    if "baseline" in sources and "subject" in sources:
        _, violations = invariants(sources["baseline"].model, sources["subject"].model)
        out += [Check("TWD030", "error", v) for v in violations]
        if not violations and weights_digest(sources["baseline"].model) == weights_digest(sources["subject"].model):
            out.append(Check("TWD032", "info", "the subject's weights are identical to the baseline's"))
    if data is not None:
        out += _check_data(Path(data), sources.get("baseline"), pol, load_stream)
    out.append(_check_key(key_dir))
    if not any(c.level in ("error", "warning") for c in out):
        out.append(Check("TWD099", "ok", "ready to certify"))
    return out


def _check_data(path: Path, base: Any, pol: Any, load_stream) -> list[Check]:
    if not path.is_file():
        return [Check("TWD020", "error", f"no such data file: {path}")]
    encode = getattr(base.tokenizer, "encode", None) if base is not None else None
    if path.suffix != ".npy" and encode is None:
        return [Check("TWD021", "error", f"{path} is text but the baseline comes without a tokenizer; pass token "
                                         "ids as .npy or a factory returning (model, tokenizer)")]
    try:
        stream = load_stream(path, encode)
    except (InputError, OSError, ValueError) as e:
        return [Check("TWD020", "error", str(e))]
    out = [Check("TWD020", "ok", f"data: {len(stream)} tokens")]
    if base is not None and (rows := _embedding_rows(base.model)) is not None and len(stream) and \
            int(np.max(stream)) >= rows:
        out.append(Check("TWD024", "error", f"token id {int(np.max(stream))} >= the model's {rows} embeddings"))
    if pol is not None:
        available = len(stream) // (pol.window_length + 1)
        if available < pol.min_windows or available * pol.window_length < pol.min_tokens:
            out.append(Check("TWD022", "error", f"{available} windows of {pol.window_length} tokens: below the "
                                                f"policy minimum of {pol.min_windows} windows / {pol.min_tokens} "
                                                "tokens"))
        elif available < pol.windows:
            out.append(Check("TWD023", "warning", f"{available} windows available, the policy asks for "
                                                  f"{pol.windows}"))
    return out


def _check_key(key_dir: str | Path | None) -> Check:
    from torchwitness.ledger.keys import default_key_dir

    directory = Path(key_dir) if key_dir else default_key_dir()
    if (directory / "default.ed25519").is_file():
        return Check("TWD040", "ok", f"signing key in {directory}")
    return Check("TWD040", "info", f"no signing key yet in {directory}: certify creates one")
