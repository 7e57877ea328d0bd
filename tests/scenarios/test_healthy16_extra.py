"""Round 16's healthy loops, beyond "no WARN": the watch must not change what training computes (every loss and
every tensor of the trained modules' state bit-identical to the bare loop under the same seed), must record no
``watch.error`` and must add no Python warning to those of the bare loop, in both sampling modes; a loop whose
warnings are errors (``-W error``, pytest's ``filterwarnings = error``) must run as it does bare."""

from __future__ import annotations

import os
import warnings

import pytest
import scenarios_healthy16 as h16
import scenarios_healthy16b
import scenarios_healthy16c
import torch
import torch._dynamo
from _blindkit import batches, mlp, tabular
from _kit import HEALTHY, WATCH, Scenario
from test_scenarios import SAMPLING

import torchwitness as tw
from torchwitness.ledger import iter_records

MINE = [s for s in HEALTHY if s.fn.__module__ in (h16.__name__, scenarios_healthy16b.__name__,
                                                     scenarios_healthy16c.__name__)]

# (scenario, sampling) -> what the watch did to this healthy loop (strict xfail). The first run's three (complex
# values cast with a warning, watch errors on a sparse input, run.watch raising on a TorchScript child) were fixed.
CHANGED_OR_ERRORED: dict = {}

_bare: dict[str, tuple[h16.Outcome, set[str]]] = {}


@pytest.fixture(autouse=True)
def _torch_warns_always():
    """torch warns some things once per process (TORCH_WARN_ONCE): make each test see them whatever ran first."""
    before = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    yield
    torch.set_warn_always(before)


def _seed() -> None:
    torch.manual_seed(int(os.environ.get("TW_SCENARIO_SEED", "0")))


def _messages(caught: list) -> set[str]:
    return {f"{w.category.__name__}: {w.message}" for w in caught}


def _bare_outcome(s: Scenario) -> tuple[h16.Outcome, set[str]]:
    """The loop without the watch, and the warnings it emits itself."""
    if s.name not in _bare:
        _seed()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outcome = s.fn(None)
        _bare[s.name] = outcome, _messages(caught)
    return _bare[s.name]


def _watched(s: Scenario, folder) -> tuple[h16.Outcome, list[str]]:
    """The loop with the watch; every error the watch kept or recorded in the ledger."""
    h16.WATCHES.clear()
    _seed()
    with tw.Run(folder) as run:
        outcome = s.fn(run)
    assert h16.WATCHES, f"{s.name}: the loop opened no watch"
    errors = [e for w in h16.WATCHES for e in w.errors.values()]
    return outcome, errors + [r["data"] for r in iter_records(folder) if r["kind"] == "watch.error"]


def _same(s: Scenario, watched: h16.Outcome, bare: h16.Outcome) -> None:
    assert watched.losses == bare.losses, f"{s.name}: losses changed under the watch"
    assert len(watched.state) == len(bare.state)
    changed = [i for i, (a, b) in enumerate(zip(watched.state, bare.state, strict=True)) if not torch.equal(a, b)]
    assert not changed, f"{s.name}: state tensors {changed} differ from the bare run's"


def _prepare(s: Scenario, mode: str, known: dict, monkeypatch, request) -> tuple[h16.Outcome, set[str]]:
    """Marks a known failure, sets the sampling mode, and returns the bare loop's outcome and warnings."""
    why = known.get((s.name, mode))
    if why is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=why))
    for key, value in SAMPLING[mode].items():
        monkeypatch.setitem(WATCH, key, value)
    return _bare_outcome(s)


@pytest.mark.parametrize("mode", list(SAMPLING))
@pytest.mark.parametrize("s", MINE, ids=lambda s: s.name)
def test_watch_leaves_training_unchanged_and_records_no_error(s: Scenario, mode: str, tmp_path, monkeypatch,
                                                              request) -> None:
    bare, bare_warnings = _prepare(s, mode, CHANGED_OR_ERRORED, monkeypatch, request)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        watched, errors = _watched(s, tmp_path / s.name)
    assert not errors, f"{s.name}: watch errors {errors}"
    _same(s, watched, bare)
    assert watched.learned(), f"{s.name}: did not learn under the watch"
    added = _messages(caught) - bare_warnings
    assert not added, f"{s.name}: the watch added warnings {sorted(added)}"


# (scenario, sampling) -> what the watch did to this loop when warnings are errors (strict xfail; the first run's
# two, the complex loop and the sparse one, were fixed)
UNDER_WERROR: dict = {}


@pytest.mark.parametrize("s", MINE, ids=lambda s: s.name)
def test_loop_with_warnings_as_errors(s: Scenario, tmp_path, monkeypatch, request) -> None:
    """A loop that warns nothing bare must, under ``simplefilter("error")``, match the bare one when watched (default
    sampling only, to keep the suite short: every step gave the same failures, 2 watch errors for the complex loop)."""
    bare, bare_warnings = _prepare(s, "default", UNDER_WERROR, monkeypatch, request)
    if bare_warnings:
        pytest.skip(f"the bare loop itself warns under -W error: {sorted(bare_warnings)}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        watched, errors = _watched(s, tmp_path / s.name)
    assert not errors, f"{s.name}: watch errors {errors}"
    _same(s, watched, bare)


def _compiled_run(folder, watched: bool) -> tuple[list[float], list[torch.Tensor], int, set[str], list]:
    """A ``torch.compile``d MLP (a counting backend that runs the captured graph as is, so no code generation):
    losses, final weights, graphs compiled, warnings, watch errors."""
    torch._dynamo.reset()
    graphs = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(gm)
        return gm.forward

    _seed()
    x, y = tabular(640, 12, 4)
    model = mlp(12, 32, 4)
    compiled = torch.compile(model, backend=backend)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses, errors = [], []
    with warnings.catch_warnings(record=True) as caught, tw.Run(folder) as run:
        warnings.simplefilter("always")
        watch = run.watch(model, opt, **SAMPLING["default"]) if watched else None
        for xb, yb in batches(x[128:], y[128:], 40, 32):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(compiled(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    if watch is not None:
        errors = list(watch.errors.values())
    params = [p.detach().clone() for p in model.parameters()]
    return losses, params, len(graphs), _messages(caught), errors


@pytest.fixture(scope="module")
def compiled_runs(tmp_path_factory) -> tuple:
    return (_compiled_run(tmp_path_factory.mktemp("bare") / "run", False),
            _compiled_run(tmp_path_factory.mktemp("watched") / "run", True))


def test_compiled_model_results_unchanged(compiled_runs) -> None:
    (bare_losses, bare_params, *_), (losses, params, _, _, errors) = compiled_runs
    assert not errors
    assert losses == bare_losses
    assert all(torch.equal(a, b) for a, b in zip(params, bare_params, strict=True))


@pytest.mark.xfail(strict=True, reason="the watch's hooks are traced into the compiled forward: 36 graphs instead of 1 "
                                       "(dynamo's recompile_limit of 8 hit in the watch's _root_post), and torch warns "
                                       "'Using `torch.compile(module)` when there are global hooks on modules'")
def test_compiled_model_not_recompiled_nor_warned(compiled_runs) -> None:
    (_, _, bare_graphs, bare_warnings, _), (_, _, graphs, warned, _) = compiled_runs
    assert graphs <= 2 * bare_graphs, f"{graphs} graphs compiled under the watch, {bare_graphs} bare"
    assert not warned - bare_warnings, f"the watch added warnings {sorted(warned - bare_warnings)}"
