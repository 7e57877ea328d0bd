"""Blind scenarios, round 11: the classes of issue 20 in forms an outsider writes (non-finite values arriving
mid-run, in the loss or in the targets; blank inputs; dead filters and vanishing gradients; weight decay on
biases, norms and embeddings; structured pruning; token ids clamped or wrapped; channels-last images reshaped;
one batch fed at every step; a short run at chance; a layer whose output is dropped; a collapsing
self-supervised model), and healthy controls that tempt the same rules.

Written without reading the rules or probes. Checked without the watch by patching ``Tensor.backward`` to
record the losses (bugs hurt, controls learn).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _blindkit import CNN, Encoder, GRUClassifier, SeqRegressor, gen, images, mlp, sequences, tabular, tokens, watch
from _kit import bug, healthy
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import DataLoader, TensorDataset

KNOWN_MISSES: dict[tuple[str, str], str] = {}  # the first run's misses are fixed


def _loop(run, model: nn.Module, opt: torch.optim.Optimizer, data, loss_fn=F.cross_entropy) -> None:
    watch(run, model, opt)
    for xb, yb in data:
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()


def _epochs(loader: DataLoader, steps: int):
    step = 0
    while True:
        for b in loader:
            yield b
            step += 1
            if step == steps:
                return


# ---- non-finite values -----------------------------------------------------------------------------------------
@bug("TW201")
def sensor_gaps_arrive_as_nan_mid_run(run) -> None:
    """An LSTM over sensor series; the later files carry NaN for missing readings (never imputed)."""
    torch.manual_seed(0)
    s, y = sequences(n=480)
    s[320:][torch.rand(160, 10, 4, generator=gen(3)) < 0.05] = float("nan")
    model = SeqRegressor()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(TensorDataset(s, y), batch_size=32, shuffle=False)  # files in order: gaps from step 10
    _loop(run, model, opt, _epochs(loader, 30), F.mse_loss)


class _TinyLM(nn.Module):
    def __init__(self, vocab: int = 200, dim: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.rnn = nn.GRU(dim, dim, batch_first=True)
        self.out = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(self.emb(ids))[0])


@bug("TW101")
def sequence_likelihood_product_underflows(run) -> None:
    """A GRU language model trained on the negative log of each sequence's probability, computed as the
    product of its 24 token probabilities: about 200**-24, which underflows to 0 in float32 (log 0 = -inf)."""
    torch.manual_seed(0)
    ids, _ = tokens(n=320, length=25, seed=1, heavy_tail=True)
    model = _TinyLM()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    for i in list(range(0, 320, 32)) * 3:
        seq = ids[i:i + 32]
        probs = torch.softmax(model(seq[:, :-1]), dim=-1).gather(2, seq[:, 1:, None]).squeeze(2)
        loss = -torch.log(probs.prod(dim=1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@bug("TW202")
def regression_targets_with_missing_values(run) -> None:
    """House prices with some missing targets read as NaN from the CSV, trained through a DataLoader."""
    torch.manual_seed(0)
    g = gen(7)
    x = torch.randn(600, 10, generator=g)
    y = (x @ torch.randn(10, 1, generator=g)) + 0.1 * torch.randn(600, 1, generator=g)
    y[torch.rand(600, generator=g) < 0.03] = float("nan")
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(8))
    _loop(run, model, opt, _epochs(loader, 30), F.mse_loss)


# ---- blank inputs ----------------------------------------------------------------------------------------------
@bug("TW204")
def images_blanked_by_threshold(run) -> None:
    """Masks meant to be ``raw > 0.5`` on 0-255 pixels were written ``raw > 255``: every image is zero."""
    torch.manual_seed(0)
    x, y = images(n=256, c=1, seed=2)
    raw = ((x - x.min()) / (x.max() - x.min()) * 255).round()
    blank = (raw > 255).float()
    model = CNN(c=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(TensorDataset(blank, y), batch_size=32, shuffle=True, generator=gen(1))
    _loop(run, model, opt, _epochs(loader, 30))


@bug("TW204")
def images_averaged_to_one_colour(run) -> None:
    """A 'global pooling' preprocessing step meant for the labels' statistics replaced every image with its
    per-channel mean: each sample is constant in itself."""
    torch.manual_seed(0)
    x, y = images(n=256, seed=3)
    flat = x.mean((2, 3), keepdim=True).expand_as(x).contiguous()
    model = CNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    _loop(run, model, opt, ((flat[i:i + 32], y[i:i + 32]) for i in list(range(0, 256, 32)) * 4))


# ---- dead filters vs vanishing gradients -----------------------------------------------------------------------
class _DeadConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 4)
        with torch.no_grad():  # "bias init from a paper" copied with the wrong sign, on most filters
            self.conv1.bias[:12].fill_(-20.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.head(h.mean((2, 3)))


@bug("TW404")  # the catalogue's dead-filters rule (first written as TW403, dead units, before it was read)
def conv_filters_dead_from_bias_init(run) -> None:
    torch.manual_seed(0)
    x, y = images(n=256, seed=4)
    model = _DeadConvNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    _loop(run, model, opt, ((x[i:i + 32], y[i:i + 32]) for i in list(range(0, 256, 32)) * 4))


@bug("TW104")
def deep_sigmoid_stack_vanishes(run) -> None:
    """Twelve sigmoid layers with small init: the first layers' gradients are orders of magnitude too small."""
    torch.manual_seed(0)
    x, y = tabular(n=512, seed=5)
    model = mlp(d=12, h=32, c=4, depth=12, act=nn.Sigmoid)
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.05)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    _loop(run, model, opt, ((x[i:i + 64], y[i:i + 64]) for i in list(range(0, 512, 64)) * 4))


# ---- weight decay / pruning ------------------------------------------------------------------------------------
@bug("TW303")
def adamw_decay_on_everything(run) -> None:
    """A transformer classifier with AdamW(weight_decay=0.1) over model.parameters(): embeddings, LayerNorm
    gains and every bias decay too."""
    torch.manual_seed(0)
    ids, y = tokens(n=320, seed=6)
    model = Encoder()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    _loop(run, model, opt, ((ids[i:i + 32], y[i:i + 32]) for i in list(range(0, 320, 32)) * 3))


@bug("TW411")
def conv_channels_pruned_by_ln_structured(run) -> None:
    """Structured L2 pruning of half the filters of both convs before fine-tuning (the masks stay on)."""
    torch.manual_seed(0)
    x, y = images(n=256, seed=7)
    model = CNN(bn=False)
    prune.ln_structured(model.features[0], "weight", amount=0.5, n=2, dim=0)
    prune.ln_structured(model.features[3], "weight", amount=0.5, n=2, dim=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _loop(run, model, opt, ((x[i:i + 32], y[i:i + 32]) for i in list(range(0, 256, 32)) * 4))


# ---- token ids -------------------------------------------------------------------------------------------------
@bug("TW212")
def token_ids_clamped_into_small_table(run) -> None:
    """A 1000-word tokenizer feeding a 200-row embedding, 'fixed' with ``clamp(max=199)`` after an index error."""
    torch.manual_seed(0)
    ids, y = tokens(n=320, vocab=1000, seed=8)
    model = Encoder(vocab=200)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _loop(run, model, opt, ((ids[i:i + 32].clamp(max=199), y[i:i + 32]) for i in list(range(0, 320, 32)) * 3))


@bug("TW212")
def token_ids_wrapped_modulo_table(run) -> None:
    """A 500-word vocabulary hashed into a 200-row GRU embedding with ``% 200``: different words share rows."""
    torch.manual_seed(0)
    ids, y = tokens(n=320, vocab=500, seed=9)
    model = GRUClassifier(vocab=200)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(TensorDataset(ids % 200, y), batch_size=32, shuffle=True, generator=gen(2))
    _loop(run, model, opt, _epochs(loader, 30))


# ---- layout / same batch ---------------------------------------------------------------------------------------
@bug("TW213")
def channels_last_images_reshaped(run) -> None:
    """Images stored (N, H, W, C) by an image library, turned into NCHW with ``reshape``, not ``permute``."""
    torch.manual_seed(0)
    x, y = images(n=256, hw=16, seed=10)
    nhwc = x.permute(0, 2, 3, 1).contiguous()
    scrambled = nhwc.reshape(256, 3, 16, 16)
    model = CNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(TensorDataset(scrambled, y), batch_size=32, shuffle=True, generator=gen(3))
    _loop(run, model, opt, _epochs(loader, 30))


@bug("TW214")
def first_loader_batch_reused(run) -> None:
    """``xb, yb = next(iter(loader))`` hoisted out of the loop while debugging, and left there."""
    torch.manual_seed(0)
    x, y = tabular(n=640, seed=11)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(4))
    model = mlp(d=12, h=64, c=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    xb, yb = next(iter(loader))
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


# ---- short run at chance ---------------------------------------------------------------------------------------
@bug("TW109")
def labels_shuffled_apart_short_run(run) -> None:
    """A 20-step sanity run whose labels were shuffled separately from the features (no signal left)."""
    torch.manual_seed(0)
    x, y = tabular(n=640, seed=12)
    y = y[torch.randperm(640, generator=gen(5))]
    model = mlp(d=12, h=64, c=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _loop(run, model, opt, ((x[i:i + 32], y[i:i + 32]) for i in range(0, 640, 32)))


# ---- discarded output / collapse -------------------------------------------------------------------------------
class _Refiner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(200, 32)
        self.rnn = nn.GRU(32, 32, batch_first=True)
        self.refine = nn.Sequential(nn.Linear(32, 32), nn.Tanh())
        self.head = nn.Linear(32, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.rnn(self.emb(ids))[0].mean(1)
        refined = self.refine(h)  # noqa: F841  (the bug: the head reads h, not refined)
        return self.head(h)


@bug("TW413")
def refine_layer_output_dropped(run) -> None:
    torch.manual_seed(0)
    ids, y = tokens(n=320, seed=13)
    model = _Refiner()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _loop(run, model, opt, ((ids[i:i + 32], y[i:i + 32]) for i in list(range(0, 320, 32)) * 3))


@bug("TW414")
def byol_without_predictor_collapses(run) -> None:
    """Negative cosine between two views' projections, no predictor, no stop-gradient, no negatives."""
    torch.manual_seed(0)
    x, _ = tabular(n=512, d=16, seed=14)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def loss_of(m, a, b):
        return -F.cosine_similarity(m(a), m(b), dim=1).mean()

    watch(run, model, opt)
    for step in range(40):
        xb = x[(step * 64) % 512:(step * 64) % 512 + 64]
        loss = loss_of(model, xb + 0.3 * torch.randn_like(xb), xb + 0.3 * torch.randn_like(xb))
        opt.zero_grad()
        loss.backward()
        opt.step()


# ---- healthy controls ------------------------------------------------------------------------------------------
@healthy
def full_batch_lbfgs_free_training(run) -> None:
    """Full-batch gradient descent on a small table: the same tensor every step, on purpose."""
    torch.manual_seed(0)
    x, y = tabular(n=200, seed=20)
    model = mlp(d=12, h=32, c=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _loop(run, model, opt, ((x, y) for _ in range(30)))


@healthy
def full_batch_through_loader(run) -> None:
    """A DataLoader whose one batch is the whole training set."""
    torch.manual_seed(0)
    x, y = tabular(n=128, seed=21)
    loader = DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True, generator=gen(6))
    model = mlp(d=12, h=32, c=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _loop(run, model, opt, _epochs(loader, 30))


@healthy
def slow_but_learning_20_steps(run) -> None:
    """A 20-step run with a modest rate: the loss falls steadily but not far."""
    torch.manual_seed(0)
    x, y = tabular(n=640, seed=22)
    model = mlp(d=12, h=64, c=4)
    opt = torch.optim.Adam(model.parameters(), lr=4e-3)
    _loop(run, model, opt, ((x[i:i + 32], y[i:i + 32]) for i in range(0, 640, 32)))


@healthy
def frozen_embeddings_decay_groups_done_right(run) -> None:
    """Pretrained embeddings frozen and left out; AdamW decays weight matrices only."""
    torch.manual_seed(0)
    ids, y = tokens(n=320, seed=23)
    model = Encoder()
    model.emb.weight.requires_grad_(False)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name or name == "pos" else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=2e-3)
    _loop(run, model, opt, ((ids[i:i + 32], y[i:i + 32]) for i in list(range(0, 320, 32)) * 3))


@healthy
def sparse_bag_of_words(run) -> None:
    """Bag-of-words counts over 300 words: over 95% of every input row is zero."""
    torch.manual_seed(0)
    ids, y = tokens(n=512, length=10, vocab=300, seed=24)
    bow = torch.zeros(512, 300).scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float))
    model = nn.Sequential(nn.Linear(300, 64), nn.ReLU(), nn.Linear(64, 2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(TensorDataset(bow, y), batch_size=32, shuffle=True, generator=gen(7))
    _loop(run, model, opt, _epochs(loader, 40))


@healthy
def simclr_infonce_holds_spread(run) -> None:
    """Two noisy views, InfoNCE with in-batch negatives: representations stay spread."""
    torch.manual_seed(0)
    x, _ = tabular(n=512, d=16, seed=25)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    watch(run, model, opt)
    for step in range(40):
        xb = x[(step * 64) % 512:(step * 64) % 512 + 64]
        z1 = F.normalize(model(xb + 0.3 * torch.randn_like(xb)), dim=1)
        z2 = F.normalize(model(xb + 0.3 * torch.randn_like(xb)), dim=1)
        logits = z1 @ z2.T / 0.2
        loss = F.cross_entropy(logits, torch.arange(len(xb)))
        opt.zero_grad()
        loss.backward()
        opt.step()


class _AuxNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(12, 64), nn.ReLU())
        self.main = nn.Linear(64, 4)
        self.aux = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.main(h), self.aux(h)


@healthy
def auxiliary_head_in_the_loss(run) -> None:
    """A side head predicting the input norm, its loss weighted 0.3 into the total."""
    torch.manual_seed(0)
    x, y = tabular(n=512, seed=26)
    model = _AuxNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    for i in list(range(0, 512, 32)) * 2:
        xb, yb = x[i:i + 32], y[i:i + 32]
        logits, aux = model(xb)
        loss = F.cross_entropy(logits, yb) + 0.3 * F.mse_loss(aux.squeeze(1), xb.norm(dim=1))
        opt.zero_grad()
        loss.backward()
        opt.step()


@healthy
def channels_last_images_permuted(run) -> None:
    """NHWC images permuted to NCHW per batch in the loop, the right way."""
    torch.manual_seed(0)
    x, y = images(n=256, hw=16, seed=27)
    nhwc = x.permute(0, 2, 3, 1).contiguous()
    model = CNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(TensorDataset(nhwc, y), batch_size=32, shuffle=True, generator=gen(8))
    watch(run, model, opt)
    for xb, yb in _epochs(loader, 30):
        opt.zero_grad()
        F.cross_entropy(model(xb.permute(0, 3, 1, 2)), yb).backward()
        opt.step()


@healthy
def big_vocab_rare_ids(run) -> None:
    """A 5000-word Zipf vocabulary: most ids are rare, a few very frequent (real text, not a clamp)."""
    torch.manual_seed(0)
    ids, y = tokens(n=320, vocab=5000, seed=28, heavy_tail=True)
    model = GRUClassifier(vocab=5000)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _loop(run, model, opt, ((ids[i:i + 32], y[i:i + 32]) for i in list(range(0, 320, 32)) * 3))


@healthy
def dropout_heavy_mlp(run) -> None:
    """Dropout 0.5 after every hidden layer: many units are zero in any one forward."""
    torch.manual_seed(0)
    x, y = tabular(n=512, seed=29)
    model = nn.Sequential(nn.Linear(12, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 128), nn.ReLU(),
                          nn.Dropout(0.5), nn.Linear(128, 4))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    _loop(run, model, opt, ((x[i:i + 32], y[i:i + 32]) for i in list(range(0, 512, 32)) * 2))
