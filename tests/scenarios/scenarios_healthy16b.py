"""Round 16's second batch of healthy but unusual loops (written after the first batch's scored run): truncated
BPTT with a detached carried state, ``maximize=True``, vector backward with weights, ``autograd.backward`` and
``autograd.grad`` instead of ``loss.backward()``, MAML, a distribution as the model's output, a PINN, FGSM
adversarial training, user hooks that change outputs and gradients, scripted and DataParallel-wrapped modules,
sparse and list inputs, a forward wrapped by autocast before the watch, k-fold with one watch per fold, BatchNorm
recalibration. Same contract as ``scenarios_healthy16`` (``run=None`` trains bare; an ``Outcome`` comes back);
``python tests/scenarios/scenarios_healthy16b.py`` checks, without any watch, that each loop learns.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from _blindkit import CNN, batches, gen, images, mlp
from _kit import healthy
from scenarios_healthy16 import Outcome, _acc, _out, _plain, _ragged, _tab, _watch, report_bare
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

KNOWN_MISSES: dict = {}  # the first run's three (a sparse input, a TorchScript child, update_bn) were fixed


class _StatefulGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(1, 24, batch_first=True)
        self.head = nn.Linear(24, 1)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        out, h = self.rnn(x, h)
        return self.head(out), h


def _waves(streams: int, length: int, seed: int) -> torch.Tensor:
    g = gen(seed)
    t = torch.arange(length).float()
    freq = 0.05 + 0.1 * torch.rand(streams, 1, generator=g)
    phase = 6.28 * torch.rand(streams, 1, generator=g)
    return (torch.sin(freq * t + phase) + 0.05 * torch.randn(streams, length, generator=g)).unsqueeze(-1)


@healthy
def tbptt_detached_carried_state(run) -> Outcome:
    """Truncated BPTT over long streams: the hidden state is carried across chunks and detached at each."""
    series = _waves(16, 1201, seed=40)
    model = _StatefulGRU()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses, h, chunk = [], None, 20
    for start in range(0, 1200, chunk):
        x, y = series[:, start:start + chunk], series[:, start + 1:start + chunk + 1]
        if h is not None:
            h = h.detach()
        pred, h = model(x, h)
        loss = F.mse_loss(pred, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    val = _waves(8, 201, seed=41)
    with torch.no_grad():
        pred, _ = model(val[:, :-1])
    mse = F.mse_loss(pred[:, 20:], val[:, 21:])
    return _out(losses, [model], -mse, -F.mse_loss(val[:, 20:-1], val[:, 21:]))  # vs "the next equals the last"


@healthy
def maximize_log_likelihood(run) -> Outcome:
    """The objective is a log-likelihood, climbed with ``maximize=True``: the number given to backward rises."""
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, maximize=True)
    _watch(run, model, opt)
    nll = []
    for xb, yb in batches(xtr, ytr, 60, 32):
        log_lik = torch.distributions.Categorical(logits=model(xb)).log_prob(yb).mean()
        opt.zero_grad()
        log_lik.backward()
        opt.step()
        nll.append(-log_lik.detach())
    return _out(nll, [model], _acc(model, xv, yv), 0.25)


@healthy
def vector_backward_with_sample_weights(run) -> Outcome:
    """Per-sample losses backpropagated with ``backward(gradient=weights)`` (importance weights)."""
    xtr, ytr, xv, yv = _tab()
    g = gen(42)
    importance = 0.5 + torch.rand(len(xtr), generator=g)
    model = mlp(12, 32, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for _ in range(60):
        idx = torch.randint(0, len(xtr), (32,), generator=g)
        per_sample = F.cross_entropy(model(xtr[idx]), ytr[idx], reduction="none")
        w = importance[idx] / importance[idx].sum()
        opt.zero_grad()
        per_sample.backward(gradient=w)
        opt.step()
        losses.append((per_sample.detach() * w).sum())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def autograd_backward_list_of_losses(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(xtr, ytr, 60, 32):
        logits = model(xb)
        ce = F.cross_entropy(logits, yb)
        entropy = -(F.softmax(logits, 1) * F.log_softmax(logits, 1)).sum(1).mean()
        opt.zero_grad()
        torch.autograd.backward([ce, -0.01 * entropy])
        opt.step()
        losses.append(ce.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def autograd_grad_assigned_to_params(run) -> Outcome:
    """Gradients from ``torch.autograd.grad`` written into ``.grad`` by hand; no ``backward`` call at all."""
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(xtr, ytr, 60, 32):
        loss = F.cross_entropy(model(xb), yb)
        grads = torch.autograd.grad(loss, params)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()
        losses.append(loss.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


def _line_task(g: torch.Generator) -> tuple:
    a, b = torch.randn(2, generator=g) * 2
    x = torch.rand(20, 1, generator=g) * 4 - 2
    y = a * x + b + 0.05 * torch.randn(20, 1, generator=g)
    return x[:10], y[:10], x[10:], y[10:]


def _adapted_loss(model: nn.Module, task: tuple, inner_lr: float, create_graph: bool) -> torch.Tensor:
    xs, ys, xq, yq = task
    params = dict(model.named_parameters())
    support = F.mse_loss(functional_call(model, params, (xs,)), ys)
    grads = torch.autograd.grad(support, list(params.values()), create_graph=create_graph)
    fast = {k: v - inner_lr * g for (k, v), g in zip(params.items(), grads, strict=True)}
    return F.mse_loss(functional_call(model, fast, (xq,)), yq)


@healthy
def maml_second_order_functional_call(run) -> Outcome:
    model = mlp(1, 32, 1, act=nn.Tanh)
    initial = copy.deepcopy(model)
    meta_opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _watch(run, model, meta_opt)
    g, losses = gen(43), []
    for _ in range(80):
        meta_opt.zero_grad()
        loss = sum(_adapted_loss(model, _line_task(g), 0.1, True) for _ in range(4)) / 4
        loss.backward()
        meta_opt.step()
        losses.append(loss.detach())
    tasks = [_line_task(gen(1000 + i)) for i in range(16)]
    after = sum(_adapted_loss(model, t, 0.1, False).item() for t in tasks) / 16
    before = sum(_adapted_loss(initial, t, 0.1, False).item() for t in tasks) / 16
    return _out(losses, [model], -after, -before)


class _Heteroscedastic(nn.Module):
    """Returns a Normal distribution, not a tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 32), nn.ReLU())
        self.mean, self.scale = nn.Linear(32, 1), nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.distributions.Normal:
        h = self.body(x)
        return torch.distributions.Normal(self.mean(h), F.softplus(self.scale(h)) + 1e-3)


@healthy
def distribution_object_output_nll(run) -> Outcome:
    g = gen(44)
    x = torch.randn(640, 4, generator=g)
    y = (x[:, :1] * 1.5 - x[:, 1:2] + (0.1 + 0.5 * x[:, 2:3].abs()) * torch.randn(640, 1, generator=g))
    model = _Heteroscedastic()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(x[128:], y[128:], 80, 32):
        loss = -model(xb).log_prob(yb).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    with torch.no_grad():
        val = -model(x[:128]).log_prob(y[:128]).mean()
    baseline = -torch.distributions.Normal(y[128:].mean(), y[128:].std()).log_prob(y[:128]).mean()
    return _out(losses, [model], -val, -baseline)


@healthy
def gaussian_nll_loss_learned_variance(run) -> Outcome:
    g = gen(45)
    x = torch.randn(640, 4, generator=g)
    y = x[:, :1] - 0.5 * x[:, 3:4] + (0.1 + 0.4 * (x[:, 1:2] > 0).float()) * torch.randn(640, 1, generator=g)
    model = mlp(4, 32, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.GaussianNLLLoss()
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(x[128:], y[128:], 80, 32):
        out = model(xb)
        loss = loss_fn(out[:, :1], yb, F.softplus(out[:, 1:]) + 1e-4)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    with torch.no_grad():
        out = model(x[:128])
        val = loss_fn(out[:, :1], y[:128], F.softplus(out[:, 1:]) + 1e-4)
    base = loss_fn(y[128:].mean().expand(128, 1), y[:128], y[128:].var().expand(128, 1))
    return _out(losses, [model], -val, -base)


@healthy
def pinn_poisson_equation_no_targets(run) -> Outcome:
    """u'' = -pi^2 sin(pi x) on [0, 1], u(0) = u(1) = 0: the loss is the PDE residual, from input derivatives."""
    model = mlp(1, 32, 1, act=nn.Tanh, depth=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    g, losses, ends = gen(46), [], torch.tensor([[0.0], [1.0]])
    for _ in range(150):
        x = torch.rand(64, 1, generator=g).requires_grad_(True)
        u = model(x)
        (du,) = torch.autograd.grad(u.sum(), x, create_graph=True)
        (d2u,) = torch.autograd.grad(du.sum(), x, create_graph=True)
        residual = d2u + math.pi ** 2 * torch.sin(math.pi * x)
        loss = residual.pow(2).mean() + 10 * model(ends).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    grid = torch.linspace(0, 1, 101)[:, None]
    with torch.no_grad():
        err = (model(grid) - torch.sin(math.pi * grid)).abs().max()
    return _out(losses, [model], -err, -1.0)  # chance: u = 0 everywhere is off by 1


@healthy
def fgsm_adversarial_training_tutorial_style(run) -> Outcome:
    """The attack's gradient comes from ``loss.backward()`` on a leaf input (params get grads too, zeroed before
    the training backward), then clean and adversarial batches train together."""
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(xtr, ytr, 60, 32):
        x_adv = xb.clone().requires_grad_(True)
        F.cross_entropy(model(x_adv), yb).backward()
        x_adv = (xb + 0.1 * x_adv.grad.sign()).detach()
        opt.zero_grad()
        clean = F.cross_entropy(model(xb), yb)
        loss = 0.5 * clean + 0.5 * F.cross_entropy(model(x_adv), yb)
        loss.backward()
        opt.step()
        losses.append(clean.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


class _TextEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 32, padding_idx=0)
        layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear(32, 2)

    def forward(self, ids: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.emb(ids), src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        return self.head((h * keep).sum(1) / keep.sum(1))


@healthy
def transformer_padding_mask_eval_fast_path(run) -> Outcome:
    """Validation in eval mode under no_grad with a padding mask: torch's fast path runs on nested tensors."""
    ids, mask, _, y = _ragged(seed=47)
    model = _TextEncoder()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    _watch(run, model, opt)
    losses, accs = [], []
    g = gen(48)
    for step in range(60):
        idx = 96 + torch.randint(0, len(ids) - 96, (32,), generator=g)
        opt.zero_grad()
        loss = F.cross_entropy(model(ids[idx], ~mask[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        if step % 20 == 19:
            model.eval()
            with torch.no_grad():
                accs.append((model(ids[:96], ~mask[:96]).argmax(1) == y[:96]).float().mean())
            model.train()
    return _out(losses, [model], accs[-1], 0.5)


@healthy
def reduce_lr_on_plateau_from_validation(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)
    _watch(run, model, opt)
    losses = []
    for i, (xb, yb) in enumerate(batches(xtr, ytr, 100, 32)):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        if i % 5 == 4:
            with torch.no_grad():
                sched.step(F.cross_entropy(model(xv), yv))
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def one_cycle_sgd_momentum_cycling(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=80)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(xtr, ytr, 80, 32):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def user_forward_hooks_change_and_capture(run) -> Outcome:
    """The user's own hooks: one adds feature noise in training (returns a new output), one keeps features for
    an auxiliary decorrelation penalty."""
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4, depth=3)
    kept: dict[str, torch.Tensor] = {}

    def noise(module, inputs, output):
        return output + 0.05 * torch.randn_like(output) if module.training else output

    def keep(module, inputs, output):
        kept["h"] = output

    model[1].register_forward_hook(noise)
    model[3].register_forward_hook(keep)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(xtr, ytr, 60, 32):
        ce = F.cross_entropy(model(xb), yb)
        h = kept["h"] - kept["h"].mean(0)
        cov = h.T @ h / len(h)
        loss = ce + 1e-3 * (cov - torch.diag(torch.diag(cov))).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(ce.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def tensor_grad_hooks_clamp(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    for p in model.parameters():
        p.register_hook(lambda g: g.clamp(-0.05, 0.05))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    losses = _plain(run, model, opt, xtr, ytr)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


class _ReZero(nn.Module):
    """Residual blocks scaled by a gate that starts at exactly zero (ReZero)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(12, 32)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32)) for _ in range(3))
        self.gates = nn.Parameter(torch.zeros(3))
        self.out = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for gate, block in zip(self.gates, self.blocks, strict=True):
            h = h + gate * block(h)
        return self.out(h)


@healthy
def rezero_gates_start_at_zero(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = _ReZero()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = _plain(run, model, opt, xtr, ytr)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


def _bags(seed: int) -> tuple:
    g = gen(seed)
    ids = torch.randint(0, 200, (480, 10), generator=g)
    meaning = torch.randn(200, generator=g)
    score = meaning[ids].mean(1)
    return ids, (score > score.median()).long()


@healthy
def embedding_max_norm_renormalises_in_forward(run) -> Outcome:
    ids, y = _bags(49)
    model = nn.Sequential(nn.EmbeddingBag(200, 16, max_norm=1.0, mode="mean"), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = _plain(run, model, opt, ids[96:], y[96:], steps=80)
    return _out(losses, [model], _acc(model, ids[:96], y[:96]), 0.5)


class _SparseBow(nn.Module):
    """Bag-of-words counts arrive as a sparse COO matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(200, 32) * 0.05)
        self.b = nn.Parameter(torch.zeros(32))
        self.head = nn.Linear(32, 2)

    def forward(self, counts: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(torch.sparse.mm(counts, self.w) + self.b))


@healthy
def sparse_coo_bag_of_words_input(run) -> Outcome:
    ids, y = _bags(50)
    counts = torch.zeros(480, 200).scatter_add_(1, ids, torch.ones(480, 10)) / 10
    model = _SparseBow()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(counts[96:], y[96:], 80, 32):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb.to_sparse()), yb)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return _out(losses, [model], _acc(model, counts[:96].to_sparse(), y[:96]), 0.5)


class _DeepSets(nn.Module):
    """A list of point sets of different sizes in, one label per set out."""

    def __init__(self) -> None:
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.rho = nn.Linear(32, 2)

    def forward(self, sets: list[torch.Tensor]) -> torch.Tensor:
        return self.rho(torch.stack([self.phi(s).mean(0) for s in sets]))


@healthy
def list_of_variable_size_sets_input(run) -> Outcome:
    g = gen(51)
    sets, labels = [], []
    for _ in range(400):
        k = int(torch.randint(3, 12, (1,), generator=g))
        spread = 0.3 + 0.7 * float(torch.rand(1, generator=g))
        sets.append(torch.randn(k, 2, generator=g) * spread)
        labels.append(int(spread > 0.65))
    y = torch.tensor(labels)
    model = _DeepSets()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for _ in range(60):
        idx = torch.randint(80, 400, (32,), generator=g)
        opt.zero_grad()
        loss = F.cross_entropy(model([sets[int(i)] for i in idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return _out(losses, [model], _acc(model, sets[:80], y[:80]), max(y[:80].float().mean(), 1 - y[:80].float().mean()))


@healthy
def scripted_submodule(run) -> Outcome:
    """A block compiled with TorchScript inside an eager model."""
    xtr, ytr, xv, yv = _tab()
    model = nn.Sequential(nn.Linear(12, 32), torch.jit.script(nn.Sequential(nn.ReLU(), nn.Linear(32, 32), nn.ReLU())),
                          nn.Linear(32, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = _plain(run, model, opt, xtr, ytr)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def dataparallel_wrapper_on_cpu(run) -> Outcome:
    """``nn.DataParallel`` left in code that also runs on CPU (it calls the module directly there)."""
    xtr, ytr, xv, yv = _tab()
    model = nn.DataParallel(mlp(12, 32, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = _plain(run, model, opt, xtr, ytr)
    return _out(losses, [model], _acc(model.module, xv, yv), 0.25)


@healthy
def forward_wrapped_by_autocast_before_watch(run) -> Outcome:
    """As accelerate does for mixed precision: ``model.forward`` replaced by an autocast-wrapped forward."""
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 64, 4, depth=3)
    model.forward = torch.autocast("cpu", dtype=torch.bfloat16)(model.forward)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(xtr, ytr, 60, 32):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb).float(), yb)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def kfold_one_watch_per_fold(run) -> Outcome:
    """Three-fold cross-validation in one run: a fresh model, optimizer and watch per fold."""
    x, y, _, _ = _tab(n=608)
    folds = torch.arange(len(x)) % 3
    losses, accs, models = [], [], []
    for k in range(3):
        model = mlp(12, 32, 4)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        _watch(run, model, opt)
        train = folds != k
        fold_losses = []
        for xb, yb in batches(x[train], y[train], 40, 32, seed=k):
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            fold_losses.append(loss.detach())
        losses += fold_losses
        accs.append(_acc(model, x[~train], y[~train]))
        models.append(model)
    return _out(fold_losses, models, sum(accs) / 3, 0.25)


@healthy
def batchnorm_recalibrated_with_update_bn(run) -> Outcome:
    """After training, BatchNorm statistics are recomputed over the training data (``swa_utils.update_bn``)."""
    x, y = images(320, seed=52)
    model = CNN()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(x[64:], y[64:], 40, 32):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    torch.optim.swa_utils.update_bn(DataLoader(TensorDataset(x[64:]), batch_size=64), model)
    return _out(losses, [model], _acc(model, x[:64], y[:64]), 0.25)


if __name__ == "__main__":
    report_bare(__name__)
