"""Trial 23: the training auditor's public surface, attacked further from the outside.

Beyond tests/probes/test_watch_attacks.py: exceptions raised mid-step in the loss, in backward and in the
optimizer's step; models shared, copied, saved, re-wired and re-loaded mid-run; concurrent forwards; deep models;
odd inputs and outputs; a long run's memory; a child process SIGKILLed at random moments, then the CLI on what it
left; and every CLI command that reads a run folder fed garbage. Promises (README, docs/guide/training-auditor.md):
the watch never raises into the loop nor changes its results; bad CLI input is one line, exit 2 (3 for a failed
verification), never a traceback. Each product failure found is a strict xfail stating what was observed.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import io
import json
import os
import pickle
import random
import re
import subprocess
import sys
import tempfile
import threading
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchwitness as tw

DENSE = {"every_n_steps": 1, "statistics_every": 1}


def _xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=reason)


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


Body = Callable[[int, nn.Module, torch.optim.Optimizer, torch.Tensor], Any]


def _loop(watch: Callable | None, body: Body, *, steps: int = 6, model: Callable[[], nn.Module] = _mlp,
          opt: Callable[[Any], torch.optim.Optimizer] | None = None, batch: Callable | None = None
          ) -> tuple[list, dict]:
    m = model()
    o = opt(m.parameters()) if opt else torch.optim.SGD(m.parameters(), lr=0.05)
    if watch:
        watch(m, o)
    g = torch.Generator().manual_seed(3)
    losses = []
    for i in range(steps):
        x = torch.randn(16, 4, generator=g) if batch is None else batch(i, g)
        loss = body(i, m, o, x)
        losses.append(loss.detach().tolist() if isinstance(loss, torch.Tensor) else repr(loss))
    return losses, {k: v.clone() for k, v in m.state_dict().items()}


def _compare(run_loop: Callable[[Callable | None], tuple[list, dict]], **watch_kw: Any) -> tuple[dict, set[str]]:
    """The loop bare, then under a dense watch: losses and weights must be equal bit for bit; returns watch.errors."""
    torch.manual_seed(0)
    bare = run_loop(None)
    torch.manual_seed(0)
    held: list = []
    with tw.Run(Path(tempfile.mkdtemp()) / "r") as run:
        watched = run_loop(lambda m, o, **kw: held.append(run.watch(m, o, **{**DENSE, **watch_kw, **kw})))
        errors = {k: v for w in held for k, v in w.errors.items()}
    assert repr(bare[0]) == repr(watched[0])
    assert bare[1].keys() == watched[1].keys()
    for k, v in bare[1].items():
        assert torch.equal(v.nan_to_num(), watched[1][k].nan_to_num()), k
    return errors, {f.rule_id for f in run.findings()}


def _std(i: int, m: nn.Module, o: torch.optim.Optimizer, x: Any) -> torch.Tensor:
    o.zero_grad()
    loss = m(x).float().pow(2).mean()
    loss.backward()
    o.step()
    return loss


# ---- 1. exceptions raised mid-step, caught by the user, and the loop going on -----------------------------------

class RaisingLoss(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls % 3 == 2:
            raise ValueError("loss refused this batch")
        return F.mse_loss(out, y)


def _loss_raises(watch: Callable | None) -> tuple[list, dict]:
    crit = RaisingLoss()

    def body(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
        o.zero_grad()
        try:
            loss = crit(m(x), x[:, :3])
        except ValueError:
            return None
        loss.backward()
        o.step()
        return loss
    return _loop((lambda m, o: watch(m, o, loss_fn=crit)) if watch else None, body, steps=8)


def _backward_hook_raises(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    o.zero_grad()
    loss = m(x).pow(2).mean()
    h = m[0].weight.register_hook(lambda g: (_ for _ in ()).throw(RuntimeError("hook")) if i % 3 == 1 else g)
    try:
        loss.backward()
    except RuntimeError:
        return None
    finally:
        h.remove()
    o.step()
    return loss


def _module_backward_hook_raises(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    def hook(mod: nn.Module, gin: Any, gout: Any) -> None:
        if i % 3 == 1:
            raise RuntimeError("full backward hook")
    h = m[2].register_full_backward_hook(hook)
    o.zero_grad()
    try:
        loss = m(x).pow(2).mean()
        loss.backward()
    except RuntimeError:
        return None
    finally:
        h.remove()
    o.step()
    return loss


def _step_pre_hook_raises(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    def pre(opt: Any, args: Any, kwargs: Any) -> None:
        if i % 3 == 1:
            raise RuntimeError("step refused")
    h = o.register_step_pre_hook(pre)
    o.zero_grad()
    loss = m(x).pow(2).mean()
    loss.backward()
    try:
        o.step()
    except RuntimeError:
        return None
    finally:
        h.remove()
    return loss


class HalfwayAdam(torch.optim.Adam):
    """Updates the first parameter group, then raises on every third step: a step that dies halfway."""

    def step(self, closure: Any = None) -> Any:
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls % 3 == 2:
            with torch.no_grad():
                next(iter(self.param_groups[0]["params"])).add_(0.01)
            raise FloatingPointError("optimizer died halfway")
        return super().step(closure)


def _halfway(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    try:
        return _std(i, m, o, x)
    except FloatingPointError:
        return None


def _interrupt_in_backward(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    o.zero_grad()
    loss = m(x).pow(2).mean()
    h = m[0].bias.register_hook(lambda g: (_ for _ in ()).throw(KeyboardInterrupt()) if i == 2 else g)
    try:
        loss.backward()
        o.step()
    except KeyboardInterrupt:
        return None
    finally:
        h.remove()
    return loss


def _nan_mid_then_raise(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    if i == 2:
        x = x.clone()
        x[0, 0] = float("nan")
    o.zero_grad()
    loss = m(x).pow(2).mean()
    if i == 2:
        try:
            raise ArithmeticError("user saw the NaN and skipped the step")
        except ArithmeticError:
            return None
    loss.backward()
    o.step()
    return loss


def _loop_with(body: Body, **kw: Any) -> Callable[[Callable | None], tuple[list, dict]]:
    return lambda w: _loop(w, body, **kw)


RAISES: dict[str, Callable[[Callable | None], tuple[list, dict]]] = {
    "loss_fn raises": _loss_raises,
    "tensor backward hook raises": _loop_with(_backward_hook_raises, steps=8),
    "module backward hook raises": _loop_with(_module_backward_hook_raises, steps=8),
    "optimizer step pre-hook raises": _loop_with(_step_pre_hook_raises, steps=8),
    "optimizer step dies halfway": _loop_with(_halfway, steps=8, opt=lambda p: HalfwayAdam(p, lr=0.01)),
    "KeyboardInterrupt in backward": _loop_with(_interrupt_in_backward),
    "user skips a NaN step": _loop_with(_nan_mid_then_raise),
}


@pytest.mark.parametrize("name", sorted(RAISES))
def test_exceptions_mid_step_leave_training_unchanged(name):
    errors, _ = _compare(RAISES[name])
    assert not errors


def test_keyboard_interrupt_mid_step_then_close_seals_a_verifiable_run(tmp_path, cli):
    m = _mlp()
    o = torch.optim.SGD(m.parameters(), lr=0.05)
    path = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt), tw.Run(path) as run:
        run.watch(m, o, **DENSE)
        for i in range(5):
            o.zero_grad()
            loss = m(torch.randn(8, 4)).pow(2).mean()
            if i == 3:
                m[0].weight.register_hook(lambda g: (_ for _ in ()).throw(KeyboardInterrupt()))
            loss.backward()
            o.step()
    code, out, err = cli("verify", str(path))
    assert code == 0, (out, err)
    code, out, err = cli("show", str(path), "--kind", "run.end", "--json")
    assert code == 0 and "interrupted" in out, (out, err)


# ---- 2. models shared, re-wired, copied, saved, re-loaded -------------------------------------------------------

class Shared(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body, self.head = body, nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).relu())


def _two_models_share(watch: Callable | None) -> tuple[list, dict]:
    torch.manual_seed(0)
    trunk = nn.Linear(4, 8)
    a, b = Shared(trunk), Shared(trunk)
    oa = torch.optim.SGD(a.parameters(), lr=0.05)
    ob = torch.optim.SGD(b.head.parameters(), lr=0.05)
    if watch:
        watch(a, oa)
        watch(b, ob)
    g = torch.Generator().manual_seed(3)
    losses = []
    for i in range(6):
        x = torch.randn(16, 4, generator=g)
        m, o = (a, oa) if i % 2 == 0 else (b, ob)
        losses.append(_std(i, m, o, x).item())
    return losses, {**{"a." + k: v.clone() for k, v in a.state_dict().items()},
                    **{"b." + k: v.clone() for k, v in b.state_dict().items()}}


def _one_watch_two_models(watch: Callable | None) -> tuple[list, dict]:
    torch.manual_seed(0)
    trunk = nn.Linear(4, 8)
    a, b = Shared(trunk), Shared(trunk)
    o = torch.optim.SGD(list(a.parameters()) + list(b.head.parameters()), lr=0.05)
    if watch:
        watch(a, o)
    g = torch.Generator().manual_seed(3)
    losses = []
    for _ in range(6):
        x = torch.randn(16, 4, generator=g)
        o.zero_grad()
        loss = a(x).pow(2).mean() + b(x).pow(2).mean()  # b is unwatched but shares a's trunk
        loss.backward()
        o.step()
        losses.append(loss.item())
    return losses, {k: v.clone() for k, v in a.state_dict().items()}


def _two_runs_one_model(watch: Callable | None) -> tuple[list, dict]:
    other = tw.Run(Path(tempfile.mkdtemp()) / "r2") if watch else None
    try:
        def both(m: nn.Module, o: torch.optim.Optimizer) -> None:
            watch(m, o)
            assert other is not None
            w2 = other.watch(m, o, every_n_steps=2, first_steps=0)
            both.second = w2  # type: ignore[attr-defined]
        out = _loop(both if watch else None, _std)
        if other is not None:
            assert not both.second.errors  # type: ignore[attr-defined]
        return out
    finally:
        if other is not None:
            other.close()


def _param_reassigned(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    if i == 2:
        m[0].weight = nn.Parameter(m[0].weight.detach() * 0.5)
        o.add_param_group({"params": [m[0].weight]})
    return _std(i, m, o, x)


def _layer_replaced(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    if i == 2:
        torch.manual_seed(5)
        m[2] = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
        o.add_param_group({"params": m[2].parameters(), "lr": 0.01})
    return _std(i, m, o, x)


def _state_reloaded(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    if i == 1:
        buf = io.BytesIO()
        torch.save({"m": m.state_dict(), "o": o.state_dict()}, buf)
        _state_reloaded.saved = buf.getvalue()  # type: ignore[attr-defined]
    if i == 4:
        ck = torch.load(io.BytesIO(_state_reloaded.saved), weights_only=True)  # type: ignore[attr-defined]
        m.load_state_dict(ck["m"])
        o.load_state_dict(ck["o"])
    return _std(i, m, o, x)


def _to_bf16(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    if i == 3:
        m.to(torch.bfloat16)
    return _std(i, m, o, x.to(next(m.parameters()).dtype))


def _everything_frozen(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    m.requires_grad_(i % 3 != 1)
    o.zero_grad()
    loss = m(x).pow(2).mean()
    if loss.requires_grad:
        loss.backward()
    o.step()
    return loss


def _grad_modes(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    with torch.inference_mode():
        m(x)  # an evaluation pass under inference_mode, between steps
    with torch.no_grad():
        h = m[0](x)  # a frozen first layer, called under no_grad
    o.zero_grad()
    loss = m[2](m[1](h)).pow(2).mean()
    loss.backward()
    o.step()
    with torch.inference_mode():
        m(x[:1])
    return loss


def _interleaved_forwards(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    outs = (m(chunk) for chunk in x.split(4))  # a generator: forwards interleave with the sum
    o.zero_grad()
    loss = sum(out.pow(2).mean() for out in outs)
    loss.backward()
    o.step()
    return loss


def _deepcopy_ema(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    loss = _std(i, m, o, x)
    ema = copy.deepcopy(m)  # an EMA / best-model copy, as many loops keep
    with torch.no_grad():
        ema(x)
    return loss


def _torch_save_model(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    loss = _std(i, m, o, x)
    buf = io.BytesIO()
    torch.save(m, buf)  # the whole module, as a checkpoint (not only its state_dict)
    return loss


def _pickle_model(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    loss = _std(i, m, o, x)
    pickle.dumps(m)  # e.g. multiprocessing or Ray ships the model to a worker
    return loss


def _deep() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), *[nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(250)],
                         nn.Linear(8, 3))


NT = collections.namedtuple("NT", "a b")


@dataclasses.dataclass
class DC:
    x: torch.Tensor
    meta: str


class Nested(nn.Module):
    def __init__(self, ret: str) -> None:
        super().__init__()
        self.lin, self.ret = nn.Linear(4, 3), ret
        self.last: torch.Tensor | None = None

    def forward(self, batch: dict) -> Any:
        x = batch["pair"][0].b.x + batch["pair"][1]["deep"][0]
        y = self.last = self.lin(x)
        return {"float": lambda: float(y.sum()), "str": lambda: "done", "mixed": lambda: (y, "s", None, 3),
                "int": lambda: 7, "set": lambda: {1, 2}, "tensor": lambda: y}[self.ret]()


def _nested(ret: str) -> Callable[[Callable | None], tuple[list, dict]]:
    def body(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
        batch = {"pair": (NT(1, DC(x, "meta")), {"deep": [x * 0.5, None]}), "id": i, "name": "b"}
        o.zero_grad()
        m(batch)
        loss = m.last.pow(2).mean()
        loss.backward()
        o.step()
        return loss
    return _loop_with(body, model=lambda: Nested(ret))


class Recursive(nn.Module):
    """Calls itself once from inside its own forward: the root module's forward nests."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, depth: int = 0) -> torch.Tensor:
        h = self.lin(x).tanh()
        return h if depth else self(h, depth=1) + h


class Checkpointed(nn.Module):
    """Activation checkpointing: the block's forward (and its hooks) runs again inside backward."""

    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.block, self.head, self.reentrant = nn.Sequential(nn.Linear(4, 8), nn.ReLU()), nn.Linear(8, 3), reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.utils.checkpoint import checkpoint
        return self.head(checkpoint(self.block, x.requires_grad_() if self.reentrant else x,
                                    use_reentrant=self.reentrant))


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.emb.weight  # weight tying: one parameter, two modules

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(ids))


def _user_hooks(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    if i == 0:
        m[0].register_forward_pre_hook(lambda mod, args: (args[0] * 0.5,))
        m[2].register_forward_hook(lambda mod, args, out: out + 1.0)  # the user's hook replaces the output
    return _std(i, m, o, x)


def _functional_call(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    params = {k: v * 1.0 for k, v in m.named_parameters()}  # differentiable copies, as meta-learning does
    o.zero_grad()
    loss = torch.func.functional_call(m, params, (x,)).pow(2).mean()
    loss.backward()
    o.step()
    return loss


def _anomaly(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    with torch.autograd.set_detect_anomaly(True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _std(i, m, o, x)


def _kwargs_only(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
    o.zero_grad()
    loss = m(input=x).pow(2).mean()
    loss.backward()
    o.step()
    return loss


LOOPS: dict[str, Callable[[Callable | None], tuple[list, dict]]] = {
    "root module calls itself": _loop_with(_std, model=lambda: Recursive()),
    "activation checkpointing (non-reentrant)": _loop_with(_std, model=lambda: Checkpointed(False)),
    "activation checkpointing (reentrant)": _loop_with(_std, model=lambda: Checkpointed(True)),
    "tied weights": _loop_with(_std, model=lambda: Tied(), batch=lambda i, g: torch.randint(0, 10, (16,), generator=g)),
    "user hooks replace input and output": _loop_with(_user_hooks),
    "torch.func.functional_call": _loop_with(_functional_call),
    "autograd anomaly mode": _loop_with(_anomaly, steps=3),
    "called with keyword input only": _loop_with(_kwargs_only, model=lambda: _mlp()),
    "two models share a trunk, two watches": _two_models_share,
    "one watch, a second model shares its trunk": _one_watch_two_models,
    "two runs watch one model": _two_runs_one_model,
    "parameter re-assigned mid-run": _loop_with(_param_reassigned),
    "layer replaced mid-run": _loop_with(_layer_replaced),
    "model and optimizer state reloaded mid-run": _loop_with(_state_reloaded),
    "model.to(bfloat16) mid-run": _loop_with(_to_bf16),
    "everything frozen on some steps": _loop_with(_everything_frozen),
    "inference_mode and no_grad parts": _loop_with(_grad_modes),
    "forwards in a generator": _loop_with(_interleaved_forwards),
    "batch size 1": _loop_with(_std, batch=lambda i, g: torch.randn(1, 4, generator=g)),
    "huge batch": _loop_with(_std, steps=2, batch=lambda i, g: torch.randn(400_000, 4, generator=g)),
    "502 modules deep": _loop_with(_std, steps=3, model=_deep),
    "deepcopy of the watched model": _loop_with(_deepcopy_ema, steps=3),
    **{f"nested input, {r} output": _nested(r) for r in ("float", "str", "mixed", "int", "set", "tensor")},
}


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_odd_loops_train_identically_and_never_err(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        errors, _ = _compare(LOOPS[name])
    assert not errors


SAVE = {"torch.save(model)": _torch_save_model, "pickle.dumps(model)": _pickle_model}


@pytest.mark.parametrize("name", sorted(SAVE))
def test_saving_the_whole_watched_model_works_as_unwatched(name):
    # Without a watch both succeed; the watch's hooks live on the model, so they must not make it unsaveable.
    _loop(None, SAVE[name], steps=2)
    errors, _ = _compare(_loop_with(SAVE[name], steps=2))
    assert not errors


def test_concurrent_eval_forwards_from_threads_while_training(tmp_path):
    stop = threading.Event()
    failures: list[str] = []

    def run_loop(watch: Callable | None) -> tuple[list, dict]:
        m, = [_mlp()]
        o = torch.optim.SGD(m.parameters(), lr=0.05)
        if watch:
            watch(m, o)

        def evaluate() -> None:
            g = torch.Generator().manual_seed(9)
            while not stop.is_set():
                try:
                    with torch.no_grad():
                        m(torch.randn(4, 4, generator=g))
                except Exception:
                    failures.append(traceback.format_exc())
                    return
        threads = [threading.Thread(target=evaluate) for _ in range(2)]
        stop.clear()
        for t in threads:
            t.start()
        try:
            return _loop(None, _std, steps=30, model=lambda: m, opt=lambda p: o)
        finally:
            stop.set()
            for t in threads:
                t.join(10)

    errors, _ = _compare(run_loop)
    assert not failures and not errors, (failures, errors)
    # An evaluation thread's forward must not stop the training thread's loss spy: left on that thread's mode
    # stack, it would intercept every later torch call of the training loop.
    assert not torch.overrides._get_current_function_mode_stack()


# ---- 3. a long run's memory ---------------------------------------------------------------------------------------

_LONG = """
import resource, sys, time, torch, torchwitness as tw
torch.manual_seed(0)
m = torch.nn.Linear(2, 1)
o = torch.optim.SGD(m.parameters(), lr=1e-3)
x = torch.randn(4, 2)
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096
with tw.Run(sys.argv[1], checkpoint_every=10_000) as run:
    run.watch(m, o, every_n_steps=1000)
    t0 = time.monotonic()
    for i in range(100_000):
        o.zero_grad(); m(x).pow(2).mean().backward(); o.step()
        if i == 20_000: base = rss()
        if time.monotonic() - t0 > 50: break
    print(i, base, rss(), flush=True)
"""


@pytest.mark.slow
def test_a_100k_step_run_keeps_memory_bounded(tmp_path):
    script = tmp_path / "long.py"
    script.write_text(_LONG)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "r")], env=env, capture_output=True,
                          text=True, timeout=90)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    steps, base, end = map(int, done.stdout.split())
    growth = end - base
    print(f"steps={steps + 1} rss_at_20k={base / 2**20:.1f}MiB growth={growth / 2**20:.2f}MiB")
    assert steps > 40_000
    assert growth < 20 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB over {steps - 20_000} steps"


# ---- 4. SIGKILL at random moments, then the CLI on what is left -------------------------------------------------

_FORKER = """
import os, random, signal, sys, time, traceback, torch, torchwitness as tw
n, root, seed = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
sig = getattr(signal, sys.argv[4]) if len(sys.argv) > 4 else signal.SIGKILL
def train(path, steps):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    o = torch.optim.SGD(m.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    with tw.Run(path, checkpoint_every=7) as run:
        run.watch(m, o, every_n_steps=1, statistics_every=1)
        for i in range(steps):
            x = torch.randn(16, 4, generator=g)
            if i % 25 == 10: x[0, 0] = float('nan')
            if i % 40 == 30: x = x * 1e30
            o.zero_grad(); m(x).pow(2).mean().backward(); o.step()
            run.record('tick', {'i': i})
if n == 0:
    train(root + '/ref', 300)
    sys.exit(0)
train(root + '/warm', 3)  # the lazy imports happen here, before forking: a child's time goes to its run
rnd = random.Random(seed)
for k in range(n):
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            train(f'{root}/k{k}', 300)
        except KeyboardInterrupt:
            code = 10
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    delay = rnd.uniform(0.0, 0.9)
    time.sleep(delay)
    os.kill(pid, sig)
    for _ in range(400):  # a child that does not end within 20 s after the signal has hung
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        status = 'hung'
    print(k, round(delay, 3), status, flush=True)
"""


def _clean_line(err: str) -> None:
    """One line, and not the CLI's last-resort 'torchwitness: error: SomeError: ...' for an unexpected exception."""
    assert len(err.strip().splitlines()) == 1, err
    assert not re.match(r"torchwitness: error: \w+(Error|Exception):", err.strip()), err


def _no_traceback(code: int, err: str) -> None:
    assert "Traceback" not in err, err
    if code not in (0, 1):
        assert len(err.strip().splitlines()) == 1, err


def _findings_json(cli: Callable, path: Path, *extra: str) -> tuple[int, list[dict], str]:
    code, out, err = cli("findings", str(path), "--format", "json", "--fail-level", "never", *extra)
    try:
        data = json.loads(out) if out.strip() else []
    except json.JSONDecodeError:
        data = []
    if isinstance(data, dict):
        data = data.get("findings", [])
    return code, data, err


N_KILLS = 20


def _flat(findings: list[dict]) -> list[dict]:
    return [g for f in findings for g in [f, *_flat(f.get("consequences") or [])]]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_the_cli_reads_a_prefix(tmp_path, safe_cli):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    script = tmp_path / "forker.py"
    script.write_text(_FORKER)
    ref = subprocess.run([sys.executable, str(script), "0", str(tmp_path), "0"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert ref.returncode == 0, ref.stderr
    kills = subprocess.run([sys.executable, str(script), str(N_KILLS), str(tmp_path), str(random.randrange(10**6))],
                           env=env, capture_output=True, text=True, timeout=90)
    assert kills.returncode == 0, kills.stderr
    _, ref_findings, _ = _findings_json(safe_cli, tmp_path / "ref")
    ref_by = {(f["rule_id"], f.get("location")): f for f in _flat(ref_findings)}
    assert ref_by
    outcomes = collections.Counter()
    for k in range(N_KILLS):
        path = tmp_path / f"k{k}"
        code, out, err = safe_cli("verify", str(path))
        _no_traceback(code, err)
        assert code in (0, 2, 3), (k, code, out, err)
        outcomes[code] += 1
        if code == 2:
            assert "no such run folder" in err, (k, err)  # killed before the folder was made
            continue
        draft = () if code == 0 else ("--draft",)
        if code == 3:  # an unsigned tail: the live view must still read, or fail closed in one line
            c, out, err = safe_cli("verify", str(path), "--allow-unsigned-tail")
            _no_traceback(c, err)
            outcomes[f"tail:{c}" + (f" {err.strip()[:120]}" if c else "")] += 1
        c, out, err = safe_cli("show", str(path), "--kind", "tick", "--json", "--limit", "0")
        assert "Traceback" not in err and c in (0, 3), (k, c, err)
        ticks = [json.loads(line) for line in out.splitlines() if line.strip()]
        steps = [t["data"]["i"] for t in ticks]
        assert steps == list(range(len(steps))), (k, steps)  # the records read back are a prefix, in order
        c, found, err = _findings_json(safe_cli, path, *draft)
        _no_traceback(c, err)
        assert c == 0, (k, c, err)
        for f in _flat(found):  # every finding read back is one the whole run also made, first seen at the same step
            r = ref_by.get((f["rule_id"], f.get("location")))
            assert r is not None, (k, f)
            assert f.get("first_step") == r.get("first_step") and f.get("count", 0) <= r.get("count", 0), (k, f, r)
        c, out, err = safe_cli("report", str(path), "--format", "md", "-o", str(tmp_path / f"k{k}.md"), *draft)
        _no_traceback(c, err)
        assert c == 0, (k, c, err)
    assert outcomes[0] + outcomes[3] >= N_KILLS // 2, outcomes  # most kills landed inside a run
    print(kills.stdout, dict(outcomes))


# ---- 5. the CLI fed garbage where a run folder belongs ----------------------------------------------------------

@pytest.fixture
def safe_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """The CLI entry point in process; an exception escaping it is what the user would see: a traceback."""
    from torchwitness.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            out, err = capsys.readouterr()
            return -1, out, err + traceback.format_exc()
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key_dir = tmp_path_factory.mktemp("keys")
    old = os.environ.get("TORCHWITNESS_KEY_DIR")
    os.environ["TORCHWITNESS_KEY_DIR"] = str(key_dir)
    try:
        path = tmp_path_factory.mktemp("good") / "run"
        m = _mlp()
        o = torch.optim.SGD(m.parameters(), lr=0.05)
        with tw.Run(path) as run:
            run.watch(m, o, **DENSE)
            for i in range(4):
                x = torch.randn(8, 4)
                if i == 2:
                    x[0, 0] = float("nan")
                _std(i, m, o, x)
        return path
    finally:
        if old is None:
            del os.environ["TORCHWITNESS_KEY_DIR"]
        else:
            os.environ["TORCHWITNESS_KEY_DIR"] = old


READERS: dict[str, tuple[str, ...]] = {
    "verify": ("verify", "{p}"), "show": ("show", "{p}"), "findings": ("findings", "{p}"),
    "report": ("report", "{p}", "-o", "{out}/x.md", "--format", "md"), "checkpoint": ("checkpoint", "{p}"),
    "prove": ("prove", "{p}", "--seq", "0"), "coverage": ("coverage", "{p}"),
    "card": ("card", "{p}", "-o", "{out}/c.md"),
    "spans": ("spans", "{p}"), "diff": ("diff", "{p}", "{p}"), "provenance": ("provenance", "{p}", "--subject", "s"),
    "export": ("export", "{p}", "--to", "rdf"),
}


def _garbage(tmp: Path, kind: str, good: Path) -> str:
    import shutil
    p = tmp / "target"
    if kind == "missing":
        return str(tmp / "nope")
    if kind == "missing, newline in its name":
        return str(tmp / "nope\nsecond line")
    if kind == "file":
        p.write_text("not a folder")
    elif kind == "empty":
        p.mkdir()
    elif kind == "garbage files":
        p.mkdir()
        for name in ("ledger.jsonl", "records.jsonl", "checkpoints.jsonl", "run.json", "meta.json", "key.pub"):
            (p / name).write_bytes(os.urandom(64))
    elif kind == "truncated ledger":
        shutil.copytree(good, p)
        for f in p.rglob("*"):
            if f.is_file() and f.stat().st_size > 0:
                f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif kind == "symlink loop":
        p.symlink_to(p)
    elif kind == "ledger.json a folder, records a file":
        shutil.copytree(good, p)
        (p / "ledger.json").unlink()
        (p / "ledger.json").mkdir()
        shutil.rmtree(p / "records")
        (p / "records").write_text("x")
    elif kind == "records emptied":
        shutil.copytree(good, p)
        for f in (p / "records").iterdir():
            f.unlink() if f.is_file() else shutil.rmtree(f)
    elif kind == "unicode path":
        p = tmp / "rün 名前\u202e\n x"
        shutil.copytree(good, p)
    elif kind == "unreadable":
        shutil.copytree(good, p)
        for f in p.rglob("*"):
            if f.is_file():
                f.write_bytes(b"\x00" * 10)
    return str(p)


KINDS = ("missing", "missing, newline in its name", "file", "empty", "garbage files", "truncated ledger", "unreadable",
         "symlink loop",
         "ledger.json a folder, records a file", "records emptied", "unicode path")


_XFAIL_GARBAGE: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize(("cmd", "kind"), [
    pytest.param(c, k, id=f"{c}-{k}", marks=[_xfail(_XFAIL_GARBAGE[c, k])] if (c, k) in _XFAIL_GARBAGE else [])
    for c in sorted(READERS) for k in KINDS])
def test_every_reader_on_garbage_is_one_line_and_exit_2_or_3(safe_cli, good_run, tmp_path, cmd, kind):
    p = _garbage(tmp_path, kind, good_run)
    (tmp_path / "o").mkdir()
    code, out, err = safe_cli(*[a.format(p=p, out=tmp_path / "o") for a in READERS[cmd]])
    assert "Traceback" not in err, err
    if kind == "unicode path":  # a good run under an odd name is still a good run (it has no provenance index)
        assert code in ((2,) if cmd == "provenance" else (0, 1)), (code, out, err)
        return
    if kind == "records emptied" and cmd == "checkpoint":  # the newest signed checkpoint is still what it was
        assert code == 0, (code, out, err)
        return
    if kind == "records emptied" and cmd == "show":  # documented: lists what is there, NOT VERIFIED on stderr
        assert code == 0 and err.startswith("NOT VERIFIED: "), (code, out, err)
        _clean_line(err)
        return
    assert code in (2, 3), (code, out, err)
    _clean_line(err)


BAD_OPTIONS: dict[str, tuple[str, ...]] = {
    "verify --key binary file": ("verify", "{p}", "--key", "{bin}"),
    "verify --key empty": ("verify", "{p}", "--key", ""),
    "verify --key wrong sha256": ("verify", "{p}", "--key", "sha256:" + "0" * 64),
    "verify --origin empty": ("verify", "{p}", "--origin", ""),
    "verify --since garbage": ("verify", "{p}", "--since", "{bin}"),
    "verify --since folder": ("verify", "{p}", "--since", "{p}"),
    "verify --witness garbage": ("verify", "{p}", "--witness", "zzz"),
    "verify --quorum -1": ("verify", "{p}", "--quorum", "-1"),
    "verify --quorum text": ("verify", "{p}", "--quorum", "x"),
    "show --limit -5": ("show", "{p}", "--limit", "-5"),
    "prove --seq -1": ("prove", "{p}", "--seq", "-1"),
    "prove --seq past the end": ("prove", "{p}", "--seq", "99999"),
    "prove --seq huge": ("prove", "{p}", "--seq", "9" * 40),
    "report --proofs -1": ("report", "{p}", "--proofs", "-1", "-o", "{out}/r.html"),
    "report --key garbage": ("report", "{p}", "--key", "garbage", "-o", "{out}/r.html"),
    "report -o into a file": ("report", "{p}", "-o", "{bin}/r.html"),
    "checkpoint --key garbage": ("checkpoint", "{p}", "--key", "garbage"),
    "checkpoint -o a folder": ("checkpoint", "{p}", "-o", "{out}"),
    "consistency --from garbage": ("consistency", "{p}", "--from", "{bin}"),
    "consistency --from missing": ("consistency", "{p}", "--from", "/nonexistent/ck.json"),
    "consistency --to -1": ("consistency", "{p}", "--from", "{ck}", "--to", "-1"),
    "consistency --to past the end": ("consistency", "{p}", "--from", "{ck}", "--to", "99999"),
    "findings --select empty list": ("findings", "{p}", "--select", ","),
    "findings -f sarif -o folder": ("findings", "{p}", "-f", "sarif", "-o", "{out}"),
    "findings --write-baseline into a file": ("findings", "{p}", "--write-baseline", "{bin}/b.json"),
    "findings --baseline of another format": ("findings", "{p}", "--baseline", "{ck}"),
    "show unknown option": ("show", "{p}", "--bogus"),
    "verify unknown option": ("verify", "{p}", "--nope"),
    "verify two run folders": ("verify", "{p}", "{p}"),
    "verify no run folder": ("verify",),
    "unknown command": ("verfiy", "{p}"),
}
_XFAIL_OPTIONS: dict[str, str] = {}


@pytest.mark.parametrize("name", [pytest.param(n, marks=_xfail(_XFAIL_OPTIONS[n])) if n in _XFAIL_OPTIONS else n
                                  for n in sorted(BAD_OPTIONS)])
def test_bad_options_are_one_line_and_exit_2_or_3(safe_cli, good_run, tmp_path, name):
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "o").mkdir()
    ck = tmp_path / "ck.json"
    code, out, err = safe_cli("checkpoint", str(good_run), "-o", str(ck))
    assert code == 0, err
    names = {"p": str(good_run), "bin": str(tmp_path / "bin"), "out": str(tmp_path / "o"), "ck": str(ck)}
    code, out, err = safe_cli(*[a.format(**names) for a in BAD_OPTIONS[name]])
    assert "Traceback" not in err, err
    assert code in (2, 3), (code, out, err)
    _clean_line(err)


# ---- 6. the Lightning callback under a training_step that skips batches or raises -------------------------------

def _lit_fit(callback: Callable[[], Any] | None, *, raise_at: int | None = None) -> dict:
    pl = pytest.importorskip("lightning.pytorch")

    class Lit(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _mlp()

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            if raise_at is not None and batch_idx == raise_at:
                raise ValueError("the user's training_step failed")
            if batch_idx % 3 == 1:
                return None  # Lightning skips this batch's backward and step
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    pl.seed_everything(0, verbose=False)
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(96, 4, generator=g), torch.randint(0, 3, (96,), generator=g))
    module = Lit()
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", callbacks=[callback()] if callback else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=16))
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_lightning_skipped_batches_train_identically(tmp_path, safe_cli):
    from torchwitness.integrations.lightning import WitnessCallback

    bare = _lit_fit(None)
    watched = _lit_fit(lambda: WitnessCallback(path=tmp_path / "r", every_n_steps=1))
    assert all(torch.equal(bare[k], watched[k]) for k in bare)
    code, out, err = safe_cli("verify", str(tmp_path / "r"))
    assert code == 0, (out, err)
    code, out, err = safe_cli("show", str(tmp_path / "r"), "--kind", "watch.error", "--json", "--limit", "0")
    assert code == 0 and not out.strip(), out


def test_lightning_training_step_raising_reaches_the_user_and_the_run_still_verifies(tmp_path, safe_cli):
    from torchwitness.integrations.lightning import WitnessCallback

    with pytest.raises(ValueError, match="the user's training_step failed"):
        _lit_fit(lambda: WitnessCallback(path=tmp_path / "r", every_n_steps=1), raise_at=4)
    code, out, err = safe_cli("verify", str(tmp_path / "r"))
    assert code == 0, (out, err)
    code, out, err = safe_cli("show", str(tmp_path / "r"), "--kind", "run.end", "--json")
    assert code == 0 and '"error"' in out, out


# ---- 7. what the process saw is what the ledger says --------------------------------------------------------------

def _flat_objects(findings: list) -> list:
    return [g for f in findings for g in [f, *_flat_objects(f.consequences)]]


def test_findings_in_process_equal_the_verified_ledgers_after_a_messy_loop(tmp_path, safe_cli):
    path = tmp_path / "r"
    with tw.Run(path) as run:
        holder: list = []
        _loop(lambda m, o: holder.append(run.watch(m, o, **DENSE)), _nan_mid_then_raise, steps=5)
        _loop(lambda m, o: holder.append(run.watch(m, o, **DENSE)), _backward_hook_raises, steps=5,
              batch=lambda i, g: torch.randn(16, 4, generator=g) * (1e30 if i == 3 else 1))
    seen = {(f.rule_id, f.location, f.first_step, f.count) for f in _flat_objects(run.findings())}  # after close
    assert seen and all(not w.errors for w in holder)
    code, _out, err = safe_cli("verify", str(path))
    assert code == 0, err
    code, found, err = _findings_json(safe_cli, path)
    assert code == 0, err
    assert {(f["rule_id"], f["location"], f["first_step"], f["count"]) for f in _flat(found)} == seen


# ---- 8. the Hugging Face Trainer callback: accumulation, clipping, train() called twice -------------------------

class _HFModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        out = self.lin(x)
        return {"loss": F.cross_entropy(out, labels), "logits": out}


class _HFData(torch.utils.data.Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(48, 4, generator=g), torch.randint(0, 3, (48,), generator=g)

    def __len__(self) -> int:
        return 48

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "labels": self.y[i]}


def _hf_fit(tmp: Path, callback: Any, *, twice: bool = False) -> dict:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = _HFModel()
    args = transformers.TrainingArguments(
        output_dir=str(tmp / "out"), max_steps=6, per_device_train_batch_size=8, gradient_accumulation_steps=2,
        max_grad_norm=0.5, report_to=[], use_cpu=True, save_strategy="no", logging_steps=1, seed=0,
        disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_HFData(),
                                   callbacks=[callback] if callback else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
        if twice:
            trainer.train()
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_hf_trainer_trains_identically_and_twice_verifies(tmp_path, safe_cli):
    from torchwitness.integrations.hf import WitnessCallback

    bare = _hf_fit(tmp_path, None, twice=True)
    watched = _hf_fit(tmp_path, WitnessCallback(path=tmp_path / "r", every_n_steps=1), twice=True)
    assert all(torch.equal(bare[k], watched[k]) for k in bare)
    code, out, err = safe_cli("verify", str(tmp_path / "r"))
    assert code == 0, (out, err)
    code, out, err = safe_cli("show", str(tmp_path / "r"), "--kind", "watch.error", "--json", "--limit", "0")
    assert code == 0 and not out.strip(), out


def test_a_reader_closing_the_pipe_is_not_reported_as_an_error(tmp_path):
    with tw.Run(tmp_path / "r") as run:  # more than a pipe's 64 KiB of output
        for i in range(1500):
            run.record("tick", {"i": i, "pad": "x" * 64})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "torchwitness", "show", str(tmp_path / "r"), "--json", "--limit",
                             "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"{")
    proc.stdout.close()  # as `| head -1` does
    err = proc.stderr.read().decode()
    proc.wait(30)
    assert "Traceback" not in err
    assert "error" not in err, err


@pytest.mark.slow
def test_sigint_at_random_moments_closes_a_verifiable_run(tmp_path, safe_cli):
    """Ctrl-C may land inside the watch's own hooks: the user's `with tw.Run` must still seal the run."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    script = tmp_path / "forker.py"
    script.write_text(_FORKER)
    n = 8
    done = subprocess.run([sys.executable, str(script), str(n), str(tmp_path), str(random.randrange(10**6)), "SIGINT"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    statuses = dict(line.split()[::2] for line in done.stdout.splitlines())
    assert all(v in ("0", str(10 << 8)) for v in statuses.values()), statuses  # finished, or interrupted and closed
    seen = []
    for k in range(n):
        code, _out, err = safe_cli("verify", str(tmp_path / f"k{k}"))
        _c2, end, _ = safe_cli("show", str(tmp_path / f"k{k}"), "--kind", "run.end", "--json")
        _c3, ticks, _ = safe_cli("show", str(tmp_path / f"k{k}"), "--kind", "tick", "--json", "--limit", "1")
        status = next((s for s in ("interrupted", "ok", "error") if f'"status": "{s}"' in end), end.strip()[-60:])
        seen.append((k, statuses[str(k)], code, err.strip()[:90], status, ticks.strip()[:25]))
    print(*seen, sep="\n")
    for k, _, code, err, end, _ in seen:
        # exit 3 when Ctrl-C leaves the run unsealed (about 1 child in 20: see the xfail below; seen at tick 217 of
        # 300 too, with the watch's closing records written and no run.end): the unsigned tail fails closed, named
        assert code == 0 or (code == 2 and "no such run folder" in err) or (
            code == 3 and "not covered by any signed checkpoint" in err and not end), (k, code, err)
        if code == 0:
            assert end in ("interrupted", "ok"), (k, end)


def test_ctrl_c_inside_close_still_seals_the_run(tmp_path, safe_cli):
    m = _mlp()
    o = torch.optim.SGD(m.parameters(), lr=0.05)
    run = tw.Run(tmp_path / "r", checkpoint_every=1000)
    run.watch(m, o, **DENSE)
    for i in range(4):
        _std(i, m, o, torch.randn(8, 4))

    def interrupted() -> None:
        raise KeyboardInterrupt
    run.on_close(interrupted)
    with pytest.raises(KeyboardInterrupt):
        run.close()
    run.close()  # the user tries again
    code, _out, err = safe_cli("verify", str(tmp_path / "r"))
    assert code == 0, err


def test_the_run_closed_from_another_thread_mid_training_changes_nothing(tmp_path, safe_cli):
    def run_loop(run: tw.Run | None) -> tuple[list, dict]:
        def body(i: int, m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> Any:
            if i == 4 and run is not None:
                closer = threading.Thread(target=run.close)  # e.g. a monitoring thread's shutdown
                closer.start()
                out = _std(i, m, o, x)
                closer.join(30)
                return out
            return _std(i, m, o, x)
        return _loop((lambda m, o: run.watch(m, o, **DENSE)) if run is not None else None, body, steps=10)

    torch.manual_seed(0)
    bare = run_loop(None)
    torch.manual_seed(0)
    watched = run_loop(tw.Run(tmp_path / "r"))
    assert bare[0] == watched[0] and all(torch.equal(bare[1][k], watched[1][k]) for k in bare[1])
    code, _out, err = safe_cli("verify", str(tmp_path / "r"))
    assert code == 0, err


_UNCLOSED = """
import shutil, sys, torch, torchwitness as tw
m = torch.nn.Linear(4, 3)
o = torch.optim.SGD(m.parameters(), lr=0.1)
run = tw.Run(sys.argv[1])  # no with block, and no run.close(): the script just ends
run.watch(m, o, every_n_steps=1)
for i in range(20):
    if i == 5:
        shutil.rmtree(sys.argv[1])  # the folder goes away under the run (a cleanup job, a full disk)
    o.zero_grad(); m(torch.randn(8, 4)).sum().backward(); o.step()
print("done", flush=True)
"""


def test_an_unclosed_run_whose_ledger_failed_exits_without_a_traceback(tmp_path):
    script = tmp_path / "unclosed.py"
    script.write_text(_UNCLOSED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "r")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "done", (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) <= 1, done.stderr
