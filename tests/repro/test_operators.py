from __future__ import annotations

import pytest
import torch

import torchwitness as tw
from torchwitness.ledger import iter_records, verify_run
from torchwitness.probes import nondeterminism
from torchwitness.probes.operators import OperatorInventory


@pytest.fixture
def deterministic_mode():
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    yield lambda on, warn_only=False: torch.use_deterministic_algorithms(on, warn_only=warn_only)
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def records(run_dir, kind):
    return [r["data"] for r in iter_records(run_dir, kinds={kind})]


def gather_backward(device: str = "cpu") -> None:
    x = torch.randn(6, 3, device=device, requires_grad=True)
    x[[0, 2, 2]].sum().backward()  # the backward of advanced indexing accumulates with index_put


@pytest.mark.parametrize("op, device, accumulate, mode, warn_only, flagged", [
    ("put_", "cpu", True, False, False, True),    # fixed by the mode...
    ("put_", "cpu", True, True, False, False),    # ...so not flagged under it
    ("put_", "cpu", False, True, False, False),   # no deterministic kernel: raises under the mode, never runs
    ("put_", "cpu", False, True, True, True),     # warn_only lets it run nondeterministically
    ("put_", "cuda", True, True, True, True),
    ("index_put", "cuda", True, False, False, False),  # deterministic on CUDA per torch's docs
    ("index_add_", "cpu", False, False, False, False),
    ("index_add_", "cuda", False, False, False, True),
])
def test_nondeterminism_table(op, device, accumulate, mode, warn_only, flagged):
    t = torch.zeros(2, device="meta")
    why = nondeterminism.reason(op, device, ((t, None, None, accumulate), {}), mode=mode, warn_only=warn_only)
    assert (why is not None) == flagged and (why is None or why.endswith(f"on {device}"))


def test_cublas_workspace_decides_cuda_matmuls(monkeypatch):
    args = ((torch.zeros(2, 2, device="meta"), torch.zeros(2, 2, device="meta")), {})
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert "CUBLAS_WORKSPACE_CONFIG" in nondeterminism.reason("mm", "cuda", args, mode=False)
    assert nondeterminism.reason("mm", "cpu", args, mode=False) is None
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    assert nondeterminism.reason("mm", "cuda", args, mode=False) is None


def test_counts_dtypes_devices(tmp_path):
    a, b = torch.randn(3, 3), torch.randn(3, 3, dtype=torch.float64)
    with tw.Run(tmp_path / "run", seed=0) as run, OperatorInventory(run):
        for _ in range(3):
            a @ a
        b + b
    (inv,) = records(tmp_path / "run", "ops.inventory")
    assert inv["ops"]["aten.mm.default"] == {"count": 3, "dtypes": ["float32"], "devices": ["cpu"]}
    assert inv["ops"]["aten.add.Tensor"]["dtypes"] == ["float64"]
    assert inv["total"] == sum(v["count"] for v in inv["ops"].values())
    (env,) = records(tmp_path / "run", "repro.environment")
    assert env["seed"] == 0 and env["determinism_requested"] and env["deterministic_algorithms"] is False
    verify_run(tmp_path / "run", deep=True)


def test_nondeterministic_op_flagged_when_determinism_was_asked_for(tmp_path, deterministic_mode):
    with tw.Run(tmp_path / "run", seed=1) as run, OperatorInventory(run):
        gather_backward()
    (inv,) = records(tmp_path / "run", "ops.inventory")
    assert [(n["op"], n["device"]) for n in inv["nondeterministic"]] == [("index_put", "cpu")]
    (finding,) = records(tmp_path / "run", "finding")
    assert finding["rule_id"] == "TW750" and finding["location"] == "ops:index_put@cpu"

    deterministic_mode(True)  # the mode makes the CPU kernel deterministic: nothing to flag
    with tw.Run(tmp_path / "det", seed=1) as run, OperatorInventory(run):
        gather_backward()
    assert records(tmp_path / "det", "ops.inventory")[0]["nondeterministic"] == []
    assert records(tmp_path / "det", "finding") == []


def test_no_determinism_asked_no_nondeterminism_finding_but_unseeded_randomness(tmp_path):
    with tw.Run(tmp_path / "run") as run, OperatorInventory(run):
        gather_backward()
        torch.nn.functional.dropout(torch.ones(4), 0.5)
    (inv,) = records(tmp_path / "run", "ops.inventory")
    assert inv["determinism_requested"] is False and len(inv["nondeterministic"]) == 1
    assert "bernoulli_" in inv["random_ops"]
    assert [f["rule_id"] for f in records(tmp_path / "run", "finding")] == ["TW751"]


def test_only_due_steps_are_audited(tmp_path):
    with tw.Run(tmp_path / "run", seed=0) as run:
        inventory = OperatorInventory(run, every=2)
        audited = []
        for step in range(5):
            with inventory.step(step) as due:
                torch.ones(2) * 2
            audited.append(due)
    assert audited == [True, False, True, False, True]
    assert [r["step"] for r in iter_records(tmp_path / "run", kinds={"ops.inventory"})] == [0, 2, 4]
    assert len(records(tmp_path / "run", "repro.environment")) == 1


def test_attached_to_an_untouched_loop(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    with tw.Run(tmp_path / "run", seed=0) as run, OperatorInventory(run, every=2).attach(model, opt):
        for _ in range(5):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            model.eval()
            model(x)  # an eval forward between steps is not audited
            model.train()
    inv = list(iter_records(tmp_path / "run", kinds={"ops.inventory"}))
    assert [r["step"] for r in inv] == [0, 2, 4]
    ops = inv[0]["data"]["ops"]
    assert ops["aten.addmm.default"]["count"] == 2  # the training forward only, not the eval one
    assert "aten.add_.Tensor" in ops  # the optimizer's update ran inside the audited step
    assert not model._forward_pre_hooks


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_scatter_add_is_flagged(tmp_path, deterministic_mode):
    with tw.Run(tmp_path / "run", seed=0) as run, OperatorInventory(run):
        t = torch.zeros(4, device="cuda")
        t.index_add_(0, torch.tensor([0, 0, 1], device="cuda"), torch.ones(3, device="cuda"))
        gather_backward("cuda")
    flagged = {(n["op"], n["device"]) for n in records(tmp_path / "run", "ops.inventory")[0]["nondeterministic"]}
    assert ("index_add_", "cuda") in flagged
    deterministic_mode(True, warn_only=True)
    with tw.Run(tmp_path / "det", seed=0) as run, OperatorInventory(run):
        torch.zeros(4, device="cuda").index_add_(0, torch.tensor([0, 0], device="cuda"), torch.ones(2, device="cuda"))
    assert records(tmp_path / "det", "ops.inventory")[0]["nondeterministic"] == []


def test_runs_beside_run_watch_and_shares_its_findings(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    with tw.Run(tmp_path / "run", seed=0) as run:
        run.watch(model, opt, every_n_steps=1)
        inventory = OperatorInventory(run, every=2)
        for step in range(4):
            with inventory.step(step):
                opt.zero_grad()
                out = model(x)[[0, 1, 1]]  # advanced-indexing backward: nondeterministic on CPU
                torch.nn.functional.cross_entropy(out, y[:3]).backward()
            opt.step()
        assert inventory.findings is run.finding_set
        assert "TW750" in {f.rule_id for f in run.findings()}
    assert [r["step"] for r in iter_records(tmp_path / "run", kinds={"ops.inventory"})] == [0, 2]
    verify_run(tmp_path / "run", deep=True)
