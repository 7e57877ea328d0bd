"""The JSONL segment files and the leaf-hash index: reading, appending and crash recovery."""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from torchwitness.errors import InputError, LedgerError
from torchwitness.ledger.layout import Layout
from torchwitness.ledger.merkle import HASH_SIZE, LEAF_PREFIX, leaf_hashes


class Segment(NamedTuple):
    path: Path
    data: bytes
    lines: list[bytes]  # complete lines, without their newline
    torn: int  # bytes after the last newline (a torn final line)


def read_segments(layout: Layout) -> Iterator[Segment]:
    """Yield every segment in order."""
    for path in layout.segments():
        data = path.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline
        yield Segment(path, data, lines, len(tail))


class HashedSegment(NamedTuple):
    leaves: list[bytes]
    torn: int  # bytes after the last newline
    found: frozenset[bytes]  # which of the needles occur in the file


def hash_segment(path: Path, needles: tuple[bytes, ...] = ()) -> HashedSegment:
    """Leaf hashes of a segment's complete lines, straight from a memory map, and which ``needles`` occur in it.

    Hashing memoryview slices of the mapped file avoids reading the file into a buffer and then copying every line
    into its own bytes object: verification ran at 36 % (200-byte records) and 64 % (2 KB) of a bare SHA-256
    loop, instead of about 20 %.
    """
    size = path.stat().st_size
    if size == 0:
        return HashedSegment([], 0, frozenset())
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        try:
            base = hashlib.sha256(LEAF_PREFIX)
            leaves: list[bytes] = []
            append, find, pos = leaves.append, mapped.find, 0
            while (end := find(b"\n", pos)) >= 0:
                h = base.copy()
                h.update(view[pos:end])
                append(h.digest())
                pos = end + 1
            return HashedSegment(leaves, size - pos, frozenset(n for n in needles if mapped.find(n) >= 0))
        finally:
            view.release()


def read_all_lines(layout: Layout) -> list[bytes]:
    out: list[bytes] = []
    for seg in read_segments(layout):
        out.extend(seg.lines)
        if seg.torn:
            raise LedgerError(f"{seg.path.name} ends in a torn line; open the run for writing to recover it")
    return out


def read_index(layout: Layout) -> list[bytes]:
    try:
        data = layout.index.read_bytes()
    except FileNotFoundError:
        return []
    except IsADirectoryError:
        raise InputError(f"{layout.index} should be a file, not a folder: {layout.root} is damaged") from None
    n = len(data) // HASH_SIZE
    return [data[i * HASH_SIZE:(i + 1) * HASH_SIZE] for i in range(n)]


@dataclass(frozen=True)
class Recovery:
    """What opening a ledger for writing had to repair after an unclean stop."""

    torn_bytes: int
    index_added: int
    index_removed: int
    adopted: tuple[int, int, str] | None = None  # first seq, last seq, sha256 of their leaves: no checkpoint covered

    @property
    def needed(self) -> bool:
        return bool(self.torn_bytes or self.index_added or self.index_removed or self.adopted)


def recover(layout: Layout) -> tuple[list[bytes], Recovery]:
    """Truncate a torn final line, bring the index in line with the records; return the leaf hashes.

    Only the last segment may end in a torn line: writers append there alone. A torn line anywhere else is
    damage, not a crash, and is refused.
    """
    segments = layout.segments()
    torn = 0
    lines: list[bytes] = []
    for i, path in enumerate(segments):
        data = path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut != len(data):
            if i != len(segments) - 1:
                raise LedgerError(f"{path.name} ends in a torn line but is not the last segment: the ledger was "
                                  "damaged, not interrupted; run 'torchwitness verify' to locate it")
            torn = len(data) - cut
            with open(path, "r+b") as f:
                f.truncate(cut)
                f.flush()
                os.fsync(f.fileno())
            data = data[:cut]
        lines.extend(data.split(b"\n")[:-1])
    index = read_index(layout)
    added = removed = 0
    stored = layout.index.stat().st_size if layout.index.exists() else 0
    if len(index) > len(lines):
        removed = len(index) - len(lines)
        index = index[: len(lines)]
    elif len(index) < len(lines):
        added = len(lines) - len(index)
        index.extend(leaf_hashes(lines[len(index):]))
    if added or removed or stored != len(index) * HASH_SIZE:
        layout.index.parent.mkdir(parents=True, exist_ok=True)
        with open(layout.index, "wb") as f:
            f.write(b"".join(index))
            f.flush()
            os.fsync(f.fileno())
    return index, Recovery(torn, added, removed)


class SegmentWriter:
    """Appends lines and leaf hashes; rotates segments every ``segment_records`` records."""

    def __init__(self, layout: Layout, *, size: int, segment_records: int) -> None:
        self._layout = layout
        self._segment_records = segment_records
        self.size = size
        layout.records.mkdir(parents=True, exist_ok=True)
        self._segment_no = -1
        self._seg = None
        self._index = open(layout.index, "ab")  # noqa: SIM115 - held open for the ledger's lifetime

    def _segment_for(self, seq: int):
        number = seq // self._segment_records
        if number != self._segment_no:
            if self._seg is not None:
                self._seg.close()
            self._seg = open(self._layout.segment(number), "ab")  # noqa: SIM115
            self._segment_no = number
        return self._seg

    def append(self, lines: list[bytes], hashes: list[bytes]) -> None:
        """Write records first, then their index entries: recovery rebuilds a short index, never a long one."""
        start = 0
        while start < len(lines):
            seq = self.size + start
            seg = self._segment_for(seq)
            room = self._segment_records - seq % self._segment_records
            chunk = lines[start:start + room]
            seg.write(b"\n".join(chunk) + b"\n")
            start += len(chunk)
        self._seg.flush()
        self._index.write(b"".join(hashes))
        self._index.flush()
        self.size += len(lines)

    def sync(self) -> None:
        if self._seg is not None:
            os.fsync(self._seg.fileno())
        os.fsync(self._index.fileno())

    def close(self) -> None:
        if self._seg is not None:
            self._seg.close()
        self._index.close()
