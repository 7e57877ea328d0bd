"""The model owner's side: it holds the weights and sees only ciphertexts and the client's public context.

Messages are msgpack maps of bytes (``ModelOwner.handle`` is transport-free, so a test can read exactly what the
owner receives); ``serve`` runs it on one end of a ``multiprocessing`` pipe in the owner's own process.
"""

from __future__ import annotations

from typing import Any

import msgspec

from torchwitness.secure._tenseal import tenseal
from torchwitness.secure.layers import SecurePlan


class ModelOwner:
    def __init__(self, plan: SecurePlan) -> None:
        self.plan = plan
        self.context: Any = None

    def handle(self, message: bytes) -> bytes:
        """One request in, one reply out; a bad request is an ``{"error": ...}`` reply, never an exception."""
        try:
            request = msgspec.msgpack.decode(message)
            reply = self._dispatch(request)
        except Exception as e:  # the owner answers every request; the client raises with the reason
            reply = {"error": f"{type(e).__name__}: {e}"}
        return msgspec.msgpack.encode(reply)

    def _dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        ts = tenseal()
        op = request.get("op")
        if op == "hello":
            context = ts.context_from(request["context"])
            if context.is_private():
                # fail closed: an owner that could decrypt would see the inputs
                raise ValueError("the client's context holds its secret key; send the public context only")
            self.context = context
            return {"ok": True, "features": self.plan.features}
        if op == "linear":
            if self.context is None:
                raise ValueError("no context: say hello first")
            return {"chunks": [self._linear(int(request["layer"]), chunk) for chunk in request["chunks"]]}
        raise ValueError(f"unknown operation {op!r}")

    def _linear(self, layer: int, columns: list[bytes]) -> list[bytes]:
        """``x @ W + b`` on one chunk of rows: one ciphertext per input feature in, one per output feature out."""
        ts = tenseal()
        w, b = self.plan.weights[layer], self.plan.biases[layer]
        if len(columns) != w.shape[0]:
            raise ValueError(f"layer {layer} takes {w.shape[0]} features, got {len(columns)} ciphertexts")
        cols = [ts.ckks_vector_from(self.context, c) for c in columns]
        out = []
        for k in range(w.shape[1]):
            acc = cols[0] * float(w[0, k])
            for j in range(1, len(cols)):
                acc += cols[j] * float(w[j, k])
            out.append((acc + float(b[k])).serialize())
        return out


def serve(conn: Any, plan: SecurePlan) -> None:
    """The owner process's loop: answer requests until the pipe closes."""
    owner = ModelOwner(plan)
    try:
        while True:
            conn.send_bytes(owner.handle(conn.recv_bytes()))
    except (EOFError, OSError):
        pass
