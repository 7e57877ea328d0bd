"""One error hierarchy for the whole package, and how background threads report failures.

Library code raises these; only the CLI turns them into a one-line message and an exit code.
Each error's ``str()`` is that one line; ``diagnostics()`` adds detail for ``--verbose``.
"""

from __future__ import annotations

import warnings


class TorchWitnessError(Exception):
    """Base class of every error torchwitness raises on purpose."""

    exit_code: int = 1

    def diagnostics(self) -> str:
        return str(self)


class InputError(TorchWitnessError):
    """The caller gave something unusable: a wrong path, an unknown name, a bad value."""

    exit_code = 2


class RunExists(InputError):
    """``Run(path)`` on a folder that already holds a run, without ``resume=True``."""


class RecordEncodingError(InputError):
    """A value handed to ``run.record`` has no explicit JSON encoding."""


class LedgerError(TorchWitnessError):
    """The ledger cannot be opened or appended to (corrupt, locked, key missing)."""


class LedgerBusy(LedgerError):
    """Another process holds the ledger open for appending (see :func:`torchwitness.ledger.inbox.appending`)."""


class SigningKeyError(LedgerError):
    """A signing or verification key is missing, malformed or not the expected one."""


class VerificationError(TorchWitnessError):
    """Verification failed. ``seq`` names the first bad record when one can be named."""

    exit_code = 3

    def __init__(self, reason: str, *, seq: int | None = None, checkpoint: int | None = None,
                 expected: str | None = None, computed: str | None = None) -> None:
        self.reason = reason
        self.seq = seq
        self.checkpoint = checkpoint
        self.expected = expected
        self.computed = computed
        where = []
        if seq is not None:
            where.append(f"record seq {seq}")
        if checkpoint is not None:
            where.append(f"checkpoint size {checkpoint}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {reason}" if prefix else reason)

    def diagnostics(self) -> str:
        lines = [str(self)]
        if self.expected is not None:
            lines.append(f"  expected: {self.expected}")
        if self.computed is not None:
            lines.append(f"  computed: {self.computed}")
        return "\n".join(lines)


class ProofError(VerificationError):
    """An inclusion or consistency proof does not verify."""


class CertificateError(VerificationError):
    """An edit certificate does not verify: its signature, Merkle root, statistics, verdict or a digest."""


class PolicyError(TorchWitnessError):
    """A declared governance policy refuses the run as configured (no privacy budget, no consent basis)."""


class RegressionError(TorchWitnessError):
    """``diff``/``assert_no_regression``: the candidate run is worse than the baseline beyond the policy."""

    exit_code = 4


class PrivacyBudgetExhausted(PolicyError):
    """The next DP-SGD step would spend more privacy than the budget allows; it was not taken."""


class AuditError(TorchWitnessError):
    """Code under audit (a factory, a batch source, a training step) raised; the message names where."""

    exit_code = 4


class ServingStopped(TorchWitnessError):
    """A human stopped the system (EU AI Act Art. 14(4)(e)); the recorder refuses to serve until resumed."""

    exit_code = 5


class ExportError(TorchWitnessError):
    """An exporter (MLflow, OpenTelemetry) could not deliver the run's evidence."""


class ModelFileError(InputError):
    """A model file cannot be analysed: not a pickle, zip or safetensors file, or truncated/corrupt."""


class FailureWarnings:
    """Failures of work a background thread must go on doing (an inbox look, an aged window, an explanation) as
    ``RuntimeWarning``s: said again only when the failure changes, since the work is retried, often every second.
    """

    def __init__(self) -> None:
        self._said: dict[str, str] = {}

    def warn(self, what: str, error: BaseException, *, key: str | None = None) -> None:
        """Warn ``torchwitness: <what>: <error>`` unless the last failure under ``key`` (default ``what``) was the
        same."""
        key = what if key is None else key
        if self._said.get(key) != str(error):
            self._said[key] = str(error)
            warnings.warn(f"torchwitness: {what}: {error}", RuntimeWarning, stacklevel=2)
