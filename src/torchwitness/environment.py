"""What ``run.start`` records about the environment: versions, packages, platform, git state, seeds."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import rfc8785

_DIST_INFO = re.compile(r"^(?P<name>.+?)-(?P<version>[^-]+?)\.(?:dist-info|egg-info)$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def _name_version(d: importlib.metadata.Distribution) -> str:
    # The installer wrote name and version into the folder name: reading it is a directory listing, where
    # parsing every METADATA file (the fallback) cost ~200 ms per Run on an environment of 360 packages.
    path = getattr(d, "_path", None)
    m = _DIST_INFO.match(path.name) if isinstance(path, Path) else None
    if m is not None:
        return f"{_canonical(m['name'])}=={m['version']}"
    return f"{_canonical(d.metadata['Name'] or '')}=={d.version}"


@functools.lru_cache(maxsize=1)
def packages_digest() -> tuple[str, int]:
    """``sha256`` over the sorted ``name==version`` lines (PEP 503 names) of every installed distribution, and
    their count. Computed once per process: installing packages into a running interpreter is not a use case
    this record serves (and the versions already imported would not change with it)."""
    names = sorted({_name_version(d) for d in importlib.metadata.distributions()})
    return "sha256:" + hashlib.sha256("\n".join(names).encode()).hexdigest(), len(names)


def config_digest(config: Any) -> str:
    return "sha256:" + hashlib.sha256(rfc8785.dumps(config)).hexdigest()


def _caller_dir() -> Path:
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    return Path(main).resolve().parent if main else Path.cwd()


def git_state(directory: Path | None = None) -> dict[str, Any] | None:
    """Commit and dirty flag of the git work tree holding the calling script, or None outside git."""
    directory = directory or _caller_dir()
    try:  # one process for both: `status --branch` heads its output with the commit ("# branch.oid <sha>")
        out = subprocess.run(["git", "-C", str(directory), "status", "--porcelain=v2", "--branch",
                              "--untracked-files=no"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    lines = out.stdout.splitlines()
    commit = next((ln.split()[2] for ln in lines if ln.startswith("# branch.oid ")), None)
    if commit is None or commit == "(initial)":  # a repository without a commit has no HEAD to name
        return None
    return {"commit": commit, "dirty": any(not ln.startswith("#") for ln in lines)}


def describe(*, seed: int | None = None, config: Any = None) -> dict[str, Any]:
    """The ``run.start`` payload. Imports torch: call it from torch-facing code only."""
    import torch

    digest, count = packages_digest()
    cuda = torch.cuda.is_available()
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "packages_digest": digest,
        "packages_count": count,
        "git": git_state(),
        "argv0": Path(sys.argv[0]).name if sys.argv and sys.argv[0] else None,
        "seeds": {"user": seed, "torch_initial": torch.initial_seed()},
        "determinism": {
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
        },
    }
    if config is not None:
        env["config_digest"] = config_digest(config)
        env["config"] = config
    return env
