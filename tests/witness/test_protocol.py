"""The witness's decisions (C2SP tlog-witness status codes), cosignature/v1 lines and the incremental
consistency proof, in process."""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from torchwitness.errors import InputError, SigningKeyError, VerificationError
from torchwitness.ledger.keys import SigningKey
from torchwitness.ledger.merkle import Frontier, MerkleTree, leaf_hash, verify_consistency
from torchwitness.ledger.note import Checkpoint, parse
from torchwitness.witness.client import consistency_proof
from torchwitness.witness.cosign import CosignerKey, WitnessKey, with_cosignatures
from torchwitness.witness.protocol import SIZE_CONTENT_TYPE, Witness, encode_request
from torchwitness.witness.server import WitnessService, WitnessState, make_server


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 70), st.data())
def test_proof_from_the_frontier_is_rfc9162s(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(0, n))
    leaves = [leaf_hash(bytes([i])) for i in range(n)]
    tree = MerkleTree(leaves)
    old = Frontier()
    for h in leaves[:m]:
        old.append(h)
    proof = consistency_proof(old, leaves[m:])
    assert proof == tree.consistency_proof(m, n)
    verify_consistency(m, n, tree.root(m), tree.root(n), proof)


def test_cosignature_lines_follow_tlog_cosignature() -> None:
    key = WitnessKey.generate("witness.example/w1")
    log = SigningKey.generate()
    signed = parse(Checkpoint("example.com/log", 3, b"\x01" * 32, ("ext line",)).sign(log))
    line = key.cosign(signed, timestamp=1_700_000_000)
    blob = base64.b64decode(line.line.split(" ")[2])
    assert blob[:4] == key.public.key_id and struct.unpack(">Q", blob[4:12])[0] == 1_700_000_000
    assert len(blob) == 4 + 8 + 64
    message = (b"cosignature/v1\ntime 1700000000\nexample.com/log\n3\n" + base64.b64encode(b"\x01" * 32)
               + b"\next line\n")
    Ed25519PublicKey.from_public_bytes(key.public.raw).verify(blob[12:], message)  # the spec's signed message
    cosigned = with_cosignatures(signed, [line])
    cosigned.verify(log.public)  # the log's own signature is untouched
    assert key.public.find(cosigned) == 1_700_000_000
    assert with_cosignatures(cosigned, [key.cosign(signed, 1_700_000_001)]).text.count("witness.example/w1") == 1
    vkey = key.public.to_vkey()
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == 4 and CosignerKey.from_vkey(vkey) == key.public
    assert WitnessKey.generate("witness.example/w2").public.find(cosigned) is None  # other keys' lines: ignored
    other = parse(Checkpoint("example.com/log", 4, b"\x01" * 32).sign(log))
    forged = with_cosignatures(signed, [key.cosign(other, timestamp=1)])
    with pytest.raises(VerificationError, match="does not verify"):
        key.public.find(forged)
    with pytest.raises(VerificationError, match="future"):
        key.public.find(with_cosignatures(signed, [key.cosign(signed, timestamp=2**40)]))
    with pytest.raises(SigningKeyError):
        CosignerKey.from_vkey(SigningKey.generate().public.to_vkey())  # a log key is not a witness key


def test_witness_specs() -> None:
    vkey = WitnessKey.generate("w").public.to_vkey()
    assert Witness.parse(vkey).url is None
    assert Witness.parse(f"{vkey} http://127.0.0.1:9/").url == "http://127.0.0.1:9"
    for bad in (f"{vkey} ftp://x", "nonsense", f"{vkey} http://a http://b"):
        with pytest.raises(InputError):
            Witness.parse(bad)


@pytest.fixture
def service(tmp_path):
    state = WitnessState(tmp_path / "state")
    state.keygen("witness.example/w1")
    log = SigningKey.generate()
    state.add_log(log.public.to_vkey(), "torchwitness/")
    return WitnessService(state), log


def _note(log: SigningKey, leaves: list[bytes], size: int, origin: str = "torchwitness/r") -> str:
    return Checkpoint(origin, size, MerkleTree(leaves).root(size), (f"torchwitness-prev {size}",)).sign(log)


def test_status_codes(service) -> None:
    svc, log = service
    leaves = [leaf_hash(bytes([i])) for i in range(20)]
    tree = MerkleTree(leaves)
    first = svc.add_checkpoint(encode_request(0, [], _note(log, leaves, 8)))
    assert first.status == 200 and first.body.startswith("\u2014 witness.example/w1 ")
    assert svc.add_checkpoint(encode_request(0, [], _note(log, leaves, 12))).status == 409
    stale = svc.add_checkpoint(encode_request(4, [], _note(log, leaves, 12)))
    assert (stale.status, stale.body, stale.content_type) == (409, "8\n", SIZE_CONTENT_TYPE)
    assert svc.add_checkpoint(encode_request(8, tree.consistency_proof(8, 12), _note(log, leaves, 12))).status == 200
    bad_proof = [bytes(32)] * len(tree.consistency_proof(12, 16))
    assert svc.add_checkpoint(encode_request(12, bad_proof, _note(log, leaves, 16))).status == 422
    fork = [leaf_hash(b"x"), *leaves[1:]]
    assert svc.add_checkpoint(encode_request(12, MerkleTree(fork).consistency_proof(12, 16),
                                             _note(log, fork, 16))).status == 422
    same_size_other_root = svc.add_checkpoint(encode_request(12, [], _note(log, fork, 12)))
    assert same_size_other_root.status == 422
    assert svc.add_checkpoint(encode_request(20, [], _note(log, leaves, 16))).status == 400  # old > size
    assert svc.add_checkpoint(b"old 01\n\n" + _note(log, leaves, 16).encode()).status == 400
    assert svc.add_checkpoint(b"\xff\xfe").status == 400
    assert svc.add_checkpoint(encode_request(0, [], _note(log, leaves, 3, origin="elsewhere/r"))).status == 404
    stranger = SigningKey.generate()
    assert svc.add_checkpoint(encode_request(0, [], _note(stranger, leaves, 3, "torchwitness/s"))).status == 403
    text = _note(log, leaves, 16)
    body, _, sig = text.rpartition(" ")
    broken = body + " " + base64.b64encode(base64.b64decode(sig)[:4] + bytes(64)).decode() + "\n"
    assert svc.add_checkpoint(encode_request(12, tree.consistency_proof(12, 16), broken)).status == 403
    # A second trusted key cannot take over an origin the first one's checkpoints were cosigned for.
    other = SigningKey.generate()
    svc.state.add_log(other.public.to_vkey(), "torchwitness/")
    assert svc.add_checkpoint(encode_request(12, [], _note(other, leaves, 12))).status == 403
    # The stored note is the newest cosigned one, with the log's signature and the witness's cosignature.
    stored = svc.checkpoint(svc.state.note_path("torchwitness/r").stem)
    assert stored.status == 200 and "\n12\n" in stored.body
    kept = parse(stored.body)
    kept.verify(log.public)
    assert svc.key.public.find(kept) is not None and len(kept.signatures) == 2
    assert svc.checkpoint("0" * 64).status == 404


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode)
       | st.builds(lambda old, lines, note: f"old {old}\n{lines}\n{note}".encode(),
                   st.integers(-2, 40), st.text("AB=+/\n", max_size=60), st.text(max_size=200)))
def test_any_body_gets_a_protocol_answer(tmp_path_factory, body: bytes) -> None:
    svc = _service_for_fuzzing(tmp_path_factory)
    assert svc.add_checkpoint(body).status in (400, 403, 404, 409, 422)


_FUZZ: dict[str, WitnessService] = {}


def _service_for_fuzzing(tmp_path_factory) -> WitnessService:
    if "svc" not in _FUZZ:
        state = WitnessState(tmp_path_factory.mktemp("fuzz"))
        state.keygen("w")
        state.add_log(SigningKey.generate().public.to_vkey())
        _FUZZ["svc"] = WitnessService(state)
    return _FUZZ["svc"]


def test_a_broken_state_is_an_http_500_not_a_crash(service) -> None:
    import threading
    import urllib.error
    import urllib.request

    svc, log = service
    server = make_server(svc.state.root)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/add-checkpoint"
    body = encode_request(0, [], _note(log, [leaf_hash(b"a")], 1))
    good = svc.state.logs_file.read_text()
    try:
        svc.state.logs_file.write_text("[")
        with pytest.raises(urllib.error.HTTPError) as broken:
            urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10)
        assert broken.value.code == 500 and b"logs.json" in broken.value.read()
        svc.state.logs_file.write_text(good)
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as answer:
            assert answer.status == 200 and answer.read().startswith("\u2014 witness.example/w1 ".encode())
        with pytest.raises(InputError, match="already holds a witness key"):
            svc.state.keygen("again")
    finally:
        server.shutdown()
        server.server_close()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 12), st.lists(st.tuples(st.booleans(), st.integers(0, 16), st.integers(0, 16)),
                                    min_size=1, max_size=12))
def test_cosigned_checkpoints_are_always_consistent(tmp_path_factory, shared: int, submissions) -> None:
    """Whatever a log (or a forger with its key) submits in whatever order, no two checkpoints the witness
    cosigned for one origin are inconsistent."""
    state = WitnessState(tmp_path_factory.mktemp("w"))
    state.keygen("w")
    log = SigningKey.generate()
    state.add_log(log.public.to_vkey())
    svc = WitnessService(state)
    honest = [leaf_hash(b"h%d" % i) for i in range(16)]
    forked = honest[:shared] + [leaf_hash(b"f%d" % i) for i in range(shared, 16)]
    trees = {False: MerkleTree(honest), True: MerkleTree(forked)}
    cosigned = []
    for fork, size, old in submissions:
        tree, note = trees[fork], _note(log, trees[fork].leaves, size)
        answer = svc.add_checkpoint(encode_request(min(old, size), tree.consistency_proof(min(old, size), size),
                                                   note))
        if answer.status == 409 and int(answer.body) <= size:  # as a client does: retry from the witness's size
            known = int(answer.body)
            answer = svc.add_checkpoint(encode_request(known, tree.consistency_proof(known, size), note))
        if answer.status == 200:
            cosigned.append((tree, size))
    for tree_a, size_a in cosigned:
        for tree_b, size_b in cosigned:
            small = min(size_a, size_b)
            assert tree_a.root(small) == tree_b.root(small)
