"""Hugging Face ``transformers``: ``WitnessCallback`` records ``Trainer.train`` and audits it with
:meth:`torchwitness.Run.watch`.

Example::

    from transformers import Trainer
    import torchwitness as tw
    from torchwitness.integrations.hf import WitnessCallback

    with tw.Run("runs/hf") as run:
        Trainer(model=model, args=args, train_dataset=ds, callbacks=[WitnessCallback(run)]).train()
    print(run.findings())

What is recorded, with no other code: the ``TrainingArguments`` (``params``); every value the Trainer logs
(loss, learning rate, gradient norm...) at its global step (``metrics``); each evaluation's metrics (``eval``,
split ``validation``, or ``test`` for a ``test_`` prefix) with the size of the data evaluated; the training and
evaluation data set sizes (``dataset``); the model's class, size and ``config`` (``model``); and each checkpoint
folder the Trainer saves, every file with its digest (``model``). An evaluation after training, with ``path=``,
is recorded in a resumed session of the run.

From ``on_train_begin`` to ``on_train_end`` the callback watches the Trainer's model and its optimizer (the torch
optimizer inside Accelerate's wrapper). Models that compute their own loss (``labels`` in the batch) hand it to the
watch through a forward hook that keeps a reference to ``output.loss`` (no host sync); ``labels`` are read as the
target. ``Trainer.evaluate`` runs without gradients, so it counts as evaluation, never as training steps. Give
``path=`` instead of a run to let the callback open the run when training begins and close it when it ends.

``transformers`` is imported when ``WitnessCallback`` is first used; without it the error names the extra.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from torchwitness.integrations._lazy import lazy_class
from torchwitness.integrations._recording import data_rows, numbers, record_checkpoint, record_data
from torchwitness.probes.hookref import detachable

_EXTRA = "Hugging Face transformers is not installed: pip install 'torchwitness[transformers]'"


def _innermost(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer under Accelerate's ``AcceleratedOptimizer`` (its ``step`` calls the inner one)."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None


def _evaluated_split(metrics: Mapping[str, Any]) -> str:
    """``test`` when the Trainer was asked for ``metric_key_prefix="test"``, else ``validation``."""
    return "test" if metrics and all(str(k).startswith("test_") for k in metrics if k != "epoch") else "validation"


def _build() -> type:
    try:
        from transformers import TrainerCallback
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
    except ImportError as e:
        raise ImportError(_EXTRA) from e

    class WitnessCallback(TrainerCallback):
        """Record and watch a ``Trainer`` run inside a :class:`torchwitness.Run` (given, or opened at ``path``)."""

        def __init__(self, run: Any = None, *, path: str | Path | None = None, every_n_steps: int = 100,
                     first_steps: int = 5, statistics_every: int = 64, select: Iterable[str] = (),
                     ignore: Iterable[str] = (), thresholds: Mapping[str, float] | None = None,
                     run_options: Mapping[str, Any] | None = None) -> None:
            from torchwitness.errors import InputError

            if (run is None) == (path is None):
                raise InputError("WitnessCallback needs exactly one of run= or path=")
            self.run, self.path = run, path
            # Passed on as given: run.watch checks them (a str is one pattern, not its letters).
            self.watch_options = {"every_n_steps": every_n_steps, "first_steps": first_steps,
                                  "statistics_every": statistics_every, "select": select, "ignore": ignore,
                                  "thresholds": thresholds}
            self.run_options = dict(run_options or {})
            self.watch: Any = None
            self._owns_run = False
            self._loss_handle: Any = None
            self._model: Any = None
            self._data: set[str] = set()

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                           **kwargs: Any) -> None:
            from torchwitness.errors import InputError

            if not isinstance(model, torch.nn.Module):
                raise InputError("WitnessCallback: the Trainer passed no model")
            if self.path is not None and not self._owns_run:
                import torchwitness as tw

                options = {**self.run_options, **({"resume": True} if self.run is not None else {})}
                self.run, self._owns_run = tw.Run(self.path, **options), True
            self._model = model
            self.run.log_params(args.to_dict())
            config = getattr(model, "config", None)
            self.run.log_model(_model_name(model), model=model,
                               config=config.to_dict() if hasattr(config, "to_dict") else None)
            record_data(self.run, kwargs.get("train_dataloader"), "train", self._data)
            self.watch = self.run.watch(model, _innermost(optimizer), **self.watch_options)
            self._loss_handle = model.register_forward_hook(detachable(self._model_loss))

        def _model_loss(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
            loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
            if self.watch is not None and isinstance(loss, torch.Tensor) and torch.is_grad_enabled():
                self.watch.observe(loss=loss)

        def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None,
                   **kwargs: Any) -> None:
            # evaluation metrics arrive in on_evaluate too, with the data they were computed on
            values = numbers({k: v for k, v in (logs or {}).items()
                              if k != "epoch" and not str(k).startswith(("eval_", "test_"))})
            epoch = (logs or {}).get("epoch")
            if values and self._open():
                self.run.log_metrics(values, step=state.global_step,
                                     epoch=int(epoch) if isinstance(epoch, int | float) else None)

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None,
                        **kwargs: Any) -> None:
            values = numbers({k: v for k, v in (metrics or {}).items() if k != "epoch"})
            if not values:
                return
            split = _evaluated_split(values)
            loader = kwargs.get("eval_dataloader")
            named = data_rows(loader)
            with self._session() as run:
                record_data(run, loader, split, self._data)
                run.log_eval(values, split=split, dataset=named[0][0] if named else None,
                             rows=named[0][1] if named else None, model=_model_name(kwargs.get("model")),
                             step=state.global_step)

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if self._open():
                record_checkpoint(self.run, self._model, folder, _model_name(self._model),
                                  f"step {state.global_step}")

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

        def _open(self) -> bool:
            return self.run is not None and not self.run.closed

        @contextmanager
        def _session(self) -> Iterator[Any]:
            """The open run, or (``path=`` after training ended) a resumed session of it for one record."""
            if self._open():
                yield self.run
                return
            import torchwitness as tw

            with tw.Run(self.path if self.path is not None else self.run.root, resume=True,
                        **self.run_options) as run:
                yield run

    WitnessCallback.__module__ = __name__
    return WitnessCallback


def _model_name(model: Any) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "_name_or_path", "") or type(model).__name__) if model is not None else "model"


__getattr__ = lazy_class(__name__, "WitnessCallback", _build)
