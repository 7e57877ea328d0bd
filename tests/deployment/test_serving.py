"""Inference records, review queue (restart, two writers), stop switch, explanations, retention."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import torchwitness as tw
from torchwitness.controls.oversight import ReviewPolicy, ReviewQueue
from torchwitness.demo.adult import load_adult
from torchwitness.errors import InputError, LedgerError, ServingStopped
from torchwitness.integrations.captum import explain_input, explain_tabular, explain_tokens
from torchwitness.ledger import iter_records, verify_run
from torchwitness.ledger.encoding import Computed, fingerprint_buffers
from torchwitness.ledger.writer import Ledger
from torchwitness.probes.inference import InferenceRecorder, model_digest, verified_input, window_columns
from torchwitness.probes.retained import RetainedInputs, erase_inputs, parse_decision_id
from torchwitness.report.evidence import Evidence
from torchwitness.report.obligations import coverage

sys.path.insert(0, str(Path(__file__).parent))
from served_model import trained_model


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return trained_model()


@pytest.fixture(scope="module")
def test_rows() -> torch.Tensor:
    return torch.from_numpy(load_adult().test.features[:512])


def test_records_requests_with_commitments_and_never_raw_inputs(tmp_path: Path, model, test_rows) -> None:
    root = tmp_path / "run"
    with tw.Run(root) as run:
        serve = run.serve(model, sample_every=2, window=3)
        for i in range(0, 256, 32):
            out = serve(test_rows[i:i + 32])
            assert torch.allclose(out, torch.softmax(model(test_rows[i:i + 32]), -1))
        # the committed inputs are requests 0 and 2 of the first window, committed with the run's key
        expected = [run.ledger.personal.fingerprint(fingerprint_buffers([test_rows[i:i + 32]])[0]) for i in (0, 64)]
    records = [r["data"] for r in iter_records(root, kinds={"inference"})]
    columns = [window_columns(r) for r in records]
    # all 8 requests in windows of 3 (the open window is recorded when the run closes); every 2nd input committed
    assert [c["first_decisions"].tolist() for c in columns] == [[0, 32, 64], [96, 128, 160], [192, 224]]
    assert [(r["first_decision"], r["decisions"]) for r in records] == [(0, 96), (96, 96), (192, 64)]
    assert [c["committed"].tolist() for c in columns] == [[0, 2], [1], [0]]
    first, cols = records[0], columns[0]
    assert first["model"] == model_digest(model) and cols["rows"].tolist() == [32, 32, 32]
    assert first["fingerprint"] == "request" and len(first["inputs"]) == 2
    assert first["inputs"] == expected and all(f.startswith("hmac-sha256-128:") for f in expected)
    assert cols["latency_us"].dtype == np.uint32 and len(cols["latency_us"]) == 3 and (cols["latency_us"] > 0).all()
    with torch.no_grad():
        probs = torch.softmax(model(test_rows[0:96]), -1)
    assert np.array_equal(cols["predictions"], probs.argmax(-1).numpy())
    assert np.allclose(cols["confidence"], probs.max(-1).values.numpy(), atol=1e-4)
    # Retention off: no raw input value appears anywhere in the run folder (text or float32 bytes).
    needle_text = repr(float(test_rows[0, 0])).encode()
    needle_bytes = test_rows[0].numpy().tobytes()
    for path in root.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert needle_bytes not in blob, path
            if path.suffix == ".jsonl":
                assert needle_text not in blob, path
    verify_run(root, deep=True)


def test_commitments_are_taken_when_served(tmp_path: Path, model, test_rows) -> None:
    """The same request commits to the same value; changing the tensor after serving changes nothing."""
    with tw.Run(tmp_path / "run") as run:
        serve = run.serve(model)
        reused = test_rows[:2].clone()
        serve(reused)
        reused.zero_()  # a server reusing its input buffer
        serve(test_rows[:2])
        serve(torch.cat([test_rows[:2], test_rows[:2]], dim=1)[:, :test_rows.shape[1]])  # a strided view
        serve(test_rows[:2].clone().requires_grad_())
        serve(test_rows[2:4])
    (record,) = [r["data"] for r in iter_records(tmp_path / "run", kinds={"inference"})]
    assert len(set(record["inputs"][:4])) == 1  # the same bytes served four ways: one commitment
    assert record["inputs"][4] != record["inputs"][0]  # and other bytes another


class _OffHost(torch.Tensor):
    """Reports itself as not on the CPU: the recorder's accelerator path, exercised without an accelerator."""

    @property
    def is_cpu(self) -> bool:
        return False


@pytest.mark.parametrize("order", ["mixed", "device only"])
def test_host_and_device_inputs_are_committed_alike_and_in_order(tmp_path: Path, model, test_rows, order) -> None:
    with tw.Run(tmp_path / "run") as run:
        serve = run.serve(model)
        if order == "mixed":
            serve(test_rows[:2])  # committed at the door
        served = test_rows[:2].clone().as_subclass(_OffHost)
        serve(served)  # copied and committed later
        served.zero_()  # what the caller does afterwards changes nothing
        serve(test_rows[2:5].as_subclass(_OffHost))
        expected = [run.ledger.personal.fingerprint(fingerprint_buffers([test_rows[a:b]])[0])
                    for a, b in ((0, 2), (0, 2), (2, 5))]
    (record,) = [r["data"] for r in iter_records(tmp_path / "run", kinds={"inference"})]
    cols = window_columns(record)
    assert record["inputs"] == (expected if order == "mixed" else expected[1:])
    assert cols["rows"].tolist() == ([2, 2, 3] if order == "mixed" else [2, 3])
    assert cols["committed"].tolist() == list(range(len(cols["rows"])))


def test_an_aged_window_of_device_tensors_waits_for_the_device(tmp_path: Path, model, test_rows,
                                                              monkeypatch) -> None:
    """The age thread closes windows the serving threads filled on their own streams: it synchronises first."""
    import time

    waited: list[torch.device] = []
    monkeypatch.setattr(torch.accelerator, "synchronize", waited.append)
    with tw.Run(tmp_path / "run") as run:
        serve = run.serve(model, window_seconds=0.2)
        serve(test_rows[:2].as_subclass(_OffHost))  # held for the writer thread, as an accelerator's input is
        time.sleep(1.0)
        assert waited == [torch.device("cpu")]
    (record,) = [r["data"] for r in iter_records(tmp_path / "run", kinds={"inference"})]
    assert window_columns(record)["rows"].tolist() == [2]


@pytest.mark.parametrize("copy_inputs", [True, False])
def test_row_fingerprints_match_rows_across_requests(tmp_path: Path, model, test_rows, copy_inputs: bool) -> None:
    with tw.Run(tmp_path / "run") as run:
        serve = run.serve(model, fingerprint="row", copy_inputs=copy_inputs)
        serve(test_rows[:2])
        serve(test_rows[:2].clone())
    (record,) = [r["data"] for r in iter_records(tmp_path / "run", kinds={"inference"})]
    a = record["inputs"]
    assert record["fingerprint"] == "row" and len(a) == 4
    assert a[:2] == a[2:] and a[0] != a[1]


def test_bad_serving_options_are_refused(tmp_path: Path, model) -> None:
    with tw.Run(tmp_path / "run") as run:
        for options, message in (({"sample_every": 0}, "sample_every"), ({"window": 0}, "window"),
                                 ({"fingerprint": "batch"}, "fingerprint")):
            with pytest.raises(InputError, match=message):
                run.serve(model, **options)


def test_outputs_that_are_not_one_row_per_decision_are_refused(tmp_path: Path, model, test_rows) -> None:
    token_model = torch.nn.Sequential(torch.nn.Embedding(20, 8), torch.nn.Linear(8, 3))  # [rows, tokens, classes]
    with tw.Run(tmp_path / "run") as run:
        serve = run.serve(model)
        with pytest.raises(InputError, match=r"shape \(2,\) for one request.*x.unsqueeze\(0\)"):
            serve(test_rows[0])
        first = serve(test_rows[:4])
        with pytest.raises(InputError, match=r"shape \(2, 5, 3\).*one row per decision in forward="):
            run.serve(token_model)(torch.randint(0, 20, (2, 5)))
        _, ids = serve(test_rows[4:7], ids=True)
    assert first.shape == (4, 2) and ids[0].endswith("-4")  # the refused request took no decision number
    (record,) = [r["data"] for r in iter_records(tmp_path / "run", kinds={"inference"}) if r["data"]["decisions"]]
    cols = window_columns(record)
    assert cols["rows"].tolist() == [4, 3] and len(cols["predictions"]) == 7
    verify_run(tmp_path / "run", deep=True)


def test_review_flags_decisions_and_stop_switch(tmp_path: Path, model, test_rows) -> None:
    root = tmp_path / "run"
    with tw.Run(root) as run:
        serve = InferenceRecorder(model, run, policy=ReviewPolicy(min_confidence=0.9, audit_rate=0.05),
                                  poll_seconds=0)
        probs = serve(test_rows[:128])
        serve.flush()  # flagging reads the window's confidences once, when it is recorded
        queue = ReviewQueue.for_run(root)
        flagged = queue.open_requests(1000)
        low = int((probs.max(-1).values < 0.9).sum())
        assert low <= len(flagged) <= 128 and low > 0
        queue.decide(flagged[0].decision_id, "override", reviewer="alice@example.org", label=1, note="checked")
        queue.decide(flagged[1].decision_id, "approve", reviewer="bob@example.org")
        queue.stop(who="carol@example.org", reason="drift alert")
        with pytest.raises(ServingStopped, match="drift alert"):
            serve(test_rows[:4])
        queue.resume(who="carol@example.org", reason="retrained")
        serve(test_rows[:4])
        serve.close()
    decisions = [r["data"] for r in iter_records(root, kinds={"review.decision"})]
    assert [d["action"] for d in decisions] == ["override", "approve"] and decisions[0]["label"] == 1
    kinds = [r["kind"] for r in iter_records(root, kinds={"oversight.stop", "oversight.resume"})]
    assert kinds == ["oversight.stop", "oversight.resume"]
    art14 = {c.obligation.id: c for c in coverage(Evidence.load(root))}["EU-AI-Act:Art.14"]
    assert art14.status == "evidence"  # reviewers' decisions and a stop: Art. 14(4)(d)-(e)
    for path in root.rglob("*"):  # reviewer ids live only as commitments
        if path.is_file():
            assert b"alice@example.org" not in path.read_bytes(), path
    with pytest.raises(InputError, match="needs the corrected --label"):
        queue.decide(flagged[2].decision_id, "override", reviewer="x")


def test_a_stop_lifted_before_the_server_looked_is_recorded(tmp_path: Path, model, test_rows) -> None:
    """A stop and a resume while no request came in (a quiet night): both are evidence, in order."""
    root = tmp_path / "run"
    with tw.Run(root) as run:
        serve = InferenceRecorder(model, run, policy=ReviewPolicy(min_confidence=0.5), poll_seconds=0)
        serve(test_rows[:4])
        queue = ReviewQueue.for_run(root)
        queue.stop(who="carol@example.org", reason="suspected drift")
        queue.resume(who="dan@example.org", reason="false alarm")
        serve(test_rows[:4])  # served: the switch is on again
        serve.close()
    events = [(r["kind"], r["data"]["reason"]) for r in iter_records(root, kinds={"oversight.stop",
                                                                                   "oversight.resume"})]
    assert events == [("oversight.stop", "suspected drift"), ("oversight.resume", "false alarm")]


def test_decisions_and_a_stop_reach_the_ledger_of_a_server_that_stays_up(tmp_path: Path, model, test_rows) -> None:
    """A server runs for months: what reviewers do meanwhile is in its ledger within seconds, traffic or none."""
    root = tmp_path / "run"
    with tw.Run(root) as run:
        serve = InferenceRecorder(model, run, policy=ReviewPolicy(min_confidence=0.99), window_seconds=60)
        serve(test_rows[:32])
        serve.flush()
        reviewer = ReviewQueue.for_run(root)  # the reviewer's own connection, as the review command's
        reviewer.decide(reviewer.open_requests(1)[0].decision_id, "approve", reviewer="alice@example.org")
        reviewer.stop(who="carol@example.org", reason="night check")
        deadline, kinds = time.monotonic() + 10, set()
        while not {"review.decision", "oversight.stop"} <= kinds and time.monotonic() < deadline:
            time.sleep(0.1)
            run.flush()
            kinds = {r["kind"] for r in iter_records(root)}
        assert {"review.decision", "oversight.stop"} <= kinds  # no request came in; the run is still open
        assert reviewer.decisions()[0]["recorded_seq"] is not None
    decided = [r["kind"] for r in iter_records(root, kinds={"review.decision", "oversight.stop"})]
    assert decided == ["review.decision", "oversight.stop"]  # recorded once, though close looks again


def test_two_threads_recording_pending_decisions_record_each_once(tmp_path: Path) -> None:
    import threading

    with tw.Run(tmp_path / "run") as run:
        queue = ReviewQueue.for_run(tmp_path / "run")
        queue.submit_many([(f"r-s-{i}", "audit_sample", 0, 0.5) for i in range(200)])
        for i in range(200):
            queue.decide(f"r-s-{i}", "approve", reviewer="alice@example.org")
        start = threading.Barrier(2)

        def record() -> None:
            start.wait()
            queue.record_pending(run.record)

        threads = [threading.Thread(target=record) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(list(iter_records(tmp_path / "run", kinds={"review.decision"}))) == 200


@pytest.mark.parametrize("shared", [False, True], ids=["file", "one-connection"])
def test_serving_while_reviewers_decide_and_the_recorder_records_them(tmp_path: Path, monkeypatch,
                                                                      shared: bool) -> None:
    """The serving thread (flagging), the window-ageing thread (recording decisions) and a reviewer use the
    queue at once: no request or decision fails and every decision is recorded once. With ``shared``, all three
    use one connection (an in-memory queue): unguarded, that failed within seconds ("cannot commit - no
    transaction is active", then every later request)."""
    import threading

    from torchwitness.probes import inference

    monkeypatch.setattr(inference, "_REVIEW_SECONDS", 0.005)
    root = tmp_path / "run"
    model = torch.nn.Linear(4, 2).eval()
    decided: list[str] = []
    errors: list[Exception] = []
    with tw.Run(root) as run:
        review = ReviewQueue(":memory:") if shared else None
        serve = run.serve(model, window=4, policy=ReviewPolicy(min_confidence=1.01), review=review)  # all flagged
        done = threading.Event()

        def reviewer() -> None:
            queue = review or ReviewQueue.for_run(root)
            while not done.is_set():
                try:
                    for request in queue.open_requests(20):
                        queue.decide(request.decision_id, "approve", reviewer="alice")
                        decided.append(request.decision_id)
                except Exception as e:  # reported by the assertion below
                    errors.append(e)

        thread = threading.Thread(target=reviewer)
        thread.start()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            serve(torch.randn(2, 4))  # raises if the queue's connection was left in a bad state
        done.set()
        thread.join()
    recorded = [r["data"]["decision_id"] for r in iter_records(root, kinds={"review.decision"})]
    assert not errors and decided and sorted(recorded) == sorted(decided)


def test_a_queue_from_before_the_switch_log_keeps_its_unrecorded_stop(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "review.sqlite"
    db = sqlite3.connect(path)  # the one-row switch table of earlier versions, holding a stop not yet recorded
    db.executescript("CREATE TABLE switch (id INTEGER PRIMARY KEY CHECK (id = 1), stopped INTEGER NOT NULL, "
                     "who TEXT, reason TEXT, changed_us INTEGER, recorded INTEGER NOT NULL DEFAULT 1); "
                     "INSERT INTO switch VALUES (1, 1, 'carol@example.org', 'old stop', 5, 0);")
    db.close()
    queue = ReviewQueue(path)
    assert queue.stopped() == (True, "old stop")
    recorded: list[tuple[str, dict]] = []
    queue.record_pending(lambda kind, data: recorded.append((kind, data)) or len(recorded))
    assert [(k, d["reason"], d["changed_us"]) for k, d in recorded] == [("oversight.stop", "old stop", 5)]
    assert ReviewQueue(path).stopped() == (True, "old stop")  # reopening finds it moved, not lost


def test_rows_of_a_sensitive_group_go_to_review_without_their_group_being_recorded(tmp_path: Path, model,
                                                                                  test_rows) -> None:
    sex = load_adult().test.sensitive["sex"][:96]
    root = tmp_path / "run"
    with tw.Run(root) as run:
        serve = run.serve(model, policy=ReviewPolicy(min_confidence=0.0, sensitive_groups=frozenset({"sex=Female"})))
        served = []
        for i in range(0, 96, 32):
            labels = [f"sex={s}" for s in sex[i:i + 32]]
            served += serve(test_rows[i:i + 32], ids=True, groups=labels)[1]
        with pytest.raises(InputError, match="one label"):
            serve(test_rows[:4], groups=["sex=Female"])
        with pytest.raises(InputError, match="no policy"):
            run.serve(model)(test_rows[:1], groups=["sex=Female"])
        serve.flush()
        flagged = {r.decision_id: r.reason for r in ReviewQueue.for_run(root).open_requests(1000)}
    assert flagged == {d: "sensitive_group" for d, s in zip(served, sex, strict=True) if s == "Female"}
    assert 0 < len(flagged) < 96
    # the labels steer flagging only: the group's name is in the recorded policy, and nowhere else
    assert [r["kind"] for r in iter_records(root) if "sex=Female" in json.dumps(r)] == ["serve.start"]
    for path in (root / "private").rglob("*"):
        if path.is_file():
            assert b"Female" not in path.read_bytes(), path


def _decide_many(path: str, who: str, ids: list[str]) -> None:
    queue = ReviewQueue(path)
    for d in ids:
        queue.decide(d, "approve", reviewer=who)


def test_queue_survives_restart_and_two_writer_processes(tmp_path: Path) -> None:
    path = tmp_path / "review.sqlite"
    queue = ReviewQueue(path)
    queue.submit_many([(f"d{i}", "low_confidence", 0, 0.5) for i in range(400)])
    queue.close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_decide_many, args=(str(path), who, [f"d{i}" for i in range(k, 400, 2)]))
             for k, who in enumerate(("r1", "r2"))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    reopened = ReviewQueue(path)
    assert len(reopened.decisions()) == 400
    assert reopened.open_requests() == []


def test_explanations_are_complete_and_reproducible(tmp_path: Path, model, test_rows) -> None:
    x = test_rows[7]
    a = explain_tabular(model, x, n_steps=128, seed=3)
    b = explain_tabular(model, x, n_steps=128, seed=3)
    assert torch.equal(a.attributions, b.attributions)
    with torch.no_grad():
        logits = model(torch.stack([x, torch.zeros_like(x)]))
    gap = float(logits[0, a.target] - logits[1, a.target])
    assert float(a.attributions.sum()) == pytest.approx(gap, abs=5e-3)
    assert a.delta < 5e-3
    with tw.Run(tmp_path / "run") as run:
        a.record(run, "decision-7")
    rec = next(iter_records(tmp_path / "run", kinds={"explain.attribution"}))["data"]
    assert rec["decision_id"] == "decision-7" and len(rec["top"]) == 5 and rec["seed"] == 3


def test_token_model_explanations() -> None:
    torch.manual_seed(0)

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(20, 8)
            self.head = torch.nn.Linear(8, 2)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.emb(ids)).mean(1))

    m = Tiny()
    e = explain_tokens(m, m.emb, torch.tensor([3, 5, 7, 9]), tokens=["a", "b", "c", "d"], n_steps=200)
    with torch.no_grad():
        gap = m(torch.tensor([[3, 5, 7, 9]]))[0, e.target] - m(torch.zeros(1, 4, dtype=torch.long))[0, e.target]
    assert float(e.attributions.sum()) == pytest.approx(float(gap), abs=1e-3)
    assert {name for name, _ in e.top} <= {"a", "b", "c", "d"}


def test_a_hugging_face_classifier_serves_tokenizer_output(tmp_path: Path) -> None:
    """Named-tensor requests (what a tokenizer returns) through ``forward``: recorded, committed, refused clearly."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=16, num_labels=3)
    model = transformers.BertForSequenceClassification(cfg).eval()
    batches = [transformers.BatchEncoding({"input_ids": torch.randint(1, 64, (n, 12)),
                                           "attention_mask": torch.ones(n, 12, dtype=torch.long)})
               for n in (4, 1, 3)]
    root = tmp_path / "run"
    with tw.Run(root) as run:
        serve = run.serve(model, forward=lambda m, batch: m(**batch).logits)
        served = [serve(b, ids=True) for b in batches]
        # the commitment of a named-tensor request: its tensors' bytes in sorted-name order
        expected = [run.ledger.personal.fingerprint(b["attention_mask"].numpy().tobytes()
                                                    + b["input_ids"].numpy().tobytes()) for b in batches]
        keeper = run.serve(model, retain_inputs=True, forward=lambda m, batch: m(**batch).logits)
        for batch in batches[:2]:  # refused every time, not only the first
            with pytest.raises(InputError, match="need each request as one tensor of rows"):
                keeper(batch)
        # rows are kept by decision: a model whose output rows are not its input rows cannot retain them
        doubled = run.serve(model, retain_inputs=True, forward=lambda m, ids: m(ids.repeat(2, 1)).logits)
        with pytest.raises(InputError, match="one output row per input row"):
            doubled(batches[0]["input_ids"])
    (record,) = [r["data"] for r in iter_records(root, kinds={"inference"}) if r["data"]["stream"] == serve.stream]
    cols = window_columns(record)
    assert cols["rows"].tolist() == [4, 1, 3] and record["inputs"] == expected
    with torch.no_grad():
        logits = torch.cat([model(**b).logits for b in batches])
    assert np.array_equal(cols["predictions"], logits.argmax(-1).numpy())
    assert [len(ids) for _, ids in served] == [4, 1, 3]
    assert all(torch.allclose(p, torch.softmax(model(**b).logits, -1), atol=1e-6) for (p, _), b in
               zip(served, batches, strict=True))
    verify_run(root, deep=True)
    # a transformers classifier's decision explained through its input embeddings (its output object unwrapped)
    explanation = explain_input(model, batches[0]["input_ids"][0], n_steps=32)
    assert explanation.method == "layer_integrated_gradients" and len(explanation.attributions) == 12


def test_cli_review_and_explain_decision(tmp_path: Path, model, test_rows) -> None:
    root = tmp_path / "run"
    with tw.Run(root) as run:
        serve = InferenceRecorder(model, run, retain_inputs=True, policy=ReviewPolicy(min_confidence=0.95))
        serve(test_rows[:64])
    decision = ReviewQueue.for_run(root).open_requests(1)[0].decision_id

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "torchwitness", *args], capture_output=True, text=True,
                              cwd=Path(__file__).parent)

    listing = cli("review", "list", str(root))
    assert listing.returncode == 0 and decision in listing.stdout
    done = cli("review", "decide", str(root), "--decision", decision, "--action", "approve", "--reviewer", "dana")
    assert done.returncode == 0 and "recorded 1 decision" in done.stdout, done.stderr
    bad = cli("review", "decide", str(root), "--decision", "nope", "--action", "approve", "--reviewer", "dana")
    assert bad.returncode == 2 and "no review request" in bad.stderr
    explained = cli("explain-decision", str(root), "--decision", decision, "--factory",
                    "served_model:trained_model")
    assert explained.returncode == 0, explained.stderr
    assert "convergence delta" in explained.stdout
    kinds = [r["kind"] for r in iter_records(root)]
    assert "review.decision" in kinds and "explain.attribution" in kinds
    assert verify_run(root, deep=True).records == len(kinds)
    row = int(decision.rsplit("-", 1)[1])
    kept = RetainedInputs.for_run(root).get(decision)  # retention on: the exact served row, erasable
    assert np.array_equal(kept, test_rows[row].numpy())


def test_the_least_confident_flagged_rows_are_explained_for_their_reviewer(tmp_path: Path, model,
                                                                          test_rows) -> None:
    root = tmp_path / "run"
    names = [f"f{i}" for i in range(test_rows.shape[1])]
    with tw.Run(root) as run:
        with pytest.raises(InputError, match="needs their inputs"):
            run.serve(model, policy=ReviewPolicy(explain=2))
        serve = run.serve(model, retain_inputs=True, window=8,
                          policy=ReviewPolicy(min_confidence=0.9, explain=2, feature_names=tuple(names)))
        with torch.inference_mode():  # a caller's own inference mode: the rows are still explained
            probs = serve(test_rows[:16])
    queue = ReviewQueue.for_run(root)
    flagged = {r.decision_id: r.confidence for r in queue.open_requests(1000)}
    explained = [r["data"] for r in iter_records(root, kinds={"explain.attribution"})]
    # one request of 16 rows, one window: its two least confident flagged rows
    expected = sorted(flagged, key=flagged.get)[:2]
    assert len(flagged) > 2 and sorted(e["decision_id"] for e in explained) == sorted(expected)
    for e in explained:
        n = int(e["decision_id"].rsplit("-", 1)[1])
        again = explain_input(model, test_rows[n], feature_names=names)  # reproducible from the served row
        assert e["top"] == [[k, v] for k, v in again.top] and e["top"][0][0] in names
        assert e["target"] == int(probs[n].argmax()) and e["delta"] < 1e-2
    listing = subprocess.run([sys.executable, "-m", "torchwitness", "review", "list", str(root), "--limit", "100"],
                             capture_output=True, text=True, env={**os.environ, "COLUMNS": "250"})
    assert listing.returncode == 0, listing.stderr
    for e in explained:
        (line,) = [x for x in listing.stdout.splitlines() if e["decision_id"] in x]
        name, value = e["top"][0]
        assert f"{name} {value:+.2f}" in line
    verify_run(root, deep=True)


def test_explaining_a_token_model_beside_its_serving_threads_changes_no_answer(tmp_path: Path) -> None:
    """Layer attributions hook the embedding layer while they run: the worker explains a copy, so requests served
    meanwhile get their own model's answers (explaining the served model itself broke ~40 % of them)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(20, 8), torch.nn.Flatten(), torch.nn.Linear(8 * 6, 2)).eval()
    requests = [torch.randint(0, 20, (4, 6)) for _ in range(50)]
    with torch.no_grad():
        expected = [torch.softmax(model(x), -1) for x in requests]
    with tw.Run(tmp_path / "run") as run:
        serve = run.serve(model, retain_inputs=True, window=2, policy=ReviewPolicy(min_confidence=1.01, explain=2))
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            for x, want in zip(requests, expected, strict=True):
                assert torch.allclose(serve(x), want)
    explained = list(iter_records(tmp_path / "run", kinds={"explain.attribution"}))
    skipped = [r["data"]["count"] for r in iter_records(tmp_path / "run", kinds={"explain.skipped"})]
    assert explained and all(r["data"]["method"] == "layer_integrated_gradients" for r in explained)
    assert skipped and skipped[0] > 0  # far more selected than the worker keeps up with: counted, not lost silently


def test_explanations_leave_the_served_model_its_mode_and_hooks(tmp_path: Path, model, test_rows) -> None:
    """Explaining runs on a shadow sharing the weights: the served model keeps its mode, its hooks (which hold
    a lock, so it cannot be deep-copied) see no explanation forward, and an in-place update is followed."""
    import copy
    import threading

    served = copy.deepcopy(model).train()  # served in train mode (MC dropout, say): a caller's choice
    seen = []

    class Hook:
        lock = threading.Lock()

        def __call__(self, module, args, output) -> None:
            seen.append(torch.is_grad_enabled())

    served[0].register_forward_hook(Hook())
    with tw.Run(tmp_path / "run") as run:
        serve = run.serve(served, retain_inputs=True, policy=ReviewPolicy(min_confidence=1.01, explain=2))
        serve(test_rows[:8])
        serve.flush()
        serve.close()
    assert served.training and len(seen) == 1  # the serving forward only
    assert len(list(iter_records(tmp_path / "run", kinds={"explain.attribution"}))) == 2
    from torchwitness.integrations.captum import shadow

    twin = shadow(served)
    with torch.no_grad():
        served[0].weight.add_(1.0)
    assert torch.equal(twin[0].weight, served[0].weight) and not twin[0]._forward_hooks
    # Hooks that compute weights are the model's arithmetic: a pruned layer's shadow keeps its mask.
    from torch.nn.utils import prune

    pruned = copy.deepcopy(model).eval()
    prune.l1_unstructured(pruned[0], "weight", amount=0.5)
    pruned(test_rows[:2])  # a forward with gradients: its computed weight is not deep-copyable
    twin = shadow(pruned)
    assert explain_input(twin, test_rows[0]).top == explain_input(pruned, test_rows[0]).top
    assert len(twin[0]._forward_pre_hooks) == 1  # the mask's hook, kept
    with torch.no_grad():  # and the weight it computes follows the served parameters
        pruned[0].weight_orig.mul_(-2.0)
        assert torch.allclose(twin(test_rows[:4]), pruned(test_rows[:4]))


def test_an_erasure_the_ledger_dropped_deletes_nothing_until_the_run_is_next_opened(tmp_path: Path, model,
                                                                                     test_rows) -> None:
    with tw.Run(tmp_path / "run") as run:
        _, ids = run.serve(model, retain_inputs=True)(test_rows[:2], ids=True)
    busy, release = threading.Event(), threading.Event()
    ledger = Ledger.open(tmp_path / "run", on_full="drop", queue_size=1)
    try:
        ledger.append("note", {"held": Computed(lambda: busy.set() or release.wait(30))})  # the writer waits here
        assert busy.wait(30)
        while ledger.append("note", {"fills": "the queue"}) is not None:
            pass
        with pytest.raises(LedgerError, match=r"dropped an erasure record.*nothing was deleted"):
            erase_inputs(ledger, [ids[0]])
        assert RetainedInputs.for_run(tmp_path / "run").holds(ids[0])
    finally:
        release.set()
        ledger.close()
    with tw.Run(tmp_path / "run", resume=True):  # the intent was kept: opening records the erasure, then deletes
        pass
    assert not RetainedInputs.for_run(tmp_path / "run").holds(ids[0])
    (erasure,) = iter_records(tmp_path / "run", kinds={"inputs.erasure"})
    assert erasure["data"]["decisions"] == [ids[0]]


def test_cli_explains_a_served_token_model_decision(tmp_path: Path) -> None:
    """Token ids retained when served are explained by Layer Integrated Gradients through the input embedding."""
    from served_model import token_model

    model = token_model()
    ids = torch.randint(1, 20, (6, 5), generator=torch.Generator().manual_seed(1))
    root = tmp_path / "run"
    with tw.Run(root) as run:
        _, decisions = run.serve(model, retain_inputs=True)(ids, ids=True)
    explained = subprocess.run([sys.executable, "-m", "torchwitness", "explain-decision", str(root), "--decision",
                                decisions[4], "--factory", "served_model:token_model", "--steps", "200"],
                               capture_output=True, text=True, cwd=Path(__file__).parent)
    assert explained.returncode == 0, explained.stderr
    (record,) = [r["data"] for r in iter_records(root, kinds={"explain.attribution"})]
    assert record["method"] == "layer_integrated_gradients" and record["input_checked"] is True
    with torch.no_grad():  # completeness: the attributions add up to the output's change from the all-0 baseline
        gap = model(ids[4:5])[0, record["target"]] - model(torch.zeros(1, 5, dtype=torch.long))[0, record["target"]]
    assert record["total"] == pytest.approx(float(gap), abs=1e-3) and abs(record["delta"]) < 1e-3
    assert {k for k, _ in record["top"]} <= set(range(5))  # token positions


def test_retained_inputs_are_erased_by_decision_and_the_erasure_is_recorded(tmp_path: Path, model,
                                                                           test_rows) -> None:
    root = tmp_path / "run"
    with tw.Run(root) as run:
        _, ids = run.serve(model, retain_inputs=True)(test_rows[:8], ids=True)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "torchwitness", *args], capture_output=True, text=True)

    bad = cli("erase", str(root), "--decision", "not-an-id")
    assert bad.returncode == 2 and "is not a decision id" in bad.stderr
    done = cli("erase", str(root), "--decision", ids[2], "--decision", ids[5], "--decision", ids[5])
    assert done.returncode == 0 and "erased 2" in done.stdout, done.stderr
    again = cli("erase", str(root), "--decision", ids[2])
    assert again.returncode == 1 and "nothing to erase" in again.stdout
    store = RetainedInputs.for_run(root)
    for i in (2, 5):
        with pytest.raises(InputError, match="no retained input"):
            store.get(ids[i])
    assert np.array_equal(store.get(ids[3]), test_rows[3].numpy())
    private = b"".join(p.read_bytes() for p in (root / "private").iterdir() if p.name.startswith("inputs"))
    assert test_rows[2].numpy().tobytes() not in private and test_rows[3].numpy().tobytes() in private
    (erasure,) = [r["data"] for r in iter_records(root, kinds={"inputs.erasure"})]
    assert erasure == {"decisions": [ids[2], ids[5]], "count": 2, "reason": "data subject request (GDPR Art. 17)"}
    verify_run(root, deep=True)
    gdpr17 = {c.obligation.id: c for c in coverage(Evidence.load(root))}["GDPR:Art.17"]
    assert gdpr17.status == "evidence"


def test_sampling_commits_and_retains_only_sampled_inputs(tmp_path: Path, model, test_rows) -> None:
    root = tmp_path / "run"
    with tw.Run(root) as run:
        serve = run.serve(model, sample_every=2, retain_inputs=True)
        for i in range(3):
            serve(test_rows[2 * i:2 * i + 2])
    (record,) = [r["data"] for r in iter_records(root, kinds={"inference"})]
    cols = window_columns(record)
    assert cols["first_decisions"].tolist() == [0, 2, 4] and cols["committed"].tolist() == [0, 2]
    assert len(record["inputs"]) == 2
    assert len(cols["predictions"]) == 6  # every decision is recorded, sampled or not
    store = RetainedInputs.for_run(root)
    assert np.array_equal(store.get(serve.decision_id(5)), test_rows[5].numpy())
    with pytest.raises(InputError, match="no retained input"):
        store.get(serve.decision_id(2))


def test_per_field_retention_down_to_a_bare_log_of_use(tmp_path: Path, model, test_rows) -> None:
    """No input evidence and no outputs: decision ids, rows, latencies and the model digest only."""
    root = tmp_path / "run"
    with tw.Run(root) as run:
        serve = run.serve(model, fingerprint="none", outputs=False, retain_inputs=True)
        for i in range(3):
            out = serve(test_rows[32 * i:32 * i + 32])
            assert torch.allclose(out, torch.softmax(model(test_rows[32 * i:32 * i + 32]), -1))
    (record,) = [r["data"] for r in iter_records(root, kinds={"inference"})]
    cols = window_columns(record)
    assert cols["first_decisions"].tolist() == [0, 32, 64] and cols["rows"].tolist() == [32, 32, 32]
    assert cols["committed"].tolist() == [] and record["inputs"] == [] and record["fingerprint"] == "none"
    assert record["outputs"] is None and len(cols["latency_us"]) == 3
    # retention is its own field: the raw rows were kept (privately, erasably) though nothing was committed
    assert np.array_equal(RetainedInputs.for_run(root).get(serve.decision_id(40)), test_rows[40].numpy())
    verify_run(root, deep=True)


def test_retained_inputs_are_deleted_when_their_retention_period_ends(tmp_path: Path, model, test_rows,
                                                                     monkeypatch) -> None:
    from torchwitness.probes import inference

    monkeypatch.setattr(inference, "_EXPIRY_SECONDS", 0.05)
    root = tmp_path / "run"
    with tw.Run(root) as run:
        with pytest.raises(InputError, match="needs retain_inputs=True"):
            run.serve(model, retain_seconds=60)
        with pytest.raises(InputError, match="positive period"):
            run.serve(model, retain_inputs=True, retain_seconds=0)
        forever = run.serve(model, retain_inputs=True)
        _, kept = forever(test_rows[:4], ids=True)
        serve = run.serve(model, retain_inputs=True, retain_seconds=dt.timedelta(seconds=0.3), window_seconds=0.1)
        _, ids = serve(test_rows[4:12], ids=True)
        serve.flush()
        store = RetainedInputs.for_run(root)
        assert np.array_equal(store.get(ids[0]), test_rows[4].numpy())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and store.holds(ids[0]):
            time.sleep(0.05)  # the recorder deletes them itself, from its window-ageing thread
        assert not store.holds(ids[0]) and not store.holds(ids[7])
        forever.flush()
    assert all(store.holds(d) for d in kept)  # no period: kept until erased
    (start,) = [r["data"] for r in iter_records(root, kinds={"serve.start"}) if r["data"]["retain_seconds"]]
    assert start["retain_seconds"] == 0.3
    expiries = [r["data"] for r in iter_records(root, kinds={"inputs.expiry"})]
    assert sum(e["count"] for e in expiries) == 8
    private = b"".join(p.read_bytes() for p in (root / "private").iterdir() if p.name.startswith("inputs"))
    assert test_rows[4].numpy().tobytes() not in private and test_rows[0].numpy().tobytes() in private
    verify_run(root, deep=True)
    rows = {c.obligation.id: c for c in coverage(Evidence.load(root))}
    assert rows["GDPR:Art.5(1)(e)"].status == "evidence"


def test_expire_deletes_the_inputs_of_a_run_no_longer_served(tmp_path: Path, model, test_rows) -> None:
    import sqlite3

    root = tmp_path / "run"
    with tw.Run(root) as run:
        _, ids = run.serve(model, retain_inputs=True, retain_seconds=0.2)(test_rows[:6], ids=True)
    # A store from before retention periods: its rows have no end and stay.
    db = sqlite3.connect(root / "private" / "inputs.sqlite")
    db.executescript("DROP INDEX inputs_expiry; ALTER TABLE inputs DROP COLUMN expires_us; "
                     "INSERT INTO inputs SELECT 'r-old-0', dtype, shape, data FROM inputs LIMIT 1")
    db.close()
    store = RetainedInputs.for_run(root)  # migrated: the old rows have no end
    store.put_many(ids, test_rows[:6].numpy(), expires_us=1)  # their periods have ended
    time.sleep(0.25)
    done = subprocess.run([sys.executable, "-m", "torchwitness", "expire", str(root)], capture_output=True,
                          text=True)
    assert done.returncode == 0 and "deleted 6 retained serving input(s)" in done.stdout, done.stderr
    assert store.holds("r-old-0") and not store.holds(ids[0])
    (expiry,) = [r["data"] for r in iter_records(root, kinds={"inputs.expiry"})]
    assert expiry["count"] == 6
    without = {c.obligation.id: c for c in coverage(Evidence.load(root))}["GDPR:Art.5(1)(e)"]
    assert without.status == "evidence"


def test_storage_limitation_needs_inputs_not_kept_or_kept_for_a_period(tmp_path: Path, model, test_rows) -> None:
    for options, status in (({}, "evidence"), ({"retain_inputs": True}, "none")):
        root = tmp_path / str(len(options))
        with tw.Run(root) as run:
            run.serve(model, **options)(test_rows[:2])
        assert {c.obligation.id: c for c in coverage(Evidence.load(root))}["GDPR:Art.5(1)(e)"].status == status
    # The dossier names the stream that keeps raw inputs until they are erased.
    from torchwitness.report.build import build_document

    section = next(s for s in build_document(root).sections if s.key == "annex-iv-9")
    assert any("keeps the raw inputs it serves until they are erased" in getattr(b, "text", "")
               for b in section.blocks)


def test_outputs_off_still_reach_the_review_queue(tmp_path: Path, model, test_rows) -> None:
    root = tmp_path / "run"
    with tw.Run(root) as run:
        serve = run.serve(model, outputs=False, policy=ReviewPolicy(min_confidence=1.01, audit_rate=0.0))
        serve(test_rows[:8])
        serve.flush()
        flagged = ReviewQueue.for_run(root).open_requests(100)
    assert len(flagged) == 8  # every row is below a confidence of 1.01
    (record,) = [r["data"] for r in iter_records(root, kinds={"inference"})]
    assert record["outputs"] is None and len(record["inputs"]) == 1


def test_columns_hold_every_decision_across_folds_windows_and_sampling(tmp_path: Path, model, test_rows) -> None:
    """Requests of 1-7 rows in windows of 37 (outputs concatenated every 16 requests): nothing lost or reordered."""
    sizes = [1 + (i * 5) % 7 for i in range(100)]
    bounds = np.cumsum([0, *sizes])
    root = tmp_path / "run"
    policy = ReviewPolicy(min_confidence=0.8, audit_rate=0.0, on_drift=True)
    with tw.Run(root) as run:
        serve = run.serve(model, window=37, window_seconds=600, sample_every=5, policy=policy)
        for i in range(len(sizes)):
            serve.drift_flag = i in (40, 41)
            if i % 4 == 1 or i in (36, 37, 73, 74):  # some ask for their decision ids, also at window ends
                _, ids = serve(test_rows[bounds[i]:bounds[i + 1]], ids=True)
                assert ids == [serve.decision_id(n) for n in range(bounds[i], bounds[i + 1])]
            else:
                serve(test_rows[bounds[i]:bounds[i + 1]])
        serve.flush()
        flagged = {r.decision_id: r.reason for r in ReviewQueue.for_run(root).open_requests(10_000)}
    records = [r["data"] for r in iter_records(root, kinds={"inference"})]
    columns = [window_columns(r) for r in records]
    assert [len(c["rows"]) for c in columns] == [37, 37, 26]
    assert np.concatenate([c["rows"] for c in columns]).tolist() == sizes
    assert np.concatenate([c["first_decisions"] for c in columns]).tolist() == bounds[:-1].tolist()
    # every 5th request's input is committed, counted across windows (37 is not a multiple of 5)
    committed = [r["first_decision"] for r in records]
    starts = [np.searchsorted(bounds, f) for f in committed]
    assert np.concatenate([s + c["committed"] for s, c in zip(starts, columns, strict=True)]).tolist() == list(
        range(0, 100, 5))
    served = test_rows[:bounds[-1]]
    with torch.no_grad():
        probs = torch.softmax(model(served), -1)
    assert np.array_equal(np.concatenate([c["predictions"] for c in columns]), probs.argmax(-1).numpy())
    assert np.allclose(np.concatenate([c["confidence"] for c in columns]), probs.max(-1).values.numpy(), atol=1e-4)
    drifted = {serve.decision_id(n) for i in (40, 41) for n in range(bounds[i], bounds[i + 1])}
    low = {serve.decision_id(n) for n in np.flatnonzero(probs.max(-1).values.numpy() < 0.8)}
    assert {d for d, reason in flagged.items() if reason == "drift"} == drifted
    assert {d for d, reason in flagged.items() if reason == "low_confidence"} == low - drifted


def test_a_window_is_recorded_by_age_and_by_held_bytes(tmp_path: Path, model, test_rows, monkeypatch) -> None:
    import time

    import torchwitness.probes.inference as inference

    root = tmp_path / "run"
    with tw.Run(root) as run:
        serve = run.serve(model, window=10_000, window_seconds=1.0, fingerprint="none")
        for _ in range(20):
            serve(test_rows[:4])
        time.sleep(2.0)  # the server goes quiet: its window is recorded all the same, at most 0.25 s past its age
        serve(test_rows[:4])
        serve.flush()
        # retained inputs are held until their window is recorded: a window ends early when they grow too big
        monkeypatch.setattr(inference, "_KEPT_BYTES", 3 * test_rows[:4].nbytes)
        held = run.serve(model, window=10_000, retain_inputs=True)
        for _ in range(7):
            held(test_rows[:4])
    sizes = [len(window_columns(r["data"])["rows"]) for r in iter_records(root, kinds={"inference"})]
    assert sizes == [20, 1, 3, 3, 1]


def test_requests_served_from_several_threads_keep_their_own_columns(tmp_path: Path) -> None:
    """Threads serving at once (a threaded web server): each request's rows, latency and outputs stay together."""
    import threading

    class Echo(torch.nn.Module):  # predicts the class written in the input, so a mixed-up column shows
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(x[:, 0].long(), 4).float() * 10

    root = tmp_path / "run"
    with tw.Run(root) as run:
        serve = run.serve(Echo(), window=64, sample_every=3)

        numbers: dict[int, list[int]] = {k: [] for k in range(4)}

        def client(k: int) -> None:
            for i in range(300):
                x = torch.full((k + 1 + i % 2, 3), float(k))  # thread k sends class k, in k+1 or k+2 rows
                if i % 3 == 2:
                    serve(x)
                else:
                    _, ids = serve(x, ids=True)
                    numbers[k] += [parse_decision_id(d)[2] for d in ids]

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    records = [r["data"] for r in iter_records(root, kinds={"inference"})]
    columns = [window_columns(r) for r in records]
    rows = np.concatenate([c["rows"] for c in columns])
    predictions = np.concatenate([c["predictions"] for c in columns])
    assert len(rows) == 1200 and rows.sum() == len(predictions)
    # the ids each thread was handed (two requests in three) name its own rows, each row once
    handed = [n for k in range(4) for n in numbers[k]]
    assert len(set(handed)) == len(handed) == sum(k + 1 + i % 2 for k in range(4) for i in range(300) if i % 3 != 2)
    for k in range(4):
        assert (predictions[numbers[k]] == k).all()
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]])
    for start, n in zip(starts, rows, strict=True):  # each request is k+1 or k+2 rows, all of class k
        k = predictions[start]
        assert n in (k + 1, k + 2) and (predictions[start:start + n] == k).all()
    assert np.bincount(predictions, minlength=4).tolist() == [150 * (2 * k + 3) for k in range(4)]
    assert sum(len(c["committed"]) for c in columns) == 400  # every 3rd request, counted across threads


def test_decision_ids_are_unique_across_recorders_and_sessions(tmp_path: Path, model, test_rows) -> None:
    """Each recorder numbers its decisions in its own stream, named by its serve.start record."""
    root = tmp_path / "run"
    ids = []
    for _session in range(2):  # a resumed run folder gets a new session: its recorder must not reuse ids
        with tw.Run(root, resume=True) as run:
            first, second = run.serve(model, retain_inputs=True), run.serve(model, window=1, fingerprint="none")
            first(test_rows[:2])
            second(test_rows[2:4])
            ids += [first.decision_id(0), second.decision_id(0)]
        # retained rows are kept under the decision ids of their own session's recorder
        assert np.array_equal(RetainedInputs.for_run(root).get(first.decision_id(1)), test_rows[1].numpy())
    assert len(set(ids)) == 4
    starts = list(iter_records(root, kinds={"serve.start"}))
    assert [r["data"]["fingerprint"] for r in starts] == ["request", "none"] * 2
    assert starts[1]["data"]["window"] == 1 and starts[0]["data"]["policy"] is None
    streams = [r["data"]["stream"] for r in iter_records(root, kinds={"inference"})]
    assert sorted(streams) == sorted(str(r["seq"]) for r in starts)
    for decision in ids:
        run_id, stream, number = parse_decision_id(decision)
        assert number == 0 and stream in streams and run_id == starts[0]["run"]
    with pytest.raises(InputError, match="not a decision id"):
        parse_decision_id(f"{starts[0]['run']}-12")
    verify_run(root, deep=True)


@pytest.mark.parametrize("fingerprint", ["request", "row", "none"])
def test_explaining_checks_the_retained_input_against_its_commitment(tmp_path: Path, model, test_rows,
                                                                     fingerprint: str) -> None:
    root = tmp_path / "run"
    with tw.Run(root) as run:
        serve = run.serve(model, retain_inputs=True, fingerprint=fingerprint, sample_every=2)
        for i in range(3):
            serve(test_rows[4 * i:4 * i + 4])
        decision = serve.decision_id(9)  # request 2: committed (unless fingerprint="none") and retained
    (record,) = iter_records(root, kinds={"inference"})
    store = RetainedInputs.for_run(root)

    def explain() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "torchwitness", "explain-decision", str(root), "--decision",
                               decision, "--factory", "served_model:trained_model"], capture_output=True,
                              text=True, cwd=Path(__file__).parent)

    with tw.Run(root, resume=True) as run:
        row, checked = verified_input(store, record, decision, run.ledger.personal.fingerprint)
    assert np.array_equal(row, test_rows[9].numpy()) and checked == (fingerprint != "none")
    if fingerprint == "none":  # nothing was committed: explained, with a note that nothing could be checked
        unchecked = explain()
        assert unchecked.returncode == 0 and "could not be checked" in unchecked.stderr
        (attribution,) = iter_records(root, kinds={"explain.attribution"})
        assert attribution["data"]["input_checked"] is False
        return
    # a retained row edited in the private side store no longer matches what was committed when it was served
    tampered = test_rows[9].numpy().copy()
    tampered[0] += 1.0
    store.put_many([decision], tampered[None])
    with tw.Run(root, resume=True) as run, \
            pytest.raises(InputError, match=f"seq {record['seq']}.*changed after serving"):
        verified_input(store, record, decision, run.ledger.personal.fingerprint)
    refused = explain()
    assert refused.returncode == 2 and "changed after serving" in refused.stderr
    assert not list(iter_records(root, kinds={"explain.attribution"}))
    if fingerprint == "row":
        return
    # Deleting a sibling row as well does not turn the edit into an unchecked explanation; a recorded erasure
    # of that sibling does (the request's commitment can no longer be checked, and says so).
    sibling = serve.decision_id(8)
    store.delete([sibling])
    with tw.Run(root, resume=True) as run, \
            pytest.raises(InputError, match=f"{sibling} is gone without an erasure record"):
        verified_input(store, record, decision, run.ledger.personal.fingerprint)
    with tw.Run(root, resume=True) as run:
        assert verified_input(store, record, decision, run.ledger.personal.fingerprint, {sibling})[1] is False
