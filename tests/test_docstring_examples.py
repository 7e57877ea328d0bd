"""Every ``>>>`` example in the public modules runs and prints what its docstring says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import torchwitness

MODULES = sorted(m.name for m in pkgutil.walk_packages(torchwitness.__path__, "torchwitness.")
                 if not m.name.startswith("torchwitness.demo") and m.name != "torchwitness.__main__")


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ImportError as e:  # an optional extra that is not installed
        pytest.skip(str(e))
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
