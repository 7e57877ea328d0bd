"""PyTorch Lightning: ``WitnessCallback`` audits ``Trainer.fit`` with :meth:`torchwitness.Run.watch`.

Example::

    import lightning.pytorch as pl
    import torchwitness as tw
    from torchwitness.integrations.lightning import WitnessCallback

    with tw.Run("runs/lit") as run:
        pl.Trainer(max_epochs=3, callbacks=[WitnessCallback(run, every_n_steps=50)]).fit(module, loader)
    print(run.findings())

The callback watches the LightningModule and the trainer's first optimizer from ``on_fit_start`` until the fit
ends. Each training batch opens a watched forward (``training_step`` rarely calls the LightningModule's own
``forward``) that the loss closes in ``on_before_backward`` (no host sync); ``(inputs, target)`` batches also give
the target. A ``loss_fn`` (or a module attribute ``loss_fn`` /
``criterion`` that is an ``nn.Module``) lets loss rules see the criterion's inputs. Validation runs without
gradients, so the watch counts it as evaluation, never as training steps. Give ``path=`` instead of a run to let
the callback open the run at setup and close it at teardown.

Lightning is imported when ``WitnessCallback`` is first used; without it the error names the extra to install.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from torchwitness.integrations._lazy import lazy_class

_EXTRA = "PyTorch Lightning is not installed: pip install 'torchwitness[lightning]'"


def _build() -> type:
    try:
        from lightning.pytorch import Callback
    except ImportError as e:
        raise ImportError(_EXTRA) from e

    class WitnessCallback(Callback):
        """Watch a Lightning fit inside a :class:`torchwitness.Run` (given, or opened at ``path``)."""

        def __init__(self, run: Any = None, *, path: str | Path | None = None, loss_fn: Any = None,
                     every_n_steps: int = 100, first_steps: int = 5, select: Iterable[str] = (),
                     ignore: Iterable[str] = (), thresholds: Mapping[str, float] | None = None,
                     run_options: Mapping[str, Any] | None = None) -> None:
            from torchwitness.errors import InputError

            if (run is None) == (path is None):
                raise InputError("WitnessCallback needs exactly one of run= or path=")
            self.run, self.path, self.loss_fn = run, path, loss_fn
            self.watch_options = {"every_n_steps": every_n_steps, "first_steps": first_steps,
                                  "select": tuple(select), "ignore": tuple(ignore), "thresholds": thresholds}
            self.run_options = dict(run_options or {})
            self.watch: Any = None
            self._owns_run = False
            self._loss_hooked = False

        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
            if self.run is None and stage == "fit":
                import torchwitness as tw

                self.run, self._owns_run = tw.Run(self.path, **self.run_options), True

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            optimizers = trainer.optimizers
            loss_fn = self.loss_fn
            if loss_fn is None:
                loss_fn = next((c for c in (getattr(pl_module, "loss_fn", None), getattr(pl_module, "criterion", None))
                                if isinstance(c, torch.nn.Module)), None)
            self._loss_hooked = isinstance(loss_fn, torch.nn.Module)
            self.watch = self.run.watch(pl_module, optimizers[0] if optimizers else None, loss_fn=loss_fn,
                                        **self.watch_options)

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            # training_step usually calls submodules, not the LightningModule's own forward: open the watch's
            # training forward here and close it at the loss.
            if self.watch is None:
                return
            pair = isinstance(batch, tuple | list) and len(batch) == 2
            inputs = batch[0] if pair else batch
            if isinstance(inputs, Mapping):
                self.watch.begin_forward(**inputs)
            else:
                self.watch.begin_forward(*(inputs if isinstance(inputs, tuple | list) else (inputs,)))
            if pair and isinstance(batch[1], torch.Tensor):
                self.watch.observe(targets=batch[1])

        def on_before_backward(self, trainer: Any, pl_module: Any, loss: torch.Tensor) -> None:
            if self.watch is None:
                return
            self.watch.end_forward(loss)
            if not self._loss_hooked:  # a hooked criterion already reports it
                self.watch.observe(loss=loss)

        def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
            self._close_watch()

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            self._close_watch()
            if self._owns_run and self.run is not None:
                self.run.close("error", exception)

        def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
            self._close_watch()
            if self._owns_run and self.run is not None and stage == "fit":
                self.run.close()

        def _close_watch(self) -> None:
            if self.watch is not None:
                self.watch.close()
                self.watch = None

    WitnessCallback.__module__ = __name__
    return WitnessCallback


__getattr__ = lazy_class(__name__, "WitnessCallback", _build)
