"""One parsed Python file, indexed once for every static rule.

Parsing and a single traversal happen here; rules then read the indexes (calls, assignments, loops, classes) instead
of walking the tree again, which is what keeps a scan of the whole ``torch`` package under a minute.

>>> ctx = FileContext.parse("t.py", "import torch as th\\nth.load('m.pt')\\n")
>>> [(c.name, c.line) for c in ctx.calls]
[('torch.load', 2)]
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torchwitness.rules.catalogue import Severity
from torchwitness.rules.findings import Finding

_SUPPRESS = re.compile(r"#\s*torchwitness:\s*ignore(?:\[([A-Za-z0-9_,\s]*)\])?")
_SCOPE_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_LOOP_NODES = (ast.For, ast.AsyncFor, ast.While)
# Fields that never hold a node worth visiting (names, flags, operators, load/store contexts).
_SCALAR_FIELDS = frozenset({"ctx", "id", "attr", "name", "arg", "module", "level", "op", "ops", "kind",
                            "type_comment", "is_async", "conversion", "simple", "asname", "names", "kwd_attrs"})
_LEAF_TYPES = frozenset({type(None), str, int, bool, float, complex, bytes, type(...), ast.Constant, ast.Load,
                         ast.Store, ast.Del})
_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}


def _child_fields(cls: type) -> tuple[str, ...]:
    fields = _CHILD_FIELDS.get(cls)
    if fields is None:
        fields = _CHILD_FIELDS[cls] = tuple(f for f in getattr(cls, "_fields", ()) if f not in _SCALAR_FIELDS)
    return fields


def dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None (calls, subscripts and literals have no stable name)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


@dataclass(frozen=True)
class CallSite:
    """A call: ``name`` is the import-resolved dotted callee (``torch.load``), ``raw`` the dotted text as written."""

    node: ast.Call
    raw: str | None
    name: str | None
    scope: str  # qualified name of the enclosing function or class, "" at module level

    @property
    def attr(self) -> str | None:
        """The called attribute or name (``backward`` for ``model.eval()`` and for ``loss_fn(a, b).backward()``)."""
        func = self.node.func
        if isinstance(func, ast.Attribute):
            return func.attr
        return func.id if isinstance(func, ast.Name) else None

    @property
    def receiver(self) -> str | None:
        """The dotted object a method is called on (``self.model`` for ``self.model.eval()``)."""
        return self.raw.rsplit(".", 1)[0] if self.raw and "." in self.raw else None

    @property
    def line(self) -> int:
        return self.node.lineno

    def kwarg(self, name: str) -> ast.expr | None:
        for kw in self.node.keywords:
            if kw.arg == name:
                return kw.value
        return None

    @property
    def has_star_kwargs(self) -> bool:
        return any(kw.arg is None for kw in self.node.keywords)


@dataclass(frozen=True)
class Assign:
    """``target = value`` (one target of possibly many); ``target`` is dotted text, None for unpacking."""

    node: ast.stmt
    target: str | None
    value: ast.expr
    scope: str


@dataclass(frozen=True)
class Loop:
    node: ast.For | ast.AsyncFor | ast.While
    scope: str

    def contains(self, line: int) -> bool:
        return self.node.lineno <= line <= (self.node.end_lineno or self.node.lineno)


@dataclass
class FileContext:
    """A parsed file and its indexes. Build it with :meth:`parse`."""

    path: str
    source: str
    tree: ast.Module
    aliases: dict[str, str] = field(default_factory=dict)  # local name -> imported dotted name
    calls: list[CallSite] = field(default_factory=list)
    assigns: list[Assign] = field(default_factory=list)
    loops: list[Loop] = field(default_factory=list)
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    class_bases: dict[str, list[str]] = field(default_factory=dict)  # class qualname -> resolved base names
    suppressed: dict[int, frozenset[str] | None] = field(default_factory=dict)  # line -> IDs (None: all)

    @classmethod
    def parse(cls, path: str, source: str) -> FileContext:
        """Parse ``source`` (raises ``SyntaxError``) and index it in one traversal."""
        tree = ast.parse(source, filename=path)
        ctx = cls(path=path, source=source, tree=tree)
        ctx._index()
        ctx._read_suppressions()
        return ctx

    # -- indexing ---------------------------------------------------------------------------------------------
    def _index(self) -> None:
        raw_calls: list[tuple[ast.Call, str | None, str]] = []
        stack: list[tuple[ast.AST, str]] = [(self.tree, "")]
        while stack:
            node, scope = stack.pop()
            inner = scope
            if isinstance(node, _SCOPE_NODES) and not isinstance(node, ast.Lambda):
                inner = f"{scope}.{node.name}" if scope else node.name
                if isinstance(node, ast.ClassDef):
                    self.classes[inner] = node
                    self.class_bases[inner] = [d for d in map(dotted, node.bases) if d]
                else:
                    self.functions[inner] = node
            elif isinstance(node, ast.Call):
                raw_calls.append((node, dotted(node.func), scope))
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if node.value is not None:
                    for t in targets:
                        self.assigns.append(Assign(node, dotted(t), node.value, scope))
            elif isinstance(node, _LOOP_NODES):
                self.loops.append(Loop(node, scope))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self.aliases[a.asname] = a.name
                    else:
                        top = a.name.split(".", 1)[0]
                        self.aliases.setdefault(top, top)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            # inlined ast.iter_child_nodes over precomputed child fields: the traversal dominates scan time
            for name in _child_fields(type(node)):
                value = getattr(node, name, None)
                if type(value) is list:
                    stack.extend((item, inner) for item in value if type(item) not in _LEAF_TYPES)
                elif type(value) not in _LEAF_TYPES:
                    stack.append((value, inner))
        # Resolution waits for the whole file: an import may sit below the function that uses it.
        self.calls = sorted((CallSite(n, raw, self.resolve(raw), s) for n, raw, s in raw_calls),
                            key=lambda c: (c.node.lineno, c.node.col_offset))
        self.assigns.sort(key=lambda a: (a.node.lineno, a.node.col_offset))
        self.loops.sort(key=lambda lp: lp.node.lineno)
        for qual, bases in self.class_bases.items():
            self.class_bases[qual] = [self.resolve(b) or b for b in bases]

    def _read_suppressions(self) -> None:
        if "torchwitness:" not in self.source:
            return
        for i, text in enumerate(self.source.splitlines(), start=1):
            m = _SUPPRESS.search(text)
            if m:
                ids = m.group(1)
                self.suppressed[i] = (frozenset(x.strip().upper() for x in ids.split(",") if x.strip())
                                      if ids is not None else None)

    # -- queries ----------------------------------------------------------------------------------------------
    def resolve(self, raw: str | None) -> str | None:
        """Map the first component through the file's imports: ``F.softmax`` -> ``torch.nn.functional.softmax``."""
        if raw is None:
            return None
        head, _, rest = raw.partition(".")
        target = self.aliases.get(head)
        if target is None:
            return raw
        return f"{target}.{rest}" if rest else target

    def is_suppressed(self, rule_id: str, line: int) -> bool:
        ids = self.suppressed.get(line, frozenset())
        return ids is None or rule_id in ids

    def calls_named(self, *names: str) -> Iterator[CallSite]:
        wanted = set(names)
        return (c for c in self.calls if c.name in wanted)

    def calls_by_scope(self) -> dict[str, list[CallSite]]:
        out: dict[str, list[CallSite]] = defaultdict(list)
        for c in self.calls:
            out[c.scope].append(c)
        return out

    def is_module_class(self, qualname_or_name: str, _seen: frozenset[str] = frozenset()) -> bool:
        """Whether a class defined in this file derives (possibly through local classes) from ``nn.Module``."""
        key = qualname_or_name if qualname_or_name in self.class_bases else next(
            (q for q in self.class_bases if q.rsplit(".", 1)[-1] == qualname_or_name), None)
        if key is None or key in _seen:
            return False
        for base in self.class_bases[key]:
            if is_torch_module_class(base) or self.is_module_class(base, _seen | {key}):
                return True
        return False

    def location(self, node: ast.AST) -> str:
        return f"{self.path}:{getattr(node, 'lineno', 1)}:{getattr(node, 'col_offset', 0) + 1}"

    def finding(self, rule_id: str, node: ast.AST, message: str, *, severity: Severity | None = None,
                **details: Any) -> Finding:
        """A finding of ``rule_id`` located at ``node``, with path, line, enclosing scope and source line."""
        line = getattr(node, "lineno", 1)
        return Finding.of(rule_id, self.location(node), message, severity=severity,
                          details={"path": self.path, "line": line, "col": getattr(node, "col_offset", 0) + 1,
                                   "snippet": self.snippet(node), **details})

    def snippet(self, node: ast.AST) -> str:
        line = getattr(node, "lineno", 1)
        lines = self.source.splitlines()
        return lines[line - 1].strip()[:200] if 0 < line <= len(lines) else ""


def is_torch_module_class(name: str | None) -> bool:
    """``torch.nn.Linear``, ``torch.nn.modules.conv.Conv2d``, ``lightning.LightningModule``... (by name only)."""
    if not name:
        return False
    if name in ("torch.nn.Module", "nn.Module", "Module"):
        return True
    head, _, last = name.rpartition(".")
    if last in _NOT_MODULES or head.endswith((".parameter", ".init", ".utils")):
        return False
    return bool(last[:1].isupper()) and (head.startswith("torch.nn") or last in ("LightningModule",))


# Capitalised names under torch.nn that are tensors or helpers, not modules.
_NOT_MODULES = frozenset({"Parameter", "UninitializedParameter", "Buffer", "UninitializedBuffer"})


def constant(node: ast.AST | None) -> object:
    """The literal value of ``node`` (``-1`` included), or the sentinel ``NOT_CONSTANT``."""
    if node is None:
        return NOT_CONSTANT
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return NOT_CONSTANT


class _NotConstant:
    def __repr__(self) -> str:
        return "NOT_CONSTANT"


NOT_CONSTANT = _NotConstant()
