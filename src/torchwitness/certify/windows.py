"""Deterministic evaluation windows: the same tokens, in the same order, for both models, recorded exactly.

A token stream is cut into non-overlapping windows of ``length + 1`` tokens (inputs and next-token targets).
When more windows exist than are asked for, ``count`` of them are chosen evenly spaced over the stream, so
the choice depends only on the stream, ``length`` and ``count``: anyone holding the data can rebuild them.

>>> import numpy as np
>>> w = make_windows(np.arange(100), length=9, count=3)
>>> w.offsets.tolist(), w.tokens.shape
([0, 30, 60], (3, 10))
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from torchwitness.errors import InputError


@dataclass(frozen=True)
class Windows:
    tokens: np.ndarray  # int64 [count, length + 1]
    offsets: np.ndarray  # int64 [count]: position of each window's first token in the stream
    stream_tokens: int
    data_digest: str  # sha256 of the whole token stream (int64 little-endian)

    @property
    def length(self) -> int:
        return self.tokens.shape[1] - 1

    def describe(self) -> dict:
        return {"count": len(self.offsets), "length": self.length, "stride": self.length + 1,
                "stream_tokens": self.stream_tokens, "selection": "evenly-spaced",
                "offsets": [int(o) for o in self.offsets]}


def stream_digest(stream: np.ndarray) -> str:
    return "sha256:" + hashlib.sha256(np.ascontiguousarray(stream, dtype="<i8").tobytes()).hexdigest()


def make_windows(stream: Sequence[int] | np.ndarray, *, length: int, count: int) -> Windows:
    """Cut ``count`` evenly spaced windows of ``length`` inputs (+1 target) out of a token stream."""
    stream = np.asarray(stream, dtype=np.int64)
    if length < 1 or count < 1:
        raise InputError("window length and count must be positive")
    available = len(stream) // (length + 1)
    if available < count:
        raise InputError(f"the data holds {available} windows of {length + 1} tokens, {count} were asked for")
    slots = np.linspace(0, available, num=count, endpoint=False).astype(np.int64)
    offsets = slots * (length + 1)
    tokens = stream[offsets[:, None] + np.arange(length + 1)[None, :]]
    return Windows(tokens, offsets, len(stream), stream_digest(stream))


def window_count(tokens: int, length: int, asked: int) -> int:
    """How many windows certification uses: ``asked``, or all that fit when fewer do (at least 2 must)."""
    available = tokens // (length + 1)
    if available < 2:
        raise InputError(f"the data holds {tokens} tokens: {available} window(s) of {length} tokens plus one "
                         "target fit, and certification needs at least 2; give more data or a shorter window "
                         "length")
    return min(asked, available)


def rebuild_windows(stream: np.ndarray, offsets: Sequence[int], length: int) -> np.ndarray:
    """The windows at recorded ``offsets`` (for replay), checked to lie inside the stream."""
    offsets = np.asarray(offsets, dtype=np.int64)
    if len(offsets) and (offsets.min() < 0 or offsets.max() + length + 1 > len(stream)):
        raise InputError("recorded window offsets fall outside the data")
    return stream[offsets[:, None] + np.arange(length + 1)[None, :]]


class CharTokenizer:
    """One id per character of a fixed vocabulary (the tiny char-level models of the tests and demo).

    >>> CharTokenizer("abc").encode("cab")
    [2, 0, 1]
    """

    def __init__(self, vocabulary: str) -> None:
        self.vocabulary = "".join(sorted(set(vocabulary)))
        self._ids = {c: i for i, c in enumerate(self.vocabulary)}

    def encode(self, text: str) -> list[int]:
        unknown = set(text) - self._ids.keys()
        if unknown:
            raise InputError(f"text holds {len(unknown)} characters outside the vocabulary, e.g. "
                             f"{sorted(unknown)[0]!r}")
        return [self._ids[c] for c in text]

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(b"char-tokenizer\0" + self.vocabulary.encode()).hexdigest()


def load_stream(path: str | Path, encode: Callable[[str], list[int]] | None) -> np.ndarray:
    """A token stream from ``.npy`` (token ids) or a text file (tokenized with ``encode``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such data file: {path}")
    if path.suffix == ".npy":
        stream = np.load(path, allow_pickle=False)
        if stream.dtype.kind not in "iu" or stream.ndim != 1:
            raise InputError(f"{path}: expected a 1-D array of integer token ids")
        return stream.astype(np.int64)
    if encode is None:
        raise InputError(f"{path} is text but the models come without a tokenizer; pass token ids as .npy")
    return np.asarray(encode(path.read_text(encoding="utf-8")), dtype=np.int64)
