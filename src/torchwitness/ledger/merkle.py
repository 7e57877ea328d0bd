"""Merkle tree hashing and proofs exactly as RFC 9162 (Certificate Transparency v2) section 2.1 defines them.

Pure standard library: third parties verify ledgers with this module without installing torch.
Written by hand because no maintained Python package implements RFC 9162 inclusion *and* consistency proofs
over caller-supplied leaf hashes; the algorithms are short and numbered after the RFC's steps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from torchwitness.errors import ProofError

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
HASH_SIZE = 32

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the hash of one log entry."""
    return _sha256(LEAF_PREFIX + data).digest()


def leaf_hashes(entries: Sequence[bytes]) -> list[bytes]:
    """Leaf hashes of many entries; inlined because this loop sets the speed of verification."""
    sha, prefix = _sha256, LEAF_PREFIX
    return [sha(prefix + e).digest() for e in entries]


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the hash of an interior node."""
    return _sha256(NODE_PREFIX + left + right).digest()


EMPTY_ROOT = _sha256(b"").digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def build_levels(leaves: list[bytes], below: list[list[bytes]] | None = None) -> list[list[bytes]]:
    """``[leaves, level 1, ...]``: each level holds the complete pairs of the one below (an odd tail waits)."""
    levels = [*(below or []), leaves]
    base = _sha256(NODE_PREFIX)
    while len(levels[-1]) > 1:
        # Copying a hash already fed the prefix beats concatenating three byte strings per node, and this loop
        # is half of verification's time.
        pairs = iter(levels[-1])
        level: list[bytes] = []
        append = level.append
        for left, right in zip(pairs, pairs, strict=False):
            h = base.copy()
            h.update(left)
            h.update(right)
            append(h.digest())
        levels.append(level)
    return levels


def fold(parts: Sequence[bytes]) -> bytes:
    """Right fold of perfect-subtree hashes (tallest first) into a root, as RFC 9162's MTH splits."""
    if not parts:
        return EMPTY_ROOT
    acc = parts[-1]
    for part in reversed(parts[:-1]):
        acc = node_hash(part, acc)
    return acc


class MerkleTree:
    """All perfect subtrees of a list of leaf hashes, so any prefix root or proof costs O(log n) lookups.

    >>> t = MerkleTree([leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c")])
    >>> t.root(3) == node_hash(node_hash(leaf_hash(b"a"), leaf_hash(b"b")), leaf_hash(b"c"))
    True
    """

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self._levels = build_levels(list(leaves))

    @property
    def leaves(self) -> list[bytes]:
        return self._levels[0]

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def _perfect(self, start: int, height: int) -> bytes:
        return self._levels[height][start >> height]

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH of leaves ``[lo, hi)``; ``lo`` must be aligned as in the RFC's recursion."""
        n = hi - lo
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and lo % n == 0:
            return self._perfect(lo, n.bit_length() - 1)
        k = _split(n)
        return node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        """Root of the first ``size`` leaves (all leaves by default)."""
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"tree has {self.size} leaves, cannot take the root of {size}")
        return fold(self.parts(size))

    def parts(self, size: int) -> list[bytes]:
        """The perfect subtrees, tallest first, whose right fold is the root of the first ``size`` leaves."""
        parts = []
        offset = 0
        for height in range(size.bit_length() - 1, -1, -1):
            if size >> height & 1:
                parts.append(self._perfect(offset, height))
                offset += 1 << height
        return parts

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[size]) of RFC 9162 section 2.1.3.1."""
        if not 0 <= index < size <= self.size:
            raise ValueError(f"no inclusion proof for leaf {index} in a tree of size {size}")
        return self._path(index, 0, size)

    def _path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return [*self._path(m, lo, lo + k), self.subtree(lo + k, hi)]
        return [*self._path(m - k, lo + k, hi), self.subtree(lo, lo + k)]

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[new_size]) of RFC 9162 section 2.1.4.1."""
        if not 0 <= old_size <= new_size <= self.size:
            raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
        if old_size in (0, new_size):
            return []
        return self._subproof(old_size, 0, new_size, True)

    def _subproof(self, m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if complete else [self.subtree(lo, hi)]
        k = _split(n)
        if m <= k:
            return [*self._subproof(m, lo, lo + k, complete), self.subtree(lo + k, hi)]
        return [*self._subproof(m - k, lo + k, hi, False), self.subtree(lo, lo + k)]


class Frontier:
    """The right edge of a growing tree: enough to append a leaf and compute the root in O(log n)."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (height, hash) of perfect subtrees, tallest first
        self.size = 0

    def append(self, leaf: bytes) -> None:
        height, acc = 0, leaf
        stack = self._stack
        while stack and stack[-1][0] == height:
            acc = node_hash(stack.pop()[1], acc)
            height += 1
        stack.append((height, acc))
        self.size += 1

    @property
    def nodes(self) -> list[tuple[int, bytes]]:
        """(height, hash) of the perfect subtrees whose right fold is the root, tallest (leftmost) first."""
        return list(self._stack)

    def copy(self) -> Frontier:
        other = Frontier()
        other._stack, other.size = list(self._stack), self.size
        return other

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        acc = self._stack[-1][1]
        for _, part in reversed(self._stack[:-1]):
            acc = node_hash(part, acc)
        return acc


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} is {len(value)} bytes, expected {HASH_SIZE}")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2, steps 1-4: the root implied by a leaf, its index and its audit path."""
    # Guards first: fail closed on any malformed input.
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash("leaf hash", leaf)
    for h in proof:
        _check_hash("proof hash", h)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:  # step 4.a: the proof is longer than the tree is deep
            raise ProofError(f"inclusion proof has {len(proof)} hashes, too many for a tree of size {size}")
        if fn & 1 or fn == sn:  # step 4.b
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1  # step 4.c
        sn >>= 1
    if sn != 0:  # step 5: the proof is shorter than the tree is deep
        raise ProofError(f"inclusion proof has {len(proof)} hashes, too few for a tree of size {size}")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Return nothing if ``leaf`` sits at ``index`` in the tree of ``size`` with ``root``; raise otherwise."""
    _check_hash("root", root)
    computed = root_from_inclusion_proof(index, size, leaf, proof)
    if computed != root:
        raise ProofError("inclusion proof does not lead to the expected root",
                         expected=root.hex(), computed=computed.hex())


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> None:
    """RFC 9162 section 2.1.4.2: the tree of ``new_size`` extends the tree of ``old_size``; raise otherwise."""
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    for h in proof:
        _check_hash("proof hash", h)
    if not 0 <= old_size <= new_size:
        raise ProofError(f"sizes {old_size} -> {new_size} are not increasing")
    if old_size == new_size:
        if proof:
            raise ProofError("a proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError("equal sizes with different roots", expected=old_root.hex(), computed=new_root.hex())
        return
    if old_size == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if not proof:  # step 1
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # step 2
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1  # step 3
    while fn & 1:  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:
            raise ProofError("consistency proof is longer than the trees allow")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # step 7
    if sn != 0:
        raise ProofError("consistency proof is shorter than the trees require")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root", expected=old_root.hex(),
                         computed=fr.hex())
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root", expected=new_root.hex(),
                         computed=sr.hex())
