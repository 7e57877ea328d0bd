"""Blind scenarios, second round: the same bug classes in other forms (other models, loops, data paths), written
after the first round's fixes and run before any further change, to see whether those fixes generalise.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from _blindkit import (
    CNN,
    Encoder,
    GRUClassifier,
    SeqRegressor,
    batches,
    ce_loop,
    gen,
    images,
    loader_loop,
    mlp,
    mse_loop,
    sequences,
    tabular,
    tokens,
    two_views_loop,
    watch,
    zipf,
)
from _kit import bug, healthy
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import DataLoader, TensorDataset


# ==== non-finite ===============================================================================================
@bug("TW202")
def blind2_nan_regression_targets_loader(run) -> None:
    """Missing target values (NaN) in a regression table, through a shuffled DataLoader into an MLP."""
    g = gen(100)
    x = torch.randn(384, 8, generator=g)
    y = (x @ torch.randn(8, 1, generator=g))
    y[torch.randperm(384, generator=g)[:12]] = float("nan")
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(101))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), loader, steps=30, loss_fn=nn.MSELoss())


@bug("TW201")
def blind2_inf_feature_gru(run) -> None:
    """A feature computed as a ratio divides by a count that is 0 for some sequences: Inf inputs into a GRU."""
    s, y = sequences(seed=102)
    counts = torch.randint(0, 6, (320, 10, 1), generator=gen(103)).float()
    s = torch.cat([s[:, :, :3], s[:, :, 3:] / counts], 2)
    model = SeqRegressor(lstm=False)
    mse_loop(run, model, torch.optim.Adam(model.parameters(), 5e-3), s, y)


@bug("TW101")
def blind2_log_softmax_probs_cross_entropy_by_hand(run) -> None:
    """Cross-entropy written by hand as -(onehot * log(softmax(z))).sum(1) with an output layer initialised far
    too large (std 20): some probabilities underflow to 0 and log(0) is -inf."""
    x, y = tabular(n=512, d=12, c=6, seed=104)
    model = mlp(c=6)
    nn.init.normal_(model[-1].weight, std=20.0)
    opt = torch.optim.SGD(model.parameters(), 0.01)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 30, 32):
        p = F.softmax(model(xb), dim=1)
        loss = -(F.one_hot(yb, 6) * torch.log(p)).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@bug("TW307")
def blind2_lr_too_high_adam_cnn(run) -> None:
    """Adam at lr=3 on a BatchNorm CNN fed by a DataLoader."""
    x, y = images(n=256, seed=105)
    model = CNN()
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(106))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 3.0), loader, steps=30)


# ==== inputs ===================================================================================================
@bug("TW204")
def blind2_zero_features_lstm(run) -> None:
    """A feature pipeline bug leaves the sequence tensor as allocated: torch.zeros, every step."""
    s, y = sequences(seed=107)
    s = torch.zeros_like(s)
    model = SeqRegressor()
    mse_loop(run, model, torch.optim.Adam(model.parameters(), 5e-3), s, y)


@bug("TW204")
def blind2_blank_images_constant_per_image(run) -> None:
    """Each image filled with its mean brightness (a resize to 1x1 and back): blank, differing only in level."""
    x, y = images(n=256, seed=108)
    x = x.mean((2, 3), keepdim=True).expand_as(x).contiguous()
    model = CNN()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), x, y, steps=30)


@bug("TW203")
def blind2_raw_units_tabular(run) -> None:
    """Tabular features in raw units (incomes ~1e4-1e5, ages ~20-80) fed unscaled."""
    x, y = tabular(n=512, d=6, c=3, seed=109)
    raw = x * torch.tensor([20000.0, 15.0, 3000.0, 1.0, 50.0, 8000.0]) + torch.tensor([50000.0, 45, 0, 0, 0, 0])
    model = mlp(d=6, c=3)
    ce_loop(run, model, torch.optim.SGD(model.parameters(), 1e-3), raw, y, steps=30)


# ==== dead units, pruning, decay ===============================================================================
@bug("TW404")
def blind2_dead_filters_after_bn_shift(run) -> None:
    """BatchNorm betas initialised to -4 before a ReLU: most filters output zero for every image."""
    x, y = images(n=256, seed=110)
    model = CNN()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.bias, -4.0)
    ce_loop(run, model, torch.optim.SGD(model.parameters(), 0.01), x, y, steps=30)


@bug("TW411")
def blind2_pruned_first_conv(run) -> None:
    """ln_structured pruning of 60% of the first conv's filters (dim 0) in a DataLoader loop."""
    x, y = images(n=256, seed=111)
    model = CNN(bn=False)
    prune.ln_structured(model.features[0], "weight", amount=0.6, n=1, dim=0)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(112))
    loader_loop(run, model, torch.optim.SGD(model.parameters(), 0.05, momentum=0.9), loader, steps=30)


@bug("TW303")
def blind2_decay_on_embeddings_gru(run) -> None:
    """AdamW(weight_decay=0.05) over an embedding table, GRU biases and all."""
    ids, y = tokens(n=320, seed=113)
    model = GRUClassifier()
    ce_loop(run, model, torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=0.05), ids, y, steps=30)


# ==== tokens, images, batches ==================================================================================
@bug("TW212")
def blind2_clamped_ids_transformer_loader(run) -> None:
    """A 2000-id tokenizer's ids clamped to a 500-row embedding, transformer via DataLoader."""
    g = gen(114)
    raw = zipf(320 * 20, 2000, g, s=1.0).view(320, 20)
    y = (torch.randn(2000, generator=g)[raw].mean(1) > 0).long()
    model = Encoder(vocab=500)
    loader = DataLoader(TensorDataset(raw.clamp(0, 499), y), batch_size=32, shuffle=True, generator=gen(115))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), loader, steps=30)


@bug("TW212")
def blind2_wrapped_ids_gru_loader(run) -> None:
    """Ids from a 1500-token vocabulary wrapped modulo a 1000-row embedding (ids 0-499 doubled), GRU."""
    g = gen(116)
    raw = torch.randint(0, 1500, (320, 16), generator=g)
    y = (torch.randn(1500, generator=g)[raw].mean(1) > 0).long()
    model = GRUClassifier(vocab=1000)
    loader = DataLoader(TensorDataset(raw % 1000, y), batch_size=32, shuffle=True, generator=gen(117))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), loader, steps=30)


@bug("TW213")
def blind2_rgba_reshaped(run) -> None:
    """RGBA images (NHWC) reshaped to (N, 4, H, W); the alpha channel is all ones."""
    x, y = images(n=256, hw=16, seed=118)
    nhwc = torch.cat([x, torch.ones(256, 1, 16, 16)], 1).permute(0, 2, 3, 1).contiguous()
    model = CNN(c=4)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), nhwc.reshape(256, 4, 16, 16), y, steps=30)


@bug("TW214")
def blind2_fixed_slice_lstm(run) -> None:
    """xb, yb = X[:64], Y[:64] set before the loop of an LSTM regressor: the same rows every step."""
    s, y = sequences(n=640, seed=119)
    model = SeqRegressor()
    xb, yb = s[:64], y[:64]
    mse_loop(run, model, torch.optim.Adam(model.parameters(), 5e-3), xb, yb, full_batch=True)


@bug("TW214")
def blind2_one_loader_batch_transformer(run) -> None:
    """batch = next(iter(loader)) before the loop of a transformer classifier."""
    ids, y = tokens(n=320, seed=120)
    loader = DataLoader(TensorDataset(ids, y), batch_size=32, shuffle=True, generator=gen(121))
    xb, yb = next(iter(loader))
    model = Encoder()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), xb, yb, full_batch=True)


# ==== wiring ===================================================================================================
@bug("TW413")
def blind2_aux_head_loss_dropped(run) -> None:
    """An auxiliary head is computed in forward, but its loss term is never added."""
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(12, 32), nn.ReLU())
            self.head = nn.Linear(32, 4)
            self.aux = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.body(x)
            self.aux_out = self.aux(h)
            return self.head(h)

    x, y = tabular(n=512, seed=122)
    model = Net()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), x, y, steps=30)


@bug("TW414")
def blind2_byol_without_predictor(run) -> None:
    """BYOL-style 2 - 2cos loss between two views' projections, no predictor, no stop-gradient, no momentum
    target: collapse."""
    g = gen(123)
    data = torch.randn(512, 20, generator=g)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 16))
    two_views_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), data,
                   lambda m, a, b: (2 - 2 * (F.normalize(m(a), dim=1) * F.normalize(m(b), dim=1)).sum(1)).mean(),
                   noise=0.2)


@bug("TW151")
def blind2_softmax_into_nll(run) -> None:
    """F.nll_loss(F.softmax(out)) (log forgotten), GRU over tokens."""
    ids, y = tokens(n=320, seed=124)
    model = GRUClassifier()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for xb, yb in batches(ids, y, 30, 32):
        opt.zero_grad()
        F.nll_loss(F.softmax(model(xb), dim=1), yb).backward()
        opt.step()


@bug("TW150")
def blind2_sigmoid_into_bce_with_logits(run) -> None:
    """A model ending in nn.Sigmoid trained with BCEWithLogitsLoss."""
    g = gen(125)
    x = torch.randn(512, 10, generator=g)
    y = (x @ torch.randn(10, generator=g) > 0).float().unsqueeze(1)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1), nn.Sigmoid())
    loss_fn = nn.BCEWithLogitsLoss()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 30, 32):
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()


@bug("TW301")
def blind2_head_replaced_after_optimizer(run) -> None:
    """The optimizer is created, then model.head is replaced for the new task: the new head never trains."""
    x, y = images(n=256, seed=126)
    model = CNN(classes=10)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    model.head = nn.Linear(16, 4)
    ce_loop(run, model, opt, x, y, steps=30)


@bug("TW305")
def blind2_noop_freeze_attribute(run) -> None:
    """model.features.requires_grad = False (an attribute, not requires_grad_): the body keeps training."""
    x, y = images(n=256, seed=127)
    model = CNN()
    model.features.requires_grad = False
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), x, y, steps=30)


# ==== loop and schedule ========================================================================================
@bug("TW304")
def blind2_no_zero_grad_adam_cnn(run) -> None:
    """No zero_grad in a DataLoader loop with Adam and a BatchNorm CNN."""
    x, y = images(n=256, seed=128)
    model = CNN()
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(129))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), loader, zero_grad=False)


@bug("TW401")
def blind2_transformer_left_in_eval(run) -> None:
    """A transformer with dropout trained after model.eval() from a sanity check."""
    ids, y = tokens(n=320, seed=130)

    class Net(Encoder):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(0.3)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return super().forward(ids) + 0 * self.drop(self.emb.weight[:1, :2]).sum()

    model = Net()
    model.eval()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), ids, y, steps=30)


@bug("TW308")
def blind2_exponential_lr_per_batch(run) -> None:
    """ExponentialLR(gamma=0.5) meant per epoch, stepped per batch, on a CNN: the LR is ~1e-9 of itself by the end."""
    x, y = images(n=256, seed=131)
    model = CNN()
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
    ce_loop(run, model, opt, x, y, sched=torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5))


@bug("TW111")
def blind2_clip_grad_value_zero(run) -> None:
    """clip_grad_value_(params, 0.0): every gradient element clamped to 0."""
    ids, y = tokens(n=320, seed=132)
    model = GRUClassifier()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for xb, yb in batches(ids, y, 30, 32):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 0.0)
        opt.step()


@bug("TW407")
def blind2_batchnorm1d_batch_two(run) -> None:
    """An MLP with BatchNorm1d trained on batches of 2."""
    x, y = tabular(n=128, seed=133)
    model = nn.Sequential(nn.Linear(12, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))
    loader = DataLoader(TensorDataset(x, y), batch_size=2, shuffle=True, generator=gen(134))
    loader_loop(run, model, torch.optim.SGD(model.parameters(), 0.02), loader, steps=30)


# ==== labels ===================================================================================================
@bug("TW109")
def blind2_labels_shuffled_cnn_loader(run) -> None:
    """Labels shuffled apart from images before building the dataset; CNN, DataLoader, 30 steps."""
    x, y = images(n=512, seed=135)
    y = y[torch.randperm(512, generator=gen(136))]
    model = CNN()
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(137))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), loader, steps=30)


@bug("TW209")
def blind2_label_column_left_in_features(run) -> None:
    """The label column is left among the features (a drop() that missed it)."""
    x, y = tabular(n=512, d=11, c=3, seed=138)
    x = torch.cat([x, y.float().unsqueeze(1)], 1)
    model = mlp(d=12, c=3)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), x, y, steps=30)


@bug("TW210")
def blind2_rare_positive_class(run) -> None:
    """A 1:40 binary task with plain cross-entropy and no weights."""
    g = gen(139)
    x = torch.randn(1024, 10, generator=g)
    score = x @ torch.randn(10, generator=g)
    y = (score > score.quantile(0.976)).long()
    model = mlp(d=10, c=2)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), x, y, steps=30, batch=64)


@bug("TW152")
def blind2_l1_broadcast(run) -> None:
    """L1 loss between (N,) predictions and (N, 1) targets: broadcast to (N, N)."""
    s, y = sequences(seed=140)
    model = SeqRegressor()
    opt = torch.optim.Adam(model.parameters(), 5e-3)
    watch(run, model, opt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for xb, yb in batches(s, y, 30, 32):
            opt.zero_grad()
            F.l1_loss(model(xb).squeeze(1), yb).backward()
            opt.step()


@bug("TW104")
def blind2_vanishing_deep_tanh_small_init(run) -> None:
    """A 12-layer tanh MLP initialised with std 0.05: the signal and gradients fade through depth."""
    x, y = tabular(n=512, seed=141)
    model = mlp(depth=12, act=nn.Tanh)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.05)
    ce_loop(run, model, torch.optim.SGD(model.parameters(), 0.05), x, y, steps=30)


# ==== healthy controls =========================================================================================
@healthy
def blind2_ok_autoencoder(run) -> None:
    """An MLP autoencoder: the target is the input itself."""
    g = gen(150)
    z = torch.randn(512, 4, generator=g)
    x = torch.tanh(z @ torch.randn(4, 16, generator=g))
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 16))
    loss_fn = nn.MSELoss()
    opt = torch.optim.Adam(model.parameters(), 5e-3)
    watch(run, model, opt)
    for xb, _ in batches(x, x, 30, 32):
        opt.zero_grad()
        loss_fn(model(xb), xb).backward()
        opt.step()


@healthy
def blind2_ok_next_token_lm(run) -> None:
    """A next-token GRU language model over Zipf-distributed tokens: cross-entropy over the whole vocabulary."""
    g = gen(151)
    vocab = 150
    seq = zipf(256 * 17, vocab, g).view(256, 17)

    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(vocab, 32)
            self.rnn = nn.GRU(32, 32, batch_first=True)
            self.out = nn.Linear(32, vocab)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.out(self.rnn(self.emb(ids))[0])

    model = LM()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for xb, _ in batches(seq, seq, 30, 32):
        opt.zero_grad()
        logits = model(xb[:, :-1])
        F.cross_entropy(logits.reshape(-1, vocab), xb[:, 1:].reshape(-1)).backward()
        opt.step()


@healthy
def blind2_ok_padded_tokens_no_padding_idx(run) -> None:
    """Variable-length sequences right-padded with id 0 (no padding_idx set), transformer classifier."""
    ids, y = tokens(n=320, length=20, vocab=200, seed=152)
    ids = ids.clamp(min=1)
    lengths = torch.randint(6, 21, (320,), generator=gen(153))
    ids[torch.arange(20).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    model = Encoder()
    ce_loop(run, model, torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=0.0), ids, y, steps=40)


@healthy
def blind2_ok_distillation(run) -> None:
    """A student fits a teacher's softened outputs with KL divergence (targets computed each step)."""
    x, y = tabular(n=512, seed=154)
    teacher = mlp(h=64)
    pre = torch.optim.Adam(teacher.parameters(), 1e-2)
    for xb, yb in batches(x, y, 60, 64, seed=155):
        pre.zero_grad()
        F.cross_entropy(teacher(xb), yb).backward()
        pre.step()
    student = mlp(h=16)
    opt = torch.optim.Adam(student.parameters(), 5e-3)
    watch(run, student, opt)
    for xb, _ in batches(x, y, 30, 32):
        with torch.no_grad():
            soft = F.softmax(teacher(xb) / 2.0, dim=1)
        opt.zero_grad()
        F.kl_div(F.log_softmax(student(xb) / 2.0, dim=1), soft, reduction="batchmean").backward()
        opt.step()


@healthy
def blind2_ok_grayscale_augmented_cnn(run) -> None:
    """Grayscale images with random horizontal flips and noise each step, BatchNorm CNN, SGD."""
    x, y = images(n=256, c=1, seed=156)
    model = CNN(c=1)
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 30, 32):
        flip = torch.rand(len(xb)) < 0.5
        xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb) + 0.05 * torch.randn_like(xb)
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@healthy
def blind2_ok_multitask_two_heads(run) -> None:
    """A shared body with a classification and a regression head, both losses summed."""
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(12, 32), nn.ReLU())
            self.cls = nn.Linear(32, 4)
            self.reg = nn.Linear(32, 1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.body(x)
            return self.cls(h), self.reg(h)

    x, y = tabular(n=512, seed=157)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), 5e-3)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 30, 32):
        c, q = model(xb)
        opt.zero_grad()
        (F.cross_entropy(c, yb) + F.mse_loss(q, xb[:, :1] * 2)).backward()
        opt.step()


@healthy
def blind2_ok_warm_restarts(run) -> None:
    """CosineAnnealingWarmRestarts(T_0=10) stepped per batch: the rate dips towards 0 and restarts."""
    x, y = tabular(n=512, seed=158)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9)
    ce_loop(run, model, opt, x, y, steps=40, sched=torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10))


@healthy
def blind2_ok_lstm_full_batch_small_data(run) -> None:
    """A 96-sequence dataset trained full-batch (the same tensor every step) with an LSTM."""
    s, y = sequences(n=96, seed=159)
    model = SeqRegressor()
    mse_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), s, y, full_batch=True)


@healthy
def blind2_ok_balanced_binary_bce(run) -> None:
    """A balanced binary task with BCEWithLogitsLoss on a transformer over tokens."""
    ids, y = tokens(n=320, seed=160)

    class Net(Encoder):
        def __init__(self) -> None:
            super().__init__(classes=1)

    model = Net()
    loss_fn = nn.BCEWithLogitsLoss()
    opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.01)
    watch(run, model, opt)
    for xb, yb in batches(ids, y, 30, 32):
        opt.zero_grad()
        loss_fn(model(xb).squeeze(1), yb.float()).backward()
        opt.step()


@healthy
def blind2_ok_hand_written_l2_penalty(run) -> None:
    """An L2 penalty added to the loss by hand: loss + 1e-4 * sum of squared weights."""
    x, y = tabular(n=512, seed=161)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 30, 32):
        opt.zero_grad()
        logits = model(xb)
        penalty = sum(p.pow(2).sum() for p in model.parameters())
        (F.cross_entropy(logits, yb) + 1e-4 * penalty).backward()
        opt.step()


@healthy
def blind2_ok_hand_written_autoencoder_loss(run) -> None:
    """A convolution-free denoising autoencoder whose MSE is written by hand: ((model(x + noise) - x) ** 2).mean()."""
    g = gen(162)
    z = torch.randn(512, 3, generator=g)
    x = z @ torch.randn(3, 24, generator=g)
    model = nn.Sequential(nn.Linear(24, 12), nn.ReLU(), nn.Linear(12, 24))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    watch(run, model, opt)
    for xb, _ in batches(x, x, 60, 32):
        loss = ((model(xb + 0.05 * torch.randn_like(xb)) - xb) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
