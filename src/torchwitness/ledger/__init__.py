"""The evidence spine: an append-only, RFC 9162 Merkle-tree ledger with Ed25519-signed checkpoints.

Importing this package never imports torch, so auditors can verify runs with a minimal install.
"""

from torchwitness.ledger.encoding import Personal
from torchwitness.ledger.proof import Prover, prove, verify_proof
from torchwitness.ledger.reader import iter_records
from torchwitness.ledger.verify import VerifyResult, verify_run
from torchwitness.ledger.writer import Ledger

__all__ = ["Ledger", "Personal", "Prover", "VerifyResult", "iter_records", "prove", "verify_proof", "verify_run"]
