"""The client's side of secure inference, the owner's process, and the ``secure.inference`` record."""

from __future__ import annotations

import multiprocessing
import time
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import torch
from torch import nn

from torchwitness.errors import InputError, TorchWitnessError
from torchwitness.ledger.schema import register_kind
from torchwitness.secure import owner
from torchwitness.secure._tenseal import tenseal
from torchwitness.secure.layers import SecurePlan, plan

if TYPE_CHECKING:
    from torchwitness.run import Run

# CKKS at 128-bit security (HE standard: N = 8192 allows 218 modulus bits): one rescaling level is all a
# ciphertext-by-plaintext layer needs, since the client re-encrypts between layers
POLY_MODULUS_DEGREE = 8192
COEFF_MOD_BIT_SIZES = (60, 40, 60)
SCALE_BITS = 40
PROTOCOL = ("CKKS; the client holds the secret key and encrypts its rows (one ciphertext per feature, rows in "
            "slots); the model owner applies each Linear layer to ciphertexts with its plaintext weights; the "
            "client decrypts, applies ReLU and encrypts the next layer's input")


class SecureInferenceRecord(msgspec.Struct):
    """``secure.inference``: one secure session, the evidence of data protection by design (GDPR Art. 25)."""

    library: str
    version: str
    protocol: str
    parties: list[str]
    parameters: dict[str, Any]
    rows: int          # every row evaluated under encryption, the check rows included
    check_rows: int
    max_abs_error: float | None   # secure vs plaintext probabilities on the check rows; null when none declared
    seconds: float
    ms_per_row: float
    bytes_exchanged: int
    owner_sees: str
    client_learns: str


register_kind("secure.inference", SecureInferenceRecord)


class SecureInference:
    """A client session with a model owner running in its own process; ``predict`` returns probabilities.

    The owner process receives the weights when it starts (it is the model owner) and, afterwards, only the
    public CKKS context and ciphertexts. ``close`` (or the ``with`` block) stops it.
    """

    def __init__(self, model: nn.Module) -> None:
        ts = tenseal()
        self.plan: SecurePlan = plan(model)
        self._ts = ts
        self._context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=POLY_MODULUS_DEGREE,
                                   coeff_mod_bit_sizes=list(COEFF_MOD_BIT_SIZES))
        self._context.global_scale = 2 ** SCALE_BITS
        self.rows = 0
        self.seconds = 0.0
        self.bytes_exchanged = 0
        spawn = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch threads
        self._conn, theirs = spawn.Pipe()
        self._process = spawn.Process(target=owner.serve, args=(theirs, self.plan), name="torchwitness-model-owner",
                                      daemon=True)
        self._process.start()
        theirs.close()
        self._call({"op": "hello", "context": self._context.serialize(save_secret_key=False)})

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        message = msgspec.msgpack.encode(request)
        try:
            self._conn.send_bytes(message)
            reply = self._conn.recv_bytes()
        except (EOFError, OSError) as e:
            raise TorchWitnessError(f"the model owner's process stopped ({e or 'pipe closed'})") from e
        self.bytes_exchanged += len(message) + len(reply)
        answer = msgspec.msgpack.decode(reply)
        if "error" in answer:
            raise TorchWitnessError(f"the model owner refused: {answer['error']}")
        return answer

    def predict(self, rows: np.ndarray | torch.Tensor) -> np.ndarray:
        """``[n, classes]`` probabilities for ``[n, features]`` rows; the owner never sees a row in cleartext."""
        x = np.asarray(rows.detach().cpu() if isinstance(rows, torch.Tensor) else rows, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.plan.features:
            raise InputError(f"rows must be [n, {self.plan.features}] features, got shape {tuple(x.shape)}")
        if not np.isfinite(x).all():
            raise InputError("rows hold NaN or infinite values, which encryption cannot carry")
        start = time.perf_counter()
        slots = POLY_MODULUS_DEGREE // 2
        h = x
        for layer, relu in enumerate(self.plan.relu_after):
            chunks = [[self._ts.ckks_vector(self._context, h[i:i + slots, j].tolist()).serialize()
                       for j in range(h.shape[1])] for i in range(0, len(h), slots)]
            reply = self._call({"op": "linear", "layer": layer, "chunks": chunks})
            h = np.concatenate([np.stack([np.asarray(self._ts.ckks_vector_from(self._context, c).decrypt())
                                          for c in chunk], 1) for chunk in reply["chunks"]])
            if relu:
                h = np.maximum(h, 0.0)
        self.rows += len(x)
        self.seconds += time.perf_counter() - start
        return torch.softmax(torch.from_numpy(h), dim=1).numpy()

    def record(self, run: Run, *, check_rows: int, max_abs_error: float | None) -> None:
        run.record("secure.inference", msgspec.to_builtins(SecureInferenceRecord(
            library="tenseal", version=str(getattr(self._ts, "__version__", "unknown")), protocol=PROTOCOL,
            parties=["client (holds the secret key and the rows)", "model owner (holds the weights)"],
            parameters={"scheme": "CKKS", "poly_modulus_degree": POLY_MODULUS_DEGREE,
                        "coeff_mod_bit_sizes": list(COEFF_MOD_BIT_SIZES), "scale_bits": SCALE_BITS,
                        "security_bits": 128},
            rows=self.rows, check_rows=check_rows, max_abs_error=max_abs_error, seconds=round(self.seconds, 6),
            ms_per_row=round(1e3 * self.seconds / max(self.rows, 1), 6), bytes_exchanged=self.bytes_exchanged,
            owner_sees="the public CKKS context and ciphertexts only",
            client_learns="the model's outputs and its hidden-layer activations (the owner's weights stay with it)")))

    def close(self) -> None:
        self._conn.close()
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()

    def __enter__(self) -> SecureInference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SecureInference(features={self.plan.features}, classes={self.plan.classes}, rows={self.rows})"


def secure_predict(model: nn.Module, rows: np.ndarray | torch.Tensor, *, run: Run | None = None,
                   check: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """Probabilities for ``rows`` computed without the model owner seeing them; record the session in ``run``.

    ``check`` declares rows that may be shown in cleartext (public or synthetic data): they run both securely
    and in plaintext, and the largest difference of their probabilities is recorded as the session's error.
    """
    with SecureInference(model) as session:
        error = None
        n_check = 0
        if check is not None:
            c = np.asarray(check.detach().cpu() if isinstance(check, torch.Tensor) else check, dtype=np.float64)
            secure = session.predict(c)
            error, n_check = float(np.abs(secure - _plaintext(model, c)).max()), len(c)
        probs = session.predict(rows)
        if run is not None:
            session.record(run, check_rows=n_check, max_abs_error=error)
    return probs


def _plaintext(model: nn.Module, rows: np.ndarray) -> np.ndarray:
    """The model's own forward pass in plaintext, in inference mode (its training flag restored after)."""
    dtype = next(model.parameters()).dtype
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.softmax(model(torch.as_tensor(rows, dtype=dtype)).double(), dim=1).numpy()
    finally:
        model.train(was_training)
