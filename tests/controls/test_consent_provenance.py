"""Consent-gated data, the access log, provenance queries and the one-command erasure flow."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

import torchwitness as tw
from torchwitness.cli import app
from torchwitness.controls.consent import ConsentRegistry
from torchwitness.controls.consented_data import ConsentedDataset
from torchwitness.controls.provenance import ProvenanceRecorder
from torchwitness.controls.provenance_query import erase_subject, query
from torchwitness.errors import InputError
from torchwitness.ledger import iter_records, verify_run

N = 600
EPOCHS = 4


def _train(root, *, revoke_after_epoch=1, revoked=(3, 7), bs=32):
    """A loop that reads only through ConsentedDataset; returns the rows' features served per epoch."""
    subjects = [f"subject-{secrets.token_hex(6)}" for _ in range(N)]
    x = torch.arange(N, dtype=torch.float32)[:, None] * torch.ones(1, 4)  # every row's content is unique
    y = torch.arange(N) % 2
    served = []
    with tw.Run(root) as run:
        reg = ConsentRegistry(run)
        reg.grant_many(subjects[: N - 50], "training", version="v2", start=0.0)
        reg.grant_many(subjects[N - 50:], "marketing", version="v2", start=0.0)  # other purpose: no access
        data = ConsentedDataset(TensorDataset(x, y), subjects=subjects, registry=reg, purpose="training", run=run)
        prov = ProvenanceRecorder(run, subjects)
        step = 0
        for epoch in range(EPOCHS):
            data.begin_epoch(epoch, at=100.0 + epoch)
            seen = []
            for i, (xb, _, rows) in enumerate(DataLoader(data, batch_size=bs, shuffle=True)):
                seen.append(xb[:, 0])
                prov.record_batch(step, rows)
                step += 1
                if epoch == revoke_after_epoch and i == 0:  # mid-epoch: effective from the next epoch
                    for r in revoked:
                        reg.revoke(subjects[r], "training", at=100.0 + epoch + 0.5)
            prov.end_epoch(epoch)
            prov.checkpoint_saved(step - 1, epoch=epoch, name=f"epoch-{epoch}.pt")
            served.append(torch.cat(seen))
    return subjects, x, served


def test_revoked_and_other_purpose_rows_are_absent_by_content(tmp_path):
    _, x, served = _train(tmp_path / "run")
    for epoch, values in enumerate(served):
        values = set(values.tolist())
        assert not values & set(x[N - 50:, 0].tolist())  # marketing consent grants no training access
        revoked = {x[3, 0].item(), x[7, 0].item()}
        assert (revoked <= values) if epoch <= 1 else not (revoked & values), epoch
        assert len(values) == (N - 50 if epoch <= 1 else N - 52)
    log = [r["data"] for r in iter_records(tmp_path / "run", kinds={"consent.access"})]
    assert [e["withheld"] for e in log][1:3] == [{"no_consent": 50, "revoked": 0, "outside_window": 0},
                                                 {"no_consent": 50, "revoked": 2, "outside_window": 0}]
    assert len(log[2]["newly_withheld"]) == 2 and log[3]["newly_withheld"] == []
    assert all(c["$personal"].startswith("hmac-sha256:") for c in log[2]["newly_withheld"])
    verify_run(tmp_path / "run", deep=True)


def test_no_subject_id_in_cleartext_anywhere_in_the_run_folder(tmp_path):
    subjects, _, _ = _train(tmp_path / "run")
    blobs = b"".join(p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file())
    assert b"subject-" not in blobs
    assert not [s for s in subjects if s.encode() in blobs]


def test_provenance_query_matches_the_loop_and_erasure_reports_checkpoints(tmp_path):
    subjects, _, _ = _train(tmp_path / "run", bs=50)
    run = tmp_path / "run"
    answer = query(run, subjects[3])  # revoked during epoch 1: present in epochs 0 and 1 only
    assert answer.epochs == [0, 1] and answer.rows == 1 and len(answer.steps) == 2
    assert answer.verified_steps == 2
    assert answer.checkpoints == [f"epoch-{e}.pt" for e in range(EPOCHS)]
    steps_per_epoch = -(-(N - 50) // 50)
    assert all(s < 2 * steps_per_epoch for s in answer.steps)
    late = query(run, subjects[10])
    assert late.epochs == [0, 1, 2, 3] and len(late.steps) == 4
    with pytest.raises(InputError):
        query(run, subjects[N - 1] + "-unknown")

    out = CliRunner().invoke(app, ["provenance", str(run), "--subject", subjects[10]])
    assert out.exit_code == 0, out.output
    assert "4 checked against the ledger" in out.output and "epoch-3.pt" in out.output

    report = erase_subject(run, subjects[3])
    assert report.purposes_revoked == ["training"] and report.affected_checkpoints == answer.checkpoints
    with pytest.raises(InputError):
        query(run, subjects[3])
    # every other subject still verifies, including those that shared a batch with the erased one
    assert all(query(run, s).verified_steps == len(query(run, s, verify=False).steps) for s in subjects[4:40])
    kinds = [r["kind"] for r in iter_records(run)]
    assert kinds[-3:] == ["consent.revoke", "provenance.erasure", "erasure"]
    assert verify_run(run, deep=True).erased_payloads >= 1

    out = CliRunner().invoke(app, ["provenance", str(run), "--subject", subjects[11], "--erase"])
    assert out.exit_code == 0 and "checkpoints carrying its influence: epoch-0.pt" in out.output

    before = verify_run(run).erased_payloads
    with tw.Run(run, resume=True):  # a later session holds the run open: it performs the erasure, in the same order
        report = erase_subject(run, subjects[12])
    assert report.affected_checkpoints == answer.checkpoints
    with pytest.raises(InputError):
        query(run, subjects[12])
    kinds = [r["kind"] for r in iter_records(run)]
    assert kinds[-4:] == ["consent.revoke", "provenance.erasure", "erasure", "run.end"]
    assert verify_run(run, deep=True).erased_payloads == before + 1


def test_query_without_side_index_is_a_readable_error(tmp_path, capsys):
    from torchwitness.cli import main

    with tw.Run(tmp_path / "run") as run:
        run.record("x", {"who": tw.Personal("alice")})
    with pytest.raises(SystemExit) as exit_:
        main(["provenance", str(tmp_path / "run"), "--subject", "alice"])
    assert exit_.value.code == 2 and "no provenance side index" in capsys.readouterr().err


def test_consent_refuses_unchecked_reads():
    reg = ConsentRegistry()
    data = ConsentedDataset(TensorDataset(torch.zeros(2, 1)), subjects=["a", "b"], registry=reg, purpose="t")
    with pytest.raises(InputError, match="begin_epoch"):
        len(data)
    reg.grant("a", "t", version="v1", start=10, end=20)
    assert np.array_equal(reg.status(["a", "b"], "t", at=15), [0, 1])
    assert reg.status(["a"], "t", at=25).tolist() == [3]


def test_provenance_query_on_100k_subjects_under_one_second(tmp_path):
    import time

    n, bs = 100_000, 1024
    subjects = [f"s{i:06d}" for i in range(n)]
    with tw.Run(tmp_path / "run") as run:
        prov = ProvenanceRecorder(run, subjects)
        rng = np.random.default_rng(0)
        step = 0
        for epoch in range(2):
            for rows in np.array_split(rng.permutation(n), n // bs):
                prov.record_batch(step, torch.from_numpy(rows))
                step += 1
            prov.end_epoch(epoch)
    t0 = time.perf_counter()
    answer = query(tmp_path / "run", subjects[12345])
    elapsed = time.perf_counter() - t0
    assert answer.epochs == [0, 1] and answer.verified_steps == 2
    assert elapsed < 1.0, elapsed
