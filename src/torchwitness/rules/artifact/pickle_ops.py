"""Opcode-level pickle analysis: simulate the unpickler's stack symbolically, never build an object.

Every ``GLOBAL``/``STACK_GLOBAL``/``INST`` is an import; the simulated stack tells what the unpickler then does
with it (:attr:`GlobalRef.roles`): calls it (``REDUCE``/``INST``/``OBJ``, or as the function a construction helper
runs), constructs an instance of it (``NEWOBJ``, ``copyreg._reconstructor``), or modifies it in place (``BUILD``,
``SETITEM``, ``APPEND`` on the imported object itself). Strings, tuples and dicts are tracked through the memo, so
an import spelt with memoised strings is still named; what cannot be followed statically is a :class:`Problem`.

joblib's ``NumpyArrayWrapper`` makes joblib read raw array bytes (or a nested pickle, for object arrays) straight
after its ``BUILD``; with ``joblib=True`` the analysis skips or follows them as joblib does.

>>> import pickle, collections
>>> [(g.qualname, sorted(g.roles)) for g in analyse(pickle.dumps(collections.OrderedDict(a=1))).imports]
[('collections.OrderedDict', ['call'])]
"""

from __future__ import annotations

import _compat_pickle
import io
import pickletools
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from torchwitness.rules.artifact.joblib_arrays import array_layout, check_padding

MAX_NESTING = 4
JOBLIB_WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"
# torch.load(io.BytesIO(b), weights_only=False): how plain pickle.dumps stores a tensor's storage. Safe exactly
# when the torch file in ``b`` is, so ``b`` is scanned as a file of its own (PickleAnalysis.embedded).
EMBEDDED_TORCH_FILE = "torch.storage._load_from_bytes"
_LITERALS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING",
             "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "UNICODE",
             "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "FLOAT", "BINFLOAT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
# construction helpers: the index of the class they construct in their argument tuple
_CONSTRUCTORS = {"copyreg._reconstructor": 0, "copyreg.__newobj__": 0, "copyreg.__newobj_ex__": 0,
                 "torch._utils._rebuild_wrapper_subclass": 0, "numpy.core.multiarray._reconstruct": 0,
                 "numpy._core.multiarray._reconstruct": 0}
# allow-listed functions that call a function taken from their arguments: (index of that function, of a class)
_CALLS_ARGUMENT = {"torch._tensor._rebuild_from_type_v2": (0, 1)}
# reconstructor bases whose __new__/__init__ are the builtin ones (anything else has its __init__ called)
BUILTIN_BASES = frozenset(f"builtins.{t}" for t in ("object", "dict", "list", "set", "frozenset", "tuple", "int",
                                                     "float", "str", "bytes", "bytearray", "complex"))
_MARK = object()


class _Bad(Exception):
    """The pickle is malformed at this opcode (the real unpickler would raise here too)."""


@dataclass(eq=False)
class GlobalRef:
    """An import the pickle names, and what loading does with it (``roles``: call, new, patch)."""

    module: str
    name: str
    opcode: str
    pos: int
    raw: str = ""  # as written, when the unpickler renames it (Python 2 names, torch.tensor)
    roles: set[str] = field(default_factory=set)

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    @property
    def called(self) -> bool:
        return "call" in self.roles


@dataclass
class Problem:
    """Something the scanner cannot follow statically: the file is treated as hostile (fail closed)."""

    opcode: str
    pos: int
    reason: str


@dataclass(eq=False)
class _Made:
    """What a call or construction returns: the callable, its arguments and the state a BUILD gave it."""

    by: Any
    args: Any
    how: str
    state: Any = None


class _Opaque:
    """A value whose contents do not matter (lists, sets, buffers, persistent objects)."""


class _Unresolved(_Opaque):
    """What a :class:`Problem` left on the stack (already reported: calling it adds nothing new)."""


@dataclass
class PickleAnalysis:
    """One pickle: its imports with their roles, problems, nested pickles (offset, analysis) and where it ends.

    ``error`` is set when the bytes stop being a valid pickle; what was seen before that point is kept, since a
    real unpickler runs it before it fails."""

    imports: list[GlobalRef] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    nested: list[tuple[int, PickleAnalysis]] = field(default_factory=list)
    error: str | None = None
    opcodes: int = 0
    protocol: int | None = None
    end: int = 0  # offset just past STOP
    result: Any = None  # the top of the stack at STOP when it is a plain int or str (legacy torch magic number)
    arrays: int = 0  # joblib arrays whose bytes followed a NumpyArrayWrapper
    unaligned: int = 0  # ... of them raw bytes with no padding byte first (joblib < 1.2)
    embedded: list[tuple[int, bytes]] = field(default_factory=list)  # torch files loaded from bytes, by offset

    def walk(self, where: str = "") -> list[tuple[str, PickleAnalysis]]:
        """This analysis and every nested one, each with its path (``""``, ``"nested@12"``...)."""
        out = [(where, self)]
        for pos, a in self.nested:
            out.extend(a.walk(f"{where}>nested@{pos}" if where else f"nested@{pos}"))
        return out


def analyse(data: bytes | BinaryIO, start: int = 0, *, joblib: bool = True, depth: int = 0) -> PickleAnalysis:
    """Analyse the pickle at offset ``start`` of ``data`` (bytes or a binary file, read sequentially, so a
    multi-gigabyte file is never held in memory). Never raises for bad content: see :attr:`PickleAnalysis.error`.
    """
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    stream.seek(start)
    machine = _Machine(stream, joblib, depth)
    out = machine.out
    try:
        for op, arg, pos in pickletools.genops(stream):
            out.opcodes += 1
            machine.step(op.name, arg, pos if pos is not None else 0)
            if op.name == "STOP":
                out.end = stream.tell()
                return out
    except Exception as e:  # genops, or the stream under it (a corrupt zip entry, gzip or lzma data): unreadable
        out.error = f"malformed pickle at offset {start}: {e}"
        return out
    out.error = f"pickle at offset {start} has no STOP opcode (truncated)"
    return out


def looks_like_pickle(data: bytes) -> bool:
    """Starts as a binary pickle does (``PROTO`` 2-5): worth trying as a nested or hidden pickle."""
    return len(data) >= 4 and data[0] == 0x80 and 2 <= data[1] <= 5


class _Machine:
    def __init__(self, stream: BinaryIO, joblib: bool, depth: int) -> None:
        self.stream = stream
        self.joblib = joblib
        self.depth = depth
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}
        self.proto = 0
        self.out = PickleAnalysis()

    # -- stack helpers -------------------------------------------------------------------------------------
    def pop(self) -> Any:
        if not self.stack or self.stack[-1] is _MARK:
            raise _Bad("stack underflow")
        return self.stack.pop()

    def top(self) -> Any:
        if not self.stack or self.stack[-1] is _MARK:
            raise _Bad("stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> list[Any]:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is _MARK:
                items = self.stack[i + 1:]
                del self.stack[i:]
                return items
        raise _Bad("no MARK on the stack")

    def problem(self, op: str, pos: int, reason: str) -> _Unresolved:
        self.out.problems.append(Problem(op, pos, reason))
        return _Unresolved()

    # -- opcodes -------------------------------------------------------------------------------------------
    def step(self, name: str, arg: Any, pos: int) -> None:  # one branch per opcode family
        push = self.stack.append
        if name in _LITERALS:
            push(arg)
            if isinstance(arg, (bytes, bytearray)) and looks_like_pickle(bytes(arg[:4])):
                self.nested(bytes(arg), pos)
        elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
            push({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
        elif name in ("EMPTY_LIST", "EMPTY_SET", "NEXT_BUFFER"):
            push(_Opaque())
        elif name == "EMPTY_TUPLE":
            push(())
        elif name == "EMPTY_DICT":
            push({})
        elif name == "MARK":
            push(_MARK)
        elif name == "TUPLE":
            push(tuple(self.pop_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            items = [self.pop() for _ in range(int(name[-1]))]
            push(tuple(reversed(items)))
        elif name in ("LIST", "FROZENSET"):
            self.pop_mark()
            push(_Opaque())
        elif name == "DICT":
            items = self.pop_mark()
            push(self.fill({}, items))
        elif name == "APPEND":
            self.pop()
            self.mutate(self.top())
        elif name in ("APPENDS", "ADDITEMS"):
            self.pop_mark()
            self.mutate(self.top())
        elif name == "SETITEM":
            value, key = self.pop(), self.pop()
            self.fill(self.mutate(self.top()), [key, value])
        elif name == "SETITEMS":
            items = self.pop_mark()
            self.fill(self.mutate(self.top()), items)
        elif name == "POP":
            if not self.stack:
                raise _Bad("POP on an empty stack")
            self.stack.pop()
        elif name == "DUP":
            push(self.top())
        elif name == "POP_MARK":
            self.pop_mark()
        elif name in _GET_OPS:
            if arg not in self.memo:
                raise _Bad(f"{name} of memo key {arg} that was never stored")
            push(self.memo[arg])
        elif name in _PUT_OPS:
            self.memo[arg] = self.top()
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = self.top()
        elif name == "PROTO":
            self.proto = self.out.protocol = arg
        elif name == "READONLY_BUFFER":
            self.top()
        elif name == "FRAME":
            pass
        elif name in ("GLOBAL", "INST"):
            module, sep, attr = str(arg).partition(" ")
            if not sep or " " in attr:
                push(self.problem(name, pos, f"{name} {arg!r} does not split into one module and one name"))
                if name == "INST":
                    self.pop_mark()
                return
            ref = self.global_ref(module, attr, name, pos)
            if name == "INST":
                push(self.call(ref, tuple(self.pop_mark()), name, pos))
            else:
                push(ref)
        elif name == "STACK_GLOBAL":
            attr, module = self.pop(), self.pop()
            if isinstance(module, str) and isinstance(attr, str):
                push(self.global_ref(module, attr, name, pos))
            else:
                push(self.problem(name, pos, "STACK_GLOBAL of a module or name the pickle computes"))
        elif name in ("EXT1", "EXT2", "EXT4"):
            push(self.problem(name, pos, f"{name} {arg} imports through the copyreg extension registry"))
        elif name == "REDUCE":
            args = self.pop()
            push(self.call(self.pop(), args, name, pos))
        elif name == "OBJ":
            items = self.pop_mark()
            if not items:
                raise _Bad("OBJ without a class")
            push(self.call(items[0], tuple(items[1:]), name, pos))
        elif name in ("NEWOBJ", "NEWOBJ_EX"):
            if name == "NEWOBJ_EX":
                self.pop()
            args = self.pop()
            push(self.construct(self.pop(), args, name, pos))
        elif name == "BUILD":
            state = self.pop()
            self.build(self.top(), state, pos)
        elif name in ("PERSID", "BINPERSID"):
            push(self.persistent(arg if name == "PERSID" else self.pop()))
        elif name == "STOP":
            result = self.pop()
            self.out.result = result if isinstance(result, (int, str)) and not isinstance(result, bool) else None
        else:
            push(self.problem(name, pos, f"opcode {name} is not understood by the scanner"))

    def fill(self, target: Any, items: list[Any]) -> Any:
        if len(items) % 2:
            raise _Bad("odd number of items for a dict")
        if isinstance(target, dict):
            for k, v in zip(items[::2], items[1::2], strict=True):
                if isinstance(k, (str, int, bytes)):
                    target[k] = v
        return target

    def mutate(self, target: Any) -> Any:
        if isinstance(target, GlobalRef):
            target.roles.add("patch")  # SETITEM on os.environ, APPEND on a module-level list...
        return target

    def global_ref(self, module: str, attr: str, opcode: str, pos: int) -> GlobalRef:
        raw = f"{module}.{attr}"
        if self.proto < 3:  # what pickle.Unpickler.find_class does with fix_imports (the default)
            if (module, attr) in _compat_pickle.NAME_MAPPING:
                module, attr = _compat_pickle.NAME_MAPPING[(module, attr)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        if module == "torch.tensor":  # torch.load's own rename
            module = "torch._tensor"
        ref = GlobalRef(module, attr, opcode, pos, raw=raw if raw != f"{module}.{attr}" else "")
        self.out.imports.append(ref)
        return ref

    def call(self, func: Any, args: Any, opcode: str, pos: int) -> Any:
        if not isinstance(func, GlobalRef):
            return func if isinstance(func, _Unresolved) else self.problem(
                opcode, pos, f"{opcode} calls a value that is not a named import")
        func.roles.add("call")
        q = func.qualname
        if q in _CONSTRUCTORS:
            cls = self.argument(args, _CONSTRUCTORS[q], q, opcode, pos)
            if isinstance(cls, GlobalRef):
                cls.roles.add("new")
            if q == "copyreg._reconstructor":
                base = self.argument(args, 1, q, opcode, pos)
                if isinstance(base, GlobalRef) and base.qualname not in BUILTIN_BASES:
                    base.roles.add("call")  # _reconstructor runs base.__init__(obj, state)
            return _Made(cls, args, "new")
        if q == EMBEDDED_TORCH_FILE:
            if isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
                self.out.embedded.append((pos, bytes(args[0])))
            else:
                self.problem(opcode, pos, f"{q} loads bytes the scanner cannot see as a torch file")
        if q in _CALLS_ARGUMENT:
            fn_at, cls_at = _CALLS_ARGUMENT[q]
            fn, cls = self.argument(args, fn_at, q, opcode, pos), self.argument(args, cls_at, q, opcode, pos)
            for ref, role in ((fn, "call"), (cls, "new")):
                if isinstance(ref, GlobalRef):
                    ref.roles.add(role)
        return _Made(func, args, "call")

    def argument(self, args: Any, i: int, callee: str, opcode: str, pos: int) -> Any:
        if isinstance(args, tuple) and len(args) > i:
            if not isinstance(args[i], GlobalRef):
                self.problem(opcode, pos, f"{callee} is given a computed value where it expects a named import")
            return args[i]
        self.problem(opcode, pos, f"{callee} is called with arguments the scanner cannot follow")
        return None

    def construct(self, cls: Any, args: Any, opcode: str, pos: int) -> Any:
        if not isinstance(cls, GlobalRef):
            return cls if isinstance(cls, _Unresolved) else self.problem(
                opcode, pos, f"{opcode} constructs a value that is not a named import")
        cls.roles.add("new")
        if args != ():  # __new__ runs with values the file chose (numpy.memmap opens and maps a file it names)
            cls.roles.add("new-args")
        return _Made(cls, args, "new")

    def build(self, inst: Any, state: Any, pos: int) -> None:
        if isinstance(inst, GlobalRef):
            inst.roles.add("patch")  # BUILD sets attributes on the imported class/module/function itself
        elif isinstance(inst, _Made):
            # BUILD calls the object's __setstate__ when it has one, so a state that plants one (or a second BUILD
            # after a first that could have) makes the next BUILD call whatever the file chose: never pickled so
            self._check_state(state, pos)
            if inst.state is not None:
                self.problem("BUILD", pos, "a second BUILD on one object (pickle writes one; a first can plant a "
                                           "__setstate__ that the second calls)")
            inst.state = state
            by = inst.by
            if self.joblib and inst.how == "new" and isinstance(by, GlobalRef) and by.qualname == JOBLIB_WRAPPER:
                self.joblib_array(state, pos)

    def _check_state(self, state: Any, pos: int) -> None:
        for part in (state if isinstance(state, tuple) else (state,)):
            if isinstance(part, dict):
                special = next((k for k in part if isinstance(k, str) and k.startswith("__") and k.endswith("__")),
                               None)
                if special is not None:
                    self.problem("BUILD", pos, f"BUILD sets the special attribute {special} on an object")

    def persistent(self, pid: Any) -> Any:
        # legacy torch files: ('module', cls, file, source) in streams, (cls, file, source) in tar archives; the
        # class is what the unpickler gets back
        if isinstance(pid, tuple) and pid:
            if isinstance(pid[0], GlobalRef):
                return pid[0]
            if pid[0] in ("module", b"module") and len(pid) > 1 and isinstance(pid[1], GlobalRef):
                return pid[1]
        return _Made(None, pid, "persistent")

    def nested(self, data: bytes, pos: int) -> None:
        if self.depth >= MAX_NESTING:
            self.problem("BINBYTES", pos, f"pickles nested deeper than {MAX_NESTING} levels")
            return
        inner = analyse(data, joblib=self.joblib, depth=self.depth + 1)
        if inner.error is None:
            self.out.nested.append((pos, inner))

    def joblib_array(self, state: Any, pos: int) -> None:
        """Skip (or follow, for object arrays) the bytes joblib reads after a NumpyArrayWrapper's BUILD."""
        layout = array_layout(state)
        if isinstance(layout, str):
            self.problem("BUILD", pos, layout)
            return
        self.out.arrays += 1
        if layout.has_object:  # a nested pickle follows, read by a fresh unpickler
            inner = analyse(self.stream, self.stream.tell(), joblib=self.joblib, depth=self.depth + 1)
            self.out.nested.append((pos, inner))
            if inner.error:
                raise _Bad(f"object array after offset {pos}: {inner.error}")
            return
        if layout.align is None:
            self.out.unaligned += 1
        else:
            bad = check_padding(self.stream, layout.align)
            if bad:
                raise _Bad(bad)
        self.stream.seek(self.stream.tell() + layout.nbytes)
