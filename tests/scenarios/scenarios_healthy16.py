"""An outside trial for false alarms (round 16): healthy training loops that are correct but unusual in form
(activation checkpointing, per-sample gradients with torch.func, L-BFGS, two optimizers, param groups added
mid-run, parametrizations, packed sequences, HF-like outputs, dict and keyword-only batches, weight tying, EMA
teachers, gradual unfreezing, complex weights, custom autograd, double backward, SAM, Lookahead, FixMatch, ...),
each watched through ``_watch`` only (``run.watch(model, opt, **WATCH)``). None may get a WARN.

Every scenario takes ``run`` (a ``tw.Run``, or ``None`` for the bare loop) and returns an ``Outcome`` (the losses,
the final state of the trained modules, a held-out metric and its chance level), so that
``python tests/scenarios/scenarios_healthy16.py`` checks, without any watch, that each loop learns, and
``test_healthy16_extra.py`` checks that the watch leaves the results bit-identical and records no watch error.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import math
import pickle
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from _blindkit import CNN, batches, gen, images, mlp, tabular, tokens
from _kit import WATCH, healthy
from torch import nn
from torch.func import functional_call, grad_and_value, vmap
from torch.nn.utils import parametrizations
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.checkpoint import checkpoint, checkpoint_sequential
from torch.utils.data import DataLoader, IterableDataset

# (scenario, sampling) -> why the watch flags this healthy control (strict xfail: found by this outside trial)
_FIXMATCH = ("TW402 WARN 'model: no-grad forward (evaluation) ran in train mode': FixMatch's pseudo-labels come from a "
             "no_grad forward in train mode, as in the paper (one train-mode forward); training, not evaluation")
KNOWN_MISSES: dict = {("fixmatch_pseudo_labels_train_mode", m): _FIXMATCH for m in ("default", "every-step")}

WATCHES: list = []  # every watch a scenario opened (test_healthy16_extra reads their errors)


def _watch(run, model: nn.Module, opt: torch.optim.Optimizer) -> None:
    """The one line a user adds; ``run=None`` trains the same loop bare."""
    if run is not None:
        WATCHES.append(run.watch(model, opt, **WATCH))


@dataclass
class Outcome:
    losses: list[float]
    state: list[torch.Tensor]  # every tensor of the trained modules' state dicts, in order
    metric: float  # held-out metric, higher is better
    chance: float  # what guessing (or the untrained model) gets

    def learned(self) -> bool:
        k = max(len(self.losses) // 6, 1)
        return sum(self.losses[-k:]) / k < sum(self.losses[:k]) / k and self.metric > self.chance


def _out(losses: list, modules: list[nn.Module], metric: float, chance: float) -> Outcome:
    state = [t.detach().clone() for m in modules for t in m.state_dict().values()]
    return Outcome([float(v) for v in losses], state, float(metric), float(chance))


def _tab(n: int = 640, d: int = 12, c: int = 4, seed: int = 0) -> tuple:
    x, y = tabular(n, d, c, seed)
    return x[128:], y[128:], x[:128], y[:128]


@torch.no_grad()
def _acc(model, x, y) -> float:
    was = model.training
    model.eval()
    pred = model(x).argmax(-1)
    model.train(was)
    return (pred == y).float().mean().item()


def _plain(run, model, opt, xtr, ytr, *, steps: int = 60, batch: int = 32, loss_fn=F.cross_entropy) -> list:
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(xtr, ytr, steps, batch):
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return losses


# ---- memory and gradient machinery -------------------------------------------------------------------------------
class _CkptMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(12, 48)
        self.block = nn.Sequential(nn.Linear(48, 48), nn.GELU(), nn.Linear(48, 48), nn.GELU())
        self.out = nn.Linear(48, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = checkpoint(self.block, F.gelu(self.inp(x)), use_reentrant=False)
        return self.out(h)


@healthy
def activation_checkpoint_block(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = _CkptMLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = _plain(run, model, opt, xtr, ytr)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def checkpoint_sequential_segments(run) -> Outcome:
    """The model's forward never runs: checkpoint_sequential calls its children segment by segment."""
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 48, 4, depth=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(xtr, ytr, 60, 32):
        opt.zero_grad()
        loss = F.cross_entropy(checkpoint_sequential(model, 2, xb, use_reentrant=False), yb)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def per_sample_grads_vmap(run) -> Outcome:
    """DP-SGD-style clipping without noise: per-sample gradients with torch.func, clipped, averaged into .grad."""
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)

    def one(params, x, y):
        return F.cross_entropy(functional_call(model, params, (x[None],)), y[None])

    per_sample = vmap(grad_and_value(one), in_dims=(None, 0, 0))
    losses = []
    for xb, yb in batches(xtr, ytr, 50, 32):
        params = {k: v.detach() for k, v in model.named_parameters()}
        grads, loss = per_sample(params, xb, yb)
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads.values()]).norm(dim=0)
        scale = (1.0 / (norms + 1e-6)).clamp(max=1.0)
        opt.zero_grad()
        for name, p in model.named_parameters():
            p.grad = (grads[name] * scale.view(-1, *[1] * (grads[name].dim() - 1))).mean(0)
        opt.step()
        losses.append(loss.mean())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def lbfgs_strong_wolfe(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 24, 4, act=nn.Tanh)
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=4, history_size=10, line_search_fn="strong_wolfe")
    _watch(run, model, opt)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(xtr), ytr)
        loss.backward()
        return loss

    losses = [opt.step(closure).detach() for _ in range(25)]
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def adam_step_with_closure(run) -> Outcome:
    """``opt.step(closure)`` with Adam: the backward runs inside the optimizer's step."""
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(xtr, ytr, 60, 32):
        def closure(xb=xb, yb=yb):
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            return loss
        losses.append(opt.step(closure).detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


class _LocalDDP(nn.Module):
    """A DDP-shaped wrapper (``module``, ``no_sync``) for single-process runs, as some codebases keep."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.require_sync = True

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        self.require_sync = False
        try:
            yield
        finally:
            self.require_sync = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


@healthy
def grad_accumulation_no_sync(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = _LocalDDP(mlp(12, 32, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    accum, losses = 4, []
    for i, (xb, yb) in enumerate(batches(xtr, ytr, 160, 8)):
        last = (i + 1) % accum == 0
        with contextlib.nullcontext() if last else model.no_sync():
            loss = F.cross_entropy(model(xb), yb) / accum
            loss.backward()
        if last:
            opt.step()
            opt.zero_grad(set_to_none=True)
        losses.append(loss.detach() * accum)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def bf16_autocast_cpu_no_scaler(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 64, 4, depth=3)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(xtr, ytr, 60, 32):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(xb)
        loss = F.cross_entropy(logits.float(), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


class _CustomAct(torch.autograd.Function):
    """x * sigmoid(x) with a hand-written backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(x)
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        x, s = ctx.saved_tensors
        return g * (s + x * s * (1 - s))


class _CustomNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(12, 32), nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(_CustomAct.apply(self.a(x)))


@healthy
def custom_autograd_function(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = _CustomNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = _plain(run, model, opt, xtr, ytr)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def input_gradient_penalty_double_backward(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4, act=nn.Softplus)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(xtr, ytr, 60, 32):
        xb = xb.clone().requires_grad_(True)
        ce = F.cross_entropy(model(xb), yb)
        (gx,) = torch.autograd.grad(ce, xb, create_graph=True)
        loss = ce + 0.1 * gx.pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(ce.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def retain_graph_two_backwards(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    trunk_target = xtr[:, :2].sum(1, keepdim=True)

    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = nn.Sequential(nn.Linear(12, 32), nn.ReLU())
            self.cls, self.aux = nn.Linear(32, 4), nn.Linear(32, 1)

        def forward(self, x):
            h = self.trunk(x)
            return self.cls(h), self.aux(h)

    model = TwoHeads()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    g = gen(3)
    for _ in range(60):
        idx = torch.randint(0, len(xtr), (32,), generator=g)
        logits, aux = model(xtr[idx])
        opt.zero_grad()
        ce = F.cross_entropy(logits, ytr[idx])
        ce.backward(retain_graph=True)
        (0.5 * F.mse_loss(aux, trunk_target[idx])).backward()
        opt.step()
        losses.append(ce.detach())
    return _out(losses, [model], _acc_first(model, xv, yv), 0.25)


@torch.no_grad()
def _acc_first(model, x, y) -> float:
    model.eval()
    pred = model(x)[0].argmax(-1)
    model.train()
    return (pred == y).float().mean().item()


@healthy
def sam_two_pass_step(run) -> Outcome:
    """Sharpness-aware minimisation: ascend to w + e(w), take the gradient there, restore w, then step."""
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _watch(run, model, opt)
    rho, losses = 0.05, []
    for xb, yb in batches(xtr, ytr, 60, 32):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        params = [p for p in model.parameters() if p.grad is not None]
        norm = torch.norm(torch.stack([p.grad.norm() for p in params]))
        with torch.no_grad():
            eps = [rho * p.grad / (norm + 1e-12) for p in params]
            for p, e in zip(params, eps, strict=True):
                p.add_(e)
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        with torch.no_grad():
            for p, e in zip(params, eps, strict=True):
                p.sub_(e)
        opt.step()
        losses.append(loss.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def lookahead_slow_weights(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    slow = [p.detach().clone() for p in model.parameters()]
    _watch(run, model, opt)
    losses = []
    for i, (xb, yb) in enumerate(batches(xtr, ytr, 60, 32)):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        if (i + 1) % 5 == 0:
            with torch.no_grad():
                for s, p in zip(slow, model.parameters(), strict=True):
                    s.lerp_(p, 0.5)
                    p.copy_(s)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


# ---- two optimizers, param groups, freezing ----------------------------------------------------------------------
@healthy
def gan_watch_generator(run) -> Outcome:
    mu = torch.tensor([2.0, -1.0])
    gen_net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    disc = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    opt_g = torch.optim.Adam(gen_net.parameters(), lr=5e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=5e-3, betas=(0.5, 0.999))
    _watch(run, gen_net, opt_g)
    bce, dist = nn.BCEWithLogitsLoss(), []
    ones, zeros = torch.ones(64, 1), torch.zeros(64, 1)
    for _ in range(150):
        real = mu + 0.5 * torch.randn(64, 2)
        fake = gen_net(torch.randn(64, 4))
        d_loss = bce(disc(real), ones) + bce(disc(fake.detach()), zeros)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = bce(disc(fake), ones)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        dist.append((fake.detach().mean(0) - mu).norm())
    k = len(dist) // 6
    first, last = float(sum(dist[:k]) / k), float(sum(dist[-k:]) / k)
    return _out(dist, [gen_net, disc], -last, -first)


@healthy
def actor_critic_bandit(run) -> Outcome:
    g = gen(5)
    w = torch.randn(8, 4, generator=g)
    xv = torch.randn(256, 8, generator=g)
    actor = mlp(8, 32, 4)
    critic = mlp(8, 32, 1)
    opt_a = torch.optim.Adam(actor.parameters(), lr=1e-2)
    opt_c = torch.optim.Adam(critic.parameters(), lr=1e-2)
    _watch(run, actor, opt_a)
    regret = []
    for _ in range(120):
        x = torch.randn(64, 8)
        dist = torch.distributions.Categorical(logits=actor(x))
        a = dist.sample()
        r = (a == (x @ w).argmax(1)).float()
        v = critic(x).squeeze(1)
        adv = r - v.detach()
        actor_loss = -(dist.log_prob(a) * adv).mean() - 0.01 * dist.entropy().mean()
        opt_a.zero_grad()
        actor_loss.backward()
        opt_a.step()
        critic_loss = F.mse_loss(v, r)
        opt_c.zero_grad()
        critic_loss.backward()
        opt_c.step()
        regret.append(1 - r.mean())
    return _out(regret, [actor, critic], _acc(actor, xv, (xv @ w).argmax(1)), 0.25)


@healthy
def add_param_group_midrun(run) -> Outcome:
    """The head trains alone on a frozen body; at step 30 the body is unfrozen and added as a second group."""
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4, depth=3)
    body, head = model[:4], model[4]
    body.requires_grad_(False)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for i, (xb, yb) in enumerate(batches(xtr, ytr, 80, 32)):
        if i == 30:
            body.requires_grad_(True)
            opt.add_param_group({"params": list(body.parameters()), "lr": 3e-3})
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def gradual_unfreezing(run) -> Outcome:
    """ULMFiT-style: all layers in the optimizer, unfrozen from the top one every 20 steps."""
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4, depth=3)
    layers = [model[4], model[2], model[0]]
    for layer in layers[1:]:
        layer.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    _watch(run, model, opt)
    losses = []
    for i, (xb, yb) in enumerate(batches(xtr, ytr, 70, 32)):
        if i in (20, 40):
            layers[i // 20].requires_grad_(True)
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def sparse_embedding_sparse_adam(run) -> Outcome:
    ids, y = tokens(480, 10, 200, seed=1)

    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(200, 16, sparse=True)
            self.head = nn.Linear(16, 2)

        def forward(self, i):
            return self.head(self.emb(i).mean(1))

    model = Bag()
    dense = torch.optim.Adam(model.head.parameters(), lr=1e-2)
    sparse = torch.optim.SparseAdam(list(model.emb.parameters()), lr=3e-2)
    _watch(run, model, dense)
    losses = []
    for xb, yb in batches(ids[96:], y[96:], 80, 32):
        dense.zero_grad()
        sparse.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        dense.step()
        sparse.step()
        losses.append(loss.detach())
    return _out(losses, [model], _acc(model, ids[:96], y[:96]), 0.5)


@healthy
def frozen_pretrained_embeddings_filtered(run) -> Outcome:
    """"Pretrained" vectors (carrying each token's meaning) frozen and left out of the optimizer by filtering on
    ``requires_grad``."""
    g = gen(2)
    ids = torch.randint(0, 200, (480, 10), generator=g)
    meaning = torch.randn(200, generator=g)
    score = meaning[ids].mean(1)
    y = (score > score.median()).long()
    vectors = torch.randn(200, 24, generator=g)
    vectors[:, 0] = meaning + 0.3 * torch.randn(200, generator=g)
    emb = nn.Embedding.from_pretrained(vectors, freeze=True)

    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = emb
            self.net = nn.Sequential(nn.Linear(24, 32), nn.ReLU(), nn.Linear(32, 2))

        def forward(self, i):
            return self.net(self.emb(i).mean(1))

    model = Pooled()
    opt = torch.optim.Adam((p for p in model.parameters() if p.requires_grad), lr=1e-2)
    losses = _plain(run, model, opt, ids[96:], y[96:], steps=80)
    return _out(losses, [model], _acc(model, ids[:96], y[:96]), 0.5)


class _FrozenFeatures(nn.Module):
    """A fixed random-feature extractor run under no_grad inside the forward, not in the optimizer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(12, 64), nn.Tanh())
        self.features.requires_grad_(False)
        self.head = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f = self.features(x)
        return self.head(f)


@healthy
def frozen_extractor_under_no_grad(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = _FrozenFeatures()
    opt = torch.optim.Adam(model.head.parameters(), lr=1e-2)
    losses = _plain(run, model, opt, xtr, ytr)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


class _UncertaintyWeights(nn.Module):
    """Kendall et al.'s multi-task weighting: learnable log-variances inside the loss, trained with the model."""

    def __init__(self) -> None:
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(2))

    def forward(self, ce: torch.Tensor, mse: torch.Tensor) -> torch.Tensor:
        return (torch.exp(-self.log_vars[0]) * ce + self.log_vars[0]
                + 0.5 * torch.exp(-self.log_vars[1]) * mse + 0.5 * self.log_vars[1])


@healthy
def learnable_loss_weights(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    reg_target = xtr[:, 3:4] - xtr[:, 5:6]

    class Multi(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(12, 32), nn.ReLU())
            self.cls, self.reg = nn.Linear(32, 4), nn.Linear(32, 1)

        def forward(self, x):
            h = self.body(x)
            return self.cls(h), self.reg(h)

    model, weigh = Multi(), _UncertaintyWeights()
    opt = torch.optim.Adam([*model.parameters(), *weigh.parameters()], lr=1e-2)
    _watch(run, model, opt)
    losses = []
    g = gen(4)
    for _ in range(60):
        idx = torch.randint(0, len(xtr), (32,), generator=g)
        logits, reg = model(xtr[idx])
        ce = F.cross_entropy(logits, ytr[idx])
        loss = weigh(ce, F.mse_loss(reg, reg_target[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(ce.detach())
    return _out(losses, [model, weigh], _acc_first(model, xv, yv), 0.25)


# ---- parametrizations and unusual numbers --------------------------------------------------------------------------
def _parametrized(kind) -> nn.Module:
    model = mlp(12, 32, 4, depth=3)
    for i in (0, 2, 4):
        kind(model[i])
    return model


@healthy
def weight_norm_parametrization(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = _parametrized(parametrizations.weight_norm)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = _plain(run, model, opt, xtr, ytr)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def spectral_norm_parametrization(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = _parametrized(parametrizations.spectral_norm)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = _plain(run, model, opt, xtr, ytr, steps=80)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def orthogonal_hidden_layer(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4, depth=3)
    parametrizations.orthogonal(model[2])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = _plain(run, model, opt, xtr, ytr)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def complex_valued_linear_fit(run) -> Outcome:
    """A complex-valued linear system identified with complex weights (Adam handles complex parameters)."""
    g = gen(6)
    x = torch.randn(640, 6, dtype=torch.cfloat, generator=g)
    a = torch.randn(6, 3, dtype=torch.cfloat, generator=g)
    y = x @ a + 0.05 * torch.randn(640, 3, dtype=torch.cfloat, generator=g)
    model = nn.Sequential(nn.Linear(6, 12, dtype=torch.cfloat), nn.Linear(12, 3, dtype=torch.cfloat))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(x[128:], y[128:], 80, 32):
        opt.zero_grad()
        loss = (model(xb) - yb).abs().pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    with torch.no_grad():
        val = (model(x[:128]) - y[:128]).abs().pow(2).mean()
    return _out(losses, [model], -val, -y[:128].abs().pow(2).mean())


@healthy
def tiny_target_scale_standardised(run) -> Outcome:
    """Targets around 1e-4 (a physical quantity in SI units), standardised before the loss."""
    g = gen(8)
    x = torch.randn(640, 8, generator=g)
    y = 1e-4 * (x @ torch.randn(8, generator=g)) + 2e-4 + 1e-5 * torch.randn(640, generator=g)
    mean, std = y[128:].mean(), y[128:].std()
    model = mlp(8, 32, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = _plain(run, model, opt, x[128:], ((y[128:] - mean) / std)[:, None], loss_fn=F.mse_loss)
    with torch.no_grad():
        pred = model(x[:128]).squeeze(1) * std + mean
    r2 = 1 - ((pred - y[:128]) ** 2).sum() / ((y[:128] - y[:128].mean()) ** 2).sum()
    return _out(losses, [model], r2, 0.0)


class _RawUnits(nn.Module):
    """Predicts house-price-like targets (~1e6) in raw units through fixed de-normalising buffers."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.net = mlp(8, 32, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1) * self.std + self.mean


@healthy
def huge_target_scale_denormalising_buffers(run) -> Outcome:
    g = gen(9)
    x = torch.randn(640, 8, generator=g)
    y = 3e5 * (x @ torch.randn(8, generator=g)) + 1.5e6 + 1e4 * torch.randn(640, generator=g)
    model = _RawUnits(y[128:].mean(), y[128:].std())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(x[128:], y[128:], 60, 32):
        opt.zero_grad()
        loss = F.mse_loss(model(xb) / model.std, yb / model.std)  # the error in units of the target's spread
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    with torch.no_grad():
        pred = model(x[:128])
    r2 = 1 - ((pred - y[:128]) ** 2).sum() / ((y[:128] - y[:128].mean()) ** 2).sum()
    return _out(losses, [model], r2, 0.0)


@healthy
def poisson_counts_log_rate(run) -> Outcome:
    g = gen(10)
    x = torch.randn(640, 6, generator=g)
    rate = torch.exp(0.25 * x @ torch.randn(6, generator=g) + 1.0)
    y = torch.poisson(rate, generator=g)
    model = mlp(6, 24, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.PoissonNLLLoss(log_input=True)
    losses = _plain(run, model, opt, x[128:], y[128:, None], loss_fn=loss_fn, steps=80)
    with torch.no_grad():
        val = loss_fn(model(x[:128]), y[:128, None])
    return _out(losses, [model], -val, -loss_fn(torch.log(y[128:].mean()).expand(128, 1), y[:128, None]))


# ---- sequences, HF-like models, dict and keyword batches ----------------------------------------------------------
def _ragged(n: int = 480, vocab: int = 50, seed: int = 11) -> tuple:
    """Variable-length id sequences (0 is padding) labelled by the mean hidden score of their real tokens."""
    g = gen(seed)
    lengths = torch.randint(4, 13, (n,), generator=g)
    ids = torch.randint(1, vocab, (n, 12), generator=g)
    mask = torch.arange(12)[None] < lengths[:, None]
    ids = ids * mask
    score = torch.randn(vocab, generator=g)[ids] * mask
    mean = score.sum(1) / lengths
    return ids, mask, lengths, (mean > mean.median()).long()


class _PackedLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 24, padding_idx=0)
        self.rnn = nn.LSTM(24, 32, batch_first=True)
        self.head = nn.Linear(32, 2)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.emb(ids), lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.rnn(packed)
        return self.head(h[-1])


@healthy
def packed_lstm_variable_lengths(run) -> Outcome:
    ids, _, lengths, y = _ragged()
    model = _PackedLSTM()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    g = gen(12)
    for _ in range(80):
        idx = 96 + torch.randint(0, len(ids) - 96, (32,), generator=g)
        opt.zero_grad()
        loss = F.cross_entropy(model(ids[idx], lengths[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    model.eval()
    with torch.no_grad():
        acc = (model(ids[:96], lengths[:96]).argmax(1) == y[:96]).float().mean()
    model.train()
    return _out(losses, [model], acc, 0.5)


@dataclass
class _SeqOut:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


class _HFLikeClassifier(nn.Module):
    """Hugging Face-shaped: keyword inputs, an attention mask, the loss computed inside when labels are given."""

    def __init__(self) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(50, 32, padding_idx=0)
        self.pre = nn.Sequential(nn.Linear(32, 32), nn.GELU())
        self.classifier = nn.Linear(32, 2)

    def forward(self, input_ids=None, attention_mask=None, labels=None) -> _SeqOut:
        h = self.pre(self.embeddings(input_ids))
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        logits = self.classifier((h * m).sum(1) / m.sum(1))
        loss = F.cross_entropy(logits.view(-1, 2), labels.view(-1)) if labels is not None else None
        return _SeqOut(logits=logits, loss=loss)


@healthy
def hf_like_dataclass_output_labels_kwarg(run) -> Outcome:
    ids, mask, _, y = _ragged(seed=13)
    model = _HFLikeClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.01)
    _watch(run, model, opt)
    losses = []
    g = gen(14)
    for _ in range(80):
        idx = 96 + torch.randint(0, len(ids) - 96, (32,), generator=g)
        batch = {"input_ids": ids[idx], "attention_mask": mask[idx].long(), "labels": y[idx]}
        out = model(**batch)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.detach())
    model.eval()
    with torch.no_grad():
        acc = (model(input_ids=ids[:96], attention_mask=mask[:96].long()).logits.argmax(1) == y[:96]).float().mean()
    model.train()
    return _out(losses, [model], acc, 0.5)


class _DictOutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(12, 32), nn.ReLU())
        self.head = nn.Linear(32, 4)

    def forward(self, *, features: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        logits = self.head(self.backbone(features))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels, label_smoothing=0.05)
        return out


@healthy
def keyword_only_forward_dict_output(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = _DictOutNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(xtr, ytr, 60, 32):
        loss = model(features=xb, labels=yb)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    model.eval()
    with torch.no_grad():
        acc = (model(features=xv)["logits"].argmax(1) == yv).float().mean()
    model.train()
    return _out(losses, [model], acc, 0.25)


class _Rows(torch.utils.data.Dataset):
    """A dataset of dict rows, as a table reader returns them."""

    def __init__(self, x: torch.Tensor, cat: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.cat, self.y = x, cat, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"numeric": self.x[i], "category": int(self.cat[i]), "target": int(self.y[i])}


def _collate(rows: list[dict]) -> dict:
    return {"numeric": torch.stack([r["numeric"] for r in rows]),
            "category": torch.tensor([r["category"] for r in rows]),
            "target": torch.tensor([r["target"] for r in rows])}


class _DictBatchNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cat = nn.Embedding(6, 4)
        self.net = nn.Sequential(nn.Linear(12 + 4, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, batch: dict) -> torch.Tensor:
        return self.net(torch.cat([batch["numeric"], self.cat(batch["category"])], 1))


@healthy
def dict_batch_collate_fn_loader(run) -> Outcome:
    xtr, ytr, xv, yv = _tab(seed=15)
    g = gen(16)
    cat = torch.randint(0, 6, (640,), generator=g)
    loader = DataLoader(_Rows(xtr, cat[128:], ytr), batch_size=32, shuffle=True, collate_fn=_collate,
                        num_workers=0, generator=gen(17))
    model = _DictBatchNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for _ in range(4):
        for batch in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(batch), batch["target"])
            loss.backward()
            opt.step()
            losses.append(loss.detach())
    return _out(losses, [model], _acc(model, {"numeric": xv, "category": cat[:128]}, yv), 0.25)


class _Stream(IterableDataset):
    """An endless stream of fresh samples from one fixed rule."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.w = torch.randn(10, 3, generator=gen(seed))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = gen(self.seed + 1)
        while True:
            x = torch.randn(10, generator=g)
            yield x, (x @ self.w).argmax()


@healthy
def iterable_dataset_stream_loader(run) -> Outcome:
    stream = _Stream(18)
    loader = DataLoader(stream, batch_size=32, num_workers=0)
    model = mlp(10, 32, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for xb, yb in itertools.islice(loader, 70):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    xv = torch.randn(128, 10, generator=gen(99))
    return _out(losses, [model], _acc(model, xv, (xv @ stream.w).argmax(1)), 1 / 3)


@healthy
def generator_function_infinite_data(run) -> Outcome:
    w = torch.randn(12, 4, generator=gen(19))

    def stream(batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = gen(20)
        while True:
            x = torch.randn(batch, 12, generator=g)
            yield x, (x @ w).argmax(1)

    data = stream(32)
    model = mlp(12, 32, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    _watch(run, model, opt)
    losses = []
    for _ in range(70):
        xb, yb = next(data)
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    xv = torch.randn(128, 12, generator=gen(21))
    return _out(losses, [model], _acc(model, xv, (xv @ w).argmax(1)), 0.25)


# ---- calling the model in other ways -------------------------------------------------------------------------------
class _EncHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


@healthy
def explicit_forward_method_call(run) -> Outcome:
    """``model.forward(x)`` called by name (bypassing ``__call__``), as some ported code does."""
    xtr, ytr, xv, yv = _tab()
    model = _EncHead()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(xtr, ytr, 60, 32):
        opt.zero_grad()
        loss = F.cross_entropy(model.forward(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def parts_called_with_feature_dropout_between(run) -> Outcome:
    """The loop runs encoder and head itself, with functional dropout between them."""
    xtr, ytr, xv, yv = _tab()
    model = _EncHead()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(xtr, ytr, 60, 32):
        opt.zero_grad()
        logits = model.head(F.dropout(model.encoder(xb), 0.1, training=True))
        loss = F.cross_entropy(logits, yb)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


class _Siamese(nn.Module):
    """One encoder shared by the two halves of each row (the two sides of a pair)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(6, 24), nn.ReLU())
        self.head = nn.Linear(48, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.encoder(x[:, :6]), self.encoder(x[:, 6:])], 1))


@healthy
def shared_encoder_two_branches(run) -> Outcome:
    xtr, ytr, xv, yv = _tab(seed=22)
    model = _Siamese()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = _plain(run, model, opt, xtr, ytr, steps=70)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


class _TiedLM(nn.Module):
    def __init__(self, vocab: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 32)
        self.rnn = nn.GRU(32, 32, batch_first=True)
        self.out = nn.Linear(32, vocab, bias=False)
        self.out.weight = self.emb.weight  # weight tying

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(self.emb(ids))[0])


def _markov(n: int, length: int, vocab: int, g: torch.Generator) -> torch.Tensor:
    seq = torch.empty(n, length, dtype=torch.long)
    seq[:, 0] = torch.randint(0, vocab, (n,), generator=g)
    for t in range(1, length):
        jump = torch.rand(n, generator=g) < 0.15
        seq[:, t] = torch.where(jump, torch.randint(0, vocab, (n,), generator=g), (3 * seq[:, t - 1] + 1) % vocab)
    return seq


@healthy
def tied_embedding_gru_language_model(run) -> Outcome:
    g = gen(23)
    train, val = _markov(384, 16, 32, g), _markov(64, 16, 32, g)
    model = _TiedLM()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for step in range(60):
        seq = train[(step * 32) % 384:(step * 32) % 384 + 32]
        logits = model(seq[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 32), seq[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    with torch.no_grad():
        acc = (model(val[:, :-1]).argmax(-1) == val[:, 1:]).float().mean()
    return _out(losses, [model], acc, 1 / 32)


class _RecurrentDepth(nn.Module):
    """One block applied six times (weights shared across depth), no normalisation inside."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(12, 32)
        self.block = nn.Linear(32, 32)
        self.out = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        for _ in range(6):
            h = h + 0.3 * torch.tanh(self.block(h))
        return self.out(h)


@healthy
def weight_shared_recurrent_depth(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = _RecurrentDepth()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = _plain(run, model, opt, xtr, ytr)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


class _HyperNet(nn.Module):
    """A hypernetwork: a learned task embedding generates the weights of the classifier's first layer."""

    def __init__(self) -> None:
        super().__init__()
        self.z = nn.Parameter(torch.randn(8) * 0.1)
        self.gen_w = nn.Linear(8, 12 * 32)
        self.b = nn.Parameter(torch.zeros(32))
        self.out = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.gen_w(self.z).view(32, 12)
        return self.out(F.relu(F.linear(x, w, self.b)))


@healthy
def hypernetwork_generated_weights(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = _HyperNet()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = _plain(run, model, opt, xtr, ytr, steps=70)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


# ---- teachers, copies, checkpoints, pickling ----------------------------------------------------------------------
@healthy
def ema_teacher_lerp_consistency(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    student = mlp(12, 32, 4)
    teacher = copy.deepcopy(student).eval().requires_grad_(False)
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    _watch(run, student, opt)
    losses = []
    for xb, yb in batches(xtr, ytr, 60, 32):
        logits = student(xb + 0.05 * torch.randn_like(xb))
        with torch.no_grad():
            target = F.softmax(teacher(xb + 0.05 * torch.randn_like(xb)), 1)
        ce = F.cross_entropy(logits, yb)
        loss = ce + 0.5 * F.mse_loss(F.softmax(logits, 1), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pt, ps in zip(teacher.parameters(), student.parameters(), strict=True):
                pt.lerp_(ps, 0.05)
        losses.append(ce.detach())
    return _out(losses, [student, teacher], _acc(teacher, xv, yv), 0.25)


@healthy
def distillation_kl_temperature(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    teacher = mlp(12, 64, 4)
    t_opt = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    for xb, yb in batches(xtr, ytr, 80, 64, seed=30):  # the teacher is trained first, unwatched
        t_opt.zero_grad()
        F.cross_entropy(teacher(xb), yb).backward()
        t_opt.step()
    teacher.eval()
    student = mlp(12, 16, 4)
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    _watch(run, student, opt)
    losses, temp = [], 4.0
    for xb, yb in batches(xtr, ytr, 60, 32):
        with torch.no_grad():
            soft = F.log_softmax(teacher(xb) / temp, 1)
        logits = student(xb)
        kd = F.kl_div(F.log_softmax(logits / temp, 1), soft, log_target=True, reduction="batchmean") * temp ** 2
        loss = 0.7 * kd + 0.3 * F.cross_entropy(logits, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return _out(losses, [student], _acc(student, xv, yv), 0.25)


@healthy
def deepcopy_best_and_state_dict_roundtrip(run) -> Outcome:
    """Keeps a deep copy of the best model and reloads model and optimizer from an in-memory checkpoint."""
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses, best, best_acc = [], None, -1.0
    for i, (xb, yb) in enumerate(batches(xtr, ytr, 60, 32)):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        if i % 15 == 14:
            acc = _acc(model, xv, yv)
            if acc > best_acc:
                best, best_acc = copy.deepcopy(model), acc
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": i}, buf)
            buf.seek(0)
            state = torch.load(buf)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
    return _out(losses, [model, best], _acc(best, xv, yv), 0.25)


@healthy
def pickle_model_midrun(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses, snapshots = [], []
    for i, (xb, yb) in enumerate(batches(xtr, ytr, 60, 32)):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        if i % 20 == 19:
            snapshots.append(pickle.dumps(model))
    restored = pickle.loads(snapshots[-1])
    return _out(losses, [model, restored], _acc(restored, xv, yv), 0.25)


@healthy
def fixmatch_pseudo_labels_train_mode(run) -> Outcome:
    """FixMatch: pseudo-labels from a weak view under no_grad (model still in train mode), strong view trained."""
    xtr, ytr, xv, yv = _tab(n=1000)
    lab_x, lab_y, unlab = xtr[:96], ytr[:96], xtr[96:]
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    g = gen(24)
    for _ in range(60):
        li = torch.randint(0, 96, (16,), generator=g)
        ui = torch.randint(0, len(unlab), (48,), generator=g)
        u = unlab[ui]
        with torch.no_grad():
            probs = F.softmax(model(u + 0.02 * torch.randn_like(u)), 1)
        conf, pseudo = probs.max(1)
        sup = F.cross_entropy(model(lab_x[li]), lab_y[li])
        unsup = (F.cross_entropy(model(u + 0.3 * torch.randn_like(u)), pseudo, reduction="none")
                 * (conf > 0.8).float()).mean()
        loss = sup + unsup
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(sup.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


# ---- schedules, losses, data orders --------------------------------------------------------------------------------
@healthy
def train_eval_swap_every_few_steps(run) -> Outcome:
    x, y = images(320, seed=25)
    model = CNN(dropout=0.2)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    _watch(run, model, opt)
    losses, val_acc = [], []
    for i, (xb, yb) in enumerate(batches(x[64:], y[64:], 40, 32)):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        if i % 4 == 3:
            model.eval()
            with torch.inference_mode():
                val_acc.append((model(x[:64]).argmax(1) == y[:64]).float().mean())
            model.train()
    return _out(losses, [model], val_acc[-1], 0.25)


@healthy
def warmup_then_cosine_lambda(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-2, weight_decay=0.01)
    warm, total = 10, 80
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm))))
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(xtr, ytr, total, 32):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def manual_step_decay_param_groups(run) -> Outcome:
    """Two param groups (body and head at 10x), rates halved by hand every 20 steps."""
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4, depth=3)
    opt = torch.optim.SGD([{"params": model[:4].parameters(), "lr": 0.02},
                           {"params": model[4].parameters(), "lr": 0.2}], momentum=0.9)
    _watch(run, model, opt)
    losses = []
    for i, (xb, yb) in enumerate(batches(xtr, ytr, 80, 32)):
        if i and i % 20 == 0:
            for group in opt.param_groups:
                group["lr"] *= 0.5
        model.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def label_smoothing_module_loss(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = _plain(run, model, opt, xtr, ytr, loss_fn=nn.CrossEntropyLoss(label_smoothing=0.2))
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


def _focal(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pt = p * target + (1 - p) * (1 - target)
    return ((alpha * target + (1 - alpha) * (1 - target)) * (1 - pt) ** gamma * ce).mean()


@healthy
def focal_loss_imbalanced_binary(run) -> Outcome:
    g = gen(26)
    x = torch.randn(800, 10, generator=g)
    score = x @ torch.randn(10, generator=g)
    y = (score > score.quantile(0.8)).float()  # 1 positive in 5
    model = mlp(10, 32, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = _plain(run, model, opt, x[160:], y[160:, None], loss_fn=_focal, steps=80, batch=64)
    with torch.no_grad():
        pred = (model(x[:160]).squeeze(1) > 0).float()
    tp = (pred * y[:160]).sum()
    f1 = 2 * tp / (pred.sum() + y[:160].sum())
    return _out(losses, [model], f1, 2 * 0.2 / 1.2)  # predicting every row positive scores F1 = 2p/(1+p)


@healthy
def multilabel_bce_with_logits(run) -> Outcome:
    g = gen(27)
    x = torch.randn(640, 12, generator=g)
    y = (x @ torch.randn(12, 5, generator=g) > 0.3).float()
    model = mlp(12, 32, 5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = _plain(run, model, opt, x[128:], y[128:], loss_fn=nn.BCEWithLogitsLoss())
    with torch.no_grad():
        acc = ((model(x[:128]) > 0).float() == y[:128]).float().mean()
    return _out(losses, [model], acc, max(y[:128].mean(), 1 - y[:128].mean()))


@healthy
def infonce_high_temperature(run) -> Outcome:
    g = gen(28)
    data = torch.randn(512, 16, generator=g) @ torch.randn(16, 16, generator=g) / 4
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    _watch(run, model, opt)
    losses, temp = [], 1.0
    for step in range(60):
        xb = data[(step * 64) % 384:(step * 64) % 384 + 64]
        z1 = F.normalize(model(xb + 0.3 * torch.randn_like(xb)), dim=1)
        z2 = F.normalize(model(xb + 0.3 * torch.randn_like(xb)), dim=1)
        logits = z1 @ z2.T / temp
        loss = (F.cross_entropy(logits, torch.arange(64)) + F.cross_entropy(logits.T, torch.arange(64))) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    with torch.no_grad():
        xv = data[384:448]
        a = F.normalize(model(xv + 0.3 * torch.randn_like(xv)), dim=1)
        b = F.normalize(model(xv + 0.3 * torch.randn_like(xv)), dim=1)
        top1 = ((a @ b.T).argmax(1) == torch.arange(64)).float().mean()
    return _out(losses, [model], top1, 1 / 64)


@healthy
def triplet_margin_embedding(run) -> Outcome:
    xtr, ytr, xv, yv = _tab(seed=29)
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    loss_fn = nn.TripletMarginLoss(margin=1.0)
    _watch(run, model, opt)
    by_class = [torch.nonzero(ytr == c).squeeze(1) for c in range(4)]
    g = gen(30)
    losses = []
    for _ in range(60):
        c = torch.randint(0, 4, (32,), generator=g)
        other = (c + torch.randint(1, 4, (32,), generator=g)) % 4
        pick = [by_class[int(k)][torch.randint(0, len(by_class[int(k)]), (1,), generator=g)] for k in c]
        pos = [by_class[int(k)][torch.randint(0, len(by_class[int(k)]), (1,), generator=g)] for k in c]
        neg = [by_class[int(k)][torch.randint(0, len(by_class[int(k)]), (1,), generator=g)] for k in other]
        a, p, n = (model(xtr[torch.cat(ix)]) for ix in (pick, pos, neg))
        loss = loss_fn(a, p, n)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    with torch.no_grad():
        centres = torch.stack([model(xtr[ix]).mean(0) for ix in by_class])
        acc = (torch.cdist(model(xv), centres).argmin(1) == yv).float().mean()
    return _out(losses, [model], acc, 0.25)


@healthy
def inverse_frequency_class_weights(run) -> Outcome:
    g = gen(31)
    x = torch.randn(1400, 10, generator=g)
    y = torch.cat([torch.zeros(1000), torch.ones(300), torch.full((100,), 2.0)]).long()
    x = x + 1.5 * F.one_hot(y, 10).float()
    perm = torch.randperm(1400, generator=g)
    x, y = x[perm], y[perm]
    counts = torch.bincount(y[200:], minlength=3).float()
    weights = counts.sum() / (3 * counts)
    model = mlp(10, 32, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = _plain(run, model, opt, x[200:], y[200:], loss_fn=nn.CrossEntropyLoss(weight=weights), steps=80,
                    batch=64)
    with torch.no_grad():
        pred = model(x[:200]).argmax(1)
    recall = torch.stack([(pred[y[:200] == c] == c).float().mean() for c in range(3)]).mean()
    return _out(losses, [model], recall, 1 / 3)


@healthy
def curriculum_easy_first_shuffled(run) -> Outcome:
    """Easiest half (largest margin) for 30 steps, shuffled within, then all the data shuffled."""
    g = gen(32)
    x = torch.randn(640, 12, generator=g)
    logits = x @ torch.randn(12, 4, generator=g)
    y = logits.argmax(1)
    top2 = logits.topk(2, 1).values
    margin = (top2[:, 0] - top2[:, 1])[128:]
    easy = 128 + margin.argsort(descending=True)[:256]
    model = mlp(12, 32, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for step in range(80):
        pool = easy if step < 30 else torch.arange(128, 640)
        idx = pool[torch.randperm(len(pool), generator=g)[:32]]
        opt.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return _out(losses, [model], _acc(model, x[:128], y[:128]), 0.25)


@healthy
def channels_last_cnn(run) -> Outcome:
    x, y = images(320, seed=33)
    model = CNN().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    x = x.contiguous(memory_format=torch.channels_last)
    losses = _plain(run, model, opt, x[64:], y[64:], steps=40)
    return _out(losses, [model], _acc(model, x[:64], y[:64]), 0.25)


@healthy
def online_batch_of_one_groupnorm(run) -> Outcome:
    """Online learning, one sample per step, GroupNorm instead of BatchNorm."""
    xtr, ytr, xv, yv = _tab()
    model = nn.Sequential(nn.Linear(12, 32), nn.GroupNorm(4, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    losses = _plain(run, model, opt, xtr, ytr, steps=300, batch=1)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def ten_step_run(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    losses = _plain(run, model, opt, xtr, ytr, steps=10, batch=64)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def two_thousand_cheap_steps(run) -> Outcome:
    xtr, ytr, xv, yv = _tab(c=2)
    model = nn.Linear(12, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    losses = _plain(run, model, opt, xtr, ytr, steps=2000, batch=16)
    return _out(losses, [model], _acc(model, xv, yv), 0.5)


# ---- checked without the watch ---------------------------------------------------------------------------------------
def report_bare(module: str) -> None:
    """Each loop of ``module`` trained bare (torch seed 0, as the tests seed it): does it learn?"""
    import _kit

    torch.set_num_threads(1)
    mine = [s for s in _kit.HEALTHY if s.fn.__module__ == module]
    for s in mine:
        torch.manual_seed(0)
        o = s.fn(None)
        k = max(len(o.losses) // 6, 1)
        print(f"{s.name:48s} loss {sum(o.losses[:k]) / k:9.4f} -> {sum(o.losses[-k:]) / k:9.4f}  "
              f"metric {o.metric:7.3f} (chance {o.chance:7.3f})  {'learns' if o.learned() else 'DOES NOT LEARN'}")
    print(f"{len(mine)} loops")


if __name__ == "__main__":
    report_bare(__name__)
