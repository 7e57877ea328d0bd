"""What a model pickle may import, decided by an allow-list and by what loading does with each import.

``SAFE`` is what ``torch.load(weights_only=True)`` accepts by default (``_get_allowed_globals`` in
``torch/_weights_only_unpickler.py``, torch 2.13; a test compares the two), plus the data-only reconstructors of
numpy arrays and builtin containers that plain numpy/joblib pickles need. Everything else is judged by its roles
(:class:`~torchwitness.rules.artifact.pickle_ops.GlobalRef`):

* called on load (``REDUCE``, ``INST``, ``OBJ``, or the function a construction helper runs): ERROR, since the
  file chooses the arguments of code the scanner cannot vouch for;
* modified in place (``BUILD``/``SETITEM``/``APPEND`` on the imported object): ERROR;
* reached through an attribute chain (``builtins`` + ``eval.__call__``, ``torch`` + ``os.system``): ERROR unless
  every link is a class name (a nested class);
* in a module that gives command, code, file or network access (``os``, ``subprocess``, ``builtins``...): ERROR
  whatever the role;
* a class that is only constructed (``NEWOBJ``, ``copyreg._reconstructor`` over a builtin base) or referenced:
  WARN, needs trust (its module's import, ``__new__``, ``__setstate__`` and later methods are its own code);
* a non-class referenced as a value (a function placed in the loaded object): ERROR.

>>> from torchwitness.rules.artifact.pickle_ops import GlobalRef
>>> judge(GlobalRef("torch._utils", "_rebuild_tensor_v2", "GLOBAL", 0, roles={"call"}))[0]
'safe'
>>> judge(GlobalRef("my.models", "Net", "GLOBAL", 0, roles={"new"}))[0], judge(GlobalRef("cProfile", "run",
...     "GLOBAL", 0, roles={"call"}))[0]
('warn', 'error')
"""

from __future__ import annotations

import re
from collections.abc import Collection

from torchwitness.rules.artifact.pickle_ops import GlobalRef

_LEGACY = ("BFloat16", "Bool", "Byte", "Char", "Double", "Float", "Half", "Int", "Long", "Short")
_SPARSE = tuple(t for t in _LEGACY if t != "Bool")
_DTYPES = ("bfloat16", "bits16", "bits1x8", "bits2x4", "bits4x2", "bits8", "bool", "complex128", "complex32",
           "complex64", "float16", "float32", "float64", "float4_e2m1fn_x2", "float8_e4m3fn", "float8_e4m3fnuz",
           "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu", "qint32", "qint8", "quint2x4", "quint4x2", "quint8",
           *(f"int{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64)),
           *(f"uint{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64)))
_REBUILD = ("parameter", "parameter_with_state", "qtensor", "tensor", "tensor_v2", "tensor_v3", "sparse_tensor",
            "meta_tensor_no_storage", "nested_tensor", "wrapper_subclass", "device_tensor_from_numpy",
            "device_tensor_from_cpu_tensor")

WEIGHTS_ONLY: frozenset[str] = frozenset({
    "collections.OrderedDict", "collections.Counter", "torch.nn.parameter.Parameter",
    "torch.serialization._get_layout", "torch.Size", "torch.Tensor", "torch.device", "_codecs.encode",
    "builtins.bytearray", "builtins.set", "builtins.complex", "torch._tensor._rebuild_from_type_v2",
    "torch.storage.TypedStorage", "torch.storage.UntypedStorage",
    *(f"torch.{t}" for t in _DTYPES),
    *(f"torch.{q}" for q in ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine",
                             "per_channel_symmetric", "per_channel_affine_float_qparams")),
    *(f"torch._utils._rebuild_{r}" for r in _REBUILD),
    *(f"torch.{p}{t}Storage" for p in ("", "cuda.") for t in (*_LEGACY, "ComplexDouble", "ComplexFloat")),
    *(f"torch.{t}Storage" for t in ("QUInt8", "QInt8", "QInt32", "QUInt4x2", "QUInt2x4")),
    *(f"torch.{p}{t}Tensor" for p in ("", "cuda.") for t in _LEGACY),
    *(f"torch.{p}sparse.{t}Tensor" for p in ("", "cuda.") for t in _SPARSE),
})

# data-only helpers beyond weights_only: builtin containers, object construction (whose class is judged on its
# own), numpy arrays/dtypes/scalars, and joblib's array placeholder (joblib then reads raw bytes or a pickle that
# the scan follows)
DATA: frozenset[str] = frozenset({
    *(f"builtins.{t}" for t in ("object", "dict", "list", "tuple", "frozenset", "int", "float", "str", "bytes",
                                "bool", "slice", "range")),
    "copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__",
    "numpy.ndarray", "numpy.dtype", *(f"numpy.{c}.multiarray.{f}" for c in ("core", "_core")
                                      for f in ("_reconstruct", "scalar")),
    "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer",
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "torch.storage._load_from_bytes",  # only with literal bytes, which are scanned as a torch file of their own
    # stdlib value types whose constructors only copy their arguments (a defaultdict's factory is judged as a
    # referenced value: it is called later, on a missing key, not on load)
    "collections.defaultdict", "collections.deque", "decimal.Decimal", "fractions.Fraction",
    *(f"datetime.{t}" for t in ("datetime", "date", "time", "timedelta", "timezone")),
})
SAFE: frozenset[str] = WEIGHTS_ONLY | DATA
_SAFE_PATTERN = re.compile(r"numpy\.dtypes\.[A-Za-z0-9]+DType")
# TorchScript archives: the C++ unpickler's helpers, and classes compiled from the archive's own code/ folder
TORCHSCRIPT_HELPERS = re.compile(r"torch\.jit\._pickle\.[a-z_]+")
TORCHSCRIPT_CLASS = re.compile(r"__torch__\..+")

# Modules whose classes are never just data: any import from them is an ERROR, whatever the role
DENY_MODULES: frozenset[str] = frozenset({
    "os", "posix", "nt", "subprocess", "_posixsubprocess", "sys", "shutil", "socket", "runpy", "importlib",
    "pickle", "_pickle", "marshal", "ctypes", "pty", "code", "codeop", "webbrowser", "asyncio", "multiprocessing",
    "http", "urllib", "requests", "ftplib", "smtplib", "telnetlib", "tempfile", "pathlib", "io", "_io",
    "commands", "dill", "cloudpickle", "bdb", "pdb", "timeit", "operator", "_operator", "functools", "_functools",
    "types", "profile", "cProfile", "_lsprof", "pydoc", "antigravity", "this", "builtins", "__builtin__", "signal",
    "threading", "_thread", "gc", "inspect", "glob", "zipimport", "site", "shelve", "sqlite3", "xmlrpc",
    "socketserver", "imaplib", "poplib", "nntplib", "copyreg", "copy_reg", "torch.hub", "torch.serialization",
    "torch.jit", "torch._C", "torch.ops", "torch.utils.cpp_extension", "numpy.testing", "joblib.numpy_pickle_compat",
    "joblib.numpy_pickle_utils", "_codecs", "codecs", "ssl", "select", "mmap", "fcntl", "resource", "ensurepip",
    "venv", "pip", "setuptools", "distutils", "lib2to3", "idlelib", "tkinter", "turtle", "trace", "tracemalloc",
    "faulthandler", "sysconfig", "linecache", "zipfile", "tarfile", "logging", "string", "encodings", "gzip",
    "bz2", "lzma", "zlib", "weakref", "atexit", "concurrent", "unittest", "doctest", "getpass", "platform",
    "sched", "contextlib", "abc", "typing", "dataclasses", "enum", "ast", "dis", "imp", "pkgutil", "readline",
    "rlcompleter", "cmd", "shlex", "posixpath", "ntpath", "genericpath", "fileinput", "filecmp", "stat",
})

SAFE_, WARN, ERROR = "safe", "warn", "error"


def _class_name(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Z][A-Za-z0-9_]*", name)) and not name.startswith("__")


def _denied(module: str) -> bool:
    # a package's __main__ runs its command line when imported (venv, unittest, lib2to3 have no __name__ guard)
    return module.endswith(".__main__") or any(module == m or module.startswith(m + ".") for m in DENY_MODULES)


def judge(ref: GlobalRef, extra_safe: Collection[str] = (), *, torchscript: bool = False) -> tuple[str, str]:
    """(verdict, reason) for one import: ``"safe"``, ``"warn"`` (needs trust) or ``"error"``."""
    q, roles = ref.qualname, ref.roles
    if "patch" in roles:
        return ERROR, "the pickle modifies the imported object itself (BUILD/SETITEM/APPEND on it)"
    if q in SAFE or q in extra_safe or _SAFE_PATTERN.fullmatch(q) or (
            torchscript and TORCHSCRIPT_HELPERS.fullmatch(q)):
        return SAFE_, ""
    if torchscript and TORCHSCRIPT_CLASS.fullmatch(q):
        return WARN, ("TorchScript class from the archive's own code/ folder: its code runs in the TorchScript "
                      "interpreter on load (needs trust)")
    raw_module = ref.raw.rsplit(".", 1)[0] if ref.raw else ref.module
    if _denied(ref.module) or _denied(raw_module):
        return ERROR, f"module {ref.module} gives command, code, file or network access"
    if "." in ref.name and not all(map(_class_name, ref.name.split("."))):
        return ERROR, f"{ref.module} + {ref.name!r} is reached through an attribute chain"
    if "call" in roles:
        return ERROR, "it is called on load with arguments the file chooses"
    if "new-args" in roles:
        return ERROR, "class constructed with arguments the file chooses: its __new__ runs with them"
    last = ref.name.rsplit(".", 1)[-1]
    if "new" in roles:
        return WARN, "class constructed on load: its module, __new__ and __setstate__ run (needs trust)"
    if _class_name(last):
        return WARN, "class referenced: importing its module runs that module's code (needs trust)"
    return ERROR, "a function or object outside the allow-list is placed in the loaded object"
