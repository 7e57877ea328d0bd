"""Silent architecture and mode bugs: train/eval modes, activations, layer wiring."""

from __future__ import annotations

import torch
from _kit import WATCH, blobs, bug, fit, healthy, mlp
from torch import nn

import torchwitness as tw


def _dropout_mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3))


@bug("TW401")
def eval_mode_never_reset(run: tw.Run) -> None:
    x, y = blobs()
    model = _dropout_mlp()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    crit = nn.CrossEntropyLoss()
    run.watch(model, opt, loss_fn=crit, every_n_steps=10, first_steps=3)
    for _epoch in range(3):
        for b in range(4):
            opt.zero_grad()
            crit(model(x[b * 32:(b + 1) * 32]), y[b * 32:(b + 1) * 32]).backward()
            opt.step()
        model.eval()  # evaluate() ... and model.train() is never called again
        with torch.no_grad():
            model(x[400:])


@bug("TW402")
def evaluation_without_eval_mode(run: tw.Run) -> None:
    x, y = blobs()
    model = _dropout_mlp()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    crit = nn.CrossEntropyLoss()
    run.watch(model, opt, loss_fn=crit, every_n_steps=10, first_steps=3)
    for step in range(6):
        opt.zero_grad()
        crit(model(x[step * 32:(step + 1) * 32]), y[step * 32:(step + 1) * 32]).backward()
        opt.step()
        with torch.no_grad():  # validation, but dropout is still on
            model(x[400:])


@bug("TW404")
def conv_filters_killed_by_bias(run: tw.Run) -> None:
    x = torch.rand(64, 3, 12, 12)
    y = torch.randint(0, 2, (64,))
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 2))
    with torch.no_grad():
        model[0].bias[:12].fill_(-50.0)
    fit(run, model, torch.optim.SGD(model.parameters(), 1e-3), nn.CrossEntropyLoss(), x, y, steps=4, batch=16)


@bug("TW404")
def conv1d_filters_killed_by_bias(run: tw.Run) -> None:
    """A 1-D convolution's (B, C, L) output: its channels are the units, not its positions."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(128, 2, 24, generator=g)
    y = (x[:, 0].mean(1) > 0).long()
    model = nn.Sequential(nn.Conv1d(2, 16, 5, padding=2), nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(),
                          nn.Linear(16, 2))
    with torch.no_grad():
        model[0].bias[:14].fill_(-40.0)
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-3), nn.CrossEntropyLoss(), x, y, steps=5)


@bug("TW405")
def zero_initialised_hidden_layer(run: tw.Run) -> None:
    x, y = blobs()
    model = mlp()
    with torch.no_grad():
        model[0].weight.zero_()  # "start from zero", so every sample maps to the bias
        model[0].bias.fill_(0.5)
    fit(run, model, torch.optim.SGD(model.parameters(), 1e-4), nn.CrossEntropyLoss(), x, y, steps=4)


class _SharedNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(10, 32, bias=False), nn.Linear(32, 32, bias=False)
        self.bn = nn.BatchNorm1d(32)
        self.out = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.fc1(x)))
        h = torch.relu(self.bn(self.fc2(h)))  # the same BatchNorm reused
        return self.out(h)


@bug("TW406")
def batchnorm_reused(run: tw.Run) -> None:
    x, y = blobs()
    model = _SharedNorm()
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-3), nn.CrossEntropyLoss(), x, y, steps=3)


@bug("TW407")
def batch_of_four_with_batchnorm(run: tw.Run) -> None:
    x, y = blobs()
    model = nn.Sequential(nn.Linear(10, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-3), nn.CrossEntropyLoss(), x, y, steps=4, batch=4)


class _LeftoverHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = mlp()
        self.aux_head = nn.Linear(32, 5)  # from an earlier experiment, never called

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@bug("TW408")
def layer_defined_but_never_called(run: tw.Run) -> None:
    x, y = blobs()
    model = _LeftoverHead()
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-3), nn.CrossEntropyLoss(), x, y, steps=12)


@bug("TW409")
def linear_bias_before_batchnorm(run: tw.Run) -> None:
    x, y = blobs()
    model = nn.Sequential(nn.Linear(10, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-3), nn.CrossEntropyLoss(), x, y, steps=3)


@bug("TW410")
def even_kernel_with_stride_one(run: tw.Run) -> None:
    x = torch.rand(32, 3, 10, 10)
    y = torch.randint(0, 2, (32,))
    model = nn.Sequential(nn.Conv2d(3, 8, 4, padding=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 2))
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-3), nn.CrossEntropyLoss(), x, y, steps=2, batch=16)


@bug("TW411")
def pruned_filters(run: tw.Run) -> None:
    x = torch.rand(32, 3, 10, 10)
    y = torch.randint(0, 2, (32,))
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 2))
    with torch.no_grad():
        model[0].weight[:3].zero_()
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-3), nn.CrossEntropyLoss(), x, y, steps=2, batch=16)


def _series(n: int = 384, t: int = 12, d: int = 4, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences labelled by the sign of their trend: a recurrent model learns it, the mean over time does not."""
    g = torch.Generator().manual_seed(seed)
    slope = torch.randn(n, 1, d, generator=g)
    x = slope * torch.linspace(-1, 1, t).view(1, t, 1) + 0.3 * torch.randn(n, t, d, generator=g)
    return x, (slope.sum((1, 2)) > 0).long()


class _SeriesGRU(nn.Module):
    def __init__(self, bug: str = "") -> None:
        super().__init__()
        self.rnn = nn.GRU(4, 16, batch_first=True)
        self.head = nn.Linear(16, 2)
        self.bug = bug

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        if self.bug == "discard":  # one name off: the head reads the raw input's features, the GRU's are thrown away
            return self.head(nn.functional.pad(x.mean(1), (0, 12)))
        feats = out.mean(1)
        return self.head(feats.detach() if self.bug == "detach" else feats)


@bug("TW413")
def gru_output_discarded_for_the_raw_input(run: tw.Run) -> None:
    """The head reads a summary of the model's own input (no autograd history, not a detached copy): the GRU runs
    and its output never reaches the loss."""
    x, y = _series()
    model = _SeriesGRU("discard")
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-2), nn.CrossEntropyLoss(), x, y, steps=40)


@bug("TW110")
def gru_summary_detached_after_pooling(run: tw.Run) -> None:
    """``out.mean(1).detach()``: the detached tensor is new memory, not a module output's, so only the forward's
    own calls show the cut."""
    x, y = _series()
    model = _SeriesGRU("detach")
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-2), nn.CrossEntropyLoss(), x, y, steps=40)


class _TimeConditioned(nn.Module):
    """A diffusion-style denoiser: sinusoidal features of an integer step, made inside forward (no autograd
    history, not the model's input), feed a Linear; every layer reaches the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(10, 32)
        self.time = nn.Linear(8, 32)
        self.out = nn.Sequential(nn.ReLU(), nn.Linear(32, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.arange(x.shape[0], dtype=torch.float32).unsqueeze(1) % 7
        freqs = torch.exp(-torch.arange(4, dtype=torch.float32))
        return self.out(self.inp(x) + self.time(torch.cat([torch.sin(t * freqs), torch.cos(t * freqs)], 1)))


@healthy
def features_made_inside_forward_reach_a_layer(run: tw.Run) -> None:
    x, y = blobs()
    model = _TimeConditioned()
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-2), nn.CrossEntropyLoss(), x, y, steps=40)


def _bag_of_ids(kept: int, vocab: int = 2000, n: int = 640, length: int = 16, seed: int = 5
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Zipf-distributed word ids labelled by a hidden per-word score; ``kept`` < vocab: a vocabulary of the
    ``kept`` most frequent words (as counted on a small sample), every other word mapped to <unk> (id 1)."""
    g = torch.Generator().manual_seed(seed)
    p = 1.0 / torch.arange(1, vocab + 1).float()
    words = torch.multinomial(p, n * length, replacement=True, generator=g).view(n, length)
    score = torch.randn(vocab, generator=g)[words].mean(1)
    ids = torch.where(words < kept, words + 2, torch.ones_like(words)) if kept < vocab else words + 2
    return ids, (score > score.median()).long()


class _Bag(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids).mean(1))


@bug("TW212")
def vocabulary_from_too_little_text(run: tw.Run) -> None:
    """The vocabulary keeps 60 words: <unk> takes about 40 % of all ids, only a few times the next id."""
    ids, y = _bag_of_ids(kept=60)
    model = _Bag(62)
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-2), nn.CrossEntropyLoss(), ids, y, steps=40)


@healthy
def small_alphabet_with_a_frequent_symbol(run: tw.Run) -> None:
    """Character-like ids over 60 symbols, Zipf-distributed: the top symbol holds a fifth of the ids, twice the next."""
    ids, y = _bag_of_ids(kept=60, vocab=60)
    model = _Bag(62)
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-2), nn.CrossEntropyLoss(), ids, y, steps=40)


class _TwoTowers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(10, 16)
        self.b = nn.Linear(4, 16)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(32, 3))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([self.a(batch["features"]), self.b(batch["context"])], 1))


@bug("TW201")
def nan_in_a_dict_batchs_second_input_between_audits(run: tw.Run) -> None:
    """A dict batch whose second entry (a context vector joined from another table) turns NaN from step 70: the
    first input stays clean, so only a sentinel on every floating input names it."""
    x, y = blobs()
    ctx = torch.randn(len(x), 4)
    model = _TwoTowers()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    run.watch(model, opt, **WATCH)
    for step in range(120):
        idx = torch.arange(step * 32, step * 32 + 32) % len(x)
        c = ctx[idx].clone()
        if step >= 70:
            c[::4] = float("nan")
        opt.zero_grad()
        nn.functional.cross_entropy(model({"features": x[idx], "context": c}), y[idx]).backward()
        opt.step()
