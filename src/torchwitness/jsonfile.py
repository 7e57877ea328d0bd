"""Reading the JSON documents users hand to the CLI (proofs, certificates, policies) with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torchwitness.errors import InputError, TorchWitnessError


def read_json(path: str | Path, what: str, invalid: type[TorchWitnessError] = InputError) -> Any:
    """The parsed document at ``path``; a missing file is an :class:`InputError` naming ``what``, and a file that
    is not JSON raises ``invalid`` (a certificate that is not JSON is a bad certificate, not bad input)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"no such {what}: {path}") from None
    except ValueError as e:
        raise invalid(f"{what} {path} is not JSON: {e}") from None
