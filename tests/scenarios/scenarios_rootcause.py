"""Root causes, data that lies in range, short runs, discarded outputs and collapse: bare loops that add only
``run.watch(model, opt, **WATCH)`` (no loss module given), in MLP, CNN, recurrent and transformer forms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _kit import WATCH, blobs, bug, healthy, mlp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchwitness as tw


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _loop(run: tw.Run, model: nn.Module, opt: torch.optim.Optimizer, batches, loss_fn=F.cross_entropy) -> None:
    run.watch(model, opt, **WATCH)
    for xb, yb in batches:
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()


def _minibatches(x: torch.Tensor, y: torch.Tensor, steps: int, batch: int = 32, seed: int = 0):
    g = _gen(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        yield x[idx], y[idx]


def _smooth_images(n: int, channels: int = 3, size: int = 16, seed: int = 0, shared: bool = False) -> torch.Tensor:
    """(N, C, H, W) images with spatial structure: noise blurred by a 5x5 box, channels independent or shared."""
    g = _gen(seed)
    noise = torch.randn(n, 1 if shared else channels, size + 4, size + 4, generator=g)
    img = F.avg_pool2d(noise, 5, stride=1)
    img = img.expand(n, channels, size, size) if shared else img
    return (img / img.std()).contiguous()


def _cnn(channels: int = 3, classes: int = 4) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))


class _LM(nn.Module):
    """A one-layer causal transformer language model."""

    def __init__(self, vocab: int, d: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.block = nn.TransformerEncoderLayer(d, 2, 64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(ids.shape[1])
        return self.head(self.block(self.embed(ids), src_mask=mask, is_causal=True))


class _GRUClassifier(nn.Module):
    def __init__(self, vocab: int, classes: int = 3, d: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.rnn = nn.GRU(d, d, batch_first=True)
        self.head = nn.Linear(d, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.embed(ids))[0][:, -1])


def _lm_loop(run: tw.Run, model: nn.Module, data: torch.Tensor, steps: int = 12) -> None:
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g = _gen(1)
    run.watch(model, opt, **WATCH)
    for _ in range(steps):
        batch = data[torch.randint(0, len(data), (16,), generator=g)]
        opt.zero_grad()
        logits = model(batch[:, :-1])
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)).backward()
        opt.step()


# ---- root causes: one bug, one finding, its consequences nested ----------------------------------------------
@bug("TW201")
def nan_rows_arrive_after_the_first_audits(run: tw.Run) -> None:
    """Rows with NaN features reach the model from step 30 on: between sparse audits, the sentinel names it."""
    x, y = blobs(n=1024)
    x[512:, 3] = float("nan")
    model = mlp()
    order = torch.cat([torch.arange(512), torch.arange(512, 1024)])
    batches = [(x[order[i * 16:(i + 1) * 16]], y[order[i * 16:(i + 1) * 16]]) for i in range(40)]
    _loop(run, model, torch.optim.SGD(model.parameters(), 0.05), batches)


@bug("TW201")
def nan_sensor_readings_into_a_gru(run: tw.Run) -> None:
    x = torch.randn(256, 12, 4, generator=_gen())
    y = (x[:, :, 0].mean(1) > 0).long()
    x[200:, 5, 1] = float("nan")  # a sensor dropped out in the last files
    model = _SeqHead(nn.GRU(4, 16, batch_first=True), nn.Linear(16, 2))
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=False)
    _loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), [b for _ in range(3) for b in loader])


class _SeqHead(nn.Module):
    def __init__(self, rnn: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.rnn, self.head = rnn, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


@bug("TW204")
def blank_images_into_a_cnn(run: tw.Run) -> None:
    """A decoding bug leaves every image zero: dead filters, duplicates and zero gradients follow from it."""
    x, y = torch.zeros(256, 3, 16, 16), torch.randint(0, 4, (256,), generator=_gen())
    model = _cnn()
    _loop(run, model, torch.optim.SGD(model.parameters(), 0.05), _minibatches(x, y, 24))


@bug("TW204")
def blank_images_of_varying_brightness(run: tw.Run) -> None:
    """Each image is one flat grey level (the pixels were lost, the mean kept)."""
    level = torch.rand(256, 1, 1, 1, generator=_gen())
    x, y = level.expand(256, 3, 16, 16).contiguous(), (level.reshape(-1) > 0.5).long()
    model = _cnn(classes=2)
    _loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), _minibatches(x, y, 24))


@bug("TW101")
def log_of_an_underflowed_probability(run: tw.Run) -> None:
    """-log(softmax(z)[y]) by hand: a probability that underflows to 0 gives an infinite loss, not a high LR."""
    x, y = blobs()
    model = mlp()

    def loss_fn(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -torch.log(torch.softmax(z * 200, dim=1).gather(1, t[:, None])).mean()

    _loop(run, model, torch.optim.SGD(model.parameters(), 1e-3), _minibatches(x, y, 24), loss_fn)


@bug("TW202")
def nan_targets_arrive_late_in_a_regression(run: tw.Run) -> None:
    g = _gen()
    x = torch.randn(1024, 8, generator=g)
    y = (x @ torch.randn(8, 1, generator=g))
    y[600:] = float("nan")  # the labelling job never finished the last shard
    model = mlp(8, 16, 1)
    batches = [(x[i * 20:(i + 1) * 20], y[i * 20:(i + 1) * 20]) for i in range(40)]
    _loop(run, model, torch.optim.SGD(model.parameters(), 0.01), batches, lambda z, t: F.mse_loss(z, t))


@bug("TW411")
def structured_pruning_zeroed_filters(run: tw.Run) -> None:
    x, y = _smooth_images(256), torch.randint(0, 4, (256,), generator=_gen())
    model = _cnn()
    with torch.no_grad():
        model[2].weight[:12] = 0  # 12 of 16 filters pruned to zero, bias too
        model[2].bias[:12] = 0
    _loop(run, model, torch.optim.SGD(model.parameters(), 0.01), _minibatches(x, y, 24))


@bug("TW303")
def adamw_decays_every_tensor_of_a_transformer(run: tw.Run) -> None:
    model = _LM(64)
    data = torch.randint(0, 64, (128, 13), generator=_gen())
    opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.1)
    g = _gen(1)
    run.watch(model, opt, **WATCH)
    for _ in range(8):
        batch = data[torch.randint(0, 128, (16,), generator=g)]
        opt.zero_grad()
        F.cross_entropy(model(batch[:, :-1]).reshape(-1, 64), batch[:, 1:].reshape(-1)).backward()
        opt.step()


# ---- data that lies in range ------------------------------------------------------------------------------
@bug("TW212")
def token_ids_clamped_into_a_small_table(run: tw.Run) -> None:
    """A 96-token tokenizer, a 64-row table, and ids clamped to fit."""
    data = torch.randint(0, 96, (256, 17), generator=_gen()).clamp(max=63)
    _lm_loop(run, _LM(64), data)


@bug("TW212")
def token_ids_clamped_into_a_gru_classifier(run: tw.Run) -> None:
    ids = torch.randint(0, 120, (256, 10), generator=_gen()).clamp(max=79)
    y = (ids[:, 0] % 3)
    model = _GRUClassifier(80)
    _loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), _minibatches(ids, y, 16))


@bug("TW212")
def token_ids_wrapped_into_the_table(run: tw.Run) -> None:
    """ids % vocab: the first half of the table gets two tokens per row."""
    data = torch.randint(0, 96, (256, 33), generator=_gen()) % 64
    _lm_loop(run, _LM(64), data)


@bug("TW213")
def channels_last_images_reshaped_not_permuted(run: tw.Run) -> None:
    nchw = _smooth_images(256)
    x = nchw.permute(0, 2, 3, 1).contiguous().reshape(256, 3, 16, 16)  # NHWC memory read as NCHW
    y = torch.randint(0, 4, (256,), generator=_gen())
    model = _cnn()
    _loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), _minibatches(x, y, 12))


@bug("TW213")
def grey_images_reshaped_in_a_loader(run: tw.Run) -> None:
    """Channels that agree (grey-ish photos) reshaped from NHWC: rows still correlate, columns do not."""
    nchw = _smooth_images(256, shared=True)
    x = nchw.permute(0, 2, 3, 1).contiguous().view(256, 3, 16, 16)
    y = torch.randint(0, 4, (256,), generator=_gen())
    model = _cnn()
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=_gen())
    _loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), [b for _ in range(2) for b in loader])


@bug("TW214")
def one_slice_fed_every_step(run: tw.Run) -> None:
    x, y = blobs()
    xb, yb = x[:32], y[:32]  # meant to be the first batch of an epoch loop
    model = mlp()
    _loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), [(xb, yb)] * 24)


@bug("TW214")
def loader_batch_taken_once_before_the_loop(run: tw.Run) -> None:
    x, y = _smooth_images(256), torch.randint(0, 4, (256,), generator=_gen())
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=_gen())
    xb, yb = next(iter(loader))
    model = _cnn()
    _loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), [(xb, yb)] * 24)


# ---- short runs -------------------------------------------------------------------------------------------
@bug("TW109")
def labels_shuffled_in_a_short_run(run: tw.Run) -> None:
    x, y = blobs(n=1024)
    y = y[torch.randperm(1024, generator=_gen(3))]
    model = mlp()
    _loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), _minibatches(x, y, 24, batch=64))


# ---- outputs that never reach the loss, and collapse --------------------------------------------------------
class _ForgottenAssignment(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.block, self.head = nn.Linear(10, 32), nn.Sequential(nn.Linear(32, 32), nn.ReLU()), \
            nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        self.block(h)  # meant: h = self.block(h)
        return self.head(h)


@bug("TW413")
def block_output_never_assigned(run: tw.Run) -> None:
    x, y = blobs()
    model = _ForgottenAssignment()
    _loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), _minibatches(x, y, 12))


class _AuxGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head, self.aux = nn.GRU(4, 16, batch_first=True), nn.Linear(16, 2), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.rnn(x)[0][:, -1]
        return self.head(h), self.aux(h)


@bug("TW413")
def auxiliary_loss_never_added(run: tw.Run) -> None:
    x = torch.randn(256, 8, 4, generator=_gen())
    y = (x[:, :, 0].mean(1) > 0).long()
    model = _AuxGRU()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    run.watch(model, opt, **WATCH)
    for xb, yb in _minibatches(x, y, 12):
        main, aux = model(xb)
        aux_loss = F.mse_loss(aux, xb[:, -1])  # computed, logged, never added
        loss = F.cross_entropy(main, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _ = aux_loss.detach()


class _Siamese(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


@bug("TW414")
def siamese_without_negatives_collapses(run: tw.Run) -> None:
    """Two views pulled together with nothing keeping samples apart: one embedding for every input."""
    x, _ = blobs(n=1024)
    model = _Siamese()
    opt = torch.optim.Adam(model.parameters(), 5e-2)
    g = _gen(2)
    run.watch(model, opt, **WATCH)
    for _ in range(30):
        xb = x[torch.randint(0, 1024, (64,), generator=g)]
        z1 = model(xb + 0.1 * torch.randn(xb.shape, generator=g))
        z2 = model(xb + 0.1 * torch.randn(xb.shape, generator=g))
        opt.zero_grad()
        (-F.cosine_similarity(z1, z2).mean()).backward()
        opt.step()


# ---- healthy controls that tempt the new rules ------------------------------------------------------------
@healthy
def language_model_with_bos_and_trailing_padding(run: tw.Run) -> None:
    """Pad id is the last row and fills the ends of short rows; every row starts with BOS (id 1)."""
    g = _gen()
    data = torch.randint(2, 63, (256, 17), generator=g)
    data[:, 0] = 1
    lengths = torch.randint(8, 17, (256,), generator=g)
    data[torch.arange(17)[None, :] >= lengths[:, None]] = 63
    _lm_loop(run, _LM(64), data)


@healthy
def zipf_like_token_frequencies(run: tw.Run) -> None:
    probs = 1.0 / torch.arange(1, 65).float()
    data = torch.multinomial(probs, 256 * 17, replacement=True, generator=_gen()).reshape(256, 17)
    _lm_loop(run, _LM(64), data, steps=16)


@healthy
def channels_last_images_permuted_properly(run: tw.Run) -> None:
    nhwc = _smooth_images(256).permute(0, 2, 3, 1).contiguous()
    x = nhwc.permute(0, 3, 1, 2)  # the right way
    y = torch.randint(0, 4, (256,), generator=_gen())
    model = _cnn()
    _loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), _minibatches(x, y, 12))


@healthy
def noise_images_have_no_neighbours(run: tw.Run) -> None:
    x, y = torch.randn(256, 3, 16, 16, generator=_gen()), torch.randint(0, 4, (256,), generator=_gen(1))
    model = _cnn()
    _loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), _minibatches(x, y, 12))


@healthy
def full_batch_through_a_dataloader(run: tw.Run) -> None:
    """The loader's one batch is the whole data set, drawn afresh (and reshuffled) every epoch."""
    x, y = blobs(n=128)
    loader = DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True, generator=_gen())
    model = mlp()
    _loop(run, model, torch.optim.SGD(model.parameters(), 0.1), [b for _ in range(24) for b in loader])


@healthy
def full_batch_tensor_held_across_steps(run: tw.Run) -> None:
    x, y = blobs(n=256)
    model = mlp()
    _loop(run, model, torch.optim.SGD(model.parameters(), 0.1), [(x, y)] * 24)


@healthy
def contrastive_views_keep_their_spread(run: tw.Run) -> None:
    x, _ = blobs(n=1024)
    model = _Siamese()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g = _gen(2)
    run.watch(model, opt, **WATCH)
    for _ in range(30):
        xb = x[torch.randint(0, 1024, (64,), generator=g)]
        z1 = F.normalize(model(xb + 0.1 * torch.randn(xb.shape, generator=g)), dim=1)
        z2 = F.normalize(model(xb + 0.1 * torch.randn(xb.shape, generator=g)), dim=1)
        opt.zero_grad()
        F.cross_entropy(z1 @ z2.T / 0.1, torch.arange(64)).backward()  # InfoNCE: the other samples are negatives
        opt.step()


@healthy
def short_run_still_learning(run: tw.Run) -> None:
    x, y = blobs(n=1024)
    model = mlp()
    _loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), _minibatches(x, y, 22, batch=64))


@healthy
def gru_classifier_with_a_frozen_embedding(run: tw.Run) -> None:
    """A frozen, pre-trained embedding feeds a GRU: no gradient for it by design, nothing discarded."""
    ids = torch.randint(0, 50, (256, 10), generator=_gen())
    y = ids[:, :3].sum(1) % 3
    model = _GRUClassifier(50)
    model.embed.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)
    _loop(run, model, opt, _minibatches(ids, y, 12))


@healthy
def left_padded_gru_classifier(run: tw.Run) -> None:
    """Rows padded on the left with id 0 (no padding_idx given): one run per row, at its start."""
    g = _gen()
    ids = torch.randint(1, 80, (256, 12), generator=g)
    lengths = torch.randint(4, 13, (256,), generator=g)
    ids[torch.arange(12)[None, :] < (12 - lengths)[:, None]] = 0
    y = ids[:, -1] % 3
    model = _GRUClassifier(80)
    _loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), _minibatches(ids, y, 12))


@healthy
def full_batch_on_a_training_split(run: tw.Run) -> None:
    """The first 400 of 1,000 rows are the training split, trained on whole at every step."""
    x, y = blobs(n=1000)
    model = mlp()
    _loop(run, model, torch.optim.SGD(model.parameters(), 0.1), [(x[:400], y[:400])] * 24)


class _NoGradEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder, self.head = nn.Sequential(nn.Linear(10, 32), nn.ReLU()), nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # meant for a frozen encoder, but the encoder is in the optimizer
            h = self.encoder(x)
        return self.head(h)


@bug("TW110")
def encoder_run_under_no_grad(run: tw.Run) -> None:
    x, y = blobs()
    model = _NoGradEncoder()
    _loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), _minibatches(x, y, 8))


@healthy
def frozen_encoder_run_under_no_grad(run: tw.Run) -> None:
    x, y = blobs()
    model = _NoGradEncoder()
    model.encoder.requires_grad_(False)  # frozen for real, and run without autograd to save memory
    _loop(run, model, torch.optim.Adam(model.head.parameters(), 1e-3), _minibatches(x, y, 8))


@healthy
def full_batch_converted_every_step(run: tw.Run) -> None:
    """float64 data turned into float32 at every step: a new copy, the same rows, the whole data set."""
    x, y = blobs(n=512)
    x = x.double()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    run.watch(model, opt, **WATCH)
    for _ in range(12):
        opt.zero_grad()
        F.cross_entropy(model(x.float()), y).backward()
        opt.step()


class _TokensAndFeatures(nn.Module):
    """Token ids and a floating side input (a mask or features) handed to forward as two arguments."""

    def __init__(self, vocab: int = 40, d: int = 16, features: int = 0) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(d + features, vocab)

    def forward(self, ids: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        if side.ndim == 2 and side.shape[0] == side.shape[1]:  # an additive causal mask
            return self.head(self.enc(self.emb(ids), mask=side))
        h = self.enc(self.emb(ids))
        return self.head(torch.cat([h, side.unsqueeze(1).expand(-1, h.shape[1], -1)], -1))


def _next_token_loop(run: tw.Run, model: nn.Module, side: callable, steps: int = 60) -> None:
    opt = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=0.0)
    run.watch(model, opt, **WATCH)
    g = torch.Generator().manual_seed(5)
    for step in range(steps):
        ids = (torch.randint(0, 40, (16, 1), generator=g) + torch.arange(13)) % 40  # learnable: counting on
        logits = model(ids[:, :-1], side(step))
        opt.zero_grad()
        F.cross_entropy(logits.reshape(-1, 40), ids[:, 1:].reshape(-1)).backward()
        opt.step()


@healthy
def causal_lm_with_additive_masks(run: tw.Run) -> None:
    """An additive causal mask as forward's second argument: its -inf (or -1e9) is by design, not bad data."""
    mask = nn.Transformer.generate_square_subsequent_mask(12)
    _next_token_loop(run, _TokensAndFeatures(), lambda step: mask if step % 2 else mask.clamp(min=-1e9))


@bug("TW201", tolerated=("TW209",))
def nan_in_second_input_mid_run(run: tw.Run) -> None:
    """Token ids plus a float feature vector; from step 37 a feature row holds NaN (named as that argument). A
    second, real problem: with features the encoder runs without its causal mask on next-token targets (TW209)."""
    g = torch.Generator().manual_seed(6)

    def features(step: int) -> torch.Tensor:
        f = torch.randn(16, 4, generator=g)
        if step >= 37:
            f[3, 1] = float("nan")
        return f

    _next_token_loop(run, _TokensAndFeatures(features=4), features)


@healthy
def gradients_set_by_autograd_grad(run: tw.Run) -> None:
    """``p.grad = g`` from ``torch.autograd.grad`` each step (meta-learning style): no .grad is accumulated, so
    gradients present when the next backward starts are not left over from a forgotten zero_grad."""
    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    params = list(model.parameters())
    run.watch(model, opt, **WATCH)
    for step in range(60):
        i = (step * 32) % 480
        grads = torch.autograd.grad(F.cross_entropy(model(x[i:i + 32]), y[i:i + 32]), params)
        for p, grad in zip(params, grads, strict=True):
            p.grad = grad
        opt.step()
