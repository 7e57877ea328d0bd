"""Opcode-level pickle analysis: simulate the unpickler's stack symbolically, never build an object.

Every ``GLOBAL``/``STACK_GLOBAL``/``INST`` names an import; the stack tells which of them a ``REDUCE``, ``NEWOBJ``,
``OBJ``, ``INST`` or ``BUILD`` actually invokes. Strings are tracked through the memo (``BINPUT``/``BINGET``,
``MEMOIZE``) so an import assembled from memoised strings is still named; one that cannot be named is reported as
such (that is how obfuscated payloads look).

>>> import pickle, collections
>>> [(g.module, g.name, g.called) for g in analyse(pickle.dumps(collections.OrderedDict(a=1))).imports]
[('collections', 'OrderedDict', True)]
"""

from __future__ import annotations

import io
import pickletools
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from torchwitness.errors import ModelFileError

_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
               "SHORT_BINSTRING"}
_INT_OPS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_CALL_OPS = {"REDUCE": 0, "NEWOBJ": 0, "NEWOBJ_EX": 0}  # index of the callable among the popped items
_MARK = object()


@dataclass
class GlobalRef:
    """An import named by the pickle. ``called``: something invokes it (REDUCE/NEWOBJ/OBJ/INST/BUILD)."""

    module: str
    name: str
    opcode: str
    pos: int
    called: bool = False

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass
class Unresolved:
    """A ``STACK_GLOBAL`` or ``EXT*`` whose module/name the stack does not hold as plain strings."""

    opcode: str
    pos: int


@dataclass
class PickleAnalysis:
    imports: list[GlobalRef] = field(default_factory=list)
    unresolved: list[Unresolved] = field(default_factory=list)
    opcodes: int = 0
    protocol: int | None = None
    end: int = 0  # offset just past STOP
    result: Any = None  # the top of the stack at STOP when it is a plain int or str (legacy torch magic number)


def analyse(data: bytes | BinaryIO, start: int = 0) -> PickleAnalysis:
    """Analyse the pickle at offset ``start`` of ``data`` (bytes or a binary file, read sequentially, so a
    multi-gigabyte checkpoint is never held in memory); raises :class:`ModelFileError` if it is malformed."""
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    stream.seek(start)
    out = PickleAnalysis()
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    try:
        for op, arg, pos in pickletools.genops(stream):
            out.opcodes += 1
            _step(op, arg, pos or 0, stack, memo, out)
            if op.name == "STOP":
                out.end = stream.tell()
                return out
    except ModelFileError:
        raise
    except (ValueError, IndexError, KeyError, EOFError, UnicodeDecodeError) as e:
        raise ModelFileError(f"malformed pickle at offset {start}: {e}") from None
    raise ModelFileError(f"pickle at offset {start} has no STOP opcode (truncated)")


def _pop_items(op: pickletools.OpcodeInfo, stack: list[Any]) -> list[Any]:
    before = op.stack_before
    if pickletools.markobject in before:
        try:
            mark = len(stack) - 1 - stack[::-1].index(_MARK)
        except ValueError:
            raise ModelFileError(f"{op.name} without a MARK") from None
        items = stack[mark + 1:]
        del stack[mark:]
        n_before = before.index(pickletools.markobject)
        if n_before > len(stack):
            raise ModelFileError(f"stack underflow at {op.name}")
        lead = stack[len(stack) - n_before:] if n_before else []
        del stack[len(stack) - n_before:]
        return [*lead, *items]
    n = len(before)
    if n > len(stack):
        raise ModelFileError(f"stack underflow at {op.name}")
    items = stack[len(stack) - n:] if n else []
    del stack[len(stack) - n:]
    return items


def _step(op: pickletools.OpcodeInfo, arg: Any, pos: int, stack: list[Any], memo: dict[int, Any],
          out: PickleAnalysis) -> None:
    name = op.name
    if name == "PROTO":
        out.protocol = arg
        return
    if name in _PUT_OPS:
        if not stack:
            raise ModelFileError(f"{name} on an empty stack")
        memo[arg] = stack[-1]
        return
    if name == "MEMOIZE":
        if not stack:
            raise ModelFileError("MEMOIZE on an empty stack")
        memo[len(memo)] = stack[-1]
        return
    if name in _GET_OPS:
        if arg not in memo:
            raise ModelFileError(f"{name} of memo key {arg} that was never stored")
        stack.append(memo[arg])
        return
    items = _pop_items(op, stack)
    pushed: Any = None
    if name in _STRING_OPS:
        pushed = arg.decode("latin-1") if isinstance(arg, bytes) else arg
    elif name in _INT_OPS:
        pushed = arg
    elif name == "MARK":
        pushed = _MARK
    elif name in ("GLOBAL", "INST"):
        module, _, attr = str(arg).partition(" ")
        pushed = GlobalRef(module, attr, name, pos, called=name == "INST")
        out.imports.append(pushed)
    elif name == "STACK_GLOBAL":
        module, attr = items
        if isinstance(module, str) and isinstance(attr, str):
            pushed = GlobalRef(module, attr, name, pos)
            out.imports.append(pushed)
        else:
            out.unresolved.append(Unresolved(name, pos))
    elif name in ("EXT1", "EXT2", "EXT4"):
        out.unresolved.append(Unresolved(name, pos))
    elif name in _CALL_OPS or name in ("OBJ", "BUILD"):
        target = items[0] if items else None
        if isinstance(target, GlobalRef):
            target.called = True
    elif name == "STOP":
        out.result = items[0] if items and isinstance(items[0], (int, str)) else None
        return
    for _ in op.stack_after:
        stack.append(pushed)
