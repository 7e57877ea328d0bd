"""The training auditor's public surface, attacked from the outside as a careless user would.

Promises under test (README, docs/guide/training-auditor.md, docs/reference/cli.md): the watch never raises into
the training loop and never changes its results; a bad argument to ``run.watch`` is one ``InputError`` naming it;
a bad CLI input is one line and exit 2 (3 for a verification failure), never a traceback. Each genuine product
failure found is a strict xfail whose reason quotes what was observed.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import torchwitness as tw
from torchwitness.errors import InputError, TorchWitnessError

DENSE = {"every_n_steps": 1, "statistics_every": 1}  # every probe and rule on every step: the most intrusive watch


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def _steps(model: nn.Module, opt: torch.optim.Optimizer, n: int, x: torch.Tensor | None = None) -> None:
    g = torch.Generator().manual_seed(3)
    for _ in range(n):
        xb = torch.randn(16, 4, generator=g) if x is None else x
        opt.zero_grad()
        model(xb).pow(2).mean().backward()
        opt.step()


def _nan_batch() -> torch.Tensor:
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    x[0, 0] = float("nan")
    return x


def _xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=reason)


# ---- 1. run.watch's arguments ------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", [None, "model", 3, lambda x: x, [nn.Linear(2, 2)], nn.Linear])
def test_a_non_module_is_one_input_error(tmp_path, model):
    with tw.Run(tmp_path / "r") as run, pytest.raises(InputError, match=r"torch\.nn\.Module"):
        run.watch(model)


@pytest.mark.parametrize("opt", ["adam", [1], object(), torch.optim.SGD])
def test_a_non_optimizer_is_one_input_error(tmp_path, opt):
    with tw.Run(tmp_path / "r") as run, pytest.raises(InputError, match="optimizer"):
        run.watch(_mlp(), opt)


@pytest.mark.parametrize("name", ["every_n_steps", "first_steps", "statistics_every"])
@given(value=st.integers(min_value=-10**6, max_value=-1))
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_negative_schedule_is_an_input_error_naming_it(tmp_path, name, value):
    with tw.Run(tempfile.mkdtemp(dir=tmp_path) + "/r") as run, pytest.raises(InputError, match=name):
        run.watch(_mlp(), **{name: value})


@pytest.mark.parametrize("name", ["every_n_steps", "statistics_every"])
def test_zero_spacing_is_an_input_error_naming_it(tmp_path, name):
    with tw.Run(tmp_path / "r") as run, pytest.raises(InputError, match=name):
        run.watch(_mlp(), **{name: 0})


@pytest.mark.parametrize("kw", [
    pytest.param({"every_n_steps": "5"}),
    pytest.param({"statistics_every": "5"}),
    pytest.param({"first_steps": None}),
    pytest.param({"every_n_steps": float("nan")}),
    pytest.param({"every_n_steps": float("inf")}),
    pytest.param({"first_steps": float("nan")}),
    pytest.param({"every_n_steps": 1.5}),
    pytest.param({"statistics_every": 2.5}),
])
def test_a_non_integer_schedule_is_an_input_error_naming_it(tmp_path, kw):
    (name,) = kw
    m = _mlp()
    with tw.Run(tmp_path / "r") as run, pytest.raises(InputError, match=name):
        run.watch(m, torch.optim.SGD(m.parameters(), lr=0.1), **kw)


@given(every=st.integers(1, 10**30), first=st.integers(0, 10**30), stats=st.integers(1, 10**30))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_valid_schedule_never_raises_nor_errs(tmp_path, every, first, stats):
    m = _mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    with tw.Run(tempfile.mkdtemp(dir=tmp_path) + "/r") as run:
        watch = run.watch(m, opt, every_n_steps=every, first_steps=first, statistics_every=stats)
        _steps(m, opt, 4)
        assert watch.step == 4 and not watch.errors


@pytest.mark.parametrize("thresholds", [
    {"no_such_threshold": 1.0},
    pytest.param({"grad_norm_max": "big"}),
    pytest.param({"grad_norm_max": None}),
    pytest.param([("grad_norm_max", 1.0)]),
    pytest.param(5),
    pytest.param({"grad_norm_max": float("nan")}),
    pytest.param({"grad_norm_max": -1.0}),
])
def test_a_bad_threshold_is_an_input_error(tmp_path, thresholds):
    with tw.Run(tmp_path / "r") as run, pytest.raises(InputError, match="threshold"):
        run.watch(_mlp(), thresholds=thresholds)


def test_a_nan_threshold_never_flags_a_healthy_loop(tmp_path):
    """Whatever a NaN threshold means, it must not be a false ERROR: either refused or never true."""
    m = _mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    try:
        with tw.Run(tmp_path / "r") as run:
            run.watch(m, opt, thresholds={"grad_norm_max": float("nan")}, **DENSE)
            _steps(m, opt, 5)
    except InputError:
        return
    assert "TW103" not in {f.rule_id for f in run.findings()}


@pytest.mark.parametrize("kw", [
    {"select": ("TW999",)}, {"ignore": ("XYZ",)},
    pytest.param({"select": 5}),
    pytest.param({"ignore": [None]}),
    pytest.param({"select": [{"a": 1}]}),
])
def test_bad_select_or_ignore_is_one_input_error_naming_it(tmp_path, kw):
    (name,) = kw
    with tw.Run(tmp_path / "r") as run, pytest.raises(InputError) as e:
        run.watch(_mlp(), **kw)
    given = kw[name] if isinstance(kw[name], (list, tuple)) else [kw[name]]
    assert name in str(e.value) or any(repr(v) in str(e.value) for v in given), str(e.value)


def test_one_pattern_as_a_string_and_no_ignore_as_none_are_understood(tmp_path):
    # select="TW1" is one prefix (not the letters T, W, 1); ignore=None ignores nothing, as select=None selects all
    with tw.Run(tmp_path / "r") as run:
        w = run.watch(_mlp(), select="TW1", ignore=None)
    assert w._rules["step"] and all(rid.startswith("TW1") for rid, _ in w._rules["step"])


@pytest.mark.parametrize("ignore", [
    pytest.param(("",)),
    pytest.param((" ",)),
])
def test_an_empty_ignore_pattern_does_not_silently_switch_off_every_rule(tmp_path, ignore):
    m = _mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    try:
        with tw.Run(tmp_path / "r") as run:
            run.watch(m, opt, ignore=ignore, **DENSE)
            _steps(m, opt, 3, x=_nan_batch())
    except InputError:
        return
    assert "TW201" in {f.rule_id for f in run.findings()}


@pytest.mark.parametrize("loss_fn", [
    pytest.param("cross_entropy"),
    pytest.param(3),
])
def test_a_non_callable_loss_fn_is_an_input_error(tmp_path, loss_fn):
    with tw.Run(tmp_path / "r") as run, pytest.raises(InputError, match="loss_fn"):
        run.watch(_mlp(), loss_fn=loss_fn)


@pytest.mark.parametrize("path", [
    pytest.param(None),
    pytest.param(123),
    pytest.param(b"run"),
    pytest.param("{file}"),
    pytest.param("{file}/sub"),
    pytest.param("/proc/no-such-pid/run"),
])
def test_a_bad_run_path_is_an_input_error_that_says_what_is_wrong(tmp_path, path):
    (tmp_path / "file").write_text("x")
    if isinstance(path, str):
        path = path.format(file=tmp_path / "file")
    with pytest.raises(InputError) as e:
        tw.Run(path)
    assert "already holds run ?" not in str(e.value)


def test_a_non_integer_checkpoint_every_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="checkpoint_every"):
        tw.Run(tmp_path / "r", checkpoint_every="5")


def test_optimizer_of_another_model_is_tw301_not_an_error(tmp_path):
    m, other = _mlp(), _mlp()
    opt = torch.optim.SGD(other.parameters(), lr=0.1)
    with tw.Run(tmp_path / "r") as run:
        watch = run.watch(m, opt)
        _steps(m, opt, 6)
        assert not watch.errors
    assert "TW301" in {f.rule_id for f in run.findings()}


def test_parameterless_model_and_double_watch_and_double_close(tmp_path):
    m = _mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    with tw.Run(tmp_path / "r") as run:
        relu = nn.ReLU()
        bare = run.watch(relu)  # a model without parameters
        relu(torch.randn(3))
        w1, w2 = run.watch(m, opt, **DENSE), run.watch(m, opt, **DENSE)
        _steps(m, opt, 4)
        assert (w1.step, w2.step) == (4, 4) and not w1.errors and not w2.errors
        w1.close()
        w1.close()
        _steps(m, opt, 2)  # the watch closed: its hooks are gone, the loop goes on
        w1.begin_forward(torch.randn(2, 4))
        w1.end_forward(torch.tensor(1.0))
        w1.observe(inputs=torch.randn(2, 4), targets=torch.zeros(2), loss=torch.tensor(1.0))
        assert w1.step == 4
    run.close()
    bare.close()


def test_watch_on_a_closed_run_is_refused_or_harmless(tmp_path):
    m = _mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    run = tw.Run(tmp_path / "r")
    run.close()
    try:
        watch = run.watch(m, opt, **DENSE)
    except InputError:
        return
    _steps(m, opt, 3, x=_nan_batch())  # must not raise into the loop
    watch.close()


def test_a_ledger_that_stops_writing_never_raises_into_the_loop(tmp_path):
    m = _mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    run = tw.Run(tmp_path / "r", checkpoint_every=5)
    run.watch(m, opt, **DENSE)
    shutil.rmtree(tmp_path / "r")
    try:
        _steps(m, opt, 300)
    finally:
        with pytest.raises(TorchWitnessError):  # the run's own close may say the ledger failed: the user called it
            run.close()


def test_two_models_trained_from_two_threads_on_one_run(tmp_path):
    def train(seed: int, run: tw.Run | None, out: dict) -> None:
        torch.manual_seed(seed)  # (only the init: the batches come from the thread's own generator)
        g = torch.Generator().manual_seed(seed)
        m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        opt = torch.optim.SGD(m.parameters(), lr=0.05)
        watch = run.watch(m, opt, **DENSE) if run is not None else None
        losses = []
        for _ in range(15):
            x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
            opt.zero_grad()
            loss = F.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        out[seed] = (losses, [p.detach().clone() for p in m.parameters()], dict(watch.errors) if watch else {})

    bare: dict = {}
    train(1, None, bare)
    train(2, None, bare)
    got: dict = {}
    with tw.Run(tmp_path / "r") as run:
        threads = [threading.Thread(target=train, args=(s, run, got)) for s in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for s in (1, 2):
        assert got[s][0] == bare[s][0] and all(torch.equal(a, b) for a, b in zip(got[s][1], bare[s][1], strict=True))
        assert not got[s][2]


# ---- 2. inside the loop: the watched loop must match the bare one bit for bit --------------------------------

NT = collections.namedtuple("NT", "out aux")


@dataclasses.dataclass
class DC:
    out: torch.Tensor


class Shaped(nn.Module):
    """Returns its output in one of the shapes users' forwards return."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.lin, self.kind = nn.Linear(4, 3), kind

    def forward(self, x: torch.Tensor) -> Any:
        y = self.lin(x.float())
        self.last = y
        return {
            "tensor": lambda: y, "list": lambda: [y, y * 2], "dict": lambda: {"a": {"b": [y]}, "c": y.sum()},
            "namedtuple": lambda: NT(y, y.mean()), "dataclass": lambda: DC(y), "scalar": lambda: y.sum(),
            "none": lambda: None, "generator": lambda: (t for t in [y]),
        }[self.kind]()


def _inputs(dtype: str, g: torch.Generator) -> torch.Tensor:
    base = torch.randn(16, 4, generator=g)
    return {
        "float32": lambda: base, "float64": lambda: base.double(), "float16": lambda: base.half(),
        "bfloat16": lambda: base.bfloat16(), "int8": lambda: (base * 10).to(torch.int8), "bool": lambda: base > 0,
        "noncontiguous": lambda: torch.randn(4, 16, generator=g).t(), "expanded": lambda: base[:1].expand(16, 4),
        "empty": lambda: base[:0], "requires_grad": lambda: base.clone().requires_grad_(),
        "channels_last_4d": lambda: base.reshape(16, 4, 1, 1).to(memory_format=torch.channels_last).reshape(16, 4),
    }[dtype]()


def _compare(body: Callable[[Callable | None], tuple[list, dict]]) -> tuple[dict, set[str]]:
    """Run ``body`` bare and under a dense watch from the same seed; assert losses and weights equal bit for bit."""
    torch.manual_seed(0)
    bare = body(None)
    torch.manual_seed(0)
    holder: dict = {}
    with tw.Run(Path(tempfile.mkdtemp()) / "r") as run:
        watched = body(lambda m, o, **kw: holder.setdefault("w", run.watch(m, o, **{**DENSE, **kw})))
        errors = dict(holder["w"].errors)
    assert repr(bare[0]) == repr(watched[0])  # (repr: NaN losses compare equal)
    for k, v in bare[1].items():
        assert torch.equal(v.nan_to_num(), watched[1][k].nan_to_num()) and torch.equal(v.isnan(), watched[1][k].isnan())
    return errors, {f.rule_id for f in run.findings()}


def _std(watch: Callable | None, *, steps: int = 6, model: nn.Module | None = None,
         x: Callable[[int, torch.Generator], Any] | None = None,
         body: Callable[[int, nn.Module, torch.optim.Optimizer, Any], Any] | None = None,
         opt: Callable[[Any], torch.optim.Optimizer] | None = None) -> tuple[list, dict]:
    m = model if model is not None else nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    o = opt(m.parameters()) if opt else torch.optim.SGD(m.parameters(), lr=0.05)
    if watch:
        watch(m, o)
    g = torch.Generator().manual_seed(3)
    losses = []
    for i in range(steps):
        xb = torch.randn(16, 4, generator=g) if x is None else x(i, g)
        if body is not None:
            loss = body(i, m, o, xb)
        else:
            o.zero_grad()
            loss = m(xb).pow(2).mean()
            loss.backward()
            o.step()
        losses.append(None if loss is None else loss.detach().tolist())
    return losses, {k: v.clone() for k, v in m.state_dict().items()}


def _loss_of(kind: str, out: Any, m: Shaped) -> torch.Tensor:
    pick = {"list": lambda: out[0], "dict": lambda: out["a"]["b"][0], "namedtuple": lambda: out.out,
            "dataclass": lambda: out.out, "scalar": lambda: m.last, "none": lambda: m.last,
            "generator": lambda: next(out), "tensor": lambda: out}[kind]
    return pick().pow(2).mean()


@given(kind=st.sampled_from(["tensor", "list", "dict", "namedtuple", "dataclass", "scalar", "none", "generator"]),
       dtype=st.sampled_from(["float32", "float64", "float16", "bfloat16", "int8", "bool", "noncontiguous",
                              "expanded", "empty", "requires_grad", "channels_last_4d"]))
@settings(max_examples=12, deadline=None)
def test_any_output_shape_and_input_dtype_trains_identically(kind, dtype):
    def body(watch: Callable | None) -> tuple[list, dict]:
        m = Shaped(kind)
        opt = torch.optim.Adam(m.parameters(), lr=0.01)
        if watch:
            watch(m, opt)
        g = torch.Generator().manual_seed(1)
        losses = []
        for _ in range(5):
            opt.zero_grad()
            loss = _loss_of(kind, m(_inputs(dtype, g)), m)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, {k: v.clone() for k, v in m.state_dict().items()}

    errors, _ = _compare(body)
    assert not errors


def _step(m: nn.Module, o: torch.optim.Optimizer, x: Any, **backward: Any) -> torch.Tensor:
    o.zero_grad()
    loss = m(x).pow(2).mean()
    loss.backward(**backward)
    o.step()
    return loss


def _add_module(i: int, m: nn.Sequential, o: torch.optim.Optimizer, x: torch.Tensor) -> torch.Tensor:
    if i == 3:
        m.add_module("extra", nn.Linear(3, 3))
        o.add_param_group({"params": m.extra.parameters()})
    return _step(m, o, x)


def _del_module(i: int, m: nn.Sequential, o: torch.optim.Optimizer, x: torch.Tensor) -> torch.Tensor:
    if i == 3:
        del m[1]
    return _step(m, o, x)


def _to_double(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> torch.Tensor:
    if i == 3:
        m.to(torch.float64)
    return _step(m, o, x.to(next(m.parameters()).dtype))


def _toggle(i: int, m: nn.Sequential, o: torch.optim.Optimizer, x: torch.Tensor) -> torch.Tensor:
    m[0].weight.requires_grad_(i % 2 == 0)
    return _step(m, o, x)


def _user_raises(i: int, m: nn.Sequential, o: torch.optim.Optimizer, x: torch.Tensor) -> torch.Tensor | None:
    o.zero_grad()
    try:
        h = m[1](m[0](x))
        if i % 3 == 1:
            raise ValueError("the user's own bug, caught by the user")
        loss = m[2](h).pow(2).mean()
    except ValueError:
        return None
    loss.backward()
    o.step()
    return loss


def _interrupted(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> torch.Tensor | None:
    o.zero_grad()
    try:
        loss = m(x).pow(2).mean()
        if i == 2:
            raise KeyboardInterrupt
        loss.backward()
    except KeyboardInterrupt:
        return None
    o.step()
    return loss


def _mutated_after(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> torch.Tensor:
    o.zero_grad()
    loss = m(x).pow(2).mean()
    loss.backward()
    x.mul_(100)  # the batch changes under the watch between backward and step
    o.step()
    x.resize_(0)
    return loss


def _lbfgs(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> torch.Tensor:
    def closure() -> torch.Tensor:
        o.zero_grad()
        loss = m(x).pow(2).mean()
        loss.backward()
        return loss
    return o.step(closure)


def _autograd_grad(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> torch.Tensor:
    loss = m(x).pow(2).mean()
    grads = torch.autograd.grad(loss, list(m.parameters()))
    with torch.no_grad():
        for p, g in zip(m.parameters(), grads, strict=True):
            p.sub_(0.05 * g)
    return loss


class NoInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.p, self.q = nn.Parameter(torch.randn(5)), nn.Linear(5, 2)

    def forward(self) -> torch.Tensor:
        return self.q(self.p)


class EmptyAndScalarParams(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.e, self.t = nn.Linear(4, 3), nn.Linear(0, 3), nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) * self.t + self.e(x[:, :0])


def _seq(m: nn.Module, o: torch.optim.Optimizer, loss: torch.Tensor) -> torch.Tensor:
    o.zero_grad()
    loss.backward()
    o.step()
    return loss


LOOPS: dict[str, Callable[[Callable | None], tuple[list, dict]]] = {
    "0-d input": lambda w: _std(w, model=nn.Sequential(nn.Linear(1, 2)), x=lambda i, g: torch.randn((), generator=g),
                                body=lambda i, m, o, x: _step(m, o, x.unsqueeze(0))),
    "empty batch once": lambda w: _std(w, x=lambda i, g: torch.randn(0 if i == 3 else 16, 4, generator=g)),
    "8-d input": lambda w: _std(w, x=lambda i, g: torch.randn(2, 1, 1, 1, 1, 1, 1, 4, generator=g)),
    "complex model": lambda w: _std(w, model=nn.Linear(4, 3, dtype=torch.complex64),
                                    x=lambda i, g: torch.randn(16, 4, dtype=torch.complex64, generator=g),
                                    body=lambda i, m, o, x: _seq(m, o, m(x).abs().pow(2).mean())),
    "non-scalar loss": lambda w: _std(w, body=lambda i, m, o, x: (
        o.zero_grad(), (y := m(x).pow(2)).backward(torch.ones_like(y)), o.step(), y.mean())[-1]),
    "backward twice": lambda w: _std(w, body=lambda i, m, o, x: (o.zero_grad(), (y := m(x).pow(2).mean()).backward(
        retain_graph=True), y.backward(), o.step(), y)[-1]),
    "step without backward": lambda w: _std(w, body=lambda i, m, o, x: (o.zero_grad(), o.step(), m(x).sum())[-1]),
    "zero_grad(set_to_none=False)": lambda w: _std(w, body=lambda i, m, o, x: (
        o.zero_grad(set_to_none=False), (y := m(x).pow(2).mean()).backward(), o.step(), y)[-1]),
    "module added mid-run": lambda w: _std(w, body=_add_module),
    "module deleted mid-run": lambda w: _std(w, model=nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Identity()),
                                             body=_del_module),
    "model.to(float64) mid-run": lambda w: _std(w, body=_to_double),
    "requires_grad toggled": lambda w: _std(w, body=_toggle),
    "user exception mid-forward": lambda w: _std(w, steps=7, body=_user_raises),
    "KeyboardInterrupt mid-step": lambda w: _std(w, body=_interrupted),
    "batch mutated and resized": lambda w: _std(w, body=_mutated_after),
    "LBFGS closure": lambda w: _std(w, steps=3, body=_lbfgs, opt=lambda p: torch.optim.LBFGS(p, lr=0.1, max_iter=3)),
    "autograd.grad, no optimizer step": lambda w: _std(w, body=_autograd_grad),
    "forward without inputs": lambda w: _std(w, model=NoInput(), body=lambda i, m, o, x: _seq(m, o, m().pow(2).mean())),
    "empty and 0-d parameters": lambda w: _std(w, model=EmptyAndScalarParams()),
    "step twice": lambda w: _std(w, body=lambda i, m, o, x: (_step(m, o, x), o.step())[0]),
    "grad hook": lambda w: _std(w, body=lambda i, m, o, x: (h := m[0].weight.register_hook(lambda g: g * 2),
                                                            _step(m, o, x), h.remove())[1]),
    "PackedSequence": lambda w: _std(w, model=nn.GRU(4, 3, batch_first=True), body=lambda i, m, o, x: _seq(
        m, o, m(nn.utils.rnn.pack_padded_sequence(x[:12].reshape(4, 3, 4), torch.tensor([3, 2, 2, 1]),
                                                  batch_first=True))[1].pow(2).mean())),
}


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_odd_loops_train_identically_and_never_err(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's own (an empty Linear's init)
        errors, _ = _compare(LOOPS[name])
    assert not errors


class RaisesInside(nn.Module):
    """Raises from inside its own forward (between two audited submodules) on every third call."""

    def __init__(self, exc: type[BaseException]) -> None:
        super().__init__()
        self.a, self.b, self.calls, self.exc = nn.Linear(4, 8), nn.Linear(8, 3), 0, exc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        h = self.a(x).relu()
        if self.calls % 3 == 2:
            raise self.exc("raised mid-forward")
        return self.b(h)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, GeneratorExit, StopIteration, RuntimeError,
                                 torch.OutOfMemoryError])
def test_an_exception_inside_the_models_forward_caught_by_the_user(exc):
    def step(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> torch.Tensor | None:
        o.zero_grad()
        try:
            loss = m(x).pow(2).mean()
        except exc:
            return None
        loss.backward()
        o.step()
        return loss

    errors, _ = _compare(lambda w: _std(w, steps=9, model=RaisesInside(exc), body=step))
    assert not errors


def test_a_loss_fn_that_is_no_loss_changes_nothing():
    head = nn.Linear(3, 1)

    def body(watch: Callable | None) -> tuple[list, dict]:
        return _std((lambda m, o: watch(m, o, loss_fn=head)) if watch else None,
                    body=lambda i, m, o, x: _seq(m, o, head(m(x)).pow(2).mean()))

    errors, _ = _compare(body)
    assert not errors


def test_sparse_gradients_are_not_called_missing():
    def body(watch: Callable | None) -> tuple[list, dict]:
        m = nn.Sequential(nn.Embedding(50, 3, sparse=True))
        return _std((lambda mm, o: watch(mm, o, every_n_steps=100)) if watch else None, model=m,
                    x=lambda i, g: torch.randint(0, 50, (32,), generator=g),
                    body=lambda i, mm, o, x: _seq(mm, o, F.cross_entropy(mm(x), x % 3)),
                    opt=lambda p: torch.optim.SparseAdam(list(p), lr=0.01))

    errors, found = _compare(body)
    assert not errors and "TW308" not in found


# ---- 3. begin_forward / end_forward / observe out of order, twice, with garbage -----------------------------

def _x() -> torch.Tensor:
    return torch.randn(8, 4)


def _out_of_order(calls: Callable[[Any, nn.Module, torch.optim.Optimizer], None]) -> dict:
    m = _mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    with tw.Run(Path(tempfile.mkdtemp()) / "r") as run:
        watch = run.watch(m, opt, **DENSE)
        for _ in range(3):
            calls(watch, m, opt)
        assert watch.step == 3
        return dict(watch.errors)


def _fwd(w: Any, m: nn.Module, o: torch.optim.Optimizer, before: Callable, after: Callable) -> None:
    before(w)
    o.zero_grad()
    loss = m(_x()).sum()
    after(w, loss)
    loss.backward()
    o.step()


SURFACE = {
    "end before begin": lambda w, m, o: _fwd(w, m, o, lambda w: w.end_forward(torch.tensor(1.0)), lambda w, loss: None),
    "begin twice": lambda w, m, o: _fwd(w, m, o, lambda w: (w.begin_forward(_x()), w.begin_forward(_x())),
                                        lambda w, loss: w.end_forward(loss)),
    "end twice": lambda w, m, o: _fwd(w, m, o, lambda w: w.begin_forward(_x()),
                                      lambda w, loss: (w.end_forward(loss), w.end_forward(loss))),
    "begin with garbage": lambda w, m, o: _fwd(w, m, o, lambda w: w.begin_forward("abc", None, 5, k=object()),
                                               lambda w, loss: w.end_forward(loss)),
    "end with garbage": lambda w, m, o: _fwd(w, m, o, lambda w: w.begin_forward(_x()),
                                             lambda w, loss: w.end_forward("loss")),
    "end with None": lambda w, m, o: _fwd(w, m, o, lambda w: w.begin_forward(_x()),
                                          lambda w, loss: w.end_forward(None)),
    "begin never ended": lambda w, m, o: _fwd(w, m, o, lambda w: w.begin_forward(_x()), lambda w, loss: None),
    "observe garbage": lambda w, m, o: _fwd(w, m, o, lambda w: None,
                                            lambda w, loss: w.observe(inputs="abc", targets="t", loss="l")),
    "observe odd tensors": lambda w, m, o: _fwd(w, m, o, lambda w: None, lambda w, loss: w.observe(
        inputs=[_x(), {"a": _x()}], targets=torch.tensor([1, 2, 3]), loss=torch.tensor(float("nan")))),
    "observe 0-d and empty": lambda w, m, o: _fwd(w, m, o, lambda w: None, lambda w, loss: w.observe(
        inputs=torch.tensor(1.0), targets=torch.empty(0), loss=torch.zeros(3))),
    "observe bool and int": lambda w, m, o: _fwd(w, m, o, lambda w: None, lambda w, loss: w.observe(
        inputs=torch.ones(8, 4, dtype=torch.bool), targets=torch.ones(8, dtype=torch.bool),
        loss=torch.tensor(1, dtype=torch.int64))),
}


@pytest.mark.parametrize("name", sorted(SURFACE))
def test_the_told_surface_never_raises_nor_errs(name):
    assert _out_of_order(SURFACE[name]) == {}


def test_observe_misuse_of_its_signature_names_the_argument():
    m = _mlp()
    with tw.Run(Path(tempfile.mkdtemp()) / "r") as run:
        watch = run.watch(m)
        with pytest.raises(TypeError, match="labels"):
            watch.observe(labels=torch.zeros(3))
        with pytest.raises(TypeError, match="positional"):
            watch.observe(torch.zeros(3))


def test_observe_complex_loss_leaks_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        errors = _out_of_order(lambda w, m, o: _fwd(w, m, o, lambda w: None, lambda w, loss: w.observe(
            loss=torch.tensor(1 + 1j))))
    assert not errors


# ---- 4. the CLI on a run folder the watch wrote ------------------------------------------------------------

@pytest.fixture(scope="module")
def watched_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key_dir = tmp_path_factory.mktemp("keys")
    old = os.environ.get("TORCHWITNESS_KEY_DIR")
    os.environ["TORCHWITNESS_KEY_DIR"] = str(key_dir)
    try:
        path = tmp_path_factory.mktemp("cli") / "run"
        m = _mlp()
        opt = torch.optim.SGD(m.parameters(), lr=0.05)
        with tw.Run(path) as run:
            run.watch(m, opt, **DENSE)
            _steps(m, opt, 5, x=_nan_batch())
        return path
    finally:
        if old is None:
            del os.environ["TORCHWITNESS_KEY_DIR"]
        else:
            os.environ["TORCHWITNESS_KEY_DIR"] = old


def _one_line(err: str) -> None:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("args", [
    ("findings", "{run}", "--format", "xml"), ("findings", "{run}", "--format", ""),
    ("findings", "{run}", "--fail-level", "bogus"), ("findings", "{run}", "--select", "TW999"),
    ("findings", "{run}", "--select", "5"), ("findings", "{run}", "--baseline", "/nonexistent"),
    ("findings", "{run}", "--baseline", "{junk}"), ("findings", "{run}", "--baseline", "{bin}"),
    ("findings", "{run}", "--baseline", "{dir}"), ("findings", "{run}", "--output", "/nonexistent/dir/x.json"),
    ("findings", "{run}", "--output", "{dir}"), ("findings", "{run}", "--write-baseline", "{dir}"),
    ("findings", "/nonexistent"), ("findings", "{dir}"), ("findings", "{junk}"),
    ("explain", "TW999"), ("explain", ""), ("explain", "../../etc/passwd"), ("explain", "A" * 5000),
    ("verify", "/nonexistent"), ("verify", "{dir}"), ("verify", "{junk}"),
    ("verify", "{run}", "--since", "/nonexistent"),
    ("report", "{run}", "-o", "/nonexistent/dir/x.md"), ("report", "{dir}"), ("report", "{run}", "--format", "bogus"),
    ("findings", "{run}", "--bogus-flag"), ("findings", "{run}", "--format"), ("--bogus",), ("nosuchcommand",),
    ("verify", "{run}", "--key", "garbage"), ("verify", "{run}", "--key", "sha256:" + "0" * 63),
])
def test_bad_cli_input_is_one_line_and_exit_2(cli, watched_run, tmp_path, args):
    (tmp_path / "junk.json").write_text("{}")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "d").mkdir()
    names = {"run": str(watched_run), "junk": str(tmp_path / "junk.json"), "bin": str(tmp_path / "bin.json"),
             "dir": str(tmp_path / "d")}
    code, out, err = cli(*[a.format(**names) for a in args])
    assert code == 2, (code, out, err)
    _one_line(err)


def test_cli_reads_the_watched_run(cli, watched_run):
    assert cli("verify", str(watched_run))[0] == 0
    code, out, _ = cli("findings", str(watched_run), "--format", "json")
    assert code == 1 and "TW201" in out  # an ERROR finding reaches the default --fail-level
    assert cli("findings", str(watched_run), "--fail-level", "never")[0] == 0
    assert cli("explain", "tw201")[0] == 0


def test_cli_empty_ignore_does_not_hide_every_finding(cli, watched_run):
    code, out, err = cli("findings", str(watched_run), "--ignore", "")
    assert code == 2 or (code == 1 and "TW201" in out), (code, out, err)


# ---- SIGKILL mid-run, then verify and resume as the docs say ---------------------------------------------

_KILLED = """
import sys, torch, torchwitness as tw
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
o = torch.optim.SGD(m.parameters(), lr=0.05)
resume = len(sys.argv) > 2
with tw.Run(sys.argv[1], resume=resume, checkpoint_every=50) as run:
    run.watch(m, o, every_n_steps=1, statistics_every=1)
    i = 0
    while i < 20 or not resume:
        o.zero_grad(); m(torch.randn(32, 4)).pow(2).mean().backward(); o.step(); i += 1
        if i == 200: print("ready", flush=True)
"""


@pytest.mark.slow
def test_sigkill_mid_run_then_verify_and_resume(tmp_path, cli):
    script, path = tmp_path / "loop.py", tmp_path / "run"
    script.write_text(_KILLED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    code, out, err = cli("verify", str(path))  # checkpoints were signed: the prefix they cover verifies
    assert code in (0, 3) and "Traceback" not in err
    if code == 3:
        _one_line(err)
    done = subprocess.run([sys.executable, str(script), str(path), "resume"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    code, out, err = cli("verify", str(path))
    assert code == 0 and "ledger.recovered" in out, (out, err)
    assert cli("findings", str(path), "--fail-level", "never")[0] == 0
