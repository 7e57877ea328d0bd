"""``Run``: the run-scoped audit context that owns one ledger."""

from __future__ import annotations

import math
import numbers
import os
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from torchwitness.errors import InputError, RunExists
from torchwitness.ledger.distributed import shard_dir, write_run_checkpoint, write_run_manifest
from torchwitness.ledger.encoding import Personal
from torchwitness.ledger.layout import MANIFEST, existing_run
from torchwitness.ledger.writer import FsyncPolicy, FullPolicy, Ledger


def _dist_rank() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _refusal(root: Path, run_id: str) -> str:
    return (f"{root} already holds run {run_id}: give a new path for a new run, or Run(path, resume=True) to "
            "append a session to it")


def _shared_run_id(root: Path, rank: int, world_size: int, resume: bool) -> str:
    """Rank 0 picks (or, resuming, re-reads) the run id and shares it: one small broadcast at start. A refusal is
    shared the same way, so no rank waits for a peer that stopped."""
    import uuid

    import torch.distributed as dist

    box: list[Any] = [None]
    if rank == 0:
        found = existing_run(root)
        if found is not None and not resume:
            box[0] = {"refused": _refusal(root, found)}
        else:
            box[0] = found or uuid.uuid4().hex[:16]
            write_run_manifest(root, box[0], world_size)
    dist.broadcast_object_list(box, src=0)
    if isinstance(box[0], dict):
        raise RunExists(box[0]["refused"])
    return str(box[0])


class Run:
    """A run-scoped audit context: records ``run.start`` on entry and ``run.end`` on exit.

    Example::

        import torchwitness as tw

        with tw.Run("runs/demo", seed=0) as run:
            run.log_params({"lr": 1e-3})
            for epoch in range(3):
                run.log_metrics({"loss": 0.5 / (epoch + 1)}, step=epoch)
        # torchwitness verify runs/demo; torchwitness report runs/demo

    Under ``torch.distributed`` each rank writes its own ledger shard in ``PATH/rank-N``, so ranks never contend
    for a file, and ``close``/``sync`` sign run-level checkpoints over all shards (see
    :mod:`torchwitness.ledger.distributed`).

    A path that already holds a run is refused (:class:`~torchwitness.errors.RunExists`) unless ``resume=True``:
    then this run appends a new *session* to it (its own ``run.start`` ... ``run.end``, marked ``resumed``), and
    reports list each session. ``resume=True`` on a new path starts the run there.
    ``witnesses`` (``"VKEY URL"`` strings) are asked to cosign every checkpoint of every rank, off the caller's
    thread (see :mod:`torchwitness.witness`).
    """

    def __init__(self, path: str | Path, *, resume: bool = False, config: Any = None, seed: int | None = None,
                 key_dir: str | Path | None = None, retain_personal: bool = False,
                 checkpoint_every: int = 1000, checkpoint_seconds: float = 30.0, fsync: FsyncPolicy = "checkpoint",
                 on_full: FullPolicy = "block", queue_size: int = 100_000, witnesses: Sequence[str] = ()) -> None:
        _check_arguments(path, checkpoint_every=checkpoint_every, queue_size=queue_size,
                         checkpoint_seconds=checkpoint_seconds)
        self.rank, self.world_size = _dist_rank()
        self.root = Path(path)
        self.config = config
        self.seed = seed
        run_id = None
        if self.world_size > 1:
            run_id = _shared_run_id(self.root, self.rank, self.world_size, resume)
            self.path = shard_dir(self.root, self.rank)
        else:
            self.path = self.root
            found = existing_run(self.root)
            if found is not None and not resume:
                raise RunExists(_refusal(self.root, found))
        # A shard appears only at its rank's first session, so it is resumed when its own manifest exists.
        self.resumed = (self.path / MANIFEST).exists()
        try:
            self._ledger = Ledger.open(self.path, key_dir=Path(key_dir) if key_dir else None, rank=self.rank,
                                       run_id=run_id, shard=self.world_size > 1, checkpoint_every=checkpoint_every,
                                       checkpoint_seconds=checkpoint_seconds, fsync=fsync, on_full=on_full,
                                       queue_size=queue_size, retain_personal=retain_personal, witnesses=witnesses)
        except (FileNotFoundError, NotADirectoryError, PermissionError) as e:  # named by the path it failed on
            raise InputError(f"cannot create the run at {self.path}: {e.filename or self.path}: {e.strerror or e}") \
                from None
        self._started = time.monotonic()
        self._ended = False
        self._closers: list[Callable[[], None]] = []
        self._findings: Any = None
        from torchwitness.environment import describe

        start = describe(seed=seed, config=config)
        start.update(rank=self.rank, world_size=self.world_size)
        if self.resumed:
            start["resumed"] = True
        self.record("run.start", start)

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    @property
    def run_id(self) -> str:
        return self._ledger.run_id

    @property
    def closed(self) -> bool:
        """True once ``close`` has run (the ``with`` block ended): nothing more can be recorded in this session."""
        return self._ended

    def record(self, kind: str, data: Any = None, step: int | None = None, *, copy: bool = True) -> int | None:
        """Append one record; returns its seq. Cheap: serialising and hashing happen on a writer thread.

        ``data`` may hold numbers, strings, lists, dicts, tensors, numpy values and :class:`Personal` values.
        Tensors are cloned (asynchronously on accelerators); ``copy=False`` hands them over instead, for callers
        that never touch them again.
        """
        return self._ledger.append(kind, data, step, copy=copy)

    def personal(self, value: Any) -> Personal:
        """Mark ``value`` as personal data for :meth:`record`: only a keyed, erasable commitment is stored."""
        return Personal(value)

    # ---- the record vocabulary (torchwitness.records): what reports, cards and exporters read ------------------
    def log_params(self, params: Mapping[str, Any]) -> int | None:
        """Record hyperparameters and settings (a ``params`` record); nested dicts become dotted names.

        Numbers, strings, booleans and None are kept as they are; anything else (a dtype, a class) as its text.
        """
        from torchwitness.records.log import flat_params

        return self.record("params", {"params": flat_params(params)})

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, *, epoch: int | None = None
                    ) -> int | None:
        """Record named numbers at ``step`` (a ``metrics`` record). Values may be 0-d tensors: they are copied
        without waiting for the device, so logging every step costs no host sync."""
        from torchwitness.records.log import metric_values

        data: dict[str, Any] = {"metrics": metric_values(metrics)}
        if epoch is not None:
            data["epoch"] = epoch
        return self.record("metrics", data, step)

    def log_dataset(self, name: str, *, data: Any = None, split: str | None = None, source: str | None = None,
                    digest: str | None = None, rows: int | None = None, features: int | None = None,
                    license: str | None = None, personal_data: bool | None = None,
                    special_categories: Iterable[str] = ()) -> int | None:
        """Record a data set this run uses (a ``dataset`` record): its name, role (``split``: ``"train"``,
        ``"validation"``, ``"test"``), source, licence and whether it holds personal data.

        ``data`` (a DataFrame, array, tensor, list, or a file or folder path) gives the content digest, rows and
        features (and column names); values given explicitly win.
        """
        from torchwitness.records.log import dataset_record

        return self.record("dataset", dataset_record(
            name, data=data, split=split, source=source, digest=digest, rows=rows, features=features,
            license=license, personal_data=personal_data, special_categories=special_categories))

    def log_model(self, name: str | None = None, *, model: Any = None, files: Iterable[str | Path] = (),
                  architecture: str | None = None, config: Mapping[str, Any] | None = None,
                  version: str | None = None, intended_use: str | None = None, limitations: str | None = None,
                  license: str | None = None) -> int | None:
        """Record the model (a ``model`` record): ``model`` (an ``nn.Module``) gives its architecture and
        parameter count; ``files`` (files or folders, e.g. a ``save_pretrained`` folder) are hashed; the intended
        use and limitations go into the dossier and the model card."""
        from torchwitness.records.log import model_record

        return self.record("model", model_record(
            name, model=model, files=files, architecture=architecture, config=config, version=version,
            intended_use=intended_use, limitations=limitations, license=license))

    def log_eval(self, metrics: Mapping[str, Any], *, split: str | None = "test", dataset: str | None = None,
                 rows: int | None = None, model: str | None = None, step: int | None = None) -> int | None:
        """Record the results of an evaluation (an ``eval`` record): ``metrics`` on ``split`` of ``dataset``
        (``rows`` examples). This is what the dossier and the model card state as declared performance."""
        from torchwitness.records.log import eval_record

        return self.record("eval", eval_record(metrics, split=split, dataset=dataset, rows=rows, model=model), step)

    def sync(self) -> None:
        """Distributed runs: every rank checkpoints its shard and rank 0 signs a run-level checkpoint over them.

        A collective: call it on every rank at the same point (epoch ends, say). ``close`` calls it too.
        Without ``torch.distributed`` it is a plain checkpoint.
        """
        if self.world_size == 1:
            self._ledger.checkpoint()
            return
        import torch.distributed as dist

        heads: list[dict | None] = [None] * self.world_size
        dist.all_gather_object(heads, self._ledger.signed_head())
        if self.rank == 0:
            write_run_checkpoint(self.root, self.run_id, [h for h in heads if h is not None], self._ledger.sign)


    @property
    def finding_set(self) -> Any:
        """The run's de-duplicated :class:`~torchwitness.rules.findings.FindingSet` (created on first use)."""
        if self._findings is None:
            from torchwitness.rules.findings import FindingSet

            self._findings = FindingSet(self.record)
        return self._findings

    def watch(self, model: Any, optimizer: Any = None, *, loss_fn: Any = None, every_n_steps: int = 100,
              first_steps: int = 5, statistics_every: int = 64, select: Iterable[str] = (),
              ignore: Iterable[str] = (), thresholds: Mapping[str, float] | None = None) -> Any:
        """Audit a training loop; returns a :class:`~torchwitness.probes.watch.Watch` (also a context manager).

        Example::

            with tw.Run("runs/audit") as run:
                watch = run.watch(model, opt, loss_fn=criterion, every_n_steps=100)
                for x, y in loader:
                    opt.zero_grad(); criterion(model(x), y).backward(); opt.step()
                print(run.findings())

        Steps are counted by the optimizer's step hook; the first ``first_steps`` and every
        ``every_n_steps``-th are audited, and, when that is more than 16, every 8th until step 64 (so a short
        run's mid-run bug is judged). When audits are closer together than ``statistics_every`` steps, the
        statistical probes (unit statistics, update ratios, label counts and moments) run on one audited step in
        ``statistics_every`` after the first 8 steps; the audits between are lean (a norm per module output,
        input and gradient, read once; the rules judge the step when one is non-finite or the gradient norm is
        over its threshold). With sparse audits (``every_n_steps`` over 16), past step 64 the statistical audits
        come ``statistics_every`` steps after the last one, then ``max(statistics_every, 512)`` steps apart and a
        quarter of the run's age, up to 4096 (lean between).
        ``statistics_every=1`` runs everything at every audit. Each finding is also a ``finding`` record.
        """
        from torchwitness.probes.watch import Watch

        if self._ended:
            raise InputError("this run is closed: watch inside its with block, or open it again with "
                             "Run(path, resume=True)")
        w = Watch(model, optimizer, loss_fn=loss_fn, every_n_steps=every_n_steps, first_steps=first_steps,
                  statistics_every=statistics_every, select=select, ignore=ignore, thresholds=thresholds,
                  findings=self.finding_set, record=self.record)
        self.on_close(w.close)
        return w

    def serve(self, model: Any, **options: Any) -> Any:
        """Wrap ``model`` for serving; returns an :class:`~torchwitness.probes.inference.InferenceRecorder`.

        Example::

            with tw.Run("runs/serve") as run:
                serve = run.serve(model, retain_inputs=False)
                probabilities = serve(batch)     # a drop-in for softmax(model(batch))

        ``options`` are the recorder's (sampling, window, fingerprint granularity, retention, review policy).
        """
        from torchwitness.probes.inference import InferenceRecorder

        return InferenceRecorder(model, self, **options)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the run closes, before ``run.end`` is recorded (probes flush pending evidence)."""
        self._closers.append(callback)

    def findings(self) -> list[Any]:
        """The de-duplicated findings so far (rule ID, severity, phase, location, message, count, steps)."""
        return self.finding_set.snapshot()

    def flush(self) -> None:
        self._ledger.flush()

    def checkpoint(self) -> None:
        self._ledger.checkpoint()

    def close(self, status: str = "ok", error: BaseException | None = None) -> None:
        """Record ``run.end`` and seal the ledger with a final checkpoint. Idempotent."""
        if self._ended:
            return
        self._ended = True
        interrupt: BaseException | None = None
        for close in self._closers:
            try:
                close()
            except Exception as e:  # the run must still be sealed; the failure is recorded in run.end
                error = error or e
                status = "error"
            except BaseException as e:  # Ctrl-C landing in a closer: seal the run first, then stop as asked
                interrupt = interrupt or e
                error, status = error or e, "interrupted"
        end: dict[str, Any] = {"status": status, "duration_s": round(time.monotonic() - self._started, 6)}
        if error is not None:
            end["error"] = {"type": type(error).__qualname__, "message": str(error),
                            "where": traceback.format_exception(type(error), error, error.__traceback__)[-2:]}
        try:
            self.record("run.end", end)
            # A failing rank must not enter a collective its peers may never reach.
            if self.world_size > 1 and error is None:
                self.sync()
        finally:
            self._ledger.close()
        if interrupt is not None:
            raise interrupt

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
        elif isinstance(exc, KeyboardInterrupt):
            self.close("interrupted", exc)
        else:
            self.close("error", exc)


def _check_arguments(path: Any, **settings: Any) -> None:
    """Refuse, naming it, an argument of ``Run`` that would otherwise fail deep inside the ledger."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise InputError(f"a run needs a folder path, not {path!r}")
    for folder in (Path(path), *Path(path).parents):  # the path, or the nearest of its parents that exists
        if folder.exists():
            if not folder.is_dir():
                raise InputError(f"{folder} is a file, not a folder: a run needs a folder path, not {path}")
            break
    for name, value in settings.items():  # counts are whole numbers; checkpoint_seconds any finite number
        kind = numbers.Real if name == "checkpoint_seconds" else numbers.Integral
        if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) or value <= 0:
            raise InputError(f"{name} must be a {'number' if kind is numbers.Real else 'whole number'} > 0, "
                             f"not {value!r}")
