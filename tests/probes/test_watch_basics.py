"""The watch's contract: step counting, sampling, one transfer per audited step, hooks removed on close."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

import torchwitness as tw
from torchwitness.ledger import iter_records


def _loop(run: tw.Run, steps: int, **kw: object) -> tuple[torch.nn.Module, object]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    crit = torch.nn.CrossEntropyLoss()
    watch = run.watch(model, opt, loss_fn=crit, **kw)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    for _ in range(steps):
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()
        with torch.no_grad():  # evaluation forwards are never training steps
            model.eval()
            model(x.clone())  # (the training batch itself, measured again, would be a training metric)
            model.train()
    return model, watch


def test_steps_sampling_and_audit_records(tmp_path):
    with tw.Run(tmp_path / "r") as run:
        model, watch = _loop(run, 25, every_n_steps=10, first_steps=3)
        assert watch.step == 25
    audited = [s["step"] for r in iter_records(tmp_path / "r", kinds={"train.audit"}) for s in r["data"]["steps"]]
    assert audited == [0, 1, 2, 10, 20]
    assert not model._forward_hooks and not model._forward_pre_hooks
    assert all(not m._forward_hooks for m in model.modules())


def test_hooks_only_around_audited_steps(tmp_path):
    with tw.Run(tmp_path / "r") as run:
        model, watch = _loop(run, 4, every_n_steps=100, first_steps=2)
        # step 4 is not audited: no module hook at all (the root's forward is tapped in the instance, which keeps
        # nn.Module's short call path), and the optimizer's post-hook
        assert not model._forward_hooks and not model._forward_pre_hooks and "forward" in model.__dict__
        assert all(not m._forward_hooks for m in list(model.modules())[1:])
        assert len(watch.optimizer._optimizer_step_post_hooks) == 1 and not watch.optimizer._optimizer_step_pre_hooks
        watch.close()
        assert not watch.optimizer._optimizer_step_post_hooks
        assert not model._forward_hooks and "forward" not in model.__dict__
        assert not [k for k in model.__dict__ if k.startswith("_torchwitness")]


def test_loss_taps_leave_unaudited_steps_of_a_class_target_loop(tmp_path):
    """Between audits the functional-loss and zero_grad taps are the originals when the losses seen had class
    targets; a floating target keeps its tap (the target's non-finite sentinel needs it)."""
    original_ce, original_mse, original_zero = F.cross_entropy, F.mse_loss, torch.optim.Optimizer.zero_grad
    with tw.Run(tmp_path / "r") as run:
        model, watch = _loop(run, 4, every_n_steps=100, first_steps=2)
        assert F.cross_entropy is original_ce and torch.optim.Optimizer.zero_grad is original_zero
        watch.close()
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with tw.Run(tmp_path / "r2") as run, run.watch(model, opt, every_n_steps=100, first_steps=2) as watch:
        for step in range(40):
            y = torch.randn(8, 1) if step != 25 else torch.full((8, 1), float("nan"))
            opt.zero_grad()
            F.mse_loss(model(torch.randn(8, 4)), y).backward()
            opt.step()
            if step == 20:
                assert F.mse_loss is not original_mse and watch.wants_taps()
    assert F.mse_loss is original_mse and F.cross_entropy is original_ce
    found = {(f.rule_id, f.first_step) for f in run.findings()}
    assert any(step == 25 for _, step in found), found  # the NaN target, dated between sparse audits


def test_findings_are_records_and_deduplicated(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=0.1)
    with tw.Run(tmp_path / "r") as run:
        with run.watch(model, opt) as w:
            for _ in range(3):
                opt.zero_grad()
                model(torch.randn(8, 4)).sum().backward()
                opt.step()
        ids = [f.rule_id for f in run.findings()]
        assert ids.count("TW302") == 1
        assert w.closed
    recs = list(iter_records(tmp_path / "r", kinds={"finding"}))
    assert {r["data"]["rule_id"] for r in recs} >= {"TW302"}
    assert any(r["data"]["final"] for r in recs)


def test_a_failing_probe_never_breaks_training(tmp_path, monkeypatch):
    from torchwitness.probes import stats

    def broken(*a, **k):
        raise RuntimeError("probe bug")

    monkeypatch.setattr(stats, "activation_summary", broken)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), 1e-3, weight_decay=0.1)
    with tw.Run(tmp_path / "r") as run:
        watch = run.watch(model, opt, every_n_steps=2, first_steps=2)
        for _ in range(5):
            opt.zero_grad()
            model(torch.randn(8, 4)).sum().backward()
            opt.step()
        assert watch.step == 5
        assert "TW302" in {f.rule_id for f in run.findings()}
    errors = list(iter_records(tmp_path / "r", kinds={"watch.error"}))
    assert len(errors) == 1 and "probe bug" in errors[0]["data"]["error"]


def test_dense_audits_space_the_statistical_probes(tmp_path, monkeypatch):
    """Every step audited: unit statistics at the first 8 steps, then every 4th; the steps between are lean
    (no activation summary: norms only, see probes/lean.py) and still each get an audit summary."""
    from torchwitness.probes import stats
    from torchwitness.probes import watch as watch_module

    flags: list[bool] = []
    original = stats.activation_summary

    def noting(acts, max_rows=16, units=True, channels_first=()):
        flags.append(units)
        return original(acts, max_rows, units, channels_first)

    monkeypatch.setattr(stats, "activation_summary", noting)
    assert watch_module.STATISTICS_WARMUP == 8
    with tw.Run(tmp_path / "r") as run:
        _loop(run, 16, every_n_steps=1, first_steps=2, statistics_every=4)
    assert flags == [True] * 10
    audited = [s for r in iter_records(tmp_path / "r", kinds={"train.audit"}) for s in r["data"]["steps"]]
    assert sorted(s["step"] for s in audited) == list(range(16))
    assert all(s["loss"] is not None and s["grad_norm"] is not None for s in audited)
    # update ratios come with the statistics: on the spaced steps only
    assert sorted(s["step"] for s in audited if s["max_update_ratio"] is not None) == [*range(8), 11, 15]
    flags.clear()
    with tw.Run(tmp_path / "every") as run:  # asked for: every statistical probe at every audit
        _loop(run, 12, every_n_steps=1, first_steps=0, statistics_every=1)
    assert flags == [True] * 12


def _dense_findings(tmp_path, model: torch.nn.Module, steps: int) -> list:
    """Train ``model`` on one batch for ``steps`` steps, every step audited; the run's findings."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    crit = torch.nn.CrossEntropyLoss()
    with tw.Run(tmp_path / "r") as run:
        run.watch(model, opt, loss_fn=crit, every_n_steps=1, first_steps=0)
        x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
        for _ in range(steps):
            opt.zero_grad()
            crit(model(x), y).backward()
            opt.step()
        return run.findings()


def test_dense_audits_still_find_persistent_faults(tmp_path):
    """Dead units (judged on two statistical audits) are still found when every step is audited."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))
    with torch.no_grad():
        model[0].bias.fill_(-20.0)  # every ReLU unit is dead
    found = {f.rule_id: f for f in _dense_findings(tmp_path, model, 140)}
    assert "TW403" in found and found["TW403"].first_step == 0  # dated from its first sighting
    # judged again on the statistical audits: every 8th step to step 63, then one in 64 (127, ...)
    assert found["TW403"].last_step == 127 and found["TW403"].count == 15  # from the 2nd of 16 sightings


class _BreaksAt(torch.nn.Module):
    """A linear layer whose output turns NaN from a given call on."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.lin, self.at, self.calls = torch.nn.Linear(8, 16), at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.lin(x)
        return out * float("nan") if self.calls > self.at else out


def test_dense_audits_name_a_nonfinite_layer_at_its_step(tmp_path):
    """Between statistical audits, a ReLU after a probed layer is not checked itself, yet the first non-finite
    module is still named at the step it breaks."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(_BreaksAt(9), torch.nn.ReLU(), torch.nn.Linear(16, 3))  # step 9: not statistical
    found = [f for f in _dense_findings(tmp_path, model, 11) if f.rule_id == "TW105"]
    first = min(found, key=lambda f: f.first_step)
    assert first.first_step == 9 and first.location == "0"


def test_bad_sampling_options_are_refused_before_anything_is_hooked(tmp_path):
    import pytest

    from torchwitness.errors import InputError

    model = torch.nn.Linear(4, 2)
    with tw.Run(tmp_path / "r") as run:
        for bad in ({"every_n_steps": 0}, {"first_steps": -1}, {"statistics_every": 0}):
            with pytest.raises(InputError, match="must be"):
                run.watch(model, **bad)
        assert not model._forward_hooks and not model._forward_pre_hooks


@pytest.fixture
def scratch_rules() -> Iterator[None]:
    """Rules registered by a test are removed from the catalogue and the watch's registry afterwards."""
    from torchwitness.rules import catalogue
    from torchwitness.rules.training import _registry

    saved, saved_training = dict(catalogue._REGISTRY.rules), dict(_registry._TRAINING)
    yield
    catalogue._REGISTRY.rules.clear()
    catalogue._REGISTRY.rules.update(saved)
    _registry._TRAINING.clear()
    _registry._TRAINING.update(saved_training)


def test_statistical_rules_run_with_the_statistical_probes_only(tmp_path, scratch_rules):
    """Under dense audits a rule registered as statistical is called on the steps that take the statistical
    probes (and at its other events); a plain rule on those too, and on a lean step only when its numbers are
    out of order (see test_dense_audits_name_a_nonfinite_layer_at_its_step)."""
    from torchwitness.rules.training import training_rule

    calls: dict[str, list[tuple[str, int, bool]]] = {"XT901": [], "XT902": []}

    def noting(rid: str):
        def check(view):
            calls[rid].append((view.event, view.step, view.statistics))
            return ()
        return check

    for rid, statistical in (("XT901", False), ("XT902", True)):
        training_rule(rid, when=("step", "close"), name=f"scratch-{rid}", title="scratch", severity="info",
                      phase="step", remediation="none", source="tests", statistical=statistical)(noting(rid))
    with tw.Run(tmp_path / "r") as run:
        _loop(run, 16, every_n_steps=1, first_steps=2, statistics_every=4)
    spaced = [*range(8), 11, 15]
    # (step 16: closing judges the evaluation batches fed after the last step, a complete window)
    assert [s for e, s, _ in calls["XT901"] if e == "step"] == [*spaced, 16]
    assert [s for e, s, _ in calls["XT902"] if e == "step"] == [*spaced, 16]
    assert all(stat for _, _, stat in calls["XT902"])
    assert [s for e, s, stat in calls["XT901"] if e == "step" and stat] == [*spaced, 16]
    assert [e for e, _, _ in calls["XT902"]][-1] == "close" == [e for e, _, _ in calls["XT901"]][-1]


def test_dense_audits_fingerprint_statistical_steps_and_the_step_after(tmp_path, monkeypatch):
    """Row fingerprints (TW206-TW208) need consecutive steps, not every step: under dense audits they are taken
    on the statistical steps and the step after each."""
    from torchwitness.probes import stats

    fingerprinted: list[int] = []
    original = stats.row_fingerprints
    monkeypatch.setattr(stats, "row_fingerprints", lambda x, *a, **k: fingerprinted.append(watch.step) or original(x))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    crit = torch.nn.CrossEntropyLoss()
    with tw.Run(tmp_path / "r") as run:
        watch = run.watch(model, opt, loss_fn=crit, every_n_steps=1, first_steps=2, statistics_every=4)
        for _ in range(16):
            opt.zero_grad()
            crit(model(torch.randn(64, 8)), torch.randint(0, 3, (64,))).backward()
            opt.step()
    # the statistical steps, then a lean step after each fingerprints its batch in passing
    assert fingerprinted == [*range(9), 11, 12, 15]


def test_function_mode_leaves_the_stack_after_each_audited_step(tmp_path):
    """The loss spy is stopped once backward returns (or at the optimizer step): no mode is left behind, however
    many audited steps run (a leaked mode would nest one more interception per step)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    with tw.Run(tmp_path / "r") as run:
        watch = run.watch(model, opt, every_n_steps=1)
        for _ in range(6):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            assert not torch.overrides._get_current_function_mode_stack()
            opt.step()
        assert watch.history.losses and not watch.errors


@pytest.mark.parametrize("every", [1, 100])
def test_a_watched_model_can_be_copied_and_saved_mid_run(tmp_path, every):
    # An EMA copy or a whole-model checkpoint taken mid-run: the copy is not watched, and the hooks must not drag
    # the run (its open files, its signing key) into the copy or the pickle.
    import copy
    import io

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with tw.Run(tmp_path / "r") as run:
        watch = run.watch(model, opt, every_n_steps=every)
        for _ in range(6):
            opt.zero_grad()
            F.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 3, (8,))).backward()
            opt.step()
            ema = copy.deepcopy(model)
            buf = io.BytesIO()
            torch.save(model, buf)
            buf.seek(0)
            loaded = torch.load(buf, weights_only=False)
            for m in (ema, loaded):
                m(torch.randn(2, 4)).sum().backward()  # the copies' forwards do not reach the watch
            copy.deepcopy(opt)
        assert watch.step == 6 and not watch.errors
    assert torch.equal(ema[0].weight, model[0].weight)


def test_the_tapped_forward_keeps_signature_and_stacks_with_other_wrappers(tmp_path):
    """Hugging Face's Trainer reads inspect.signature(model.forward) to choose dataset columns; accelerate puts
    its own method over an instance's forward (autocast) and takes it off again: both see the model's own."""
    import inspect
    import types

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
            """Logits."""
            return self.lin(input_ids)

    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = inspect.signature(model.forward)
    with tw.Run(tmp_path / "r") as run:
        watch = run.watch(model, opt)
        assert inspect.signature(model.forward) == before and model.forward.__doc__ == "Logits."
        inner = model.forward
        calls = []

        def autocast_forward(self, *args, **kwargs):  # the shape of accelerate's convert_outputs_to_fp32 wrap
            calls.append(1)
            return inner.__func__(self, *args, **kwargs)

        model.forward = types.MethodType(autocast_forward, model)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 3, (8,))).backward()
            opt.step()
        assert watch.step == 3 and len(calls) == 3 and not watch.errors
        watch.close()  # another wrapper sits over the tap: the tap passes calls straight through from now on
        model(torch.randn(2, 4))
        assert watch.step == 3
        model.forward = inner  # accelerate's unwrap puts back what it found
    assert model(torch.randn(2, 4)).shape == (2, 3)


def test_sparse_statistical_audits_spread_with_the_runs_age(tmp_path):
    """Default sampling: statistical audits at the first steps, every 8th step to step 63, then at least 512 steps
    apart and at least a quarter of the run's age (2000 -> 2700 -> 3600); the audits between are lean."""
    with tw.Run(tmp_path / "r") as run:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        run.watch(model, opt)
        x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
        for _ in range(3700):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    audited = [s for r in iter_records(tmp_path / "r", kinds={"train.audit"}) for s in r["data"]["steps"]]
    statistical = [s["step"] for s in audited if s["max_update_ratio"] is not None]
    assert statistical == [0, 1, 2, 3, 4, *range(16, 64, 8), 200, 800, 1400, 2000, 2700, 3600]
    assert len(audited) == 5 + 7 + 36  # the others lean: step 8 and the multiples of 100


def test_a_zero_dim_setting_passed_to_forward_is_not_judged_as_data(tmp_path):
    """A temperature or a count given as a 0-d tensor (HF's num_items_in_batch) is no input data: far out of
    scale, it is still not TW203; the batch beside it is judged as before."""

    class Tempered(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(8, 3)

        def forward(self, x: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
            return self.lin(x) / temperature.clamp(min=1.0) * 300

    def run_with(scale: float) -> set[str]:
        torch.manual_seed(0)
        model = Tempered()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        with tw.Run(tmp_path / f"r{scale}") as run:
            run.watch(model, opt, every_n_steps=1, first_steps=0)
            for _ in range(6):
                opt.zero_grad()
                out = model(torch.randn(16, 8) * scale, temperature=torch.tensor(300.0))
                torch.nn.functional.cross_entropy(out, torch.randint(0, 3, (16,))).backward()
                opt.step()
        return {f.rule_id for f in run.findings()}

    assert "TW203" not in run_with(1.0)
    assert "TW203" in run_with(1e4)
