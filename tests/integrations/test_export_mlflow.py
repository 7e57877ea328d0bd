"""MLflow export against a real ``mlflow server`` on loopback (sqlite backend in tmp), stopped afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from torchwitness.integrations.mlflow_export import export_mlflow, metric_points
from torchwitness.ledger.verify import verify_run
from torchwitness.report.evidence import Evidence, entries, get

pytestmark = pytest.mark.slow  # the server takes tens of seconds to create its tables and start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("mlflow")
    tmp = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = (tmp / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
                             "--artifacts-destination", str(tmp / "artifacts")],
                            cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 150
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(tmp / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker share the session we created
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    assert proc.returncode is not None


def test_export_to_mlflow_server(mlflow_server: str, evidence_run: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    rid = export_mlflow(evidence_run, tracking_uri=mlflow_server, experiment="tw-test")
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(rid)
    ev = Evidence.load(evidence_run)
    result = verify_run(evidence_run)
    assert run.data.tags["torchwitness.root"] == "sha256:" + result.root.hex()
    assert run.data.tags["torchwitness.signer"] == result.signer
    assert run.data.params["lr"] == "0.001" and run.data.params["model"] == "mlp-64-32"  # from params records
    assert run.data.metrics["eval.test.accuracy"] == pytest.approx(get(ev.last("eval"), "metrics.accuracy"))
    assert len(client.get_metric_history(rid, "train_loss")) == len(ev.kind("metrics"))
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(rid, "step_loss")
    audits = ev.kind("train.audit")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == \
        [(e["step"], pytest.approx(e["loss"])) for r in audits for _, e in entries(r)]
    assert len(history) == 40  # ten audited steps per batched record
    eps = client.get_metric_history(rid, "epsilon")
    assert len(eps) == len(ev.kind("privacy.epsilon"))
    assert len(client.get_metric_history(rid, "fairness.demographic_parity_difference.sex")) == 4
    drift = client.get_metric_history(rid, "drift.ks.age")  # the KS alerts, at the windows that raised them
    assert sorted(m.step for m in drift) == [get(r, "window") for r in ev.kind("drift.alert")
                                             if get(r, "statistic") == "ks"] and drift
    assert {m[0] for m in metric_points(ev)} <= set(run.data.metrics)
    arts = {a.path for folder in ("ledger", "dossier") for a in client.list_artifacts(rid, folder)}
    newest = sorted((evidence_run / "checkpoints").iterdir())[-1]
    assert {f"ledger/{newest.name}", "ledger/signer.vkey", "dossier/dossier.html", "dossier/dossier.md"} <= arts
    local = Path(client.download_artifacts(rid, f"ledger/{newest.name}", str(tmp_path)))
    assert local.read_bytes() == newest.read_bytes()
    html = Path(client.download_artifacts(rid, "dossier/dossier.html", str(tmp_path))).read_text()
    assert "Annex IV.9" in html and ev.run_id in html
    # the ledger itself travels (all a verifier needs, nothing private): download it and verify it there
    copy = Path(client.download_artifacts(rid, "ledger/run", str(tmp_path / "download")))
    assert verify_run(copy).root == result.root and not (copy / "private").exists()
    # exporting again updates the same MLflow run and adds no point twice
    before = {k: len(client.get_metric_history(rid, k)) for k in run.data.metrics}
    assert export_mlflow(evidence_run, tracking_uri=mlflow_server, experiment="tw-test") == rid
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert {k: len(client.get_metric_history(rid, k)) for k in run.data.metrics} == before
