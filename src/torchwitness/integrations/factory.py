"""The factory protocol behind ``torchwitness audit pkg.module:factory``.

A factory is a callable without arguments (named ``package.module:function`` or ``path/to/file.py:function``)
returning one of:

- a ``torch.nn.Module``: the model alone (enough for ``--phase static``);
- a mapping or an object with attributes ``model`` (required), ``optimizer``, ``loss_fn`` (a criterion,
  ``loss_fn(output, target)``), ``batches`` and ``loss`` (a whole training step, ``loss(model, batch)`` returning a
  scalar tensor; it takes the place of ``loss_fn``). This is also what ``replay-record`` reads;
- a tuple ``(model, optimizer, loss_fn, batches)``, shorter tuples leaving the tail out.

``batches`` is an iterable (a ``DataLoader``: iterated again when exhausted, so ``--steps`` may exceed an epoch) or
a callable returning one batch per call. A batch is ``(inputs, target)``, a mapping (passed as keyword arguments;
its ``labels``, if any, are the target) or a tensor; ``inputs`` that are a tuple are passed positionally. Without
``loss``, the loss is ``loss_fn(model(inputs), target)``, or the model output's ``loss`` (Hugging Face models).

The audit does not touch the model's mode, device or dtype: it judges what the factory built.

Example (``mypkg/train.py``)::

    def setup():
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        x, y = torch.randn(256, 8), torch.randint(0, 2, (256,))
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
        return {"model": model, "optimizer": torch.optim.AdamW(model.parameters(), lr=1e-3),
                "loss_fn": torch.nn.CrossEntropyLoss(), "batches": loader}

    # torchwitness audit mypkg.train:setup --phase train --steps 50 -f sarif -o audit.sarif
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from torchwitness.errors import AuditError, InputError

Phase = Literal["static", "init", "train"]
PHASES: tuple[str, ...] = ("static", "init", "train")


@dataclass
class AuditTarget:
    """What a factory returned, normalised."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None = None
    loss_fn: Callable[..., Any] | None = None
    batches: Iterable[Any] | Callable[[], Any] | None = None
    loss: Callable[[torch.nn.Module, Any], torch.Tensor] | None = None
    source: tuple[str, int] | None = None  # (file, line) of the factory, where reports can point


def load_factory(spec: str) -> Callable[[], Any]:
    """Import ``module:function`` (or ``file.py:function``) without calling it; bad paths are input errors."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise InputError(f"factory {spec!r} must look like 'package.module:function' or 'file.py:function'")
    try:
        module = _import(module_name)
    except InputError:
        raise
    except Exception as e:  # the module itself failed while importing: that is the user's code, say so
        raise AuditError(f"importing {module_name!r} raised {type(e).__name__}: {e}") from e
    fn = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise InputError(f"{module_name!r} has no attribute {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise InputError(f"factory {spec!r} is a {type(fn).__name__}, not a callable")
    return fn


def _import(module_name: str) -> Any:
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise InputError(f"no such file: {path}")
        spec = importlib.util.spec_from_file_location(f"_torchwitness_factory_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise InputError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path:  # like `python -m`: modules beside the caller are importable
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise InputError(f"cannot import {module_name!r}: no module named {e.name!r}") from None
        raise


def build_target(spec: str) -> AuditTarget:
    """Load and call the factory ``spec``; what it returns must follow the protocol in the module docstring."""
    fn = load_factory(spec)
    try:
        made = fn()
    except Exception as e:
        raise AuditError(f"factory {spec} raised {type(e).__name__}: {e}") from e
    target = as_target(made, spec)
    target.source = _where(fn)
    return target


def _where(fn: Callable[..., Any]) -> tuple[str, int] | None:
    try:
        path, line = inspect.getsourcefile(fn), inspect.getsourcelines(fn)[1]
    except (OSError, TypeError):  # built-ins and objects without source
        return None
    if path is None:
        return None
    p = Path(path).resolve()
    return (p.relative_to(Path.cwd()).as_posix() if p.is_relative_to(Path.cwd()) else str(p)), max(line, 1)


def as_target(made: Any, spec: str = "factory") -> AuditTarget:
    if isinstance(made, torch.nn.Module):
        return AuditTarget(model=made)
    if isinstance(made, tuple | list):
        if not 1 <= len(made) <= 4:
            raise InputError(f"{spec} returned a tuple of {len(made)}; expected (model, optimizer, loss_fn, batches)")
        made = dict(zip(("model", "optimizer", "loss_fn", "batches"), made, strict=False))
    get = made.get if isinstance(made, Mapping) else (lambda k: getattr(made, k, None))
    model = get("model")
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{spec} returned no torch.nn.Module as 'model' (got {type(model).__name__})")
    opt = get("optimizer")
    if opt is not None and not isinstance(opt, torch.optim.Optimizer):
        raise InputError(f"{spec}: 'optimizer' is a {type(opt).__name__}, not a torch.optim.Optimizer")
    return AuditTarget(model=model, optimizer=opt, loss_fn=get("loss_fn"), batches=get("batches"), loss=get("loss"))


def batch_stream(source: Iterable[Any] | Callable[[], Any]) -> Iterator[Any]:
    """Endless batches from an iterable (re-iterated per epoch when it can be) or a zero-argument callable."""
    if callable(source) and not isinstance(source, Iterable):
        while True:
            yield source()
    while True:
        it = iter(source)
        empty = True
        for batch in it:
            empty = False
            yield batch
        if empty or it is source:  # an exhausted one-shot iterator ends the stream
            return


def split_batch(batch: Any) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
    """``(positional inputs, keyword inputs, target)`` of one batch."""
    if isinstance(batch, Mapping):
        return (), dict(batch), batch.get("labels")
    if isinstance(batch, tuple | list) and len(batch) == 2:
        inputs, target = batch
        if isinstance(inputs, Mapping):
            return (), dict(inputs), target
        return (tuple(inputs) if isinstance(inputs, tuple | list) else (inputs,)), {}, target
    return (batch,), {}, None


def step_loss(target: AuditTarget, batch: Any, observe: Callable[..., None]) -> torch.Tensor:
    """Forward one batch and return the loss, telling the watch about targets its hooks cannot see."""
    if target.loss is not None:
        return target.loss(target.model, batch)
    args, kwargs, y = split_batch(batch)
    out = target.model(*args, **kwargs)
    if target.loss_fn is not None:
        loss = target.loss_fn(out, y)
        if not isinstance(target.loss_fn, torch.nn.Module):  # module criteria are hooked by the watch itself
            observe(targets=y if isinstance(y, torch.Tensor) else None, loss=loss)
        return loss
    loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", out)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise InputError("no loss: give the factory a 'loss_fn' or 'loss', or a model that returns .loss")
    observe(targets=y if isinstance(y, torch.Tensor) else None, loss=loss)
    return loss
