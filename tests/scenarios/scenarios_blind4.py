"""Blind scenarios, fourth round: other code shapes (custom Dataset classes, models returning dicts, trainer-like
helper functions, 1-D convolutions, gradient accumulation), written after round 3's fixes and run before any
further change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _blindkit import CNN, GRUClassifier, batches, gen, images, mlp, tabular, tokens, watch
from _kit import bug, healthy
from torch import nn
from torch.utils.data import DataLoader, Dataset


class _Table(Dataset):
    """A map-style dataset over tensors, optionally transforming each row (where data bugs hide)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform=None) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[i]
        return (self.transform(x) if self.transform else x), self.y[i]


class _DictNet(nn.Module):
    """A classifier returning a dict, as many library models do."""

    def __init__(self, d: int = 12, c: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.cls = nn.Linear(32, c)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)
        return {"logits": self.cls(h), "features": h}


def _train_epochs(run, model: nn.Module, opt: torch.optim.Optimizer, loader: DataLoader, epochs: int,
                  key: str | None = None) -> None:
    """A trainer-like helper: epochs over a loader, logits possibly under a key of the output."""
    watch(run, model, opt)
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            out = model(xb)
            loss = F.cross_entropy(out[key] if key else out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()


class _Conv1dNet(nn.Module):
    def __init__(self, c: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(c, 16, 5, padding=2), nn.ReLU(), nn.Conv1d(16, 16, 5, padding=2), nn.ReLU())
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x).mean(2))


def _signals(n: int = 384, length: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-channel signals: each class a sine of its own frequency, plus noise."""
    g = gen(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    t = torch.linspace(0, 6.28, length)
    phase = torch.rand(n, 1, generator=g) * 6.28
    base = torch.sin((y.float().unsqueeze(1) + 1) * t + phase)
    x = torch.stack([base, base.roll(3, 1)], 1) + 0.3 * torch.randn(n, 2, length, generator=g)
    return x, y


# ==== bugs =====================================================================================================
@bug("TW201")
def blind4_dataset_transform_makes_nan(run) -> None:
    """A Dataset transform standardises each row by its own std; some rows are constant: 0/0."""
    x, y = tabular(n=320, seed=300)
    x[::25] = 0.5
    ds = _Table(x, y, transform=lambda r: (r - r.mean()) / r.std())
    model = mlp()
    _train_epochs(run, model, torch.optim.Adam(model.parameters(), 1e-2),
                  DataLoader(ds, batch_size=32, shuffle=True, generator=gen(301)), epochs=3)


@bug("TW204")
def blind4_dataset_transform_blanks(run) -> None:
    """A transform meant to clip outliers clamps every value to [0.5, 0.5]."""
    x, y = tabular(n=320, seed=302)
    ds = _Table(x, y, transform=lambda r: r.clamp(0.5, 0.5))
    model = _DictNet()
    _train_epochs(run, model, torch.optim.Adam(model.parameters(), 1e-2),
                  DataLoader(ds, batch_size=32, shuffle=True, generator=gen(303)), epochs=3, key="logits")


@bug("TW109")
def blind4_dataset_labels_off_by_one_row(run) -> None:
    """__getitem__ returns the label of the next row (an off-by-one index): labels misaligned with inputs. (Over
    a smaller table seen for 4 epochs the model memorises the misaligned labels to ~5% under chance, which
    healthy runs also reach: a known miss.)"""
    x, y = tabular(n=1280, seed=304)

    class Shifted(_Table):
        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return self.x[i], self.y[(i + 1) % len(self.y)]

    model = mlp()
    _train_epochs(run, model, torch.optim.Adam(model.parameters(), 3e-3),
                  DataLoader(Shifted(x, y), batch_size=32, shuffle=True, generator=gen(305)), epochs=1)


@bug("TW413")
def blind4_dict_output_features_head_unused(run) -> None:
    """A model computes a projection head into its output dict; the loss uses only the logits."""
    class Net(_DictNet):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 8))

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            out = super().forward(x)
            out["proj"] = self.proj(out["features"])
            return out

    x, y = tabular(n=320, seed=306)
    model = Net()
    _train_epochs(run, model, torch.optim.Adam(model.parameters(), 1e-2),
                  DataLoader(_Table(x, y), batch_size=32, shuffle=True, generator=gen(307)), epochs=3, key="logits")


@bug("TW304")
def blind4_grad_accumulation_never_cleared(run) -> None:
    """Gradient accumulation over 4 micro-batches, but zero_grad is inside an if that never runs."""
    x, y = tabular(n=512, seed=308)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.02, momentum=0.9)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x, y, 80, 16)):
        (F.cross_entropy(model(xb), yb) / 4).backward()
        if i % 4 == 3:
            opt.step()
            if i % 4 == 4:  # the bug: never true
                opt.zero_grad()


@bug("TW404")
def blind4_conv1d_dead_channels(run) -> None:
    """A 1-D CNN whose first conv's biases were initialised to -6: its ReLU channels never fire."""
    x, y = _signals(seed=309)
    model = _Conv1dNet()
    nn.init.constant_(model.net[0].bias, -6.0)
    _train_epochs(run, model, torch.optim.Adam(model.parameters(), 1e-3),
                  DataLoader(_Table(x, y), batch_size=32, shuffle=True, generator=gen(310)), epochs=3)


@bug("TW307")
def blind4_lr_too_high_trainer(run) -> None:
    """SGD at lr=20 through the trainer helper on the dict-output model."""
    x, y = tabular(n=320, seed=311)
    model = _DictNet()
    _train_epochs(run, model, torch.optim.SGD(model.parameters(), 20.0),
                  DataLoader(_Table(x, y), batch_size=32, shuffle=True, generator=gen(312)), epochs=3, key="logits")


@bug("TW214")
def blind4_cached_first_batch(run) -> None:
    """A 'cache' meant to speed the loader up keeps returning the first batch it saw."""
    x, y = images(n=256, seed=313)
    loader = DataLoader(_Table(x, y), batch_size=32, shuffle=True, generator=gen(314))
    cache: list[tuple[torch.Tensor, torch.Tensor]] = []

    def cached():
        for batch in loader:
            if not cache:
                cache.append(batch)
            yield cache[0]

    model = CNN()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    watch(run, model, opt)
    for _ in range(4):
        for xb, yb in cached():
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()


@bug("TW150")
def blind4_log_softmax_then_cross_entropy(run) -> None:
    """The model ends in nn.Softmax inside a dict output, and cross_entropy is applied to it."""
    class Net(_DictNet):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            out = super().forward(x)
            out["logits"] = F.softmax(out["logits"], dim=1)
            return out

    x, y = tabular(n=320, seed=315)
    model = Net()
    _train_epochs(run, model, torch.optim.Adam(model.parameters(), 1e-2),
                  DataLoader(_Table(x, y), batch_size=32, shuffle=True, generator=gen(316)), epochs=3, key="logits")


@bug("TW212")
def blind4_unknown_tokens_one_id(run) -> None:
    """A vocabulary built from a tenth of the corpus: every other token maps to the unknown id 1."""
    g = gen(317)
    raw = torch.randint(0, 2000, (320, 16), generator=g)
    y = (torch.randn(2000, generator=g)[raw].mean(1) > 0).long()
    known = raw < 200
    ids = torch.where(known, raw + 2, torch.ones_like(raw))  # 0 padding, 1 unknown, 2.. known
    model = GRUClassifier(vocab=202)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for xb, yb in batches(ids, y, 30, 32):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW303")
def blind4_sgd_decay_everywhere_strong(run) -> None:
    """SGD(weight_decay=5e-3) over a 1-D CNN, biases included."""
    x, y = _signals(seed=319)
    model = _Conv1dNet()
    _train_epochs(run, model, torch.optim.SGD(model.parameters(), 0.05, momentum=0.9, weight_decay=5e-3),
                  DataLoader(_Table(x, y), batch_size=32, shuffle=True, generator=gen(320)), epochs=3)


# ==== healthy controls =========================================================================================
@healthy
def blind4_ok_trainer_dict_model(run) -> None:
    """The trainer helper on the dict-output model, three epochs."""
    x, y = tabular(n=320, seed=330)
    model = _DictNet()
    _train_epochs(run, model, torch.optim.Adam(model.parameters(), 1e-2),
                  DataLoader(_Table(x, y), batch_size=32, shuffle=True, generator=gen(331)), epochs=3, key="logits")


@healthy
def blind4_ok_conv1d_signals(run) -> None:
    """A 1-D CNN on two-channel signals through a Dataset with a noise transform."""
    x, y = _signals(seed=332)
    model = _Conv1dNet()
    ds = _Table(x, y, transform=lambda r: r + 0.05 * torch.randn_like(r))
    _train_epochs(run, model, torch.optim.Adam(model.parameters(), 3e-3),
                  DataLoader(ds, batch_size=32, shuffle=True, generator=gen(333)), epochs=3)


@healthy
def blind4_ok_grad_accumulation_right(run) -> None:
    """Gradient accumulation over 4 micro-batches with zero_grad after each step."""
    x, y = tabular(n=512, seed=334)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x, y, 80, 16)):
        (F.cross_entropy(model(xb), yb) / 4).backward()
        if i % 4 == 3:
            opt.step()
            opt.zero_grad()


@healthy
def blind4_ok_unknown_tokens_rare(run) -> None:
    """A vocabulary covering 95% of the corpus: a few unknown tokens (id 1), padding 0 at the ends of rows."""
    ids, y = tokens(n=320, length=16, vocab=200, heavy_tail=True, seed=335)
    ids = ids + 2
    rare = torch.rand(ids.shape, generator=gen(336)) < 0.03
    ids[rare] = 1
    lengths = torch.randint(8, 17, (320,), generator=gen(337))
    ids[torch.arange(16).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    model = GRUClassifier(vocab=202)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for xb, yb in batches(ids, y, 30, 32):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@healthy
def blind4_ok_cached_dataset_tensors(run) -> None:
    """A dataset pre-loaded into memory once (a cache of the whole dataset, not of one batch), shuffled loader."""
    x, y = images(n=256, seed=338)
    cached = _Table(x.clone(), y.clone())
    model = CNN()
    _train_epochs(run, model, torch.optim.Adam(model.parameters(), 2e-3),
                  DataLoader(cached, batch_size=32, shuffle=True, generator=gen(339)), epochs=4)
