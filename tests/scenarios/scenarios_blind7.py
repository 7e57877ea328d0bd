"""Blind scenarios, seventh round: silent training bugs in forms unlike the textbook one (a NaN cell or an Inf
sensor reading arriving mid-run, a hand-written BCE taking the log of a saturated sigmoid, target units switching
half-way, uint8 images floor-divided to blanks, truncated left-padded text, structured pruning at init, clamped
token ids, NHWC viewed as NCHW, a sanity-check batch reused, a pooler that never reaches the loss, SimSiam
without stop-gradient, a head replaced after the optimizer was built...), and healthy controls that tempt the
rules (full-batch training, tiny-LR fine-tuning, a linear probe on a frozen backbone, label smoothing, mixup,
sparse bag-of-words inputs, padded tagging with ignore_index, mostly-zero digit images, decay groups done right,
clipped LSTMs, correct gradient accumulation). Written before reading the rules or the earlier rounds, and run
before any change.
"""

from __future__ import annotations

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
    mlp,
    sequences,
    tabular,
    tokens,
    watch,
    zipf,
)
from _kit import bug, healthy
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import DataLoader, Dataset, TensorDataset

# Bugs the rules cannot see with what the watch collects today, per sampling mode, and what they would need;
# tests/scenarios/test_scenarios.py expects these to fail (strict xfail), so a probe change that fixes one shows.
KNOWN_MISSES: dict[tuple[str, str], str] = {}


def regression_rows(n: int = 512, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised features and a noisy linear target."""
    g = gen(seed)
    x = torch.randn(n, d, generator=g)
    return x, x @ torch.randn(d, generator=g) + 0.1 * torch.randn(n, generator=g)


class _Records(Dataset):
    """Dict records, as a CSV or JSON-lines reader yields them."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, xkey: str = "features", ykey: str = "label") -> None:
        self.x, self.y, self.xkey, self.ykey = x, y, xkey, ykey

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {self.xkey: self.x[i], self.ykey: self.y[i]}


# ---- non-finite values arriving mid-run -----------------------------------------------------------------------
@bug("TW201")
def blind7_csv_empty_cell_reaches_step_37(run) -> None:
    """A CSV with one empty cell parsed as nan; the loader is unshuffled, so the row arrives at step 37."""
    x, y = tabular(n=1600, d=12, c=4, seed=71)
    x[37 * 16 + 5, 3] = float("nan")
    loader = DataLoader(_Records(x, y), batch_size=16, shuffle=False)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    watch(run, model, opt)
    for step, batch in enumerate(loader):
        if step == 80:
            break
        logits = model(batch["features"])
        loss = F.cross_entropy(logits, batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()


@bug("TW201")
def blind7_float16_sensor_overflow_at_step_150(run) -> None:
    """Sensor series stored as float16: one reading above 65504 became inf; batch 150 carries it."""
    s, y = sequences(n=170 * 8, length=8, d=4, seed=72)
    s = s.half()
    s[150 * 8 + 2, 4, 1] = torch.tensor(70000.0).half()
    model = SeqRegressor(d=4, h=16, lstm=False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    for step in range(165):
        xb = s[step * 8:(step + 1) * 8].float()
        yb = y[step * 8:(step + 1) * 8]
        loss = F.mse_loss(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()


@bug("TW101")
def blind7_handwritten_bce_log_of_saturated_sigmoid(run) -> None:
    """BCE written by hand on sigmoid probabilities: once a mislabelled row's logit passes ~17, sigmoid rounds to
    exactly 1.0 in float32 and log(1 - p) is -inf."""
    g = gen(73)
    x = torch.randn(1024, 10, generator=g)
    y = (x @ torch.randn(10, generator=g) > 0).float()
    flip = torch.rand(1024, generator=g) < 0.05
    y[flip] = 1 - y[flip]
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    watch(run, model, opt)
    for xb, yb in batches(x, y, steps=150, batch=64):
        p = torch.sigmoid(model(xb).squeeze(1))
        loss = -(yb * torch.log(p) + (1 - yb) * torch.log(1 - p)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@bug("TW108")
def blind7_second_source_targets_in_grams_from_step_150(run) -> None:
    """Two exports concatenated in time order; the second records the target in grams, not kilograms. The loss
    jumps at step 150 and looks like a learning-rate blow-up."""
    x, y = regression_rows(n=200 * 16, d=8, seed=74)
    y[150 * 16:] *= 1000.0
    loader = DataLoader(TensorDataset(x, y.unsqueeze(1)), batch_size=16, shuffle=False)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    for xb, yb in loader:
        opt.zero_grad()
        F.mse_loss(model(xb), yb).backward()
        opt.step()


# ---- constant or blank inputs ---------------------------------------------------------------------------------
@bug("TW204")
def blind7_uint8_images_floor_divided(run) -> None:
    """uint8 images 'normalised' with // 255: every pixel below 255 becomes 0, so the network sees blanks."""
    x, y = images(n=256, c=3, hw=12, seed=75)
    raw = (x * 30 + 110).clamp(0, 254).to(torch.uint8)
    loader = DataLoader(TensorDataset(raw, y), batch_size=32, shuffle=True, generator=gen(1))
    model = CNN(c=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    watch(run, model, opt)
    for _epoch in range(5):
        for xb, yb in loader:
            xb = (xb // 255).float()
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()


@bug("TW204")
def blind7_left_padded_text_truncated_from_the_front(run) -> None:
    """Short reviews left-padded to 64 ids, then cut to the first 16 positions: only padding survives."""
    g = gen(76)
    n, vocab = 320, 200
    lengths = torch.randint(5, 30, (n,), generator=g)
    ids = torch.zeros(n, 64, dtype=torch.long)
    score = torch.randn(vocab, generator=g)
    y = torch.zeros(n, dtype=torch.long)
    for i, k in enumerate(lengths.tolist()):
        seq = torch.randint(1, vocab, (k,), generator=g)
        ids[i, 64 - k:] = seq
        y[i] = int(score[seq].mean() > 0)
    ids = ids[:, :16]
    model = GRUClassifier(vocab=vocab, dim=24)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    ce_loop(run, model, opt, ids, y, steps=40, batch=32)


# ---- optimizer configuration ----------------------------------------------------------------------------------
@bug("TW303")
def blind7_adamw_decays_norms_biases_and_embeddings(run) -> None:
    """A transformer trained with AdamW over model.parameters(): LayerNorm gains, biases, the embedding table
    and the positional table all decay."""
    ids, y = tokens(n=256, length=12, vocab=200, seed=77)
    model = Encoder(vocab=200, dim=32)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)
    ce_loop(run, model, opt, ids, y, steps=50, batch=32)


@bug("TW301")
def blind7_head_replaced_after_optimizer_built(run) -> None:
    """Fine-tuning: the optimizer is built in setup, then the head is swapped for the new 6-class task."""
    x, y = images(n=256, c=3, hw=12, classes=6, seed=78)
    model = CNN(c=3, classes=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.head = nn.Linear(16, 6)
    ce_loop(run, model, opt, x, y, steps=40, batch=32)


# ---- pruning, ids, layouts ------------------------------------------------------------------------------------
@bug("TW411")
def blind7_structured_pruning_applied_at_init(run) -> None:
    """ln_structured pruning meant for after training is applied before it: 6 of 8 first-layer filters stay zero."""
    x, y = images(n=256, c=3, hw=12, seed=79)
    model = CNN(c=3)
    prune.ln_structured(model.features[0], "weight", amount=0.75, n=2, dim=0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    ce_loop(run, model, opt, x, y, steps=40, batch=32)


@bug("TW212")
def blind7_token_ids_clamped_into_small_vocab(run) -> None:
    """A tokenizer with 2000 ids feeding a 256-row embedding; clamp() silenced the index error, so every id past
    255 reads row 255."""
    g = gen(80)
    n, length = 320, 14
    raw = zipf(n * length, 2000, g, s=0.9).view(n, length)
    score = torch.randn(2000, generator=g)
    y = (score[raw].mean(1) > score[raw].mean(1).median()).long()
    ids = raw.clamp(max=255)
    model = GRUClassifier(vocab=256, dim=24, lstm=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    ce_loop(run, model, opt, ids, y, steps=50, batch=32)


class _HWCImages(Dataset):
    """Images as a PIL/numpy pipeline hands them over: height, width, channels."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x.permute(0, 2, 3, 1).contiguous(), y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


@bug("TW213")
def blind7_nhwc_batch_viewed_as_nchw(run) -> None:
    x, y = images(n=256, c=3, hw=16, seed=81)
    loader = DataLoader(_HWCImages(x, y), batch_size=32, shuffle=True, generator=gen(2))
    model = CNN(c=3)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    watch(run, model, opt)
    step = 0
    while step < 48:
        for img, label in loader:
            img = img.view(img.shape[0], 3, 16, 16)
            opt.zero_grad()
            F.cross_entropy(model(img), label).backward()
            opt.step()
            step += 1


@bug("TW214", tolerated=("TW206",))
def blind7_sanity_check_batch_reused_in_loop(run) -> None:
    """A shape check before training draws one batch; the loop then unpacks into new names and trains on the old."""
    x, y = tabular(n=1024, d=12, c=4, seed=82)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(3))
    model = mlp(h=64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xb, yb = next(iter(loader))
    assert model(xb).shape == (32, 4)
    watch(run, model, opt)
    for _inputs, _targets in loader:
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW109")
def blind7_features_shuffled_without_labels_short_run(run) -> None:
    """25 steps: the feature matrix was shuffled 'to mix the classes', the label column was not."""
    x, y = tabular(n=800, d=20, c=10, seed=83)
    x = x[torch.randperm(len(x), generator=gen(9))]
    loader = DataLoader(_Records(x, y, "x", "y"), batch_size=32, shuffle=True, generator=gen(4))
    model = mlp(d=20, h=64, c=10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    watch(run, model, opt)
    for step, batch in enumerate(loader):
        if step == 25:
            break
        loss = F.cross_entropy(model(batch["x"]), batch["y"])
        opt.zero_grad()
        loss.backward()
        opt.step()


# ---- model structure ------------------------------------------------------------------------------------------
class _PooledClassifier(nn.Module):
    """HF style: forward takes input_ids and labels and returns a dict with the loss. The pooler is computed but
    the classifier reads the raw first token."""

    def __init__(self, vocab: int = 200, dim: int = 32) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(vocab, dim)
        layer = nn.TransformerEncoderLayer(dim, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1)
        self.pooler = nn.Sequential(nn.Linear(dim, dim), nn.Tanh())
        self.classifier = nn.Linear(dim, 2)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        h = self.encoder(self.embeddings(input_ids))
        pooled = self.pooler(h[:, 0])  # noqa: F841  (the bug: computed, never used)
        logits = self.classifier(h[:, 0])
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits, labels)
        return out


@bug("TW413")
def blind7_hf_pooler_output_never_used(run) -> None:
    ids, y = tokens(n=256, length=10, vocab=200, seed=84)
    model = _PooledClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    watch(run, model, opt)
    for ib, lb in batches(ids, y, steps=40, batch=32):
        out = model(input_ids=ib, labels=lb)
        out["loss"].backward()
        opt.step()
        opt.zero_grad()


class _SimSiam(nn.Module):
    def __init__(self, d: int = 16, dim: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(d, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, dim))
        self.predictor = nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Linear(16, dim))


@bug("TW414")
def blind7_simsiam_without_stop_gradient(run) -> None:
    """SimSiam with the stop-gradient forgotten on the target branch: both branches chase each other to a
    constant."""
    g = gen(85)
    data = torch.randn(2048, 16, generator=g) @ torch.randn(16, 16, generator=g)
    model = _SimSiam()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    watch(run, model, opt)
    for step in range(80):
        xb = data[(step * 64) % 2048:(step * 64) % 2048 + 64]
        v1, v2 = xb + 0.3 * torch.randn_like(xb), xb * (1 + 0.1 * torch.randn_like(xb))
        z1, z2 = model.encoder(v1), model.encoder(v2)
        p1, p2 = model.predictor(z1), model.predictor(z2)
        loss = -(F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean()) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()


class _SeqClassifierHF(nn.Module):
    def __init__(self, vocab: int = 200, dim: int = 32) -> None:
        super().__init__()
        self.body = GRUClassifier(vocab=vocab, dim=dim, classes=3)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.body(input_ids).softmax(dim=-1)
        return F.cross_entropy(probs, labels), probs


@bug("TW150")
def blind7_hf_probs_fed_to_cross_entropy(run) -> None:
    ids, y2 = tokens(n=256, length=10, vocab=200, seed=86)
    y = (y2 + (ids[:, 0] % 2)) % 3
    model = _SeqClassifierHF()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    for ib, lb in batches(ids, y, steps=50, batch=32):
        loss, _ = model(ib, lb)
        opt.zero_grad()
        loss.backward()
        opt.step()


# ---- train/eval state and batch statistics ------------------------------------------------------------------
@bug("TW401")
def blind7_eval_after_first_validation_never_undone(run) -> None:
    """Validation at step 20 switches to eval(); the loop has no train() call, so the last 40 steps train with
    BatchNorm frozen on running stats and dropout off."""
    x, y = images(n=320, c=3, hw=12, seed=87)
    xv, _ = images(n=64, c=3, hw=12, seed=88)
    model = CNN(c=3, dropout=0.3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    watch(run, model, opt)
    for step, (xb, yb) in enumerate(batches(x, y, steps=60, batch=32)):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        if step == 19:
            model.eval()
            with torch.no_grad():
                model(xv).argmax(1)


@bug("TW407")
def blind7_online_cnn_one_image_per_step(run) -> None:
    """Online learning: one image per step through a BatchNorm CNN."""
    x, y = images(n=128, c=3, hw=12, seed=89)
    loader = DataLoader(TensorDataset(x, y), batch_size=1, shuffle=True, generator=gen(5))
    model = CNN(c=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    watch(run, model, opt)
    for step, (xb, yb) in enumerate(loader):
        if step == 60:
            break
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


# ---- the step itself ------------------------------------------------------------------------------------------
class _LitRegressor(nn.Module):
    """A Lightning-like module: training_step returns the loss; the hand-written trainer calls backward and step."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self.net(x).squeeze(1), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


@bug("TW304")
def blind7_lightning_like_manual_step_without_zero_grad(run) -> None:
    x, y = regression_rows(n=640, d=8, seed=90)
    lit = _LitRegressor()
    opt = lit.configure_optimizers()
    watch(run, lit, opt)
    for batch in batches(x, y, steps=60, batch=32):
        loss = lit.training_step(batch)
        loss.backward()
        opt.step()


@bug("TW307")
def blind7_accumulation_eight_microbatches_not_divided(run) -> None:
    """Accumulating 8 micro-batches to emulate batch 128, without dividing each loss by 8."""
    x, y = tabular(n=1024, d=12, c=4, seed=91)
    model = mlp(h=64)
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    watch(run, model, opt)
    accum = 8
    for i, (xb, yb) in enumerate(batches(x, y, steps=240, batch=16)):
        F.cross_entropy(model(xb), yb).backward()
        if (i + 1) % accum == 0:
            opt.step()
            opt.zero_grad()


@bug("TW307")
def blind7_sum_reduction_with_sgd_batch_128(run) -> None:
    """reduction='sum' over 128 rows with an SGD learning rate tuned for a mean: the steps are 128 times too big."""
    x, y = regression_rows(n=1024, d=8, seed=92)
    loss_fn = nn.MSELoss(reduction="sum")
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    watch(run, model, opt)
    for xb, yb in batches(x, y.unsqueeze(1), steps=40, batch=128):
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()


@bug("TW308")
def blind7_steplr_meant_per_epoch_stepped_per_batch(run) -> None:
    """StepLR(step_size=30, gamma=0.1) written for epochs, stepped after every batch: the LR is 1e-6 by step 150."""
    x, y = tabular(n=2048, d=12, c=4, seed=93)
    model = mlp(h=32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.1)
    ce_loop(run, model, opt, x, y, steps=160, batch=32, sched=sched)


# ---- healthy controls -----------------------------------------------------------------------------------------
@healthy
def blind7_ok_full_batch_regression(run) -> None:
    """Full-batch training: the same 256 rows every step, as small-data regression does."""
    x, y = regression_rows(n=256, d=8, seed=100)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    watch(run, model, opt)
    for _ in range(150):
        opt.zero_grad()
        F.mse_loss(model(x), y.unsqueeze(1)).backward()
        opt.step()


@healthy
def blind7_ok_tiny_lr_finetune_cnn(run) -> None:
    """Fine-tuning with lr 1e-5 a model pretrained (unwatched) on the same kind of images: the loss barely moves
    in 40 steps, on purpose."""
    x, y = images(n=256, c=3, hw=12, seed=101)
    model = CNN(c=3)
    pre = torch.optim.Adam(model.parameters(), lr=3e-3)
    for xb, yb in batches(x, y, steps=60, batch=32, seed=11):
        pre.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        pre.step()
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(6))
    watch(run, model, opt)
    step = 0
    while step < 40:
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            step += 1


@healthy
def blind7_ok_linear_probe_on_frozen_encoder(run) -> None:
    """A linear probe: the encoder is frozen on purpose and only the head is optimised."""
    ids, y = tokens(n=256, length=12, vocab=200, seed=102)
    model = Encoder(vocab=200, dim=32)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("head"))
    opt = torch.optim.Adam(model.head.parameters(), lr=1e-2)
    ce_loop(run, model, opt, ids, y, steps=50, batch=32)


@healthy
def blind7_ok_label_smoothing_gru(run) -> None:
    ids, y = tokens(n=256, length=12, vocab=200, seed=103)
    model = GRUClassifier(vocab=200, dim=32)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    loader = DataLoader(TensorDataset(ids, y), batch_size=32, shuffle=True, generator=gen(7))
    crit = nn.CrossEntropyLoss(label_smoothing=0.2)
    watch(run, model, opt)
    for _ in range(6):
        for ib, lb in loader:
            opt.zero_grad()
            crit(model(ib), lb).backward()
            opt.step()


@healthy
def blind7_ok_mixup_cnn(run) -> None:
    x, y = images(n=256, c=3, hw=12, seed=104)
    model = CNN(c=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    beta = torch.distributions.Beta(0.4, 0.4)
    watch(run, model, opt)
    for xb, yb in batches(x, y, steps=60, batch=32):
        lam = float(beta.sample())
        perm = torch.randperm(len(xb))
        mixed = lam * xb + (1 - lam) * xb[perm]
        target = lam * F.one_hot(yb, 4).float() + (1 - lam) * F.one_hot(yb[perm], 4).float()
        loss = torch.sum(-target * F.log_softmax(model(mixed), dim=1), dim=1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@healthy
def blind7_ok_sparse_bag_of_words(run) -> None:
    """Bag-of-words counts over 300 terms, ~2% non-zero: most columns are zero in any given batch."""
    g = gen(105)
    x = (torch.rand(1024, 300, generator=g) < 0.02).float() * torch.randint(1, 4, (1024, 300), generator=g)
    y = (x @ torch.randn(300, generator=g) > 0).long()
    model = nn.Sequential(nn.Linear(300, 64), nn.ReLU(), nn.Linear(64, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(_Records(x, y), batch_size=64, shuffle=True, generator=gen(8))
    watch(run, model, opt)
    for _ in range(4):
        for batch in loader:
            opt.zero_grad()
            F.cross_entropy(model(batch["features"]), batch["label"]).backward()
            opt.step()


class _Tagger(nn.Module):
    def __init__(self, vocab: int = 120, dim: int = 32, tags: int = 5) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.rnn = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * dim, tags)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(self.emb(ids))[0])


@healthy
def blind7_ok_padded_tagging_ignore_index(run) -> None:
    """Per-token tagging, right-padded with id 0; padded positions carry label -100 and are ignored."""
    g = gen(106)
    n, length, vocab = 256, 20, 120
    ids = torch.randint(1, vocab, (n, length), generator=g)
    tag_of = torch.randint(0, 5, (vocab,), generator=g)
    tags = tag_of[ids]
    lengths = torch.randint(4, length + 1, (n,), generator=g)
    pad = torch.arange(length)[None] >= lengths[:, None]
    ids[pad] = 0
    tags[pad] = -100
    model = _Tagger(vocab=vocab)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    watch(run, model, opt)
    for ib, tb in batches(ids, tags, steps=50, batch=32):
        logits = model(ib)
        loss = F.cross_entropy(logits.reshape(-1, 5), tb.reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _strokes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST-like: one bright stroke per image (a row, a column or a diagonal by class) on a black field."""
    g = gen(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.zeros(n, 1, 16, 16)
    off = torch.randint(3, 13, (n,), generator=g)
    idx = torch.arange(16)
    for i in range(n):
        k, o = int(y[i]), int(off[i])
        if k == 0:
            x[i, 0, o, 2:14] = 1.0
        elif k == 1:
            x[i, 0, 2:14, o] = 1.0
        elif k == 2:
            x[i, 0, idx, idx] = 1.0
        else:
            x[i, 0, idx, 15 - idx] = 1.0
    return (x * (0.7 + 0.3 * torch.rand(n, 1, 1, 1, generator=g))).clamp(0, 1), y


@healthy
def blind7_ok_mostly_zero_digit_images(run) -> None:
    """Pixels in [0, 1], ~93% exactly zero, no normalisation; a small conv net without BatchNorm."""
    x, y = _strokes(320, seed=107)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 4))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    ce_loop(run, model, opt, x, y, steps=60, batch=32)


@healthy
def blind7_ok_adamw_with_no_decay_groups(run) -> None:
    """The usual recipe: decay the weight matrices, not biases, norms, embeddings or positions."""
    ids, y = tokens(n=256, length=12, vocab=200, seed=108)
    model = Encoder(vocab=200, dim=32)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "emb" in name or "pos" in name or "norm" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=2e-3)
    ce_loop(run, model, opt, ids, y, steps=50, batch=32)


@healthy
def blind7_ok_clipped_lstm_forecaster(run) -> None:
    s, y = sequences(n=320, length=10, d=4, seed=109)
    model = SeqRegressor(d=4, h=24, lstm=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    watch(run, model, opt)
    for xb, yb in batches(s, y, steps=70, batch=32):
        opt.zero_grad()
        F.mse_loss(model(xb), yb).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
        opt.step()


@healthy
def blind7_ok_accumulation_divided_with_warmup(run) -> None:
    """Four micro-batches per step, each loss divided by 4, and a linear warm-up stepped per optimizer step."""
    x, y = tabular(n=1024, d=12, c=4, seed=110)
    model = mlp(h=64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    watch(run, model, opt)
    accum = 4
    for i, (xb, yb) in enumerate(batches(x, y, steps=160, batch=16)):
        (F.cross_entropy(model(xb), yb) / accum).backward()
        if (i + 1) % accum == 0:
            opt.step()
            sched.step()
            opt.zero_grad()


class _SimSiamPair(nn.Module):
    """The reference SimSiam form: forward takes both views and returns the predictions and the detached
    projections."""

    def __init__(self, d: int = 16, dim: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(d, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, dim),
                                     nn.BatchNorm1d(dim))
        self.predictor = nn.Sequential(nn.Linear(dim, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, dim))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z1, z2 = self.encoder(x1), self.encoder(x2)
        return self.predictor(z1), self.predictor(z2), z1.detach(), z2.detach()


@healthy
def blind7_ok_simsiam_with_stop_gradient(run) -> None:
    """SimSiam done right (predictor, stop-gradient, BatchNorm on the projection): the views agree closely on
    this easy data, yet the embeddings keep their spread."""
    g = gen(111)
    data = torch.randn(2048, 16, generator=g) @ torch.randn(16, 16, generator=g)
    model = _SimSiamPair()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    watch(run, model, opt)
    for step in range(80):
        xb = data[(step * 64) % 2048:(step * 64) % 2048 + 64]
        p1, p2, z1, z2 = model(xb + 0.3 * torch.randn_like(xb), xb * (1 + 0.1 * torch.randn_like(xb)))
        loss = -(F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean()) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()


class _OnlineOnly(nn.Module):
    """BYOL's online branch: a projection and a predictor on top of it; forward returns both."""

    def __init__(self, d: int = 16, dim: int = 32) -> None:
        super().__init__()
        self.projector = nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, dim))
        self.predictor = nn.Sequential(nn.Linear(dim, 32), nn.ReLU(), nn.Linear(32, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.projector(x)
        return z, self.predictor(z)


@bug("TW414")
def blind7_byol_target_network_is_the_online_one(run) -> None:
    """BYOL written without its momentum target network: the 'target' projection is the online network's own,
    gradients and all, and the loss 2 - 2 cos draws every embedding together. Added after the first run."""
    g = gen(112)
    data = torch.randn(4096, 16, generator=g) @ torch.randn(16, 16, generator=g)
    model = _OnlineOnly()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    watch(run, model, opt)
    for xb in data.split(64)[:60]:
        z1, p1 = model(xb + 0.2 * torch.randn_like(xb))
        z2, p2 = model(xb + 0.2 * torch.randn_like(xb))
        loss = (2 - 2 * F.cosine_similarity(p1, z2, dim=-1)).mean() \
            + (2 - 2 * F.cosine_similarity(p2, z1, dim=-1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


class _SimSiamForward(_SimSiam):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return z, self.predictor(z)


@bug("TW414")
def blind7_simsiam_forward_without_stop_gradient(run) -> None:
    """The SimSiam bug above with the model called as a whole (forward returns the projection and the
    prediction). Added after the first run, from the rules' view of the submodule-called form."""
    g = gen(85)
    data = torch.randn(2048, 16, generator=g) @ torch.randn(16, 16, generator=g)
    model = _SimSiamForward()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    watch(run, model, opt)
    for step in range(80):
        xb = data[(step * 64) % 2048:(step * 64) % 2048 + 64]
        z1, p1 = model(xb + 0.3 * torch.randn_like(xb))
        z2, p2 = model(xb * (1 + 0.1 * torch.randn_like(xb)))
        loss = -(F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean()) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
