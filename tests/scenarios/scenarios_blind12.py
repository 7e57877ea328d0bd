"""Blind round 12: silent bugs in real-looking loops (a Lightning-like module driven by a small trainer, an
HF-Trainer-like loop whose model computes its loss from ``labels=``, gradient accumulation, bf16 autocast, param
groups, LR schedulers, Dataset classes with transforms, pandas tables, dict batches), and healthy controls that
tempt the same rules. Written from the user docs only; each expected rule was picked from them before any run.

Each scenario is a core ``_name(run, bug)`` that trains under ``_blindkit.watch`` and returns a ``score()``
closure (held-out data, no watch involved) used only by the standalone realism check: ``bug=False`` is the fixed
loop. ``SANITY`` maps a scenario's name to its core and the meaning of its score.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from _blindkit import Encoder, gen, mlp, tabular, tokens, watch
from _kit import bug, healthy
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

# (scenario, sampling) -> why the watch misses it (or flags the control), as measured on the first scored run at
# torch seed 0 (the same at seed 1)
_BOTH = ("default", "every-step")
KNOWN_MISSES: dict = {
    **{("next_iter_loader_every_step", m): "next(iter(loader)) each step: named as TW206 'batch at step 1 repeats "
       "the batch of step 0' (a fresh tensor of equal content), not TW214: TW206 is the documented rule for a "
       "loader restarted every step (its example; two earlier outside rounds labelled this case TW206)"
       for m in _BOTH},
}
SANITY: dict[str, tuple[Callable, str]] = {}


def case(*ids: str, metric: str = "held-out accuracy (higher is better)", tolerated: tuple[str, ...] = ()):
    """Registers ``_core`` as scenario ``core`` (buggy when ``ids`` are given, else a healthy control)."""
    def register(core: Callable) -> Callable:
        def scenario(run) -> None:
            core(run, True)
        scenario.__name__ = scenario.__qualname__ = core.__name__.lstrip("_")
        (bug(*ids, tolerated=tolerated) if ids else healthy)(scenario)
        SANITY[scenario.__name__] = (core, metric)
        return core
    return register


def accuracy(model: nn.Module, x, y: torch.Tensor) -> Callable[[], float]:
    def score() -> float:
        model.eval()
        with torch.no_grad():
            out = model(**x) if isinstance(x, dict) else model(x)
        out = out["logits"] if isinstance(out, dict) else out
        return (out.argmax(-1) == y).float().mean().item()
    return score


def r2(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], float]:
    def score() -> float:
        model.eval()
        with torch.no_grad():
            pred = model(x).reshape(-1)
        return 1 - ((pred - y) ** 2).mean().item() / y.var().item()
    return score


def split(x, y, n_train: int):
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


# ---- a Lightning-like module and trainer ----------------------------------------------------------------------
class LitClassifier(nn.Module):
    def __init__(self, d: int = 12, c: int = 4, dropout: float = 0.2, lr: float = 3e-3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(64, c))
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, idx: int) -> torch.Tensor:
        x, y = batch
        return (self(x).argmax(1) == y).float().mean()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=0.0)


class MiniTrainer:
    """The hand-written trainer: ``max_steps`` optimizer steps, validation every ``val_every`` steps."""

    def __init__(self, max_steps: int, val_every: int = 0, restore_train_mode: bool = True) -> None:
        self.max_steps, self.val_every, self.restore = max_steps, val_every, restore_train_mode
        self.val_acc: list[float] = []

    def fit(self, run, module: nn.Module, train: DataLoader, val: DataLoader | None = None) -> None:
        opt = module.configure_optimizers()
        sched = None
        if isinstance(opt, tuple):
            opt, sched = opt
        watch(run, module, opt)
        module.train()
        step = 0
        while step < self.max_steps:
            for idx, batch in enumerate(train):
                loss = module.training_step(batch, idx)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                step += 1
                if val is not None and self.val_every and step % self.val_every == 0:
                    module.eval()
                    with torch.no_grad():
                        accs = [module.validation_step(b, i) for i, b in enumerate(val)]
                    self.val_acc.append(torch.stack(accs).mean().item())
                    if self.restore:
                        module.train()
                if step == self.max_steps:
                    return


def table_loaders(n: int = 1024, d: int = 12, c: int = 4, seed: int = 0, batch: int = 32):
    x, y = tabular(n + 256, d, c, seed)
    x = x * 3 + 2  # raw, unstandardised features: BatchNorm standardises them
    xtr, ytr, xva, yva = split(x, y, n)
    return (DataLoader(TensorDataset(xtr, ytr), batch_size=batch, shuffle=True, generator=gen(seed + 1)),
            DataLoader(TensorDataset(xva, yva), batch_size=128), xva, yva)


@case("TW401", metric="held-out accuracy; the bug's harm is BatchNorm statistics frozen at step 10, dropout off")
def _lit_validation_leaves_eval_mode(run, bug: bool):
    module = LitClassifier()
    train, val, xva, yva = table_loaders()
    MiniTrainer(50, val_every=10, restore_train_mode=not bug).fit(run, module, train, val)
    return accuracy(module, xva, yva)


@case()
def _lit_validation_restores_train_mode(run, bug: bool):
    module = LitClassifier()
    train, val, xva, yva = table_loaders(seed=3)
    MiniTrainer(50, val_every=10).fit(run, module, train, val)
    return accuracy(module, xva, yva)


class LitWithSchedule(LitClassifier):
    def __init__(self, sched: str, steps: int, lr: float, bug: bool) -> None:
        super().__init__(dropout=0.0, lr=lr)
        self.sched, self.steps, self.bug = sched, steps, bug

    def configure_optimizers(self):
        if self.sched == "onecycle":
            opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
            return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=self.steps)
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr)
        warmup = 8
        def factor(step: int) -> float:  # linear warm-up, then cosine to zero at the last step
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (self.steps - warmup)))
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


@case("TW307", metric="held-out accuracy")
def _lit_onecycle_max_lr_far_too_high(run, bug: bool):
    # max_lr=8 (meant 0.08: a typo in a config) for SGD with momentum on a BatchNorm MLP
    module = LitWithSchedule("onecycle", 60, 8.0 if bug else 0.08, bug)
    train, _, xva, yva = table_loaders(seed=5)
    MiniTrainer(60).fit(run, module, train)
    return accuracy(module, xva, yva)


@case()
def _lit_onecycle_high_but_stable(run, bug: bool):
    # a high peak (0.5 for SGD+momentum) reached through OneCycle's warm-up: aggressive but stable with BatchNorm
    module = LitWithSchedule("onecycle", 60, 0.5, False)
    train, _, xva, yva = table_loaders(seed=6)
    MiniTrainer(60).fit(run, module, train)
    return accuracy(module, xva, yva)


@case()
def _lit_warmup_cosine_to_zero(run, bug: bool):
    module = LitWithSchedule("cosine", 50, 1e-2, False)
    train, _, xva, yva = table_loaders(seed=7)
    MiniTrainer(50).fit(run, module, train)
    return accuracy(module, xva, yva)


# ---- HF-Trainer-like: the model computes its loss from labels= and returns a dict ------------------------------
class TextClassifier(nn.Module):
    def __init__(self, vocab: int = 200, dim: int = 32, classes: int = 2, softmax_first: bool = False) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(vocab, dim)
        self.pre = nn.Sequential(nn.Linear(dim, dim), nn.Tanh())
        self.classifier = nn.Linear(dim, classes)
        self.softmax_first = softmax_first

    def resize_token_embeddings(self, n: int) -> None:
        old = self.embeddings
        self.embeddings = nn.Embedding(n, old.embedding_dim)
        with torch.no_grad():
            self.embeddings.weight[:old.num_embeddings] = old.weight

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        logits = self.classifier(self.pre(self.embeddings(input_ids).mean(1)))
        out = {"logits": logits}
        if labels is not None:
            scores = logits.softmax(-1) if self.softmax_first else logits
            out["loss"] = F.cross_entropy(scores, labels)
        return out


class TokenDataset(Dataset):
    def __init__(self, ids: torch.Tensor, labels: torch.Tensor) -> None:
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def hf_train(run, model: nn.Module, opt, data: Dataset, *, steps: int, batch: int = 32, sched=None,
             model_eval: bool = False, log: list | None = None) -> None:
    """The Trainer's inner loop: ``model(**batch).loss``, running loss kept with ``.item()`` for logging."""
    loader = DataLoader(data, batch_size=batch, shuffle=True, generator=gen(11))
    watch(run, model, opt)
    if model_eval:
        model.eval()
    else:
        model.train()
    running, step = 0.0, 0
    while step < steps:
        for b in loader:
            out = model(**b)
            out["loss"].backward()
            opt.step()
            if sched is not None:
                sched.step()
            opt.zero_grad()
            running += out["loss"].item()
            step += 1
            if step % 10 == 0 and log is not None:
                log.append(running / 10)
                running = 0.0
            if step == steps:
                return


def token_data(n: int = 1280, vocab: int = 200, seed: int = 0):
    ids, y = tokens(n + 256, 12, vocab, seed)
    return split(ids, y, n)


@case("TW301", metric="held-out accuracy")
def _hf_embeddings_resized_after_optimizer(run, bug: bool):
    # special tokens added to the tokenizer (ids 200-219 now occur), the embedding table resized AFTER the
    # optimizer was built: the optimizer keeps the old table, the new one is never updated
    ids, y, vids, vy = token_data()
    extra = torch.randint(200, 220, ids.shape, generator=gen(2)) * (torch.rand(ids.shape, generator=gen(3)) < 0.1)
    ids = torch.where(extra > 0, extra, ids)
    model = TextClassifier(vocab=200)
    if bug:
        opt = torch.optim.AdamW(model.parameters(), lr=2e-2)
        model.resize_token_embeddings(220)
    else:
        model.resize_token_embeddings(220)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-2)
    hf_train(run, model, opt, TokenDataset(ids, y), steps=60)
    return accuracy(model, {"input_ids": vids}, vy)


@case("TW150", metric="held-out accuracy")
def _hf_softmax_inside_forward_before_ce(run, bug: bool):
    ids, y, vids, vy = token_data(seed=1)
    model = TextClassifier(softmax_first=bug)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-2)
    hf_train(run, model, opt, TokenDataset(ids, y), steps=50)
    return accuracy(model, {"input_ids": vids}, vy)


@case()
def _hf_item_logging_and_linear_decay(run, bug: bool):
    # healthy: running loss kept with .item(), linear decay to zero (the Trainer's default schedule)
    ids, y, vids, vy = token_data(seed=2)
    model = TextClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / 50))
    hf_train(run, model, opt, TokenDataset(ids, y), steps=50, sched=sched, log=[])
    return accuracy(model, {"input_ids": vids}, vy)


class ImageModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3))
        self.head = nn.Linear(16, 4)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        logits = self.head(self.body(pixel_values))
        return {"logits": logits, **({"loss": F.cross_entropy(logits, labels)} if labels is not None else {})}


class ImageDataset(Dataset):
    """Raw uint8-like pixels, scaled and flipped in __getitem__ (the usual transform pipeline)."""

    def __init__(self, n: int, seed: int) -> None:
        g = gen(seed)
        self.y = torch.randint(0, 4, (n,), generator=g)
        yy, xx = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
        centres = torch.tensor([[2.0, 2.0], [2.0, 9.0], [9.0, 2.0], [9.0, 9.0]])
        blob = torch.stack([torch.exp(-((yy - a) ** 2 + (xx - b) ** 2) / 8) for a, b in centres])
        self.raw = (200 * blob[self.y].unsqueeze(1).expand(-1, 3, -1, -1)
                    + 30 * torch.rand(n, 3, 12, 12, generator=g)).round()
        self.flip = torch.rand(n, generator=g) < 0.5

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        x = (self.raw[i] / 255 - 0.45) / 0.25
        return {"pixel_values": x, "labels": self.y[i]}


@case("TW401", metric="held-out accuracy; the harm: BatchNorm running statistics never learnt, dropout off")
def _hf_model_left_in_eval_after_loading(run, bug: bool):
    # model = load_pretrained(...).eval() (copied from an inference script), then fine-tuned: the Trainer-like
    # loop here never calls train()
    torch.manual_seed(0)
    model = ImageModel()
    data, val = ImageDataset(320, 0), ImageDataset(128, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    hf_train(run, model, opt, data, steps=30, model_eval=bug)
    vx = torch.stack([val[i]["pixel_values"] for i in range(len(val))])
    return accuracy(model, {"pixel_values": vx}, val.y)


@case()
def _hf_bf16_autocast_cpu(run, bug: bool):
    ids, y, vids, vy = token_data(seed=4)
    model = TextClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-2)
    loader = DataLoader(TokenDataset(ids, y), batch_size=32, shuffle=True, generator=gen(4))
    watch(run, model, opt)
    for _step, b in zip(range(40), loader, strict=False):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(**b)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    return accuracy(model, {"input_ids": vids}, vy)


@case("TW107", metric="training loss drop over the run (higher is better)")
def _params_cast_to_bf16_for_speed(run, bug: bool):
    # "mixed precision": the whole model cast to bfloat16 (weights and optimizer state too), Adam at 1e-4
    x, y = tabular(1024, 12, 4, seed=8)
    model = mlp(12, 64, 4, depth=3)
    dtype = torch.bfloat16 if bug else torch.float32
    model = model.to(dtype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    watch(run, model, opt)
    losses = []
    g = gen(8)
    for _step in range(60):
        idx = torch.randint(0, 1024, (64,), generator=g)
        loss = F.cross_entropy(model(x[idx].to(dtype)).float(), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return lambda: float(np.mean(losses[:5]) - np.mean(losses[-5:]))


# ---- optimizers: stale, missing, param groups, weight decay ---------------------------------------------------
class Tower(nn.Module):
    def __init__(self, d: int = 12, c: int = 4) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.neck = nn.Sequential(nn.Linear(64, 32), nn.ReLU())
        self.head = nn.Linear(32, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.neck(self.backbone(x)))


def plain_loop(run, model, opt, x, y, *, steps: int, batch: int = 32, seed: int = 1, loss_fn=F.cross_entropy,
               clip: float | None = None, sched=None) -> None:
    watch(run, model, opt)
    g = gen(seed)
    for _step in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if sched is not None:
            sched.step()


@case("TW301", metric="held-out accuracy")
def _optimizer_built_before_model_rebuilt(run, bug: bool):
    # the model is rebuilt to load a checkpoint (resume) after the optimizer was created from the first one
    x, y, vx, vy = split(*tabular(1280, 12, 4, seed=9), 1024)
    model = Tower()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    state = Tower().state_dict()  # "the checkpoint"
    if bug:
        model = Tower()
        model.load_state_dict(state)
    else:
        model.load_state_dict(state)
    plain_loop(run, model, opt, x, y, steps=50)
    return accuracy(model, vx, vy)


@case("TW301", metric="held-out accuracy")
def _param_groups_forget_the_neck(run, bug: bool):
    x, y, vx, vy = split(*tabular(1280, 12, 4, seed=10), 1024)
    model = Tower()
    groups = [{"params": model.backbone.parameters(), "lr": 1e-3}, {"params": model.head.parameters(), "lr": 3e-3}]
    if not bug:
        groups.append({"params": model.neck.parameters(), "lr": 3e-3})
    opt = torch.optim.Adam(groups)
    plain_loop(run, model, opt, x, y, steps=50)
    return accuracy(model, vx, vy)


@case("TW408", metric="held-out accuracy")
def _head_frozen_by_a_wrong_slice(run, bug: bool):
    # closest documented rule: TW408 (a layer that never learns); meant to freeze the first (pretrained) block,
    # the slice froze the last ones, the randomly initialised head included; the optimizer holds everything
    x, y, vx, vy = split(*tabular(1280, 12, 4, seed=11), 1024)
    model = nn.Sequential(nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    for layer in (list(model)[2:] if bug else list(model)[:1]):
        for p in layer.parameters():
            p.requires_grad = False
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    plain_loop(run, model, opt, x, y, steps=50)
    return accuracy(model, vx, vy)


@case("TW305", metric="held-out accuracy")
def _unfreeze_after_warmup_is_a_noop(run, bug: bool):
    # the encoder is frozen for 15 warm-up steps (correctly, per parameter), then "unfrozen" with a module
    # attribute: it stays frozen for the rest of the run
    x, y, vx, vy = split(*tabular(1280, 12, 4, seed=12), 1024)
    model = Tower()
    model.backbone.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    g = gen(12)
    for step in range(50):
        if step == 15:
            if bug:
                model.backbone.requires_grad = True
            else:
                model.backbone.requires_grad_(True)
        idx = torch.randint(0, 1024, (32,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return accuracy(model, vx, vy)


@case()
def _finetune_head_on_frozen_pretrained_backbone(run, bug: bool):
    # healthy: a backbone pretrained on the task's features, frozen on purpose and left out of the optimizer;
    # its BatchNorm is kept in eval mode (frozen statistics) while the head trains
    x, y, vx, vy = split(*tabular(1280, 12, 4, seed=13), 1024)
    backbone = nn.Sequential(nn.Linear(12, 64), nn.BatchNorm1d(64), nn.ReLU())
    pre_head = nn.Linear(64, 4)
    pre_opt = torch.optim.Adam([*backbone.parameters(), *pre_head.parameters()], lr=3e-3)
    g = gen(13)
    for _ in range(40):  # "pretraining", before the run
        idx = torch.randint(0, 1024, (64,), generator=g)
        pre_opt.zero_grad()
        F.cross_entropy(pre_head(backbone(x[idx])), y[idx]).backward()
        pre_opt.step()
    backbone.requires_grad_(False)
    model = nn.Sequential(backbone, nn.Linear(64, 4))
    opt = torch.optim.Adam(model[1].parameters(), lr=3e-3)
    watch(run, model, opt)
    for _ in range(40):
        model.train()
        model[0].eval()
        idx = torch.randint(0, 1024, (32,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return accuracy(model, vx, vy)


@case("TW303", metric="mean LayerNorm gain at the end (1.0 untouched; the bug shrinks it)")
def _adamw_decay_on_everything_transformer(run, bug: bool):
    ids, y, _vids, _vy = token_data(seed=5)
    model = Encoder(vocab=200, dim=32)
    if bug:
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    else:
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "emb" not in n and "pos" not in n]
        rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "emb" not in n and "pos" not in n)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                                lr=3e-3)
    plain_loop(run, model, opt, ids, y, steps=30)
    return lambda: model.norm.weight.mean().item()


@case()
def _adamw_decay_excluding_norms_and_biases(run, bug: bool):
    ids, y, vids, vy = token_data(seed=6)
    model = Encoder(vocab=200, dim=32)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "emb" not in n and "pos" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "emb" not in n and "pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-2)
    plain_loop(run, model, opt, ids, y, steps=40)
    return accuracy(model, vids, vy)


# ---- learning rate and schedules --------------------------------------------------------------------------------
@case("TW308", metric="held-out accuracy")
def _steplr_meant_per_epoch_stepped_per_batch(run, bug: bool):
    x, y, vx, vy = split(*tabular(1280, 12, 4, seed=14), 1024)
    model = mlp(12, 64, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.3)  # "every 5 epochs"
    watch(run, model, opt)
    g = gen(14)
    for _epoch in range(2):
        for _i in range(32):
            idx = torch.randint(0, 1024, (32,), generator=g)
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            if bug:
                sched.step()
        if not bug:
            sched.step()
    return accuracy(model, vx, vy)


@case("TW308", metric="held-out R^2")
def _hf_regression_lr_far_too_low(run, bug: bool):
    class Regressor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))

        def forward(self, features, labels=None):
            pred = self.body(features).squeeze(-1)
            return {"logits": pred, **({"loss": F.mse_loss(pred, labels)} if labels is not None else {})}

    g = gen(15)
    x = torch.randn(1280, 8, generator=g)
    y = x @ torch.randn(8, generator=g) + 0.1 * torch.randn(1280, generator=g)
    model = Regressor()
    opt = torch.optim.SGD(model.parameters(), lr=1e-6 if bug else 1e-2, momentum=0.9)  # 1e-6: a misplaced digit

    class Rows(Dataset):
        def __len__(self):
            return 1024

        def __getitem__(self, i):
            return {"features": x[i], "labels": y[i]}

    hf_train(run, model, opt, Rows(), steps=50)
    return lambda: 1 - ((model(x[1024:])["logits"].detach() - y[1024:]) ** 2).mean().item() / y[1024:].var().item()


@case("TW308", metric="held-out accuracy")
def _plateau_scheduler_in_max_mode_on_a_loss(run, bug: bool):
    # ReduceLROnPlateau(mode="max") fed the training loss every step: a falling loss is "no improvement", the rate
    # is cut tenfold every other step
    x, y, vx, vy = split(*tabular(1280, 12, 4, seed=16), 1024)
    model = mlp(12, 64, 4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max" if bug else "min", factor=0.1, patience=1)
    watch(run, model, opt)
    g = gen(16)
    for step in range(50):
        idx = torch.randint(0, 1024, (32,), generator=g)
        opt.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        if bug or step % 10 == 9:
            sched.step(loss.item())
    return accuracy(model, vx, vy)


@case()
def _plateau_scheduler_on_validation_loss(run, bug: bool):
    x, y, vx, vy = split(*tabular(1280, 12, 4, seed=17), 1024)
    model = mlp(12, 64, 4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=1)
    watch(run, model, opt)
    g = gen(17)
    for step in range(60):
        idx = torch.randint(0, 1024, (32,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        if step % 15 == 14:
            model.eval()
            with torch.no_grad():
                sched.step(F.cross_entropy(model(vx), vy).item())
            model.train()
    return accuracy(model, vx, vy)


@case("TW308", metric="held-out accuracy")
def _clip_grad_norm_max_norm_tiny(run, bug: bool):
    # clip_grad_norm_(..., 1e-5): the max norm mistaken for an epsilon
    x, y, vx, vy = split(*tabular(1280, 12, 4, seed=18), 1024)
    model = mlp(12, 64, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    plain_loop(run, model, opt, x, y, steps=50, clip=1e-5 if bug else 1.0)
    return accuracy(model, vx, vy)


# ---- gradient accumulation -----------------------------------------------------------------------------------
def accumulate(run, model, opt, x, y, *, steps: int, k: int, divide: bool, zero: bool, micro: int = 16,
               seed: int = 1) -> None:
    watch(run, model, opt)
    g = gen(seed)
    opt.zero_grad()
    for _step in range(steps):
        for _ in range(k):
            idx = torch.randint(0, len(x), (micro,), generator=g)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            (loss / k if divide else loss).backward()
        opt.step()
        if zero:
            opt.zero_grad()


@case("TW307", metric="held-out accuracy")
def _grad_accumulation_never_divides(run, bug: bool):
    # 8 micro-batches summed, not averaged, under a rate tuned for the averaged gradient: 8x the step size
    x, y, vx, vy = split(*tabular(1280, 12, 4, seed=19), 1024)
    model = mlp(12, 64, 4, depth=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.4, momentum=0.9)
    accumulate(run, model, opt, x, y, steps=30, k=8, divide=not bug, zero=True)
    return accuracy(model, vx, vy)


@case("TW304", metric="held-out accuracy")
def _grad_accumulation_never_zeroes(run, bug: bool):
    # zero_grad only once before the loop: every optimizer step applies the sum of all gradients so far
    x, y, vx, vy = split(*tabular(1280, 12, 4, seed=20), 1024)
    model = mlp(12, 64, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    accumulate(run, model, opt, x, y, steps=30, k=4, divide=True, zero=not bug)
    return accuracy(model, vx, vy)


@case()
def _grad_accumulation_done_right(run, bug: bool):
    x, y, vx, vy = split(*tabular(1280, 12, 4, seed=21), 1024)
    model = mlp(12, 64, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    accumulate(run, model, opt, x, y, steps=30, k=4, divide=True, zero=True)
    return accuracy(model, vx, vy)


# ---- pandas tables --------------------------------------------------------------------------------------------
def customers(n: int = 1600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "age": rng.normal(42, 12, n).clip(18, 90),
        "income": rng.lognormal(10.8, 0.4, n),
        "balance": rng.normal(12_000, 6_000, n).clip(0),
        "tenure": rng.integers(0, 20, n).astype(float),
        "visits": rng.poisson(6, n).astype(float),
    })
    z = ((df - df.mean()) / df.std()).to_numpy()
    df["spend"] = z @ np.array([0.5, 1.2, -0.8, 0.4, 0.9]) + 0.2 * rng.normal(size=n)
    df["churned"] = (z @ np.array([-0.6, -0.9, 0.7, -1.1, 0.3]) + 0.3 * rng.normal(size=n) > 0).astype(int)
    return df


FEATURES = ["age", "income", "balance", "tenure", "visits"]


def frame_tensors(df: pd.DataFrame, cols: list[str], stats: pd.DataFrame | None = None) -> torch.Tensor:
    x = df[cols] if stats is None else (df[cols] - stats[cols].mean()) / stats[cols].std()
    return torch.tensor(x.to_numpy(), dtype=torch.float32)


@case("TW203", metric="held-out accuracy")
def _pandas_features_never_standardised(run, bug: bool):
    df = customers(seed=1)
    train, test = df.iloc[:1280], df.iloc[1280:]
    x = frame_tensors(train, FEATURES, None if bug else train)
    vx = frame_tensors(test, FEATURES, None if bug else train)
    y, vy = torch.tensor(train.churned.to_numpy()), torch.tensor(test.churned.to_numpy())
    model = nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    plain_loop(run, model, opt, x, y, steps=60, batch=64)
    return accuracy(model, vx, vy)


@case("TW209", metric="training accuracy minus held-out accuracy with the label column at its mean (deployment)")
def _pandas_label_column_left_in_features(run, bug: bool):
    # X = df.drop(columns=["customer_id"]): the target column stays among the inputs
    df = customers(seed=2)
    df.insert(0, "customer_id", np.arange(len(df), dtype=float))
    cols = [c for c in df.columns if c not in ("customer_id", "spend")] if bug else FEATURES
    train, test = df.iloc[:1280], df.iloc[1280:]
    x, y = frame_tensors(train, cols, train), torch.tensor(train.churned.to_numpy())
    vx = frame_tensors(test, cols, train)
    if bug:  # at deployment the label is unknown: its column holds the training mean
        vx[:, cols.index("churned")] = 0.0
    model = nn.Sequential(nn.Linear(len(cols), 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    plain_loop(run, model, opt, x, y, steps=50, batch=64)
    deployed = accuracy(model, vx, torch.tensor(test.churned.to_numpy()))
    return lambda: accuracy(model, x, y)() - deployed()


@case("TW152", metric="held-out R^2")
def _pandas_target_shape_broadcasts_in_mse(run, bug: bool):
    df = customers(seed=3)
    train, test = df.iloc[:1280], df.iloc[1280:]
    x, vx = frame_tensors(train, FEATURES, train), frame_tensors(test, FEATURES, train)
    y = torch.tensor(train.spend.to_numpy(), dtype=torch.float32)  # (N,) against the model's (N, 1)
    if not bug:
        y = y.unsqueeze(1)
    model = nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    plain_loop(run, model, opt, x, y, steps=50, batch=64, loss_fn=F.mse_loss)
    return r2(model, vx, torch.tensor(test.spend.to_numpy(), dtype=torch.float32))


@case("TW201", metric="held-out accuracy (nan: the weights went NaN)")
def _pandas_sensor_gap_nan_mid_run(run, bug: bool):
    # time-ordered rows (no shuffling, it is a time series); a sensor outage left NaN in 'visits' from row 900;
    # the fix: fillna with the training median
    df = customers(seed=4)
    df.loc[900:1000, "visits"] = np.nan
    if not bug:
        df["visits"] = df["visits"].fillna(df["visits"].iloc[:1280].median())
    train, test = df.iloc[:1280], df.iloc[1280:]
    stats = train.dropna()
    x, vx = frame_tensors(train, FEATURES, stats), frame_tensors(test, FEATURES, stats)
    y = torch.tensor(train.churned.to_numpy())
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=False)
    model = nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    for xb, yb in loader:
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    return accuracy(model, vx, torch.tensor(test.churned.to_numpy()))


@case()
def _pandas_full_batch_small_table(run, bug: bool):
    # healthy: 200 rows, full-batch gradient descent: the very same tensor every step is the method
    df = customers(n=400, seed=5)
    train, test = df.iloc[:200], df.iloc[200:]
    x, vx = frame_tensors(train, FEATURES, train), frame_tensors(test, FEATURES, train)
    y = torch.tensor(train.churned.to_numpy())
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    watch(run, model, opt)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return accuracy(model, vx, torch.tensor(test.churned.to_numpy()))


class TabularDict(nn.Module):
    """Numeric features through an MLP, a categorical column through an embedding, concatenated."""

    def __init__(self, n_cat: int = 30, discard_cat: bool = False) -> None:
        super().__init__()
        self.num = nn.Sequential(nn.Linear(5, 16), nn.ReLU())
        self.cat = nn.Sequential(nn.Embedding(n_cat, 8), nn.Linear(8, 16), nn.ReLU())
        self.head = nn.Linear(32, 2)
        self.discard_cat = discard_cat

    def forward(self, batch: dict) -> torch.Tensor:
        n, c = self.num(batch["num"]), self.cat(batch["cat"])
        return self.head(torch.cat([n, n] if self.discard_cat else [n, c], 1))  # the bug: n twice


def region_table(seed: int, n: int = 1600):
    df = customers(n, seed)
    rng = np.random.default_rng(seed + 100)
    df["region"] = rng.integers(0, 30, n)
    bias = rng.normal(0, 2.5, 30)
    z = (df[FEATURES] - df[FEATURES].mean()) / df[FEATURES].std()
    df["churned"] = ((z.to_numpy() @ np.array([-0.3, -0.4, 0.3, -0.5, 0.2]) + bias[df.region]) > 0).astype(int)
    train, test = df.iloc[:1280], df.iloc[1280:]
    def tensors(part):
        return ({"num": frame_tensors(part, FEATURES, train), "cat": torch.tensor(part.region.to_numpy())},
                torch.tensor(part.churned.to_numpy()))
    return tensors(train), tensors(test)


def dict_loop(run, model, opt, xd: dict, y: torch.Tensor, steps: int, seed: int) -> None:
    watch(run, model, opt)
    g = gen(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (64,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model({k: v[idx] for k, v in xd.items()}), y[idx]).backward()
        opt.step()


@case("TW413", metric="held-out accuracy")
def _dict_batch_categorical_branch_discarded(run, bug: bool):
    (xd, y), (vd, vy) = region_table(seed=6)
    model = TabularDict(discard_cat=bug)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    dict_loop(run, model, opt, xd, y, steps=50, seed=6)
    return accuracy(model, {"batch": vd}, vy)


@case()
def _dict_batch_both_branches_used(run, bug: bool):
    (xd, y), (vd, vy) = region_table(seed=7)
    model = TabularDict()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    dict_loop(run, model, opt, xd, y, steps=50, seed=7)
    return accuracy(model, {"batch": vd}, vy)


# ---- Dataset classes, loaders, labels ------------------------------------------------------------------------
class CsvRows(Dataset):
    """Rows as the CSV reader gave them; ``skip_header_in_labels``: the label list still had the header's row
    removed while the features did not (every label belongs to the next row)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, shifted: bool) -> None:
        self.x = x[:-1] if shifted else x
        self.y = y[1:] if shifted else y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


@case("TW109", metric="held-out accuracy (chance 0.25)")
def _dataset_labels_off_by_one_row(run, bug: bool):
    x, y, vx, vy = split(*tabular(2304, 12, 4, seed=22), 2048)
    loader = DataLoader(CsvRows(x, y, shifted=bug), batch_size=32, shuffle=True, generator=gen(22))
    model = mlp(12, 64, 4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    for _step, (xb, yb) in zip(range(60), loader, strict=False):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    return accuracy(model, vx, vy)


class CountsDataset(Dataset):
    """Count features log-transformed in __getitem__; ``eps``: log1p instead of log (zero counts occur)."""

    def __init__(self, counts: torch.Tensor, y: torch.Tensor, safe: bool) -> None:
        self.counts, self.y, self.safe = counts, y, safe

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        c = self.counts[i]
        return (torch.log1p(c) if self.safe else torch.log(c)) - 1.5, self.y[i]


@case("TW201", metric="held-out accuracy (nan: the weights went NaN)")
def _dataset_log_of_zero_counts(run, bug: bool):
    g = gen(23)
    rates = torch.rand(1280, 6, generator=g) * 8
    counts = torch.poisson(rates, generator=g)
    y = (rates[:, :3].sum(1) > rates[:, 3:].sum(1)).long()
    loader = DataLoader(CountsDataset(counts[:1024], y[:1024], safe=not bug), batch_size=32, shuffle=True,
                        generator=gen(23))
    model = mlp(6, 32, 2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    for _step, (xb, yb) in zip(range(30), loader, strict=False):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    vx = torch.log1p(counts[1024:]) - 1.5
    return accuracy(model, vx, y[1024:])


@case("TW214", metric="held-out accuracy")
def _next_iter_loader_every_step(run, bug: bool):
    # batch = next(iter(loader)) inside the loop: a fresh iterator each step, so always the first batch
    x, y, vx, vy = split(*tabular(1280, 12, 4, seed=24), 1024)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=False)
    model = mlp(12, 64, 4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    it = iter(loader)
    for _step in range(40):
        if bug:
            xb, yb = next(iter(loader))
        else:
            try:
                xb, yb = next(it)
            except StopIteration:
                it = iter(loader)
                xb, yb = next(it)
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    return accuracy(model, vx, vy)


@case("TW210", metric="held-out accuracy (chance 0.33)")
def _sorted_by_label_without_shuffle(run, bug: bool):
    # closest documented rule: TW210 (labels collapsing to one class); the table came sorted by class and the
    # loader does not shuffle: every batch holds one class, the model ends predicting the last one
    x, y, vx, vy = split(*tabular(1024, 12, 3, seed=25), 768)
    order = torch.argsort(y, stable=True)
    x, y = x[order], y[order]
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=not bug, generator=gen(25))
    model = mlp(12, 64, 3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    step = 0
    while step < 48:
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            step += 1
            if step == 48:
                break
    return accuracy(model, vx, vy)


@case()
def _sorted_table_shuffled_by_loader(run, bug: bool):
    x, y, vx, vy = split(*tabular(1024, 12, 3, seed=26), 768)
    order = torch.argsort(y, stable=True)
    loader = DataLoader(TensorDataset(x[order], y[order]), batch_size=32, shuffle=True, generator=gen(26))
    model = mlp(12, 64, 3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    for _step, (xb, yb) in zip(range(48), loader, strict=False):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    return accuracy(model, vx, vy)


def imbalanced(seed: int, n: int = 4096):
    g = gen(seed)
    x = torch.randn(n, 10, generator=g)
    score = x @ torch.randn(10, generator=g)
    y = (score > torch.quantile(score, 0.97)).long()  # 3% positives: ~32:1
    x = x + 0.5 * torch.randn(n, 10, generator=g)
    return split(x, y, 3584)


def minority_recall(model, vx, vy):
    def score() -> float:
        with torch.no_grad():
            pred = model(vx).argmax(1)
        return (pred[vy == 1] == 1).float().mean().item()
    return score


@case("TW210", metric="minority-class recall on held-out data")
def _class_weights_inverted(run, bug: bool):
    x, y, vx, vy = imbalanced(27)
    counts = torch.bincount(y, minlength=2).float()
    w = counts / counts.sum() if bug else counts.sum() / (2 * counts)  # the bug: frequencies, not inverses
    model = mlp(10, 32, 2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    plain_loop(run, model, opt, x, y, steps=60, batch=64, loss_fn=nn.CrossEntropyLoss(weight=w))
    return minority_recall(model, vx, vy)


@case(metric="minority-class recall on held-out data")
def _class_weights_balanced(run, bug: bool):
    x, y, vx, vy = imbalanced(28)
    counts = torch.bincount(y, minlength=2).float()
    model = mlp(10, 32, 2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    plain_loop(run, model, opt, x, y, steps=60, batch=64,
               loss_fn=nn.CrossEntropyLoss(weight=counts.sum() / (2 * counts)))
    return minority_recall(model, vx, vy)


@case()
def _label_smoothing_cross_entropy(run, bug: bool):
    x, y, vx, vy = split(*tabular(1280, 12, 4, seed=29), 1024)
    model = mlp(12, 64, 4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    plain_loop(run, model, opt, x, y, steps=50, loss_fn=nn.CrossEntropyLoss(label_smoothing=0.2))
    return accuracy(model, vx, vy)


# ---- tokens and language models -------------------------------------------------------------------------------
@case("TW212", metric="held-out accuracy")
def _token_ids_wrapped_into_vocab(run, bug: bool):
    # a tokenizer of 1,500 ids feeding an embedding table of 600 rows, "fixed" with ids % 600
    ids, y = tokens(3200, 12, 1500, seed=30)
    model = nn.Sequential(nn.EmbeddingBag(600 if bug else 1500, 32), nn.Linear(32, 2))
    feed = ids % 600 if bug else ids
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    plain_loop(run, model, opt, feed[:2944], y[:2944], steps=60, batch=64)
    return accuracy(model, feed[2944:], y[2944:])


class TinyCausalLM(nn.Module):
    def __init__(self, vocab: int = 40, dim: int = 32, shift: bool = True) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.rnn = nn.GRU(dim, dim, batch_first=True)
        self.lm_head = nn.Linear(dim, vocab)
        self.shift = shift

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        logits = self.lm_head(self.rnn(self.wte(input_ids))[0])
        if labels is None:
            return {"logits": logits}
        if self.shift:
            lg, lb = logits[:, :-1], labels[:, 1:]
        else:  # the bug: position t is asked to predict the token it was just given
            lg, lb = logits, labels
        return {"logits": logits, "loss": F.cross_entropy(lg.reshape(-1, lg.shape[-1]), lb.reshape(-1))}


def markov_text(n: int, length: int, vocab: int, seed: int) -> torch.Tensor:
    g = gen(seed)
    nxt = torch.randint(0, vocab, (vocab, 2), generator=g)  # each token is followed by one of two tokens
    ids = torch.empty(n, length, dtype=torch.long)
    ids[:, 0] = torch.randint(0, vocab, (n,), generator=g)
    for t in range(1, length):
        ids[:, t] = nxt[ids[:, t - 1], torch.randint(0, 2, (n,), generator=g)]
    return ids


@case("TW209", metric="held-out next-token accuracy (chance 1/40, best 0.5)")
def _causal_lm_labels_never_shifted(run, bug: bool):
    ids = markov_text(640, 16, 40, seed=31)

    class LMRows(Dataset):
        def __len__(self):
            return 512

        def __getitem__(self, i):
            return {"input_ids": ids[i], "labels": ids[i].clone()}

    model = TinyCausalLM(shift=not bug)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    hf_train(run, model, opt, LMRows(), steps=40)

    def score() -> float:
        with torch.no_grad():
            logits = model(ids[512:])["logits"]
        return (logits[:, :-1].argmax(-1) == ids[512:, 1:]).float().mean().item()
    return score


@case(metric="held-out next-token accuracy (chance 1/40, best 0.5)")
def _causal_lm_shifted_inside_forward(run, bug: bool):
    ids = markov_text(640, 16, 40, seed=32)

    class LMRows(Dataset):
        def __len__(self):
            return 512

        def __getitem__(self, i):
            return {"input_ids": ids[i], "labels": ids[i].clone()}

    model = TinyCausalLM(shift=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    hf_train(run, model, opt, LMRows(), steps=40)

    def score() -> float:
        with torch.no_grad():
            logits = model(ids[512:])["logits"]
        return (logits[:, :-1].argmax(-1) == ids[512:, 1:]).float().mean().item()
    return score


# ---- siamese / contrastive -----------------------------------------------------------------------------------
class Siamese(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 16))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(a), self.encoder(b)


def pair_data(seed: int, n: int = 1024):
    g = gen(seed)
    centres = torch.randn(8, 16, generator=g) * 2
    cls = torch.randint(0, 8, (n,), generator=g)
    return centres[cls] + 0.5 * torch.randn(n, 16, generator=g), cls


def embedding_spread(model: Siamese, x: torch.Tensor) -> Callable[[], float]:
    def score() -> float:
        with torch.no_grad():
            z = F.normalize(model.encoder(x), dim=1)
        return z.std(0).sum().item()
    return score


def siamese_loop(run, model, opt, x, loss_of, steps: int, seed: int) -> None:
    watch(run, model, opt)
    g = gen(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        a = x[idx] + 0.3 * torch.randn(64, 16, generator=g)
        b = x[idx] + 0.3 * torch.randn(64, 16, generator=g)
        za, zb = model(a, b)
        opt.zero_grad()
        loss_of(za, zb).backward()
        opt.step()


def info_nce(za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
    za, zb = F.normalize(za, dim=1), F.normalize(zb, dim=1)
    return F.cross_entropy(za @ zb.T / 0.2, torch.arange(len(za)))


def positives_only(za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
    return 1 - F.cosine_similarity(za, zb).mean()


SPREAD = "spread of the normalised embeddings across samples (2.7 at init; collapse: -> 0)"


@case("TW414", metric=SPREAD)
def _siamese_pulls_positives_only(run, bug: bool):
    # the InfoNCE negatives were swapped for a plain cosine "to debug" and never restored: only positive pairs
    # are pulled together, with no predictor or stop-gradient to keep the embeddings apart
    x, _ = pair_data(33)
    model = Siamese()
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    siamese_loop(run, model, opt, x, positives_only if bug else info_nce, steps=60, seed=33)
    return embedding_spread(model, x)


@case(metric=SPREAD)
def _siamese_info_nce_with_negatives(run, bug: bool):
    x, _ = pair_data(34)
    model = Siamese()
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    siamese_loop(run, model, opt, x, info_nce, steps=60, seed=34)
    return embedding_spread(model, x)
