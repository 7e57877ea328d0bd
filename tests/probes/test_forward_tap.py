"""The watch's tap on the model's forward: it never changes training, and leaves nothing in copies or pickles."""

from __future__ import annotations

import copy
import io
import pickle
import pickletools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import _get_current_function_mode_stack
from torch.utils.checkpoint import checkpoint

import torchwitness as tw


def _mlp(spectral: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    first = nn.Linear(8, 16)
    return nn.Sequential(nn.utils.parametrizations.spectral_norm(first) if spectral else first, nn.ReLU(),
                         nn.Linear(16, 3))


def _train(model: nn.Module, run: tw.Run | None, steps: int = 12, every: int = 100, ckpt: bool = False) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = run.watch(model, opt, every_n_steps=every) if run is not None else None
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        F.cross_entropy(checkpoint(model, x, use_reentrant=False) if ckpt else model(x), y).backward()
        opt.step()
    if watch is not None:
        assert not watch.errors
        watch.close()


@pytest.mark.parametrize("every", [1, 100])
def test_spectral_norm_trains_bit_for_bit_as_unwatched(tmp_path, every) -> None:
    # Reading a parametrized weight runs spectral_norm's power iteration: the rules read the stored original.
    bare, watched = _mlp(spectral=True), _mlp(spectral=True)
    _train(bare, None)
    with tw.Run(tmp_path / "r") as run:
        _train(watched, run, every=every)
    for a, b in zip(bare.state_dict().values(), watched.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_activation_checkpointing_leaves_no_mode_behind(tmp_path) -> None:
    # The recomputed forward inside backward is not a forward of the loop's: no spy starts there.
    for every in (1, 100):
        with tw.Run(tmp_path / f"r{every}") as run:
            _train(_mlp(), run, every=every, ckpt=True)
        assert not _get_current_function_mode_stack()


def test_a_class_forward_patched_after_watch_is_the_one_called(tmp_path) -> None:
    model = _mlp()
    with tw.Run(tmp_path / "r") as run, run.watch(model, torch.optim.SGD(model.parameters(), lr=0.1)):
        original = nn.Sequential.forward
        try:
            nn.Sequential.forward = lambda self, x: torch.zeros(x.shape[0], 3)  # type: ignore[method-assign]
            assert torch.equal(model(torch.ones(2, 8)), torch.zeros(2, 3))
        finally:
            nn.Sequential.forward = original  # type: ignore[method-assign]


def _opcodes(obj: object) -> str:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    import zipfile

    with zipfile.ZipFile(buf) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    out = io.StringIO()
    pickletools.dis(data, out)
    return out.getvalue()


def test_a_model_saved_or_copied_between_audits_carries_no_tap(tmp_path) -> None:
    model = _mlp()
    with tw.Run(tmp_path / "r") as run:
        _train(model, run, steps=12)  # sparse sampling: step 12 is not audited
        ops = _opcodes(model)
        assert "torchwitness" not in ops and "getattr" not in ops
        for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
            assert not [k for k in vars(other) if "torchwitness" in k or k in ("forward", "__getstate__")]
            assert other(torch.ones(2, 8)).shape == (2, 3)


def test_two_watches_closed_in_any_order_leave_the_model_clean(tmp_path) -> None:
    for order in ((0, 1), (1, 0)):
        model = _mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with tw.Run(tmp_path / f"r{order}") as run:
            watches = [run.watch(model, opt), run.watch(model, opt)]
            model(torch.ones(2, 8)).sum().backward()
            opt.step()
            for i in order:
                watches[i].close()
        assert not [k for k in vars(model) if "torchwitness" in k or k in ("forward", "__getstate__")]
        assert not _get_current_function_mode_stack()  # each watch's spy left, whichever closed first


def test_a_watched_model_can_be_traced(tmp_path) -> None:
    # The watch's own arithmetic (row fingerprints, sums) must not join a torch.jit.trace graph.
    model = _mlp()
    with tw.Run(tmp_path / "r") as run:
        watch = run.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), every_n_steps=1)
        traced = torch.jit.trace(model, torch.ones(2, 8))
        assert torch.equal(traced(torch.ones(2, 8)), model(torch.ones(2, 8)))
        assert not watch.errors


def test_per_sample_gradients_under_torch_func_are_left_alone(tmp_path) -> None:
    # vmap(grad(...)) over functional_call: the forwards run on batched wrappers the watch cannot read; they
    # are seen (no "forward never ran" warning) and not judged (no watch error).
    from torch.func import functional_call, grad, vmap

    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loss_of(params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, params, (x[None],)), y[None])

    with tw.Run(tmp_path / "r") as run:
        watch = run.watch(model, opt, every_n_steps=1)
        for _ in range(6):
            x, y = torch.randn(8, 8), torch.randint(0, 3, (8,))
            params = {k: v.detach() for k, v in model.named_parameters()}
            g = vmap(grad(loss_of), in_dims=(None, 0, 0))(params, x, y)
            for k, p in model.named_parameters():
                p.grad = g[k].mean(0)
            opt.step()
        assert not watch.errors
        watch.close()
        assert "TW412" not in {f.rule_id for f in run.findings()}
