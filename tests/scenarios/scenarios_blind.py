"""Blind scenarios, written without reading the rules or the other scenario modules, in the held-out suite's style.

Each is a bare training loop (plain or DataLoader; MLP, CNN, GRU/LSTM, transformer encoder) with only
``run.watch(model, opt, ...)`` added: no ``loss_fn`` is passed, so the watch sees the loss only through the
backward it drives. The healthy controls each tempt a rule (full-batch training, constant padding channels,
decay on weights only, a tiny run, a frozen backbone, Zipf-distributed tokens, correctly permuted images, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _blindkit import (
    CNN,
    Encoder,
    GRUClassifier,
    batches,
    ce_loop,
    gen,
    images,
    loader_loop,
    mlp,
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


# ==== non-finite values ========================================================================================
@bug("TW201")
def blind_nan_rows_arrive_late(run) -> None:
    """A feature is log(raw) and raw goes negative in the last fifth of an unshuffled table: NaN from step ~12."""
    x, y = tabular(n=512)
    raw = x[:, 0].exp()
    raw[410:430] = -raw[410:430]
    x[:, 0] = torch.log(raw)
    model = mlp()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), x, y, steps=30, shuffle=False)


@bug("TW201")
def blind_nan_pixels_dataloader_cnn(run) -> None:
    """A few images carry NaN pixels (a corrupt decode); shuffled DataLoader into a BatchNorm CNN."""
    x, y = images(n=256)
    x[torch.arange(0, 256, 40), 0, 3, 3] = float("nan")
    model = CNN()
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=gen(2))
    loader_loop(run, model, torch.optim.SGD(model.parameters(), 0.05, momentum=0.9), loader, steps=30)


@bug("TW201")
def blind_nan_from_constant_sequence_lstm(run) -> None:
    """Each sequence is standardised by its own std; some sequences are flat, so 0/0 puts NaN into the LSTM."""
    g = gen(3)
    seq = torch.randn(256, 16, 1, generator=g).cumsum(1)
    seq[::17] = 1.0
    y = (seq[:, -1, 0] > seq[:, 0, 0]).long()
    seq = (seq - seq.mean(1, keepdim=True)) / seq.std(1, keepdim=True)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(1, 16, batch_first=True)
            self.head = nn.Linear(16, 2)

        def forward(self, s: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(s)[0][:, -1])

    model = Net()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 5e-3), seq, y, steps=30)


@bug("TW101")
def blind_log_of_saturated_sigmoid(run) -> None:
    """Hand-written BCE: log(sigmoid) and log(1 - sigmoid) hit log(0) once logits pass ~17 (0 * -inf = NaN)."""
    g = gen(4)
    x = torch.randn(512, 8, generator=g) * 3
    y = (x @ torch.randn(8, generator=g) > 0).float()
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), 0.05)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 40, 64):
        p = torch.sigmoid(model(xb).squeeze(1))
        loss = -(yb * torch.log(p) + (1 - yb) * torch.log(1 - p)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@bug("TW101")
def blind_log_softmax_low_temperature(run) -> None:
    """log(softmax(logits / 0.01)) taken in two steps: the probabilities underflow to 0 and the loss is inf."""
    x, y = tabular(n=512, c=5)
    model = mlp(c=5)
    opt = torch.optim.SGD(model.parameters(), 0.01)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 30, 32):
        probs = F.softmax(model(xb) / 0.01, dim=1)
        loss = F.nll_loss(torch.log(probs), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()


@bug("TW307")
def blind_lr_too_high_regression(run) -> None:
    """SGD at lr=5 on a regression MLP with MSELoss: the loss explodes to inf/NaN within a few steps."""
    g = gen(5)
    x = torch.randn(512, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g)
    model = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 1))
    loss_fn = nn.MSELoss()
    opt = torch.optim.SGD(model.parameters(), lr=5.0)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 30, 32):
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()


@bug("TW307")
def blind_lr_too_high_gru_sgd(run) -> None:
    """A GRU classifier under SGD at lr=50: the embeddings and gates blow up."""
    ids, y = tokens()
    model = GRUClassifier()
    ce_loop(run, model, torch.optim.SGD(model.parameters(), lr=50.0), ids, y, steps=30)


# ==== inputs that carry nothing ================================================================================
@bug("TW204")
def blind_blank_images_integer_division(run) -> None:
    """uint8 images scaled with // 255 instead of / 255: every pixel but pure white becomes 0."""
    g = gen(6)
    y = torch.randint(0, 4, (256,), generator=g)
    raw = (torch.rand(256, 3, 12, 12, generator=g) * 200 + y.view(-1, 1, 1, 1) * 10).to(torch.uint8)
    x = (raw // 255).float()
    model = CNN()
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(7))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), loader, steps=30)


@bug("TW204")
def blind_constant_features_broadcast_mean(run) -> None:
    """The feature matrix is replaced by its column means broadcast over rows: every sample looks the same."""
    x, y = tabular(n=512)
    x = x.mean(0, keepdim=True).expand_as(x).contiguous()
    model = mlp()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), x, y, steps=30)


# ==== dead units ===============================================================================================
@bug("TW404")
def blind_dead_filters_negative_bias_init(run) -> None:
    """A custom init sets the first conv's biases to -5 (no BatchNorm): its ReLU filters never fire."""
    x, y = images(n=256)
    model = CNN(bn=False)
    nn.init.constant_(model.features[0].bias, -5.0)
    ce_loop(run, model, torch.optim.SGD(model.parameters(), 0.05, momentum=0.9), x, y, steps=30)


@bug("TW403")
def blind_dead_relu_hidden_layer(run) -> None:
    """The hidden layer's bias initialised to -4: nearly every ReLU unit is off for every input."""
    x, y = tabular(n=512)
    model = mlp(depth=3)
    nn.init.constant_(model[2].bias, -4.0)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), x, y, steps=30)


# ==== optimizer configuration ==================================================================================
@bug("TW303")
def blind_adamw_decay_everything_transformer(run) -> None:
    """AdamW(model.parameters(), weight_decay=0.1): embeddings, LayerNorms and biases are decayed too."""
    ids, y = tokens()
    model = Encoder()
    ce_loop(run, model, torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.1), ids, y, steps=30)


@bug("TW303")
def blind_sgd_decay_on_batchnorm(run) -> None:
    """SGD with weight_decay=1e-2 over all parameters of a BatchNorm CNN, fed by a DataLoader."""
    x, y = images(n=256)
    model = CNN()
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9, weight_decay=1e-2)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(8))
    loader_loop(run, model, opt, loader, steps=30)


@bug("TW411")
def blind_structured_pruning_kills_filters(run) -> None:
    """L2 structured pruning removes half of the second conv's filters before training; their masks keep them 0."""
    x, y = images(n=256)
    model = CNN()
    prune.ln_structured(model.features[3], "weight", amount=0.5, n=2, dim=0)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), x, y, steps=30)


@bug("TW301")
def blind_optimizer_misses_body(run) -> None:
    """The optimizer is built over the head only; the body still requires grad, receives it, and never moves."""
    x, y = tabular(n=512)
    model = mlp(depth=3)
    ce_loop(run, model, torch.optim.Adam(model[-1].parameters(), 1e-2), x, y, steps=30)


@bug("TW308")
def blind_scheduler_stepped_per_batch(run) -> None:
    """StepLR(step_size=5, gamma=0.1) meant per epoch is stepped per batch: the LR is 1e-6 of itself by step 30."""
    ids, y = tokens(vocab=200)
    model = GRUClassifier(lstm=True)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.1)
    ce_loop(run, model, opt, ids, y, steps=40, sched=sched)


@bug("TW111")
def blind_grad_clip_to_zero(run) -> None:
    """clip_grad_norm_(max_norm=0.0): every gradient is scaled to zero before the step."""
    x, y = tabular(n=512)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 30, 32):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.0)
        opt.step()


@bug("TW308")
def blind_lr_far_too_low(run) -> None:
    """Adam at lr=1e-8: nothing moves in 30 steps."""
    x, y = images(n=256)
    model = CNN()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-8), x, y, steps=30)


@bug("TW308")
def blind_step_before_backward(run) -> None:
    """opt.step() is called before loss.backward(), right after zero_grad: every step sees no gradient."""
    x, y = tabular(n=512)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 30, 32):
        opt.zero_grad()
        opt.step()
        F.cross_entropy(model(xb), yb).backward()


@bug("TW304")
def blind_forgot_zero_grad(run) -> None:
    """No zero_grad in the loop: gradients pile up across steps under SGD with momentum."""
    x, y = tabular(n=512)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 40, 32):
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


# ==== tokens and images that look valid ========================================================================
@bug("TW212")
def blind_token_ids_clamped(run) -> None:
    """Ids from a 5000-token tokenizer clamped into a 200-row embedding: a third of all tokens become id 199."""
    g = gen(9)
    raw = zipf(256 * 16, 5000, g, s=0.9).view(256, 16)
    y = (torch.randn(5000, generator=g)[raw].mean(1) > 0).long()
    ids = raw.clamp(max=199)
    model = GRUClassifier(vocab=200)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), ids, y, steps=30)


@bug("TW212")
def blind_token_ids_wrapped(run) -> None:
    """Ids from a 320-token tokenizer taken modulo a 200-row embedding: ids 0-119 carry two tokens each."""
    g = gen(10)
    raw = torch.randint(0, 320, (256, 16), generator=g)
    y = (torch.randn(320, generator=g)[raw].mean(1) > 0).long()
    model = Encoder(vocab=200)
    ce_loop(run, model, torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.0), raw % 200, y, steps=30)


@bug("TW213")
def blind_channels_last_reshaped_loader(run) -> None:
    """NHWC images reshaped (not permuted) to NCHW before a DataLoader: the spatial structure is scrambled."""
    x, y = images(n=256, hw=12)
    nhwc = x.permute(0, 2, 3, 1).contiguous()
    scrambled = nhwc.reshape(256, 3, 12, 12)
    model = CNN()
    loader = DataLoader(TensorDataset(scrambled, y), batch_size=32, shuffle=True, generator=gen(11))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), loader, steps=30)


@bug("TW213")
def blind_channels_last_view_plain(run) -> None:
    """A plain loop views each NHWC batch as NCHW (view, not permute) right before the forward."""
    x, y = images(n=256, hw=16, seed=12)
    nhwc = x.permute(0, 2, 3, 1).contiguous()
    model = CNN(bn=False)
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
    watch(run, model, opt)
    for xb, yb in batches(nhwc, y, 30, 32):
        opt.zero_grad()
        F.cross_entropy(model(xb.view(-1, 3, 16, 16)), yb).backward()
        opt.step()


@bug("TW206")
def blind_same_batch_next_iter(run) -> None:
    """next(iter(loader)) inside the loop on an unshuffled loader: the first batch, every step."""
    x, y = tabular(n=512)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=False)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    watch(run, model, opt)
    for _ in range(30):
        xb, yb = next(iter(loader))
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW214")
def blind_same_batch_object_cnn(run) -> None:
    """One batch is drawn before the loop and reused by every step (the loader's other batches never arrive)."""
    x, y = images(n=256)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(13))
    xb, yb = next(iter(loader))
    model = CNN()
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
    watch(run, model, opt)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


# ==== graph wiring =============================================================================================
@bug("TW413")
def blind_discarded_block_output_mlp(run) -> None:
    """forward computes a residual block and then returns the head of its input: the block never reaches the loss."""
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Linear(12, 32)
            self.block = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
            self.head = nn.Linear(32, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = F.relu(self.stem(x))
            out = h + self.block(h)  # noqa: F841  (the bug: computed, then dropped)
            return self.head(h)

    x, y = tabular(n=512)
    model = Net()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), x, y, steps=30)


@bug("TW413")
def blind_discarded_encoder_output_transformer(run) -> None:
    """The transformer encoder runs, but the head pools the embeddings it was given, not its output."""
    class Net(Encoder):
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            e = self.emb(ids) + self.pos[:, :ids.shape[1]]
            self.encoder(e)
            return self.head(self.norm(e).mean(1))

    ids, y = tokens()
    model = Net()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), ids, y, steps=30)


@bug("TW414")
def blind_representation_collapse_siamese(run) -> None:
    """Two noisy views, a shared encoder + projector, loss = -cos(z1, z2), no stop-gradient, no negatives:
    every input maps to the same direction."""
    g = gen(14)
    data = torch.randn(512, 16, generator=g)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))
    two_views_loop(run, model, torch.optim.SGD(model.parameters(), 0.5, momentum=0.9), data,
                   lambda m, a, b: -F.cosine_similarity(m(a), m(b), dim=1).mean(), noise=0.3)


@bug("TW150")
def blind_softmax_before_cross_entropy(run) -> None:
    """The model ends in nn.Softmax and is trained with nn.CrossEntropyLoss (softmax applied twice)."""
    x, y = tabular(n=512, c=6)
    model = nn.Sequential(mlp(c=6), nn.Softmax(dim=1))
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(15))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), loader, steps=30)


@bug("TW110")
def blind_stray_detach_before_head(run) -> None:
    """features(x).detach() before the head: the convolutional body never gets a gradient."""
    class Net(CNN):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x).mean((2, 3)).detach())

    x, y = images(n=256)
    model = Net()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), x, y, steps=30)


# ==== labels and targets =======================================================================================
@bug("TW109")
def blind_labels_shuffled_independently(run) -> None:
    """The labels are permuted separately from the inputs: nothing to learn, the loss stays at chance."""
    x, y = tabular(n=512, c=4)
    y = y[torch.randperm(512, generator=gen(16))]
    model = mlp()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), x, y, steps=40)


@bug("TW109")
def blind_labels_shuffled_short_gru(run) -> None:
    """The same label shuffle, in a 20-step GRU run fed by a DataLoader (each sample seen once)."""
    ids, y = tokens(n=640, seed=17)
    y = y[torch.randperm(len(y), generator=gen(18))]
    model = GRUClassifier()
    loader = DataLoader(TensorDataset(ids, y), batch_size=32, shuffle=True, generator=gen(19))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), loader, steps=20)


@bug("TW210")
def blind_constant_labels(run) -> None:
    """A thresholding bug makes every label class 0."""
    g = gen(20)
    x = torch.randn(512, 12, generator=g)
    y = (x @ torch.randn(12, generator=g) > 100).long()
    model = mlp(c=2)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), x, y, steps=30)


@bug("TW152")
def blind_mse_broadcast_shapes(run) -> None:
    """Predictions (N, 1) against targets (N,): MSELoss broadcasts to (N, N) and fits the mean."""
    g = gen(21)
    x = torch.randn(512, 8, generator=g)
    y = x @ torch.randn(8, generator=g)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    loss_fn = nn.MSELoss()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    watch(run, model, opt)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for xb, yb in batches(x, y, 30, 32):
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()


# ==== mode and normalisation ===================================================================================
@bug("TW401")
def blind_eval_mode_left_on(run) -> None:
    """model.eval() from a validation pass before training is never undone: BatchNorm and Dropout stay frozen."""
    x, y = images(n=256)
    model = CNN(dropout=0.3)
    model.eval()
    with torch.no_grad():
        model(x[:64])
    ce_loop(run, model, torch.optim.SGD(model.parameters(), 0.05, momentum=0.9), x, y, steps=30)


@bug("TW407")
def blind_batchnorm_batch_of_one(run) -> None:
    """A BatchNorm CNN fed one image per step by its DataLoader."""
    x, y = images(n=64)
    model = CNN()
    loader = DataLoader(TensorDataset(x, y), batch_size=1, shuffle=True, generator=gen(22))
    loader_loop(run, model, torch.optim.SGD(model.parameters(), 0.01), loader, steps=30)


@bug("TW203")
def blind_raw_pixel_scale(run) -> None:
    """Images fed as 0..255 floats (no /255, no normalisation) into a CNN without BatchNorm."""
    x, y = images(n=256)
    raw = ((x - x.min()) / (x.max() - x.min()) * 255).round()
    model = CNN(bn=False)
    ce_loop(run, model, torch.optim.SGD(model.parameters(), 0.01), raw, y, steps=30)


@bug("TW104")
def blind_vanishing_deep_sigmoid(run) -> None:
    """A 10-layer sigmoid MLP under plain SGD: the first layers' gradients are ~1e-6 of the last's."""
    x, y = tabular(n=512)
    model = mlp(depth=10, act=nn.Sigmoid)
    ce_loop(run, model, torch.optim.SGD(model.parameters(), 0.1), x, y, steps=30)


# ==== healthy controls =========================================================================================
@healthy
def blind_ok_full_batch(run) -> None:
    """Full-batch training: the whole 200-row table is the batch, the same tensor at every step."""
    x, y = tabular(n=200)
    model = mlp()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), x, y, steps=40, full_batch=True)


@healthy
def blind_ok_constant_padding_channel(run) -> None:
    """RGB images padded with a fourth all-zero channel (a pretrained stem's RGBA input), CNN + DataLoader."""
    x, y = images(n=256)
    x = torch.cat([x, torch.zeros(256, 1, 12, 12)], 1)
    model = CNN(c=4)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(30))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), loader, steps=30)


@healthy
def blind_ok_decay_on_weights_only(run) -> None:
    """AdamW with two parameter groups: matrices decayed; biases, LayerNorms, embeddings and positions not."""
    ids, y = tokens()
    model = Encoder()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "emb" not in n and n != "pos"]
    keep = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "emb" not in n and n != "pos")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": keep, "weight_decay": 0.0}], 1e-3)
    ce_loop(run, model, opt, ids, y, steps=30)


@healthy
def blind_ok_tiny_run(run) -> None:
    """Twenty steps of plain SGD on an easy table: short, but correct."""
    x, y = tabular(n=320, c=3, seed=31)
    model = mlp(c=3)
    ce_loop(run, model, torch.optim.SGD(model.parameters(), 0.1, momentum=0.9), x, y, steps=20)


@healthy
def blind_ok_frozen_backbone(run) -> None:
    """A pretrained CNN body, frozen (requires_grad=False, eval mode), under a new trainable linear head."""
    x, y = images(n=256)
    model = CNN()
    pre = torch.optim.Adam(model.parameters(), 3e-3)
    for xb, yb in batches(x, y, 24, 32, seed=29):  # pre-training, before the watch
        pre.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        pre.step()
    for p in model.features.parameters():
        p.requires_grad = False
    model.features.eval()
    model.head = nn.Linear(16, 4)
    ce_loop(run, model, torch.optim.Adam(model.head.parameters(), 1e-2), x, y, steps=30)


@healthy
def blind_ok_zipf_tokens_gru(run) -> None:
    """Natural-language-like token ids: Zipf-distributed over the full vocabulary, id 0 most common."""
    ids, y = tokens(n=256, length=16, vocab=300, heavy_tail=True)
    model = GRUClassifier(vocab=300)
    loader = DataLoader(TensorDataset(ids, y), batch_size=32, shuffle=True, generator=gen(32))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), loader, steps=30)


@healthy
def blind_ok_zipf_tokens_transformer(run) -> None:
    """A transformer encoder over Zipf tokens with a warm-up LambdaLR stepped per batch (as intended)."""
    ids, y = tokens(n=256, length=16, vocab=200, heavy_tail=True, seed=33)
    model = Encoder(layers=2)
    opt = torch.optim.AdamW([{"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": 0.01},
                             {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}],
                            lr=2e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 8))
    ce_loop(run, model, opt, ids, y, sched=sched)


@healthy
def blind_ok_channels_last_permuted(run) -> None:
    """NHWC images permuted (not reshaped) to NCHW: the right way."""
    x, y = images(n=256, hw=12, seed=34)
    nhwc = x.permute(0, 2, 3, 1).contiguous()
    model = CNN()
    loader = DataLoader(TensorDataset(nhwc.permute(0, 3, 1, 2), y), batch_size=32, shuffle=True,
                        generator=gen(35))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), loader, steps=30)


@healthy
def blind_ok_lstm_regression_clipped(run) -> None:
    """An LSTM regressor with MSELoss, Adam and gradient clipping at 1.0."""
    g = gen(36)
    seq = torch.randn(256, 12, 3, generator=g)
    target = seq.sum((1, 2)).unsqueeze(1) / 6

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(3, 24, batch_first=True)
            self.head = nn.Linear(24, 1)

        def forward(self, s: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(s)[0][:, -1])

    model = Net()
    loss_fn = nn.MSELoss()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    watch(run, model, opt)
    for xb, yb in batches(seq, target, 30, 32):
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()


@healthy
def blind_ok_contrastive_infonce(run) -> None:
    """A SimCLR-style InfoNCE loss over two noisy views: negatives keep the embeddings spread out."""
    g = gen(37)
    data = torch.randn(512, 16, generator=g)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32))
    def info_nce(m: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        z1, z2 = F.normalize(m(a), dim=1), F.normalize(m(b), dim=1)
        return F.cross_entropy(z1 @ z2.T / 0.2, torch.arange(len(a)))

    two_views_loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), data, info_nce, noise=0.1, steps=30)


@healthy
def blind_ok_gradient_accumulation(run) -> None:
    """Gradients accumulated over 2 micro-batches on purpose (zero_grad after each step, loss scaled)."""
    x, y = tabular(n=512, seed=38)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9)
    watch(run, model, opt)
    opt.zero_grad()
    for i, (xb, yb) in enumerate(batches(x, y, 60, 16)):
        (F.cross_entropy(model(xb), yb) / 2).backward()
        if i % 2 == 1:
            opt.step()
            opt.zero_grad()


@healthy
def blind_ok_validation_between_steps(run) -> None:
    """A dropout+BatchNorm CNN validated under eval()/no_grad every 10 steps, switched back to train()."""
    x, y = images(n=320, seed=39)
    model = CNN(dropout=0.2)
    ce_loop(run, model, torch.optim.SGD(model.parameters(), 0.05, momentum=0.9), x[:256], y[:256], val=x[256:])


@healthy
def blind_ok_imbalanced_binary(run) -> None:
    """A 9:1 imbalanced binary task with BCEWithLogitsLoss and pos_weight, through a DataLoader."""
    g = gen(40)
    x = torch.randn(640, 10, generator=g)
    score = x @ torch.randn(10, generator=g)
    y = (score > score.quantile(0.9)).float().unsqueeze(1)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1))
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, generator=gen(41))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), loader, steps=30,
                 loss_fn=nn.BCEWithLogitsLoss(pos_weight=torch.tensor([9.0])))


@healthy
def blind_ok_relu_sparse_activations(run) -> None:
    """A wide ReLU MLP whose activations are naturally sparse, SGD with weight decay only on weights."""
    x, y = tabular(n=512, d=20, c=5, seed=42)
    model = mlp(d=20, h=128, c=5, depth=3)
    weights = [p for p in model.parameters() if p.ndim == 2]
    biases = [p for p in model.parameters() if p.ndim == 1]
    opt = torch.optim.SGD([{"params": weights, "weight_decay": 5e-4}, {"params": biases}], 0.05, momentum=0.9)
    ce_loop(run, model, opt, x, y, steps=40)


@healthy
def blind_ok_cnn_batchnorm_sgd_loader(run) -> None:
    """The textbook BatchNorm CNN: shuffled DataLoader, SGD with momentum, 2 epochs."""
    x, y = images(n=256, seed=43)
    model = CNN()
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=gen(44))
    loader_loop(run, model, torch.optim.SGD(model.parameters(), 0.05, momentum=0.9), loader, steps=32)


@healthy
def blind_ok_simsiam_stop_gradient(run) -> None:
    """SimSiam done right: a predictor on one branch and a stop-gradient on the other, negative cosine loss."""
    g = gen(45)
    data = torch.randn(512, 16, generator=g)

    class SimSiam(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(16, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 32))
            self.predictor = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 32))

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            z1, z2 = self.encoder(a), self.encoder(b)
            p1, p2 = self.predictor(z1), self.predictor(z2)
            return -(F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean()) / 2

    model = SimSiam()
    two_views_loop(run, model, torch.optim.SGD(model.parameters(), 0.05, momentum=0.9), data,
                   lambda m, a, b: m(a, b), noise=0.3)


@healthy
def blind_ok_cosine_schedule_to_zero(run) -> None:
    """CosineAnnealingLR over exactly the run's steps, stepped per batch: the rate reaches 0 at the last step."""
    x, y = tabular(n=512, seed=46)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9)
    ce_loop(run, model, opt, x, y, steps=40, sched=torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40))


@healthy
def blind_ok_onecycle_from_zero_warmup(run) -> None:
    """A linear warm-up from lr=0 (LambdaLR) into OneCycle-like decay to 1e-5 of the peak, on a GRU."""
    ids, y = tokens(n=320, seed=47)
    model = GRUClassifier()
    opt = torch.optim.Adam(model.parameters(), 5e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=30, pct_start=0.2,
                                                div_factor=1e4, final_div_factor=1e1)
    ce_loop(run, model, opt, ids, y, sched=sched)


@healthy
def blind_ok_lbfgs_closure(run) -> None:
    """Full-batch L-BFGS: backward runs inside optimizer.step(closure)."""
    g = gen(48)
    x = torch.randn(256, 6, generator=g)
    y = torch.tanh(x @ torch.randn(6, 1, generator=g))
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4)
    watch(run, model, opt)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        return loss

    for _ in range(20):
        opt.step(closure)


@healthy
def blind_ok_finetune_small_lr_converged(run) -> None:
    """A model trained to convergence, then fine-tuned with plain SGD at lr=1e-3: small gradients, small steps."""
    x, y = tabular(n=512, seed=49)
    model = mlp()
    pre = torch.optim.Adam(model.parameters(), 1e-2)
    for xb, yb in batches(x, y, 80, 64, seed=50):
        pre.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        pre.step()
    opt = torch.optim.SGD(model.parameters(), 1e-3)
    ce_loop(run, model, opt, x, y, steps=30)


@healthy
def blind_ok_horizontal_blur_images(run) -> None:
    """Correctly laid-out images with strong horizontal motion blur and correlated channels (anisotropic)."""
    x, y = images(n=256, hw=16, seed=51)
    kernel = torch.ones(1, 1, 1, 7) / 7
    blurred = F.conv2d(x.reshape(-1, 1, 16, 16), kernel, padding=(0, 3)).reshape(256, 3, 16, 16)
    model = CNN()
    loader = DataLoader(TensorDataset(blurred, y), batch_size=32, shuffle=True, generator=gen(52))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), loader, steps=30)


@healthy
def blind_ok_slow_learner_20_steps(run) -> None:
    """Twenty steps of a 10-class task under a modest SGD rate: learning, but only just started."""
    x, y = tabular(n=640, d=20, c=10, seed=53)
    model = mlp(d=20, h=64, c=10)
    ce_loop(run, model, torch.optim.SGD(model.parameters(), 0.05, momentum=0.9), x, y, steps=20)


@healthy
def blind_ok_classic_sgd_recipe_decay_everywhere(run) -> None:
    """The classic CNN recipe: SGD(model.parameters(), momentum=0.9, weight_decay=5e-4), BatchNorm included."""
    x, y = images(n=256, seed=54)
    model = CNN()
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(55))
    loader_loop(run, model, opt, loader, steps=30)
