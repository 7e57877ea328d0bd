"""Secure inference: right answers, an owner that sees only ciphertexts, refusals in one line, the record."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
import torch
from torch import nn

import torchwitness as tw
from torchwitness.errors import InputError, TorchWitnessError
from torchwitness.ledger import iter_records, verify_run

ts = pytest.importorskip("tenseal")

from torchwitness.secure import SecureInference, plan, secure_predict  # noqa: E402
from torchwitness.secure.owner import ModelOwner  # noqa: E402


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.slow
def test_secure_probabilities_match_plaintext_and_the_session_is_recorded(tmp_path):
    model = _mlp().train()  # training mode on purpose: secure inference runs the model as served (dropout off)
    rows, check = torch.randn(40, 12) * 3, torch.randn(10, 12)
    with tw.Run(tmp_path / "run") as run:
        probs = secure_predict(model, rows, run=run, check=check)
    assert model.training
    model.eval()
    with torch.no_grad():
        plain = torch.softmax(model(rows), dim=1).numpy()
    assert probs.shape == (40, 2) and np.abs(probs - plain).max() <= 1e-3
    verify_run(tmp_path / "run")
    record = next(r["data"] for r in iter_records(tmp_path / "run") if r["kind"] == "secure.inference")
    assert record["library"] == "tenseal" and record["rows"] == 50 and record["check_rows"] == 10
    assert 0 <= record["max_abs_error"] <= 1e-3 and record["bytes_exchanged"] > 0 and record["ms_per_row"] > 0
    assert record["parameters"]["poly_modulus_degree"] == 8192 and record["parameters"]["security_bits"] == 128
    assert "ciphertexts only" in record["owner_sees"]


def test_what_the_owner_receives_is_not_the_cleartext_input():
    model = _mlp()
    rows = np.random.default_rng(1).normal(size=(6, 12))
    received: list[bytes] = []
    owner = ModelOwner(plan(model))

    class Tap:  # stands between client and owner, as a network would, and keeps a copy of every request
        def send_bytes(self, message: bytes) -> None:
            received.append(message)
            self.reply = owner.handle(message)

        def recv_bytes(self) -> bytes:
            return self.reply

        def close(self) -> None:
            pass

    with SecureInference(model) as real:  # a real session first: the owner process answers as in production
        expected = real.predict(rows)
        context = real._context
        real_conn = real._conn
        real._conn = Tap()
        real._call({"op": "hello", "context": context.serialize(save_secret_key=False)})
        tapped = real.predict(rows)
        real._conn = real_conn
    assert np.allclose(tapped, expected, atol=1e-6)
    blob = b"".join(received)
    # no input value in any of its encodings; float32 as pairs of neighbours, since 4 random bytes turn up by
    # chance in megabytes of ciphertext
    for row in rows:
        for j, value in enumerate(row):
            assert np.float64(value).tobytes() not in blob and repr(float(value)).encode() not in blob
            if j + 1 < len(row):  # a row's last value has no neighbour: alone it is 4 bytes, found by chance
                assert row[j:j + 2].astype(np.float32).tobytes() not in blob
    assert owner.context is not None and not owner.context.is_private()
    first_ciphertext = msgspec.msgpack.decode(received[1])["chunks"][0][0]
    with pytest.raises(ValueError, match="secret"):  # the owner cannot decrypt what it holds
        ts.ckks_vector_from(owner.context, first_ciphertext).decrypt()


def test_an_owner_refuses_a_context_holding_the_secret_key():
    owner = ModelOwner(plan(_mlp()))
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 60])
    hello = {"op": "hello", "context": ctx.serialize(save_secret_key=True)}
    reply = msgspec.msgpack.decode(owner.handle(msgspec.msgpack.encode(hello)))
    assert "secret key" in reply["error"] and owner.context is None
    assert "error" in msgspec.msgpack.decode(owner.handle(b"\x00garbage"))


@pytest.mark.parametrize(("model", "message"), [
    (nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2)), r"layer 1 \(Sigmoid\) cannot run under encryption"),
    (nn.Sequential(nn.Conv1d(1, 1, 3)), r"layer 0 \(Conv1d\) cannot run"),
    (nn.Sequential(nn.ReLU(), nn.Linear(4, 2)), "before any Linear"),
    (nn.Sequential(nn.Linear(4, 3), nn.Linear(4, 2)), "takes 4 features but the layer before gives 3"),
    (nn.Linear(4, 2), "nn.Sequential"),
    (nn.Sequential(nn.Dropout()), "no Linear layer"),
])
def test_unsupported_models_are_refused_with_one_line(model, message):
    with pytest.raises(InputError, match=message) as e:
        plan(model)
    assert "\n" not in str(e.value)


def test_wrong_rows_are_refused_and_a_dead_owner_is_reported():
    with SecureInference(_mlp()) as session:
        with pytest.raises(InputError, match=r"rows must be \[n, 12\]"):
            session.predict(np.zeros((3, 5)))
        with pytest.raises(InputError, match="NaN"):
            session.predict(np.full((2, 12), np.nan))
        session._process.kill()
        session._process.join()
        with pytest.raises(TorchWitnessError, match="stopped"):
            session.predict(np.zeros((2, 12)))


def test_the_dossier_cites_the_session_under_annex_iv_2_and_art_25(tmp_path):
    from torchwitness.report.build import build_document
    from torchwitness.secure.session import PROTOCOL, SecureInferenceRecord

    record = SecureInferenceRecord(
        library="tenseal", version="0.3.18", protocol=PROTOCOL, parties=["client", "model owner"],
        parameters={"scheme": "CKKS", "poly_modulus_degree": 8192}, rows=1000, check_rows=50, max_abs_error=2e-7,
        seconds=5.0, ms_per_row=5.0, bytes_exchanged=10, owner_sees="the public CKKS context and ciphertexts only",
        client_learns="outputs")
    with tw.Run(tmp_path / "run") as run:
        seq = run.record("secure.inference", msgspec.to_builtins(record))
    doc = build_document(tmp_path / "run")
    statement = next(s for s in doc.statements() if s.text.startswith("Secure inference (GDPR Art. 25)"))
    assert "1,000 rows" in statement.text and "2e-07" in statement.text and statement.cites == [seq]
    assert "ciphertexts only" in statement.text
