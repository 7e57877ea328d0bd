"""Which imports a model pickle may name: what ``torch.save`` of tensors, state dicts and optimizer states, and
pickles of numpy arrays, need, and nothing that can run a command, open a file or evaluate code.

>>> classify("torch._utils", "_rebuild_tensor_v2"), classify("os", "system"), classify("my.models", "Net")
('safe', 'dangerous', 'unknown')
"""

from __future__ import annotations

import re
from collections.abc import Iterable

SAFE: frozenset[str] = frozenset({
    "collections.OrderedDict",
    "builtins.set", "builtins.frozenset", "builtins.slice", "builtins.range", "builtins.complex",
    "builtins.bytearray", "builtins.dict", "builtins.list", "builtins.tuple", "builtins.int", "builtins.float",
    "builtins.str", "builtins.bool", "builtins.bytes",
    "__builtin__.set", "__builtin__.frozenset", "__builtin__.slice", "__builtin__.complex",
    "_codecs.encode",  # numpy scalars pickled with protocol 2 carry their bytes through it
    "torch.device", "torch.Size", "torch.Tensor", "torch.nn.parameter.Parameter", "torch.nn.parameter.Buffer",
    "torch.storage.UntypedStorage", "torch.storage.TypedStorage", "torch.serialization._get_layout",
    "torch._tensor._rebuild_from_type_v2", "torch.strided", "torch.sparse_coo", "torch.sparse_csr",
    "torch.contiguous_format", "torch.channels_last", "torch.channels_last_3d", "torch.preserve_format",
    "numpy.ndarray", "numpy.dtype", "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
})

SAFE_PATTERNS: tuple[re.Pattern[str], ...] = tuple(re.compile(p) for p in (
    r"torch\._utils\._rebuild_[a-z0-9_]+",
    r"torch(\.cuda)?\.[A-Za-z0-9]*Storage",
    r"torch\.(float|int|uint|complex|bfloat|qint|quint|bits)[0-9a-z_]*",
    r"torch\.(half|double|short|long|bool|cfloat|cdouble|chalf)",
    r"numpy\.dtypes\.[A-Za-z0-9]+DType",
))

# Imports that give a pickle code execution, file or network access on their own.
DANGEROUS_MODULES: frozenset[str] = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "runpy", "importlib", "pickle", "_pickle",
    "marshal", "ctypes", "pty", "code", "codeop", "webbrowser", "asyncio", "multiprocessing", "http", "urllib",
    "requests", "ftplib", "smtplib", "telnetlib", "tempfile", "pathlib", "io", "commands", "dill", "cloudpickle",
    "bdb", "pdb", "timeit", "operator", "functools", "types", "torch.hub", "torch.serialization",
})
DANGEROUS_NAMES: frozenset[str] = frozenset({
    "builtins.eval", "builtins.exec", "builtins.compile", "builtins.open", "builtins.getattr", "builtins.setattr",
    "builtins.delattr", "builtins.__import__", "builtins.globals", "builtins.vars", "builtins.input",
    "builtins.breakpoint", "builtins.apply", "__builtin__.eval", "__builtin__.exec", "__builtin__.open",
    "__builtin__.getattr", "__builtin__.__import__", "__builtin__.execfile", "torch.load", "numpy.load",
    "numpy.testing._private.utils.runstring", "torch._C._load_for_lite_interpreter", "torch.jit.load",
    "torch.storage._load_from_bytes",
})


def classify(module: str, name: str, extra_safe: Iterable[str] = ()) -> str:
    """``"safe"``, ``"dangerous"`` or ``"unknown"`` for the import ``module.name``."""
    full = f"{module}.{name}"
    if full in DANGEROUS_NAMES or any(module == m or module.startswith(m + ".") for m in DANGEROUS_MODULES):
        return "dangerous"
    if full in SAFE or full in set(extra_safe) or any(p.fullmatch(full) for p in SAFE_PATTERNS):
        return "safe"
    return "unknown"
