"""Checkpoint roots of a large ledger computed by several processes at once.

Segments hold a power-of-two number of records, so each full segment is an aligned perfect subtree of the
ledger's Merkle tree. A worker hashes one segment and returns only its root plus, for each checkpoint that ends
inside it, the perfect subtrees of that local prefix; the parent folds those into every checkpoint root without
ever holding the leaves. Any mismatch makes the caller fall back to the single-process path, which keeps every
leaf and can name the bad record.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NamedTuple

from torchwitness.ledger.merkle import MerkleTree, fold
from torchwitness.ledger.segments import hash_segment

MIN_BYTES = 16 << 20  # below this, starting workers costs more than it saves


class ParallelRoots(NamedTuple):
    count: int
    torn: int
    found: frozenset[bytes]
    roots: dict[int, bytes]


def _summarise(path: str, local_sizes: list[int], needles: tuple[bytes, ...]
               ) -> tuple[int, int, frozenset[bytes], list[list[bytes]]]:
    hashed = hash_segment(Path(path), needles)
    tree = MerkleTree(hashed.leaves)
    parts = [tree.parts(r) if r <= tree.size else [] for r in local_sizes]
    return tree.size, hashed.torn, hashed.found, [*parts, tree.parts(tree.size)]


def _idle_cores() -> int:
    """Cores not already busy (by the 1-minute load average): on a loaded machine, forking workers that then queue
    for the same cores made verification slower than one process (0.52 s against 0.38 s for 100,000 records at a
    load of 9 on 2 cores)."""
    return int((os.cpu_count() or 1) - os.getloadavg()[0] + 1)  # + 1: this process's own core


def parallel_roots(segments: list[Path], per_segment: int, sizes: list[int], needles: tuple[bytes, ...]
                   ) -> ParallelRoots | None:
    """Roots at ``sizes`` using one process per core, or None where that is unsafe or not worth it.

    Forking is only safe before torch (and its thread pools) is loaded, which is the case in the CLI.
    """
    workers = min(len(segments), _idle_cores(), 8)
    if (workers < 2 or per_segment & (per_segment - 1) or "torch" in sys.modules
            or sum(p.stat().st_size for p in segments) < MIN_BYTES):
        return None
    local: list[list[int]] = [[] for _ in segments]
    for size in sizes:
        q, r = divmod(size, per_segment)
        if r and q < len(segments):
            local[q].append(r)
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers) as pool:
        summaries = pool.starmap(_summarise, [(str(p), local[i], needles) for i, p in enumerate(segments)],
                                 chunksize=1)
    counts = [s[0] for s in summaries]
    if any(c != per_segment for c in counts[:-1]) or any(s[1] for s in summaries[:-1]):
        return None  # records moved across segment boundaries: let the sequential path say where
    full_roots = [fold(s[3][-1]) for s in summaries if s[0] == per_segment]
    upper = MerkleTree(full_roots)
    roots: dict[int, bytes] = {}
    for size in sizes:
        q, r = divmod(size, per_segment)
        if q > len(full_roots) or (r and q >= len(summaries)):
            return None
        inner = summaries[q][3][local[q].index(r)] if r else []
        roots[size] = fold(upper.parts(q) + inner)
    return ParallelRoots(sum(counts), summaries[-1][1], frozenset().union(*(s[2] for s in summaries)), roots)
