"""PyTorch Lightning: ``WitnessCallback`` records a ``Trainer.fit`` and audits it with :meth:`torchwitness.Run.watch`.

Example::

    import lightning.pytorch as pl
    import torchwitness as tw
    from torchwitness.integrations.lightning import WitnessCallback

    with tw.Run("runs/lit") as run:
        pl.Trainer(max_epochs=3, callbacks=[WitnessCallback(run, every_n_steps=50)]).fit(module, loader)
    print(run.findings())

What is recorded, with no other code: the module's ``hparams`` and the trainer's settings (``params``); every
metric logged with ``self.log`` at the step Lightning logs it (``metrics``; validation and test metrics as
``eval`` records of the ``validation``/``test`` split); the size of each data set (``dataset``); the model's
architecture and size, and each checkpoint ``ModelCheckpoint`` saves with its file digest (``model``). Metrics
reach the run the way they reach any Lightning logger (every ``log_every_n_steps``): the callback adds a logger of
its own once checkpoint folders are settled, so checkpoints go where they would have gone.

The watch covers the LightningModule and the trainer's first optimizer from ``on_fit_start`` until the fit ends.
Each training batch opens a watched forward (``training_step`` rarely calls the LightningModule's own
``forward``) that the loss closes in ``on_before_backward`` (no host sync); ``(inputs, target)`` batches also give
the target. On audited steps the loss is seen whatever computes it (a module in any attribute, or a functional
loss such as ``F.cross_entropy``): the watch notes the loss functions ``training_step`` calls. ``loss_fn=`` hooks a
loss module of your own instead. Validation runs without gradients, so the watch counts it as evaluation, never as
training steps. Give ``path=`` instead of a run to let the callback open the run at setup and close it at
teardown (a later ``trainer.test`` resumes it as a new session).

Lightning is imported when ``WitnessCallback`` is first used; without it the error names the extra to install.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from torchwitness.integrations._lazy import lazy_class
from torchwitness.integrations._recording import numbers, record_checkpoint, record_data

_EXTRA = "PyTorch Lightning is not installed: pip install 'torchwitness[lightning]'"


def _settings(trainer: Any, pl_module: Any) -> dict[str, Any]:
    """The module's hparams and what the trainer and optimizer were set to."""
    params: dict[str, Any] = {"hparams": dict(getattr(pl_module, "hparams", {}) or {})}
    params["trainer"] = {k: getattr(trainer, k, None) for k in ("max_epochs", "max_steps", "accumulate_grad_batches",
                                                                "gradient_clip_val", "precision", "world_size")}
    for i, opt in enumerate(trainer.optimizers):
        params[f"optimizer{i or ''}"] = {"name": type(opt).__name__, **{
            k: v for k, v in opt.defaults.items() if isinstance(v, int | float | str | bool | tuple)}}
    return params


def _build() -> type:
    try:
        from lightning.pytorch import Callback
        from lightning.pytorch.loggers import Logger
    except ImportError as e:
        raise ImportError(_EXTRA) from e

    class _Recorder(Logger):
        """Receives what Lightning sends its loggers: logged metrics with their step, and saved checkpoints."""

        def __init__(self, callback: Any) -> None:
            super().__init__()
            self._callback = callback

        @property
        def name(self) -> str:
            return "torchwitness"

        @property
        def version(self) -> str:
            return "0"

        @property
        def save_dir(self) -> str | None:
            # With logger=False ours is the first logger, whose save_dir becomes trainer.log_dir: keep it what it was.
            trainer = self._callback._trainer
            return trainer.default_root_dir if trainer is not None else None

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass  # recorded from the module and trainer at fit start

        def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
            self._callback._logged(dict(metrics), step)

        def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
            self._callback._saved(checkpoint_callback)

    class WitnessCallback(Callback):
        """Record and watch a Lightning fit inside a :class:`torchwitness.Run` (given, or opened at ``path``)."""

        def __init__(self, run: Any = None, *, path: str | Path | None = None, loss_fn: Any = None,
                     every_n_steps: int = 100, first_steps: int = 5, statistics_every: int = 64,
                     select: Iterable[str] = (), ignore: Iterable[str] = (),
                     thresholds: Mapping[str, float] | None = None,
                     run_options: Mapping[str, Any] | None = None) -> None:
            from torchwitness.errors import InputError

            if (run is None) == (path is None):
                raise InputError("WitnessCallback needs exactly one of run= or path=")
            self.run, self.path, self.loss_fn = run, path, loss_fn
            # Passed on as given: run.watch checks them (a str is one pattern, not its letters).
            self.watch_options = {"every_n_steps": every_n_steps, "first_steps": first_steps,
                                  "statistics_every": statistics_every, "select": select, "ignore": ignore,
                                  "thresholds": thresholds}
            self.run_options = dict(run_options or {})
            self.watch: Any = None
            self._owns_run = False
            self._trainer: Any = None
            self._module: Any = None
            self._recorder = _Recorder(self)
            self._data: set[str] = set()
            self._evaluated: dict[str, tuple[str, int]] = {}  # split -> (data set, rows) its metrics come from

        # ---- the run ----------------------------------------------------------------------------------------
        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
            if self.path is not None and (self.run is None or self._owns_run is False):
                import torchwitness as tw

                options = {**self.run_options, **({"resume": True} if self.run is not None else {})}
                self.run, self._owns_run = tw.Run(self.path, **options), True
            self._trainer, self._module = trainer, pl_module

        def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
            self._close_watch()
            if self._recorder in trainer.loggers:
                trainer.loggers = [lg for lg in trainer.loggers if lg is not self._recorder]
            if self._owns_run and self.run is not None:
                self.run.close()
                self._owns_run = False  # self.run stays readable: callback.run.findings()

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            self._close_watch()
            if self._owns_run and self.run is not None:
                self.run.close("error", exception)
                self._owns_run = False

        def _attach(self, trainer: Any) -> None:
            # After every callback's setup: a logger of ours placed first would move ModelCheckpoint's folder.
            if self._recorder not in trainer.loggers:
                trainer.loggers = [*trainer.loggers, self._recorder]

        # ---- what the fit is ----------------------------------------------------------------------------------
        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            self._attach(trainer)
            self.run.log_params(_settings(trainer, pl_module))
            self.run.log_model(type(pl_module).__name__, model=pl_module)
            optimizers = trainer.optimizers
            self.watch = self.run.watch(pl_module, optimizers[0] if optimizers else None, loss_fn=self.loss_fn,
                                        **self.watch_options)

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            record_data(self.run, trainer.train_dataloader, "train", self._data)

        def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
            self._attach(trainer)  # trainer.validate() after fit: the fit's teardown took our logger away
            if not trainer.sanity_checking:
                self._note("validation", record_data(self.run, trainer.val_dataloaders, "validation", self._data))

        def on_test_start(self, trainer: Any, pl_module: Any) -> None:
            self._attach(trainer)
            self._note("test", record_data(self.run, trainer.test_dataloaders, "test", self._data))

        def _note(self, split: str, found: list[tuple[str, int]]) -> None:
            if len(found) == 1:  # several loaders: their metrics cannot be told apart by data set
                self._evaluated[split] = found[0]

        def _logged(self, metrics: dict[str, Any], step: int | None) -> None:
            trainer = self._trainer
            if self.run is None or trainer is None or trainer.sanity_checking:
                return
            epoch = metrics.pop("epoch", None)
            values = numbers(metrics)
            if not values:
                return
            if trainer.validating or trainer.testing:
                split = "test" if trainer.testing else "validation"
                name, rows = self._evaluated.get(split, (None, None))
                self.run.log_eval(values, split=split, dataset=name, rows=rows, model=type(self._module).__name__,
                                  step=step)
            else:
                self.run.log_metrics(values, step=step, epoch=int(epoch) if epoch is not None else None)

        def _saved(self, checkpoint_callback: Any) -> None:
            trainer = self._trainer
            path = getattr(checkpoint_callback, "_last_checkpoint_saved", None) or checkpoint_callback.last_model_path
            if self.run is not None and path:
                record_checkpoint(self.run, self._module, path, type(self._module).__name__,
                                  f"epoch {trainer.current_epoch}, step {trainer.global_step}")

        # ---- the watch ----------------------------------------------------------------------------------------
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
            if not isinstance(self.loss_fn, torch.nn.Module):  # a hooked criterion already reports it
                self.watch.observe(loss=loss)

        def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
            self._close_watch()

        def _close_watch(self) -> None:
            if self.watch is not None:
                self.watch.close()
                self.watch = None

    WitnessCallback.__module__ = __name__
    return WitnessCallback


__getattr__ = lazy_class(__name__, "WitnessCallback", _build)
