"""Hugging Face ``transformers``: ``WitnessCallback`` audits ``Trainer.train`` with :meth:`torchwitness.Run.watch`.

Example::

    from transformers import Trainer
    import torchwitness as tw
    from torchwitness.integrations.hf import WitnessCallback

    with tw.Run("runs/hf") as run:
        Trainer(model=model, args=args, train_dataset=ds, callbacks=[WitnessCallback(run)]).train()
    print(run.findings())

From ``on_train_begin`` to ``on_train_end`` the callback watches the Trainer's model and its optimizer (the torch
optimizer inside Accelerate's wrapper). Models that compute their own loss (``labels`` in the batch) hand it to the
watch through a forward hook that keeps a reference to ``output.loss`` (no host sync); ``labels`` are read as the
target. ``Trainer.evaluate`` runs without gradients, so it counts as evaluation, never as training steps. Give
``path=`` instead of a run to let the callback open the run when training begins and close it when it ends.

``transformers`` is imported when ``WitnessCallback`` is first used; without it the error names the extra.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from torchwitness.integrations._lazy import lazy_class

_EXTRA = "Hugging Face transformers is not installed: pip install 'torchwitness[transformers]'"


def _innermost(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer under Accelerate's ``AcceleratedOptimizer`` (its ``step`` calls the inner one)."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None


def _build() -> type:
    try:
        from transformers import TrainerCallback
    except ImportError as e:
        raise ImportError(_EXTRA) from e

    class WitnessCallback(TrainerCallback):
        """Watch a ``Trainer`` run inside a :class:`torchwitness.Run` (given, or opened at ``path``)."""

        def __init__(self, run: Any = None, *, path: str | Path | None = None, every_n_steps: int = 100,
                     first_steps: int = 5, select: Iterable[str] = (), ignore: Iterable[str] = (),
                     thresholds: Mapping[str, float] | None = None,
                     run_options: Mapping[str, Any] | None = None) -> None:
            from torchwitness.errors import InputError

            if (run is None) == (path is None):
                raise InputError("WitnessCallback needs exactly one of run= or path=")
            self.run, self.path = run, path
            self.watch_options = {"every_n_steps": every_n_steps, "first_steps": first_steps,
                                  "select": tuple(select), "ignore": tuple(ignore), "thresholds": thresholds}
            self.run_options = dict(run_options or {})
            self.watch: Any = None
            self._owns_run = False
            self._loss_handle: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                           **kwargs: Any) -> None:
            from torchwitness.errors import InputError

            if not isinstance(model, torch.nn.Module):
                raise InputError("WitnessCallback: the Trainer passed no model")
            if self.run is None:
                import torchwitness as tw

                self.run, self._owns_run = tw.Run(self.path, **self.run_options), True
            self.watch = self.run.watch(model, _innermost(optimizer), **self.watch_options)
            self._loss_handle = model.register_forward_hook(self._model_loss)

        def _model_loss(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
            loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
            if self.watch is not None and isinstance(loss, torch.Tensor) and torch.is_grad_enabled():
                self.watch.observe(loss=loss)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self._loss_handle is not None:
                self._loss_handle.remove()
                self._loss_handle = None
            if self.watch is not None:
                self.watch.close()
                self.watch = None
            if self._owns_run and self.run is not None:
                self.run.close()
                self._owns_run = False  # self.run stays readable: callback.run.findings()

    WitnessCallback.__module__ = __name__
    return WitnessCallback


__getattr__ = lazy_class(__name__, "WitnessCallback", _build)
