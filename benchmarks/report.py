"""Dossier cost: build + render (HTML, PDF) and the MLflow-free exporters against a bare ``verify_run`` of the
same run, measured in one process. Default: 5,000 audited-step records; ``--records N`` for more.

    PYTHONPATH=src python benchmarks/report.py [--records 20000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torchwitness as tw
from torchwitness.integrations.rdf_export import run_graph
from torchwitness.ledger.verify import verify_run
from torchwitness.report.build import build_document
from torchwitness.report.evidence import Evidence
from torchwitness.report.obligations import coverage
from torchwitness.report.render import write_report


def timed(fn, *args, **kwargs) -> float:
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=5000)
    n = ap.parse_args().records
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("TORCHWITNESS_KEY_DIR", str(Path(tmp) / "keys"))
        run_dir = Path(tmp) / "run"
        with tw.Run(run_dir) as run:
            run.log_params({"model": "bench"})
            for step in range(n):
                run.log_metrics({"loss": 1.0 / (step + 1), "grad_norm": 0.5}, step=step)
                if step % 100 == 0:
                    run.log_eval({"accuracy": 1.0 - 1.0 / (step + 2)}, step=step)
        base = timed(verify_run, run_dir)
        doc = build_document(run_dir)
        rows = [("verify_run (baseline)", base),
                ("coverage", timed(lambda: coverage(Evidence.load(run_dir)))),
                ("build_document", timed(build_document, run_dir)),
                ("render html", timed(write_report, doc, Path(tmp) / "d.html", "html")),
                ("render pdf", timed(write_report, doc, Path(tmp) / "d.pdf", "pdf")),
                ("rdf graph", timed(run_graph, run_dir))]
        print(f"{n + n // 100 + 3} records")
        for name, secs in rows:
            print(f"{name:24s} {secs * 1000:9.1f} ms  {secs / base:6.1f}x verify")


if __name__ == "__main__":
    main()
