"""Blind round 21: root-cause ordering (NaN/Inf entering through the data mid-run vs a learning rate that really
diverges), configuration mistakes (decay on biases/norms/embeddings, pruned filters, a no-op unfreeze, parameters
left out of the optimizer, schedulers stepped per batch), data that lies in range (clamped or wrapped token ids,
channels-last images reshaped, one batch fed again and again, labels misaligned, blank or scaled-away inputs),
short runs (20-60 steps), and modules whose output never reaches the loss (discarded, detached, collapsed).

Written from the user docs only (docs/reference/rules.md, docs/topics/auditor.md, docs/guide/training-auditor.md,
docs/topics/frameworks.md, README.md): no rule or probe source, no other scenario module. Each expected ID was
picked from the rule catalogue before any scored run. Every buggy scenario is ``impl(run, bug=True)``; ``FIXED``
holds the same loop with ``bug=False``. The realism check (``python tests/scenarios/scenarios_blind21.py``) runs
both, and every control, without the watch, and prints a held-out quality (accuracy, minus an error, or an
embedding spread).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _blindkit import CNN, Encoder, GRUClassifier, SeqRegressor, batches, gen, images, mlp, sequences, tabular, tokens
from _kit import WATCH, bug, healthy
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import DataLoader, Dataset, TensorDataset

_BOTH = ("default", "every-step")
# (scenario, sampling) -> why the watch misses it (first scored run, before any change to the auditor)
KNOWN_MISSES: dict = {
    **{("deep_mlp_adam_lr_too_high", m): "no TW108: the root reported is TW307 (update of 0.weight 1.8x its norm at"
       " step 0) with TW403, TW403, TW405, TW109 as its consequences; the learning rate is named, by the other rule"
       for m in _BOTH},
    ("empty_document_masked_mean_divides_by_zero", "default"): "TW101 (loss is nan at step 70) is the root, TW102 and"
    " TW108 its consequences; no TW105 for the masked mean's 0/0 inside the model (every-step names TW105 at head)",
}
FIXED: dict[str, Callable] = {}
CONTROLS: dict[str, Callable] = {}


def _pair(*ids: str, tolerated: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Register ``impl(run, bug)`` as the buggy scenario (its name) and its fixed twin in FIXED."""
    def register(impl: Callable) -> Callable:
        def scenario(run) -> float | None:
            return impl(run, True)
        scenario.__name__ = scenario.__qualname__ = impl.__name__
        scenario.__module__ = impl.__module__
        bug(*ids, tolerated=tolerated)(scenario)
        FIXED[impl.__name__] = lambda run: impl(run, False)
        return impl
    return register


def _control(fn: Callable) -> Callable:
    CONTROLS[fn.__name__] = fn
    return healthy(fn)


def _watch(run, model: nn.Module, opt: torch.optim.Optimizer) -> None:
    run.watch(model, opt, **WATCH)


def _bare(run) -> bool:
    return getattr(run, "bare", False)


def _out(model: nn.Module, *inputs, **kw) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = model(*inputs, **kw)
    model.train()
    return out[0] if isinstance(out, tuple) else out


def _acc(run, model: nn.Module, *inputs, y: torch.Tensor, **kw) -> float | None:
    """Held-out accuracy, measured only in the realism check (never inside a watched run)."""
    if not _bare(run):
        return None
    out = _out(model, *inputs, **kw)
    if not torch.isfinite(out).all():
        return 0.0
    return (out.argmax(-1) == y).float().mean().item()


def _neg_mse(run, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float | None:
    if not _bare(run):
        return None
    out = _out(model, x)
    err = F.mse_loss(out.view_as(y), y).item()
    return -err if err == err else float("-inf")


def _spread(run, enc: nn.Module, x: torch.Tensor) -> float | None:
    """Embedding spread relative to its magnitude (0: every input maps to one point)."""
    if not _bare(run):
        return None
    z = _out(enc, x)
    return ((z - z.mean(0)).abs().mean() / (z.abs().mean() + 1e-12)).item()


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad()
    loss.backward()
    opt.step()


# =============================== 1. root-cause ordering: NaN/Inf from the data vs real divergence ===============
@_pair("TW201")
def tabular_corrupt_row_mid_run(run, bug: bool):
    """One corrupted row (a NaN read from a damaged shard) reaches the batch of step 130 of 200."""
    x, y = tabular(1024, seed=3)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _watch(run, model, opt)
    for step, (xb, yb) in enumerate(batches(x[:768], y[:768], 200, 32)):
        if bug and step == 130:
            xb = xb.clone()
            xb[7, 4] = float("nan")
        _step(opt, F.cross_entropy(model(xb), yb))
    return _acc(run, model, x[768:], y=y[768:])


def _flag_data(seed: int = 4):
    x, y = tabular(2048, d=11, seed=seed)
    flag = torch.randint(0, 2, (2048, 1), generator=gen(seed)).float()
    flag[1400:] = 1.0  # a feature that, late in the time-ordered log, is always on
    return torch.cat([x * 3 + 5, flag], 1), y


@_pair("TW201")
def collate_zero_std_normalisation(run, bug: bool):
    """A collate function standardises each batch by its own std: once a column is constant (time-ordered data,
    from step ~44 of 80), 0/0 makes NaN inputs."""
    x, y = _flag_data()

    def collate(rows):
        xb = torch.stack([r[0] for r in rows])
        std = xb.std(0) if bug else xb.std(0).clamp_min(1e-3)
        return (xb - xb.mean(0)) / std, torch.stack([r[1] for r in rows])

    loader = DataLoader(TensorDataset(x[:1792], y[:1792]), batch_size=32, shuffle=False, collate_fn=collate)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _watch(run, model, opt)
    for step, (xb, yb) in enumerate(loader):
        if step == 80:
            break
        _step(opt, F.cross_entropy(model(xb), yb))
    xv = x[:1400]
    xv = (xv - xv.mean(0)) / xv.std(0)
    return _acc(run, model, xv[-256:], y=y[1144:1400])


def _counts(seed: int = 5):
    g = gen(seed)
    n = 3000
    y = torch.randint(0, 4, (n,), generator=g)
    mu = torch.rand(4, 8, generator=g) * 2 + 1
    scale = torch.ones(n, 1)
    scale[2000:] = 0.08  # new users with a short history: many zero counts
    return torch.poisson(torch.exp(mu[y]) * scale, generator=g), y


@_pair("TW201")
def log_of_zero_count_features(run, bug: bool):
    """Feature engineering takes log(count); the time-ordered stream reaches new users with zero counts at step
    ~62 of 90 and log(0) = -inf enters the model."""
    counts, y = _counts()
    feats = torch.log(counts) if bug else torch.log1p(counts)
    model = mlp(d=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _watch(run, model, opt)
    for xb, yb in batches(feats[:2880], y[:2880], 90, 32, shuffle=False):
        _step(opt, F.cross_entropy(model(xb), yb))
    return _acc(run, model, torch.log1p(counts[2880:]), y=y[2880:])


@_pair("TW201")
def lstm_sensor_fails_mid_run(run, bug: bool):
    """A sensor channel starts reading NaN at step 150 of 220 (a failed device in the stream)."""
    s, t = sequences(800)
    model = SeqRegressor()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    _watch(run, model, opt)
    for step, (sb, tb) in enumerate(batches(s[:640], t[:640], 220, 32)):
        if bug and step >= 150:
            sb = sb.clone()
            sb[::5, 4:, 2] = float("nan")
        _step(opt, F.mse_loss(model(sb), tb))
    return _neg_mse(run, model, s[640:], t[640:])


@_pair("TW202")
def regression_unlabelled_rows_mid_run(run, bug: bool):
    """Rows with a missing target (NaN) appear in the later part of a time-ordered table, from step ~47 of 70."""
    g = gen(6)
    x = torch.randn(2400, 8, generator=g)
    y = x @ torch.randn(8, generator=g) + 0.1 * torch.randn(2400, generator=g)
    y = clean = y.unsqueeze(1)
    if bug:
        y = y.clone()
        y[1500::17] = float("nan")
    model = mlp(d=8, c=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _watch(run, model, opt)
    for xb, yb in batches(x[:2240], y[:2240], 70, 32, shuffle=False):
        _step(opt, F.mse_loss(model(xb), yb))
    return _neg_mse(run, model, x[2240:], clean[2240:])


@_pair("TW108", tolerated=("TW307",))
def deep_mlp_adam_lr_too_high(run, bug: bool):
    """Adam at lr=0.3 on a 4-layer MLP over clean, standardised data: the loss climbs."""
    x, y = tabular(1024, seed=7)
    model = mlp(depth=4)
    opt = torch.optim.Adam(model.parameters(), lr=0.3 if bug else 3e-3)
    _watch(run, model, opt)
    for xb, yb in batches(x[:768], y[:768], 120, 32):
        _step(opt, F.cross_entropy(model(xb), yb))
    return _acc(run, model, x[768:], y=y[768:])


@_pair("TW307", tolerated=("TW108",))
def warmup_never_capped(run, bug: bool):
    """A linear warm-up written as ``(s + 1) / 10`` without ``min(1, ...)``: the rate keeps rising, 30x by step
    300, and SGD with momentum diverges mid-run."""
    x, y = tabular(1024, seed=8)
    model = mlp(depth=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    warm = (lambda s: (s + 1) / 10) if bug else (lambda s: min(1.0, (s + 1) / 10))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warm)
    _watch(run, model, opt)
    for xb, yb in batches(x[:768], y[:768], 300, 32):
        _step(opt, F.cross_entropy(model(xb), yb))
        sched.step()
    return _acc(run, model, x[768:], y=y[768:])


class PaddedEncoder(nn.Module):
    def __init__(self, vocab: int = 200, dim: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        layer = nn.TransformerEncoderLayer(dim, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 2)
        self.min_length = 1.0  # 0.0: the masked mean divides by the length as it is

    def forward(self, ids: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.emb(ids), src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        return self.head((h * keep).sum(1) / keep.sum(1).clamp_min(self.min_length))


def _padded(n: int = 1024, seed: int = 9, empty_from: int | None = None):
    ids, y = tokens(n, length=16, vocab=200, seed=seed)
    ids = ids.clamp_min(1)
    lengths = torch.randint(4, 17, (n,), generator=gen(seed))
    if empty_from is not None:
        lengths[empty_from::40] = 0  # documents whose text was empty after cleaning
    pad = torch.arange(16).unsqueeze(0) >= lengths.unsqueeze(1)
    return ids.masked_fill(pad, 0), pad, y


@_pair("TW105")
def empty_document_masked_mean_divides_by_zero(run, bug: bool):
    """From step ~70 a few empty documents arrive (valid ids, every position padding); the masked mean pooling
    divides by their length, 0/0 = NaN inside the model."""
    ids, pad, y = _padded(empty_from=2240, n=2944)
    model = PaddedEncoder()
    model.min_length = 0.0 if bug else 1.0
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    _watch(run, model, opt)
    g = gen(1)
    for step in range(90):
        idx = torch.arange(step * 32, step * 32 + 32) if step >= 70 else torch.randint(0, 2048, (32,), generator=g)
        if step >= 70:
            idx = idx - 70 * 32 + 2240
        _step(opt, F.cross_entropy(model(ids[idx], pad[idx]), y[idx]))
    vi, vp, vy = _padded(512, seed=9)
    return _acc(run, model, vi[:256], vp[:256], y=vy[:256])


# =============================== 2. configuration mistakes =====================================================
class BagClassifier(nn.Module):
    def __init__(self, vocab: int = 300, dim: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.head = nn.Sequential(nn.Linear(dim, 32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids).mean(1))


@_pair("TW303")
def adamw_decay_on_embeddings_and_norms(run, bug: bool):
    """AdamW(weight_decay=0.5) over every parameter of a bag-of-embeddings classifier, the rare-token embeddings
    and biases included (the fixed twin decays only the hidden matrices)."""
    ids, y = tokens(1280, vocab=300, seed=10, heavy_tail=True)
    model = BagClassifier(dim=16)
    if bug:
        groups = [{"params": list(model.parameters()), "weight_decay": 0.5}]
    else:
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "emb" not in n and "pos" not in n]
        rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "emb" not in n and "pos" not in n)]
        groups = [{"params": decay, "weight_decay": 0.5}, {"params": rest, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=2e-2)
    _watch(run, model, opt)
    for xb, yb in batches(ids[:1024], y[:1024], 150, 32):
        _step(opt, F.cross_entropy(model(xb), yb))
    return _acc(run, model, ids[1024:], y=y[1024:])


@_pair("TW303")
def sgd_decay_on_batchnorm_cnn(run, bug: bool):
    """SGD with weight_decay=5e-2 (copied from an AdamW recipe) on a CNN's every tensor: BatchNorm scales and
    biases decay too."""
    x, y = images(384, seed=11)
    model = CNN()
    if bug:
        groups = [{"params": list(model.parameters()), "weight_decay": 5e-2}]
    else:
        groups = [{"params": [p for p in model.parameters() if p.dim() > 1], "weight_decay": 5e-2},
                  {"params": [p for p in model.parameters() if p.dim() <= 1], "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=0.05, momentum=0.9)
    _watch(run, model, opt)
    for xb, yb in batches(x[:256], y[:256], 60, 32):
        _step(opt, F.cross_entropy(model(xb), yb))
    return _acc(run, model, x[256:], y=y[256:])


@_pair("TW411")
def structured_pruning_applied_before_training(run, bug: bool):
    """ln_structured pruning (75% of the filters of both convolutions) applied at initialisation, meant for after
    training: the masks keep those filters at zero, 40 steps."""
    x, y = images(384, seed=12)
    model = CNN(bn=False)
    if bug:
        prune.ln_structured(model.features[0], "weight", amount=0.75, n=2, dim=0)
        prune.ln_structured(model.features[3], "weight", amount=0.75, n=2, dim=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _watch(run, model, opt)
    for xb, yb in batches(x[:256], y[:256], 40, 32):
        _step(opt, F.cross_entropy(model(xb), yb))
    return _acc(run, model, x[256:], y=y[256:])


@_pair("TW411")
def mlp_hidden_rows_pruned(run, bug: bool):
    """Structured pruning of 85% of the hidden neurons (weight rows) of a tabular MLP's first layer."""
    x, y = tabular(1024, seed=13)
    model = mlp(h=48, depth=3)
    if bug:
        prune.ln_structured(model[0], "weight", amount=0.85, n=1, dim=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _watch(run, model, opt)
    for xb, yb in batches(x[:768], y[:768], 60, 32):
        _step(opt, F.cross_entropy(model(xb), yb))
    return _acc(run, model, x[768:], y=y[768:])


@_pair("TW305")
def unfreeze_written_as_attribute(run, bug: bool):
    """Embeddings frozen for a 10-step warm-up, then 'unfrozen' with ``model.emb.requires_grad = True`` (no-op):
    they never train, 60 steps."""
    ids, y = tokens(1280, vocab=300, seed=14)
    model = BagClassifier(dim=16)
    model.emb.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    _watch(run, model, opt)
    for step, (xb, yb) in enumerate(batches(ids[:1024], y[:1024], 60, 32)):
        if step == 10:
            if bug:
                model.emb.requires_grad = True
            else:
                model.emb.requires_grad_(True)
        _step(opt, F.cross_entropy(model(xb), yb))
    return _acc(run, model, ids[1024:], y=y[1024:])


@_pair("TW301")
def head_replaced_after_optimizer(run, bug: bool):
    """Fine-tuning a frozen pretrained CNN: the optimizer is built on the old 10-class head, then the head is
    replaced for the 4-class task (25 steps): the new head never moves."""
    x, y = images(384, seed=15)
    model = _pretrained_cnn(x[:256], y[:256])
    model.head = nn.Linear(16, 10)
    if bug:
        opt = torch.optim.Adam(model.head.parameters(), lr=1e-2)
        model.head = nn.Linear(16, 4)
    else:
        model.head = nn.Linear(16, 4)
        opt = torch.optim.Adam(model.head.parameters(), lr=1e-2)
    _watch(run, model, opt)
    for xb, yb in batches(x[:256], y[:256], 25, 32):
        _step(opt, F.cross_entropy(model(xb), yb))
    return _acc(run, model, x[256:], y=y[256:])


def _pretrained_cnn(x: torch.Tensor, y: torch.Tensor) -> CNN:
    """A CNN trained 40 steps unwatched (a stand-in for pretrained weights), its features frozen and in eval()."""
    model = CNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for xb, yb in batches(x, y, 40, 32, seed=99):
        _step(opt, F.cross_entropy(model(xb), yb))
    model.features.requires_grad_(False)
    model.features.eval()
    return model


class AutoEncoder(nn.Module):
    def __init__(self, d: int = 16, k: int = 4) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, k))
        self.decoder = nn.Sequential(nn.Linear(k, 32), nn.ReLU(), nn.Linear(32, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _lowrank(n: int = 1280, seed: int = 16) -> torch.Tensor:
    g = gen(seed)
    return torch.randn(n, 4, generator=g) @ torch.randn(4, 16, generator=g) / 2 + 0.05 * torch.randn(n, 16,
                                                                                                      generator=g)


@_pair("TW301")
def autoencoder_decoder_left_out(run, bug: bool):
    """The optimizer is given only the encoder's parameters; the decoder stays at its random init."""
    x = _lowrank()
    model = AutoEncoder()
    params = model.encoder.parameters() if bug else model.parameters()
    opt = torch.optim.Adam(params, lr=3e-3)
    _watch(run, model, opt)
    for xb, _ in batches(x[:1024], x[:1024], 100, 32):
        _step(opt, F.mse_loss(model(xb), xb))
    return _neg_mse(run, model, x[1024:], x[1024:])


@_pair("TW308")
def steplr_stepped_every_batch(run, bug: bool):
    """StepLR(step_size=10, gamma=0.1) meant per epoch, stepped per batch: the rate is 1e-4 of its start by step
    40 of 120."""
    x, y = images(512, seed=17)
    model = CNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10 if bug else 1000, gamma=0.1)
    _watch(run, model, opt)
    for xb, yb in batches(x[:384], y[:384], 120, 32):
        _step(opt, F.cross_entropy(model(xb), yb))
        sched.step()
    return _acc(run, model, x[384:], y=y[384:])


@_pair("TW308")
def exponential_lr_per_batch_lstm(run, bug: bool):
    """ExponentialLR(gamma=0.8) meant per epoch, stepped per batch of an LSTM classifier (150 steps)."""
    ids, y = tokens(1280, vocab=200, seed=18)
    model = GRUClassifier(lstm=True)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.8)
    _watch(run, model, opt)
    for step, (xb, yb) in enumerate(batches(ids[:1024], y[:1024], 150, 32)):
        _step(opt, F.cross_entropy(model(xb), yb))
        if bug or step % 32 == 31:
            sched.step()
    return _acc(run, model, ids[1024:], y=y[1024:])


@_pair("TW308")
def adam_eps_typo(run, bug: bool):
    """Adam(eps=1e-1), a typo for 1e-8: each update is divided by 0.1 plus the gradient's scale (50 steps)."""
    x, y = tabular(1024, seed=19)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, eps=1e-1 if bug else 1e-8)
    _watch(run, model, opt)
    for xb, yb in batches(x[:768], y[:768], 50, 32):
        _step(opt, F.cross_entropy(model(xb), yb))
    return _acc(run, model, x[768:], y=y[768:])


@_pair("TW304")
def grad_accumulation_zeroed_per_epoch(run, bug: bool):
    """Gradient accumulation over 4 batches, but ``zero_grad()`` sits at the top of the epoch loop instead of
    after each optimizer step: every step applies all the epoch's gradients so far."""
    x, y = tabular(1280, seed=20)
    loader = DataLoader(TensorDataset(x[:1024], y[:1024]), batch_size=16, shuffle=True, generator=gen(2))
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    _watch(run, model, opt)
    for _ in range(3):
        if bug:
            opt.zero_grad()
        for i, (xb, yb) in enumerate(loader):
            (F.cross_entropy(model(xb), yb) / 4).backward()
            if i % 4 == 3:
                opt.step()
                if not bug:
                    opt.zero_grad()
    return _acc(run, model, x[1024:], y=y[1024:])


# =============================== 3. data that lies in range ====================================================
@_pair("TW212")
def token_ids_clamped_bag_of_embeddings(run, bug: bool):
    """A 300-id tokenizer feeding ``nn.Embedding(120)`` through ``ids.clamp(max=119)`` in the collate (60
    steps); the fixed twin sizes the table from the tokenizer."""
    ids, y = tokens(1280, vocab=300, seed=21)
    model = BagClassifier(vocab=120 if bug else 300, dim=16)

    def collate(rows):
        xb = torch.stack([r[0] for r in rows])
        return (xb.clamp(max=119) if bug else xb), torch.stack([r[1] for r in rows])

    loader = DataLoader(TensorDataset(ids[:1024], y[:1024]), batch_size=32, shuffle=True, collate_fn=collate,
                        generator=gen(3))
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    _watch(run, model, opt)
    step = 0
    while step < 60:
        for xb, yb in loader:
            _step(opt, F.cross_entropy(model(xb), yb))
            step += 1
            if step == 60:
                break
    return _acc(run, model, ids[1024:].clamp(max=119) if bug else ids[1024:], y=y[1024:])


@_pair("TW212")
def token_ids_wrapped_modulo(run, bug: bool):
    """A 300-id vocabulary folded into ``nn.Embedding(200)`` with ``ids % 200``: ids 200-299 share rows with
    0-99 (bag of embeddings, 100 steps)."""
    ids, y = tokens(1280, vocab=300, seed=22)
    model = BagClassifier(vocab=200 if bug else 300, dim=16)
    fold = (lambda t: t % 200) if bug else (lambda t: t)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    _watch(run, model, opt)
    for xb, yb in batches(ids[:1024], y[:1024], 100, 32):
        _step(opt, F.cross_entropy(model(fold(xb)), yb))
    return _acc(run, model, fold(ids[1024:]), y=y[1024:])


class ChannelsLastImages(Dataset):
    """Images stored channels-last (H, W, C), as decoded from files."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x.permute(0, 2, 3, 1).contiguous(), y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


def _colour_images(n: int = 512, hw: int = 16, seed: int = 23) -> tuple[torch.Tensor, torch.Tensor]:
    """A blob anywhere in the image; the class is its colour (the channel that dominates)."""
    g = gen(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    yy, xx = torch.meshgrid(torch.arange(hw).float(), torch.arange(hw).float(), indexing="ij")
    c = torch.rand(n, 2, generator=g) * (hw - 1)
    blob = torch.exp(-((yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2) / hw)
    tint = torch.full((n, 3), 0.3)
    tint[torch.arange(n), y] = 1.0
    x = blob.unsqueeze(1) * tint[:, :, None, None] + 0.05 * torch.randn(n, 3, hw, hw, generator=g)
    return (x - x.mean()) / x.std(), y


@_pair("TW213")
def channels_last_reshaped_in_collate(run, bug: bool):
    """The collate turns (N, H, W, C) into NCHW with ``reshape`` instead of ``permute`` (CNN, 60 steps)."""
    x, y = _colour_images()

    def collate(rows):
        xb = torch.stack([r[0] for r in rows])
        n, h, w, c = xb.shape
        return (xb.reshape(n, c, h, w) if bug else xb.permute(0, 3, 1, 2)), torch.stack([r[1] for r in rows])

    loader = DataLoader(ChannelsLastImages(x[:384], y[:384]), batch_size=32, shuffle=True, collate_fn=collate,
                        generator=gen(4))
    model = CNN(classes=3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _watch(run, model, opt)
    step = 0
    while step < 60:
        for xb, yb in loader:
            _step(opt, F.cross_entropy(model(xb), yb))
            step += 1
            if step == 60:
                break
    xv = x[384:].permute(0, 2, 3, 1).contiguous()
    xv = xv.reshape(len(xv), 3, 16, 16) if bug else xv.permute(0, 3, 1, 2)
    return _acc(run, model, xv, y=y[384:])


@_pair("TW214")
def batch_hoisted_out_of_loop(run, bug: bool):
    """``xb, yb = next(iter(loader))`` moved above the loop during a refactor: 40 steps on one batch."""
    x, y = tabular(1024, seed=24)
    loader = DataLoader(TensorDataset(x[:768], y[:768]), batch_size=32, shuffle=True, generator=gen(5))
    model = mlp(h=64)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    _watch(run, model, opt)
    it = iter(loader)
    xb, yb = next(it)
    for _ in range(40):
        if not bug:
            try:
                xb, yb = next(it)
            except StopIteration:
                it = iter(loader)
                xb, yb = next(it)
        _step(opt, F.cross_entropy(model(xb), yb))
    return _acc(run, model, x[768:], y=y[768:])


@_pair("TW206")
def unshuffled_loader_restarted_each_step(run, bug: bool):
    """``next(iter(loader))`` inside the loop over an unshuffled loader: its first batch, rebuilt every step."""
    x, y = tabular(1024, seed=25)
    loader = DataLoader(TensorDataset(x[:768], y[:768]), batch_size=32, shuffle=False)
    model = mlp(h=64)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    _watch(run, model, opt)
    it = iter(loader)
    for _ in range(60):
        if bug:
            xb, yb = next(iter(loader))
        else:
            try:
                xb, yb = next(it)
            except StopIteration:
                it = iter(loader)
                xb, yb = next(it)
        _step(opt, F.cross_entropy(model(xb), yb))
    return _acc(run, model, x[768:], y=y[768:])


@_pair("TW214", tolerated=("TW206",))
def slice_offset_from_epoch_not_step(run, bug: bool):
    """The batch offset is computed from the epoch (``(step // per_epoch) * batch``) instead of the step: one slice
    ``x[0:32]`` for a whole epoch, then the next (tabular MLP, 60 steps)."""
    x, y = tabular(1024, seed=26)
    model = mlp(h=64)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    _watch(run, model, opt)
    per_epoch = 768 // 32
    for step in range(60):
        start = (step // per_epoch) * 32 if bug else (step % per_epoch) * 32
        _step(opt, F.cross_entropy(model(x[start:start + 32]), y[start:start + 32]))
    return _acc(run, model, x[768:], y=y[768:])


class OffByOneDataset(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, bug: bool) -> None:
        self.x, self.y, self.shift = x, y, 1 if bug else 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i - self.shift]  # the bug: labels read one row back


@_pair("TW109")
def dataset_labels_off_by_one(run, bug: bool):
    """A Dataset returns ``y[i - 1]`` with ``x[i]``: every label belongs to the previous row (MLP, 120 steps over
    2,048 rows)."""
    x, y = tabular(2304, seed=27)
    loader = DataLoader(OffByOneDataset(x[:2048], y[:2048], bug), batch_size=32, shuffle=True, generator=gen(6))
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _watch(run, model, opt)
    step = 0
    while step < 120:
        for xb, yb in loader:
            _step(opt, F.cross_entropy(model(xb), yb))
            step += 1
            if step == 120:
                break
    return _acc(run, model, x[2048:], y=y[2048:])


@_pair("TW109")
def zipped_loaders_shuffled_apart(run, bug: bool):
    """Inputs and labels in two shuffled DataLoaders zipped together: each shuffles on its own (GRU, 100 steps)."""
    ids, y = tokens(2304, vocab=200, seed=28)
    model = GRUClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    _watch(run, model, opt)
    if bug:
        data = zip(DataLoader(ids[:2048], batch_size=32, shuffle=True, generator=gen(7)),
                   DataLoader(y[:2048], batch_size=32, shuffle=True, generator=gen(8)), strict=False)
    else:
        data = iter(DataLoader(TensorDataset(ids[:2048], y[:2048]), batch_size=32, shuffle=True, generator=gen(7)))
    for step, (xb, yb) in enumerate(data):
        if step == 64:
            break
        _step(opt, F.cross_entropy(model(xb), yb))
    return _acc(run, model, ids[2048:], y=y[2048:])


class PixelDataset(Dataset):
    """Images decoded as 0-255 floats; the transform scales them, then stores uint8 'to save memory'."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, bug: bool) -> None:
        self.raw = ((x - x.min()) / (x.max() - x.min()) * 255).round()
        self.y, self.bug = y, bug

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        img = self.raw[i] / 255
        img = img.to(torch.uint8).float() if self.bug else img  # the bug: [0, 1] cast to uint8 is 0 (or 1)
        return (img - 0.5) / 0.25, self.y[i]


@_pair("TW204")
def uint8_cast_after_scaling_blanks_images(run, bug: bool):
    """Scaled images cast to uint8: every pixel becomes 0 (a blank image), 50 steps of a CNN."""
    x, y = images(512, seed=29)
    ds = PixelDataset(x, y, bug)
    loader = DataLoader(torch.utils.data.Subset(ds, range(384)), batch_size=32, shuffle=True, generator=gen(9))
    model = CNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _watch(run, model, opt)
    step = 0
    while step < 50:
        for xb, yb in loader:
            _step(opt, F.cross_entropy(model(xb), yb))
            step += 1
            if step == 50:
                break
    xv = torch.stack([ds[i][0] for i in range(384, 512)])
    return _acc(run, model, xv, y=y[384:])


@_pair("TW203")
def scaled_by_max_including_sentinel(run, bug: bool):
    """Features divided by their column max, computed before the rows holding a 999999 missing-value code were
    dropped: every kept value is ~1e-6 (tabular MLP, 80 steps)."""
    x, y = tabular(1088, seed=30)
    raw = x * 2 + 10
    raw[1024:] = 999999.0  # missing-value code rows, dropped below
    scale = raw.abs().max(0).values if bug else raw[:1024].abs().max(0).values
    feats, y = (raw / scale)[:1024], y[:1024]
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _watch(run, model, opt)
    for xb, yb in batches(feats[:768], y[:768], 80, 32):
        _step(opt, F.cross_entropy(model(xb), yb))
    return _acc(run, model, feats[768:], y=y[768:])


# =============================== 5. outputs that never reach the loss, graph cuts, collapse =====================
class MultiTask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(12, 64), nn.ReLU())
        self.cls_head = nn.Linear(64, 4)
        self.aux_head = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor):
        h = self.trunk(x)
        return self.cls_head(h), self.aux_head(h)


def _multitask_data():
    x, y = tabular(1280, seed=31)
    aux = (x[:, :3] ** 2).sum(1, keepdim=True)
    return x, y, aux


@_pair("TW413")
def aux_head_loss_term_forgotten(run, bug: bool):
    """A multi-task model's regression head runs every step, but its loss term was never added to the total."""
    x, y, aux = _multitask_data()
    model = MultiTask()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _watch(run, model, opt)
    both = torch.cat([y.unsqueeze(1).float(), aux], 1)
    for xb, tb in batches(x[:1024], both[:1024], 100, 32):
        logits, reg = model(xb)
        loss = F.cross_entropy(logits, tb[:, 0].long())
        if not bug:
            loss = loss + F.mse_loss(reg, tb[:, 1:])
        _step(opt, loss)
    if not _bare(run):
        return None
    model.eval()
    with torch.no_grad():
        err = F.mse_loss(model(x[1024:])[1], aux[1024:]).item()
    return -err


class DiscardingSeqModel(nn.Module):
    def __init__(self, bug: bool) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 24)
        self.rnn = nn.GRU(24, 24, batch_first=True)
        self.head = nn.Linear(24, 1)
        self.bug = bug

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        h = self.inp(s)
        if self.bug:
            self.rnn(h)  # the bug: the recurrent output is computed and dropped
            return self.head(h.mean(1))
        return self.head(self.rnn(h)[0][:, -1])


@_pair("TW413")
def recurrent_output_discarded(run, bug: bool):
    """``self.rnn(h)`` without assigning its output; the head pools the projected inputs instead (150 steps)."""
    s, t = sequences(800, seed=32)
    model = DiscardingSeqModel(bug)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    _watch(run, model, opt)
    for sb, tb in batches(s[:640], t[:640], 150, 32):
        _step(opt, F.mse_loss(model(sb), tb))
    return _neg_mse(run, model, s[640:], t[640:])


class DetachedEncoderClassifier(nn.Module):
    def __init__(self, bug: bool) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, 6))
        self.head = nn.Linear(6, 4)
        self.bug = bug

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        return self.head(z.detach() if self.bug else z)


@_pair("TW110")
def encoder_features_detached(run, bug: bool):
    """``self.head(self.encoder(x).detach())`` left over from a linear-probe experiment: the encoder, never
    pretrained, gets no gradient (30 steps)."""
    x, y = tabular(1024, seed=33)
    model = DetachedEncoderClassifier(bug)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    _watch(run, model, opt)
    for xb, yb in batches(x[:768], y[:768], 30, 32):
        _step(opt, F.cross_entropy(model(xb), yb))
    return _acc(run, model, x[768:], y=y[768:])


class DataEmbeddingBag(BagClassifier):
    def __init__(self, bug: bool) -> None:
        super().__init__(vocab=300, dim=16)
        self.bug = bug

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.emb(ids)
        return self.head((e.data if self.bug else e).mean(1))  # the bug: .data drops the graph to the table


@_pair("TW110")
def embedding_output_through_data(run, bug: bool):
    """The pooled ``self.emb(ids).data`` reaches the head: the embedding table never gets a gradient (80
    steps)."""
    ids, y = tokens(1280, vocab=300, seed=34)
    model = DataEmbeddingBag(bug)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    _watch(run, model, opt)
    for xb, yb in batches(ids[:1024], y[:1024], 80, 32):
        _step(opt, F.cross_entropy(model(xb), yb))
    return _acc(run, model, ids[1024:], y=y[1024:])


class Siamese(nn.Module):
    def __init__(self, predictor: bool = True) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32))
        if predictor:  # SimSiam's; the MSE and NT-Xent loops have none
            self.predictor = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def _clusters(n: int = 1280, seed: int = 35) -> torch.Tensor:
    g = gen(seed)
    centres = torch.randn(8, 16, generator=g) * 2
    return centres[torch.randint(0, 8, (n,), generator=g)] + 0.5 * torch.randn(n, 16, generator=g)


@_pair("TW414")
def simsiam_without_stop_gradient(run, bug: bool):
    """SimSiam's ``-cos(p(z1), z2)`` with the stop-gradient on ``z2`` forgotten (200 steps)."""
    x = _clusters()
    model = Siamese()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _watch(run, model, opt)
    for step in range(200):
        xb = x[(step * 64) % 1024:(step * 64) % 1024 + 64]
        v1, v2 = xb + 0.3 * torch.randn_like(xb), xb + 0.3 * torch.randn_like(xb)
        z1, z2 = model(v1), model(v2)
        t1, t2 = (z1, z2) if bug else (z1.detach(), z2.detach())
        loss = -(F.cosine_similarity(model.predictor(z1), t2).mean()
                 + F.cosine_similarity(model.predictor(z2), t1).mean()) / 2
        _step(opt, loss)
    return _spread(run, model, x[1024:])


@_pair("TW414")
def byol_style_mse_between_views(run, bug: bool):
    """Two views' projections pulled together with MSE, both with gradients and nothing keeping them apart (the
    fixed twin adds a VICReg variance term), 120 steps."""
    x = _clusters(seed=36)
    model = Siamese(predictor=False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _watch(run, model, opt)
    for step in range(120):
        xb = x[(step * 64) % 1024:(step * 64) % 1024 + 64]
        z1 = model(xb + 0.3 * torch.randn_like(xb))
        z2 = model(xb + 0.3 * torch.randn_like(xb))
        loss = F.mse_loss(z1, z2)
        if not bug:
            loss = loss + sum(F.relu(1 - torch.sqrt(z.var(0) + 1e-4)).mean() for z in (z1, z2))
        _step(opt, loss)
    return _spread(run, model, x[1024:])


# =============================== healthy controls: correct loops that tempt the rules ==========================
@_control
def full_batch_tabular_adam(run):
    """The whole 300-row training set as one batch every step (200 steps)."""
    x, y = tabular(556, seed=40)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    for _ in range(200):
        _step(opt, F.cross_entropy(model(x[:300]), y[:300]))
    return _acc(run, model, x[300:], y=y[300:])


@_control
def frozen_backbone_finetune(run):
    """A CNN backbone frozen on purpose (requires_grad_(False), kept in eval mode); only the head is optimised."""
    x, y = images(384, seed=41)
    model = _pretrained_cnn(x[:128], y[:128])
    model.head = nn.Linear(16, 4)
    opt = torch.optim.Adam(model.head.parameters(), lr=1e-2)
    _watch(run, model, opt)
    for xb, yb in batches(x[:256], y[:256], 60, 32):
        _step(opt, F.cross_entropy(model(xb), yb))
    return _acc(run, model, x[256:], y=y[256:])


@_control
def adamw_no_decay_group_transformer(run):
    """Weight decay 0.1 on matrices only; biases, LayerNorms, embeddings and positions in a no-decay group."""
    ids, y = tokens(1280, vocab=200, seed=42)
    model = Encoder()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "emb" not in n and "pos" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "emb" not in n and "pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=3e-3)
    _watch(run, model, opt)
    for xb, yb in batches(ids[:1024], y[:1024], 100, 32):
        _step(opt, F.cross_entropy(model(xb), yb))
    return _acc(run, model, ids[1024:], y=y[1024:])


@_control
def label_smoothing_cnn(run):
    """CrossEntropyLoss(label_smoothing=0.2): the loss floor sits well above 0."""
    x, y = images(384, seed=43)
    model = CNN(dropout=0.2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    crit = nn.CrossEntropyLoss(label_smoothing=0.2)
    _watch(run, model, opt)
    for xb, yb in batches(x[:256], y[:256], 60, 32):
        _step(opt, crit(model(xb), yb))
    return _acc(run, model, x[256:], y=y[256:])


class TokenLM(nn.Module):
    def __init__(self, vocab: int = 101, dim: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, 16, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.out = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.encoder(self.emb(ids) + self.pos[:, :ids.shape[1]]))


def _copy_sequences(n: int, seed: int) -> torch.Tensor:
    """Sequences of 8 ids repeated twice: a masked id is recoverable from its twin."""
    half = torch.randint(0, 100, (n, 8), generator=gen(seed))
    return torch.cat([half, half], 1)


@_control
def masked_lm_ignore_index(run):
    """BERT-style masked LM: 15% of positions replaced by a [MASK] id (100), labels -100 elsewhere."""
    seqs = _copy_sequences(1280, 44)
    model = TokenLM()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    _watch(run, model, opt)
    g = gen(10)
    for xb, _ in batches(seqs[:1024], seqs[:1024], 150, 32):
        masked = torch.rand(xb.shape, generator=g) < 0.15
        inp = xb.masked_fill(masked, 100)
        labels = xb.masked_fill(~masked, -100)
        _step(opt, F.cross_entropy(model(inp).reshape(-1, 101), labels.reshape(-1), ignore_index=-100))
    if not _bare(run):
        return None
    xv = seqs[1024:]
    masked = torch.rand(xv.shape, generator=gen(11)) < 0.15
    pred = _out(model, xv.masked_fill(masked, 100)).argmax(-1)
    return (pred[masked] == xv[masked]).float().mean().item()


@_control
def padded_batches_key_padding_mask(run):
    """Variable-length documents right-padded with id 0 (padding_idx) and a key padding mask (none empty)."""
    ids, pad, y = _padded(1280, seed=45)
    model = PaddedEncoder()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    _watch(run, model, opt)
    g = gen(12)
    for _ in range(80):
        idx = torch.randint(0, 1024, (32,), generator=g)
        _step(opt, F.cross_entropy(model(ids[idx], pad[idx]), y[idx]))
    return _acc(run, model, ids[1024:], pad[1024:], y=y[1024:])


@_control
def gradient_accumulation_done_right(run):
    """Micro-batches of 8 accumulated over 4 (BatchNorm-free MLP), zero_grad after each optimizer step."""
    x, y = tabular(1280, seed=46)
    loader = DataLoader(TensorDataset(x[:1024], y[:1024]), batch_size=8, shuffle=True, generator=gen(13))
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _watch(run, model, opt)
    opt.zero_grad()
    for i, (xb, yb) in enumerate(loader):
        (F.cross_entropy(model(xb), yb) / 4).backward()
        if i % 4 == 3:
            opt.step()
            opt.zero_grad()
    return _acc(run, model, x[1024:], y=y[1024:])


@_control
def cosine_warm_restarts_per_batch(run):
    """CosineAnnealingWarmRestarts(T_0=25) stepped per batch: the rate dips near 0 before every restart."""
    ids, y = tokens(1280, vocab=200, seed=47)
    model = GRUClassifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=25, eta_min=0.0)
    _watch(run, model, opt)
    for xb, yb in batches(ids[:1024], y[:1024], 150, 32):
        _step(opt, F.cross_entropy(model(xb), yb))
        sched.step()
    return _acc(run, model, ids[1024:], y=y[1024:])


@_control
def simclr_ntxent_with_negatives(run):
    """SimCLR's NT-Xent (temperature 0.2) over two noisy views: negatives keep the embeddings apart."""
    x = _clusters(seed=48)
    model = Siamese(predictor=False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _watch(run, model, opt)
    for step in range(120):
        xb = x[(step * 64) % 1024:(step * 64) % 1024 + 64]
        z = F.normalize(torch.cat([model(xb + 0.3 * torch.randn_like(xb)), model(xb + 0.3 * torch.randn_like(xb))]),
                        dim=1)
        sim = (z @ z.t() / 0.2).fill_diagonal_(float("-inf"))
        target = torch.cat([torch.arange(64, 128), torch.arange(64)])
        _step(opt, F.cross_entropy(sim, target))
    return _spread(run, model, x[1024:])


@_control
def log1p_counts_standardised_lstm(run):
    """Sparse event counts (many zeros) through log1p and standardised with training statistics, into an LSTM."""
    g = gen(49)
    counts = torch.poisson(torch.rand(1280, 10, 3, generator=g) * 2, generator=g)
    target = counts[:, :, 0].mean(1, keepdim=True) - counts[:, -1, 1:2]
    feats = torch.log1p(counts)
    feats = (feats - feats[:1024].mean((0, 1))) / feats[:1024].std((0, 1))
    model = SeqRegressor(d=3)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    _watch(run, model, opt)
    for sb, tb in batches(feats[:1024], target[:1024], 150, 32):
        _step(opt, F.mse_loss(model(sb), tb))
    return _neg_mse(run, model, feats[1024:], target[1024:])


# =============================== realism check ==================================================================
class _Bare:
    """A stand-in for tw.Run with no watch: trains the same loop for the realism check."""
    bare = True

    def watch(self, *args, **kwargs) -> None:
        return None


def main() -> None:
    torch.set_num_threads(1)
    chosen = sys.argv[1:]
    for name, fixed in FIXED.items():
        if chosen and name not in chosen:
            continue
        buggy = globals()[name]
        t0 = time.time()
        torch.manual_seed(0)
        q_bug = buggy(_Bare(), True)
        torch.manual_seed(0)
        q_fix = fixed(_Bare())
        print(f"{name:48s} bug {q_bug:8.3f}  fixed {q_fix:8.3f}  ({time.time() - t0:.1f} s)", flush=True)
    for name, fn in CONTROLS.items():
        if chosen and name not in chosen:
            continue
        t0 = time.time()
        torch.manual_seed(0)
        print(f"{name:48s} control {fn(_Bare()):8.3f}  ({time.time() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
