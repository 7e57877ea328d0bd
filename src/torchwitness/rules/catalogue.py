"""The rule catalogue: stable IDs, severities, phases, remediation and the obligations each rule bears on.

A rule is a small function whose docstring is its user documentation; it is registered with :func:`rule` and
returns findings, never prints. The registry refuses duplicates and unknown IDs (opacus-style registries), and
third-party packages add rules through the ``torchwitness.rules`` entry-point group, loaded lazily on first
lookup (never at import time).

>>> from torchwitness.rules.catalogue import Severity
>>> Severity.parse("warn") > Severity.INFO
True
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.metadata
import inspect
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from torchwitness.errors import InputError

ENTRY_POINT_GROUP = "torchwitness.rules"
# Built-in rule packages that register on import; loaded with the plugins so listing never misses them.
_BUILTIN = ("torchwitness.rules.training", "torchwitness.rules.static.engine", "torchwitness.rules.artifact.model_file",
            "torchwitness.probes.operators")
_ID = re.compile(r"^[A-Z]{2,4}\d{3,4}$")


class Severity(enum.IntEnum):
    """Ordered severities. ``HINT`` (performance hints) is kept out of default output."""

    HINT = 0
    INFO = 1
    WARN = 2
    ERROR = 3

    @classmethod
    def parse(cls, text: str | Severity) -> Severity:
        if isinstance(text, Severity):
            return text
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise InputError(f"unknown severity {text!r}; use one of {', '.join(s.name.lower() for s in cls)}") \
                from None

    def __str__(self) -> str:
        return self.name.lower()


class Phase(str, enum.Enum):
    """Where in a model's life a rule looks."""

    STATIC = "static"  # source code, without running it
    ARTIFACT = "artifact"  # model files on disk
    INIT = "init"  # model and optimizer as constructed
    BATCH = "batch"  # inputs and targets
    FORWARD = "forward"
    BACKWARD = "backward"
    STEP = "step"  # optimizer step
    EVAL = "eval"
    GENERATION = "generation"
    DISTRIBUTED = "distributed"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Rule:
    """A registered rule. ``doc`` (the check function's docstring) is what ``torchwitness explain`` prints."""

    id: str
    name: str
    title: str
    severity: Severity
    phase: Phase
    check: Callable[..., Any] | None
    remediation: str
    obligations: tuple[str, ...] = ()
    category: str = "correctness"
    source: str = "torchwitness"
    references: tuple[str, ...] = ()

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.check.__doc__ or "") if self.check is not None else ""


@dataclass
class _Registry:
    rules: dict[str, Rule] = field(default_factory=dict)
    plugins_loaded: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock)  # a plugin may look rules up on import


_REGISTRY = _Registry()


def register_rule(r: Rule, *, force: bool = False) -> Rule:
    """Add ``r`` to the catalogue; a second rule with the same ID is refused unless ``force``."""
    if not _ID.match(r.id):
        raise InputError(f"rule ID {r.id!r} must look like 'TW101' (2-4 capitals, 3-4 digits)")
    existing = _REGISTRY.rules.get(r.id)
    if existing is not None and not force and existing != r:
        raise InputError(f"rule ID {r.id} is already registered by {existing.source}")
    _REGISTRY.rules[r.id] = r
    return r


def rule(id: str, *, name: str, title: str, severity: Severity | str, phase: Phase | str, remediation: str,
         obligations: Iterable[str] = (), category: str = "correctness", references: Iterable[str] = (),
         source: str = "torchwitness") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a check function as rule ``id``; the function is returned unchanged."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        register_rule(Rule(id=id, name=name, title=title, severity=Severity.parse(severity), phase=Phase(phase),
                           check=fn, remediation=remediation, obligations=tuple(obligations), category=category,
                           source=source, references=tuple(references)))
        return fn

    return decorate


def _load_plugins() -> None:
    with _REGISTRY.lock:
        if _REGISTRY.plugins_loaded:
            return
        _REGISTRY.plugins_loaded = True
        for module in _BUILTIN:
            importlib.import_module(module)
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            before = set(_REGISTRY.rules)
            try:
                loaded = ep.load()
            except Exception as e:  # a broken plugin must not take the built-in rules down with it
                raise InputError(f"rule plugin {ep.name!r} ({ep.value}) failed to load: {e}") from e
            source = ep.dist.name if ep.dist else ep.value
            # A plugin is either a module that registers rules when imported, or a callable returning Rules.
            if callable(loaded) and not inspect.ismodule(loaded):
                for r in loaded():
                    register_rule(dataclasses.replace(r, source=source))
            # Rules a plugin module registered with the default source are credited to its distribution.
            for rid in set(_REGISTRY.rules) - before:
                if _REGISTRY.rules[rid].source == "torchwitness":
                    register_rule(dataclasses.replace(_REGISTRY.rules[rid], source=source), force=True)


def all_rules() -> list[Rule]:
    """Every rule, built-in and plugin, sorted by ID."""
    _load_plugins()
    return sorted(_REGISTRY.rules.values(), key=lambda r: r.id)


def get_rule(rule_id: str) -> Rule:
    """The rule with this ID; an unknown ID is an input error that names close matches."""
    _load_plugins()
    key = rule_id.strip().upper()
    if key in _REGISTRY.rules:
        return _REGISTRY.rules[key]
    for r in _REGISTRY.rules.values():
        if r.name == rule_id:
            return r
    import difflib

    close = difflib.get_close_matches(key, list(_REGISTRY.rules), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; 'torchwitness rules' lists them"
    raise InputError(f"unknown rule ID {rule_id!r}{hint}")


def select_rules(select: Iterable[str] = (), ignore: Iterable[str] = ()) -> set[str]:
    """Rule IDs left after ``--select`` (IDs or ID prefixes) and ``--ignore``; unknown IDs are refused."""
    ids = [r.id for r in all_rules()]

    def expand(patterns: Iterable[str]) -> set[str]:
        if isinstance(patterns, str):  # one pattern, not its letters
            patterns = (patterns,)
        try:
            patterns = list(patterns)
        except TypeError:
            raise InputError(f"rule selections must be rule IDs or ID prefixes, not {patterns!r}") from None
        out: set[str] = set()
        for p in patterns:
            if not isinstance(p, str) or not p.strip():  # an empty prefix would match every rule
                raise InputError(f"not a rule ID or ID prefix: {p!r}")
            p = p.strip().upper()
            matched = {i for i in ids if i.startswith(p)}
            if not matched:
                get_rule(p)  # raises the readable unknown-ID error
            out |= matched
        return out

    chosen = expand(select) if select else set(ids)
    return chosen - expand(ignore or ())
