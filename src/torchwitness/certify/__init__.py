"""Edit certification: prove a quantized or pruned model is still good enough, or roll the edit back.

>>> from torchwitness.certify import load_policy
>>> load_policy("strict").diagnostics.gate
True
"""

from torchwitness.certify.api import CertifyResult, certify
from torchwitness.certify.certificate import certificate_schema
from torchwitness.certify.edits import Edit, EditSession, apply_edit, weights_digest
from torchwitness.certify.policy import Policy, load_policy
from torchwitness.certify.verify import CertCheck, verify_certificate

__all__ = ["CertCheck", "CertifyResult", "Edit", "EditSession", "Policy", "apply_edit", "certificate_schema",
           "certify", "load_policy", "verify_certificate", "weights_digest"]
