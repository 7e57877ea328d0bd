"""RFC 3161 timestamps over checkpoints, against OpenSSL's own ``openssl ts -reply`` behind a local HTTP handler
(a TSA with its own root, made here), checked by ``rfc3161-client``."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from torchwitness.ledger.writer import Ledger

pytest.importorskip("rfc3161_client", reason="the 'timestamp' extra (rfc3161-client) is not installed")
if shutil.which("openssl") is None:
    pytest.skip("openssl is not installed", allow_module_level=True)

# No `certs =` line: OpenSSL then puts the chain into the token's SET OF certificates unsorted, which strict DER
# (rfc3161-client) refuses about half the time; the signer's own certificate alone is a one-element set.
TSA_CONFIG = """
[ tsa ]
default_tsa = tsa_config
[ tsa_config ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.55555.1
digests = sha256
accuracy = secs:1
ordering = no
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def _cert(subject: str, key, issuer_name: str, issuer_key, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                        critical=True)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, cert: x509.Certificate) -> bytes:
    data = cert.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(data)
    return data


@pytest.fixture
def tsa(tmp_path: Path):
    """An OpenSSL TSA over HTTP: each query is answered by ``openssl ts -reply``."""
    d = tmp_path / "tsa"
    d.mkdir()
    root_key, tsa_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root_pem = _pem(d / "root.pem", _cert("Test TSA Root", root_key, "Test TSA Root", root_key, ca=True))
    _pem(d / "tsa.pem", _cert("Test TSA", tsa_key, "Test TSA Root", root_key, ca=False))
    (d / "tsa.key").write_bytes(tsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    (d / "serial").write_text("01\n")
    (d / "tsa.cnf").write_text(TSA_CONFIG.format(dir=d))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            query = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                (d / "q.tsq").write_bytes(query)
                subprocess.run(["openssl", "ts", "-reply", "-config", str(d / "tsa.cnf"), "-queryfile",
                                str(d / "q.tsq"), "-out", str(d / "r.tsr")], check=True, capture_output=True)
                reply = (d / "r.tsr").read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", d / "root.pem", root_pem
    server.shutdown()
    server.server_close()


def test_timestamp_round_trip_against_openssl(cli, tsa, tmp_path: Path) -> None:
    url, root_file, _ = tsa
    run = tmp_path / "run"
    with Ledger.open(run) as ledger:
        ledger.append("note", {"text": "hello"})
    code, out, err = cli("witness", "timestamp", str(run), "--tsa", url)
    assert code == 0 and "000000000001.tsr" in out, err
    code, out, err = cli("witness", "verify-timestamp", str(run), "--tsa-root", str(root_file))
    assert code == 0 and out.startswith("timestamped "), err
    # OpenSSL agrees that the token covers the note's text.
    note = run / "checkpoints" / "000000000001.note"
    body = note.read_text().split("\n\n")[0] + "\n"
    (tmp_path / "body").write_text(body)
    check = subprocess.run(["openssl", "ts", "-verify", "-data", str(tmp_path / "body"), "-in",
                            str(note.with_suffix(".tsr")), "-CAfile", str(root_file)], capture_output=True,
                           text=True)
    assert check.returncode == 0 and "Verification: OK" in check.stdout, check.stderr

    # Another TSA's root, a later checkpoint without a token, and a token moved onto another note all fail.
    other = tmp_path / "other.pem"
    other_key = ec.generate_private_key(ec.SECP256R1())
    _pem(other, _cert("Other Root", other_key, "Other Root", other_key, ca=True))
    assert cli("witness", "verify-timestamp", str(run), "--tsa-root", str(other))[0] == 3
    with Ledger.open(run) as ledger:
        ledger.append("note", {"text": "later"})
    code, _, err = cli("witness", "verify-timestamp", str(run), "--tsa-root", str(root_file))
    assert code == 3 and "has no timestamp token" in err
    shutil.copy(note.with_suffix(".tsr"), run / "checkpoints" / "000000000002.tsr")
    code, _, err = cli("witness", "verify-timestamp", str(run), "--tsa-root", str(root_file))
    assert code == 3 and "does not verify" in err
