"""Export a run to MLflow: ``params`` records (and the run's ``config``) as params, ``metrics`` records and
the other recorded series (audited steps, privacy, fairness, drift, LLM token statistics) as metrics, ``eval``
results as ``eval.<split>.<metric>``, the dossier and the ledger itself (segments, checkpoints, public key: all a
verifier needs, never ``private/``) as artifacts, and tags naming the ledger root, so an MLflow run holds
verifiable evidence. Exporting the run again updates the same MLflow run (found by the ledger's origin) and adds
only what is new.

Example::

    from torchwitness.integrations.mlflow_export import export_mlflow
    run_id = export_mlflow("evidence/adult-run", tracking_uri="sqlite:///evidence/mlflow.db")
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from torchwitness.errors import InputError, LedgerError
from torchwitness.ledger.layout import Layout, read_manifest
from torchwitness.ledger.verify import verify_run
from torchwitness.report.evidence import Evidence, dicts, get, mapping, number, strings

# (record kinds, data field, MLflow metric key); x axis = the record's step.
SERIES = ((("train.audit",), "loss", "step_loss"), (("train.audit",), "grad_norm", "grad_norm"),
          (("privacy.epsilon",), "epsilon", "epsilon"))


def _mlflow() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError as e:
        raise ImportError("the MLflow exporter needs mlflow: pip install 'torchwitness[mlflow]'") from e


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(value)[:500]  # MLflow caps param values


def metric_points(ev: Evidence) -> list[tuple[str, float, int, int]]:
    """``(key, value, timestamp_ms, step)`` for every recorded time-series point, fairness disparities and drift
    alerts (step: the monitoring window) included."""
    points = []
    for r in ev.kind("metrics"):  # run.log_metrics: the keys as the user named them
        step = r.get("step")
        for key, value in mapping(get(r, "metrics")).items():
            v = number(value)
            if v is not None:
                points.append((str(key), v, r["ts"] // 1000, step if isinstance(step, int) else 0))
    for r in ev.kind("eval"):
        step = r.get("step")
        for key, value in mapping(get(r, "metrics")).items():
            v = number(value)
            if v is not None:
                points.append((f"eval.{get(r, 'split') or 'eval'}.{key}", v, r["ts"] // 1000,
                               step if isinstance(step, int) else 0))
    for kinds, path, key in SERIES:
        points += [(key, y, ev.seq(seq)["ts"] // 1000, int(x)) for x, y, seq in ev.series(kinds, path)]
    for i, r in enumerate(ev.kind("fairness.eval")):
        epoch = get(r, "epoch")
        for _, view in dicts(get(r, "views")):
            for _, d in dicts(view.get("disparities")):
                v = number(d.get("estimate"))
                if v is not None:
                    key = f"fairness.{d.get('metric')}.{'_'.join(strings(view.get('attributes')))}"
                    points.append((key, v, r["ts"] // 1000, epoch if isinstance(epoch, int) else i))
    for i, r in enumerate(ev.kind("llm.generation")):  # one point per generation request, in request order
        for name, value in mapping(get(r, "stats")).items():
            v = number(value)
            if v is not None and name != "length":
                points.append((f"llm.{name}", v, r["ts"] // 1000, i))
        for name in ("input_tokens", "output_tokens", "latency_s"):
            v = number(get(r, name))
            if v is not None:
                points.append((f"llm.{name}", v, r["ts"] // 1000, i))
    for i, r in enumerate(ev.kind("drift.alert")):  # one series per test and feature, over monitoring windows
        v, window, name = number(get(r, "value")), get(r, "window"), get(r, "statistic")
        if v is not None and isinstance(name, str):
            points.append((f"drift.{name}.{get(r, 'feature')}", v, r["ts"] // 1000,
                           window if isinstance(window, int) else i))
    return points


def export_mlflow(run_dir: str | Path, *, tracking_uri: str, experiment: str = "torchwitness",
                  artifact_location: str | Path | None = None, dossier: bool = True) -> str:
    """Log the run to MLflow at ``tracking_uri``; returns the MLflow run id.

    A new experiment stores artifacts at ``artifact_location`` (a folder or URI); without one MLflow picks its
    default, which for a local database is ``./mlruns`` in the working directory.
    """
    _mlflow()
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    run_dir = Path(run_dir)
    ev = Evidence.load(run_dir)
    result = verify_run(run_dir)
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = Path(artifact_location).resolve().as_uri() if isinstance(artifact_location, Path) \
            else artifact_location
        exp_id = client.create_experiment(experiment, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    start = ev.first("run.start")
    origin = _origin(run_dir) or ev.run_id
    tags = {"torchwitness.run": ev.run_id, "torchwitness.origin": origin,
            "torchwitness.root": "sha256:" + result.root.hex(), "torchwitness.signer": result.signer,
            "torchwitness.records": str(result.records), "mlflow.runName": f"torchwitness-{ev.run_id}"}
    found = client.search_runs([exp_id], filter_string=f"tags.`torchwitness.origin` = '{origin}'", max_results=1)
    if found:
        rid = found[0].info.run_id
        old_params, done = found[0].data.params, _logged(client, rid, found[0].data.metrics)
    else:
        rid = client.create_run(exp_id, start_time=start["ts"] // 1000 if start else None, tags=tags).info.run_id
        old_params, done = {}, set()
    params: dict[str, str] = {}
    _flatten("", mapping(get(start, "config")) if start else {}, params)
    for r in ev.kind("params"):  # run.log_params; a later value of a name wins
        _flatten("", mapping(get(r, "params")), params)
    if start:
        params["torch"] = str(get(start, "torch"))
    # MLflow params cannot change: a value set by an earlier export stays (the ledger keeps every session's own)
    param_items = [Param(k, v) for k, v in sorted(params.items()) if k not in old_params]
    for i in range(0, len(param_items), 100):  # MLflow's batch limits: 100 params, 1000 metrics
        client.log_batch(rid, params=param_items[i:i + 100])
    metrics = [Metric(k, v, ts, step) for k, v, ts, step in metric_points(ev) if (k, step, ts) not in done]
    for i in range(0, len(metrics), 1000):
        client.log_batch(rid, metrics=metrics[i:i + 1000])
    client.log_batch(rid, tags=[RunTag(k, v) for k, v in tags.items()])
    _log_ledger(client, rid, run_dir)
    if dossier:
        from torchwitness.report.build import build_document
        from torchwitness.report.render import write_report

        doc = build_document(run_dir)
        with tempfile.TemporaryDirectory() as tmp:
            for fmt in ("html", "md"):
                client.log_artifact(rid, str(write_report(doc, Path(tmp) / f"dossier.{fmt}", fmt)),
                                    artifact_path="dossier")
    end = ev.last("run.end")
    status = "FINISHED" if end is None or get(end, "status") == "ok" else "FAILED"
    client.set_terminated(rid, status=status, end_time=end["ts"] // 1000 if end else None)
    return rid


def _origin(run_dir: Path) -> str | None:
    """The ledger's origin (the name its checkpoints carry), for a run folder or a distributed run's rank 0."""
    for manifest in (Layout(run_dir).manifest, Layout(run_dir / "rank-0").manifest):
        try:
            return str(read_manifest(manifest.parent)["origin"])
        except (OSError, KeyError, ValueError, TypeError, InputError, LedgerError):
            continue
    return None


def _logged(client: Any, rid: str, keys: dict[str, float]) -> set[tuple[str, int, int]]:
    """(key, step, timestamp) of every point an earlier export logged, so a re-export adds only new points."""
    return {(key, m.step, m.timestamp) for key in keys for m in client.get_metric_history(rid, key)}


def _log_ledger(client: Any, rid: str, run_dir: Path) -> None:
    """Everything a verifier needs, under ``ledger/`` as laid out on disk; ``private/`` (the signing key's
    companions: personal values, inbox) and the writer's lock never leave the machine. The newest checkpoint and
    the public key also stay at the top of ``ledger/``, where earlier exports put them."""
    layout = Layout(run_dir)
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if path.is_file() and rel.parts[0] not in ("private", ".writer.lock") and not path.name.endswith(".tmp"):
            folder = "/".join(("ledger", "run", *rel.parts[:-1]))
            client.log_artifact(rid, str(path), artifact_path=folder)
    checkpoints = layout.checkpoint_files()
    if checkpoints:
        client.log_artifact(rid, str(checkpoints[-1]), artifact_path="ledger")
    if layout.vkey.exists():
        client.log_artifact(rid, str(layout.vkey), artifact_path="ledger")
