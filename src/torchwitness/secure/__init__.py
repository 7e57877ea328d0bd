"""Secure inference: a model owner runs a trained MLP on inputs it never sees in cleartext.

The client encrypts its rows with CKKS homomorphic encryption (TenSEAL) under a key only it holds; the model owner,
in another process, applies each ``Linear`` layer to the ciphertexts; the client decrypts, applies ``ReLU`` and
encrypts the next layer's input. The owner receives ciphertexts and a public context, nothing else. Each session
records ``secure.inference`` (library, protocol, parameters, rows, the error against plaintext on a declared check
set, time, bytes exchanged). Needs the ``secure`` extra: ``pip install 'torchwitness[secure]'``.

Example::

    from torchwitness.secure import secure_predict
    probs = secure_predict(model, rows, run=run, check=public_rows)   # [n, classes] probabilities
"""

from torchwitness.secure.layers import SecurePlan, plan
from torchwitness.secure.session import SecureInference, secure_predict

__all__ = ["SecureInference", "SecurePlan", "plan", "secure_predict"]
