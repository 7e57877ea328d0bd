"""RFC 9162 proofs: exhaustive checks for sizes 1..300 against a naive MTH, and hypothesis-driven mutations."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchwitness.errors import ProofError
from torchwitness.ledger.merkle import (
    EMPTY_ROOT,
    Frontier,
    MerkleTree,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

MAX = 300
LEAVES = [leaf_hash(i.to_bytes(4, "big")) for i in range(MAX)]
TREE = MerkleTree(LEAVES)


def naive_mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.1, literally."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(naive_mth(leaves[:k]), naive_mth(leaves[k:]))


def test_known_vectors() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    # RFC 6962/9162 test vector leaf: the empty leaf hash.
    assert leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"


def test_roots_match_the_definition_for_every_size() -> None:
    frontier = Frontier()
    for n in range(1, MAX + 1):
        frontier.append(LEAVES[n - 1])
        expected = naive_mth(LEAVES[:n])
        assert TREE.root(n) == expected
        assert frontier.root() == expected


def test_every_inclusion_and_consistency_proof_verifies() -> None:
    for n in range(1, MAX + 1):
        root = TREE.root(n)
        for m in range(n):
            verify_inclusion(m, n, LEAVES[m], TREE.inclusion_proof(m, n), root)
        for m in range(n + 1):
            verify_consistency(m, n, TREE.root(m), root, TREE.consistency_proof(m, n))


def _flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8 % 32] ^= 1 << (bit % 8)
    return bytes(b)


sizes = st.integers(min_value=1, max_value=MAX)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), n=sizes)
def test_inclusion_fails_for_any_alteration(data: st.DataObject, n: int) -> None:
    m = data.draw(st.integers(0, n - 1))
    proof = TREE.inclusion_proof(m, n)
    root = TREE.root(n)
    kind = data.draw(st.sampled_from(["leaf", "path", "root", "index", "size", "drop", "extra"]))
    bit = data.draw(st.integers(0, 255))
    leaf, index, size = LEAVES[m], m, n
    if kind == "leaf":
        leaf = _flip(leaf, bit)
    elif kind == "path":
        if not proof:
            return
        i = data.draw(st.integers(0, len(proof) - 1))
        proof = [*proof[:i], _flip(proof[i], bit), *proof[i + 1:]]
    elif kind == "root":
        root = _flip(root, bit)
    elif kind == "index":
        index = data.draw(st.integers(0, 2 * n).filter(lambda x: x != m))
    elif kind == "size":
        # A checkpoint signs size and root together, so a different size comes with that size's root.
        size = data.draw(st.integers(1, MAX).filter(lambda x: x != n))
        root = TREE.root(size)  # where m >= size, the index is out of range: must fail closed too
    elif kind == "drop":
        if not proof:
            return
        proof = proof[:-1]
    else:
        proof = [*proof, LEAVES[0]]
    with pytest.raises(ProofError):
        verify_inclusion(index, size, leaf, proof, root)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), n=sizes)
def test_consistency_fails_for_any_alteration(data: st.DataObject, n: int) -> None:
    m = data.draw(st.integers(1, n))
    proof = TREE.consistency_proof(m, n)
    old, new = TREE.root(m), TREE.root(n)
    kind = data.draw(st.sampled_from(["old", "new", "path", "old_size", "new_size", "drop"]))
    bit = data.draw(st.integers(0, 255))
    old_size, new_size = m, n
    if kind == "old":
        old = _flip(old, bit)
    elif kind == "new":
        new = _flip(new, bit)
    elif kind == "path":
        if not proof:
            return
        i = data.draw(st.integers(0, len(proof) - 1))
        proof = [*proof[:i], _flip(proof[i], bit), *proof[i + 1:]]
    elif kind == "old_size":
        if n == 1:
            return
        old_size = data.draw(st.integers(1, n).filter(lambda x: x != m))
        old = TREE.root(old_size)
    elif kind == "new_size":
        if m == MAX:
            return
        new_size = data.draw(st.integers(m, MAX).filter(lambda x: x != n))
        new = TREE.root(new_size)
    else:
        if not proof:
            return
        proof = proof[:-1]
    with pytest.raises(ProofError):
        verify_consistency(old_size, new_size, old, new, proof)


def test_malformed_inputs_fail_closed() -> None:
    with pytest.raises(ProofError):
        verify_inclusion(0, 0, LEAVES[0], [], LEAVES[0])
    with pytest.raises(ProofError):
        verify_inclusion(0, 1, b"short", [], LEAVES[0])
    with pytest.raises(ProofError):
        verify_consistency(3, 2, LEAVES[0], LEAVES[1], [])
    with pytest.raises(ProofError):
        verify_consistency(2, 5, TREE.root(2), TREE.root(5), [])
