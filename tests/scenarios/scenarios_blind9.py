"""Blind round 9 (issue #20): bare training loops written before reading the rules or the probes, the way an
outsider writes them: pandas frames turned into tensors, dict batches, Hugging-Face-style models that compute
their loss inside ``forward``, Lightning-style modules driven by a tiny hand-written trainer, DataLoaders,
MLP/CNN/GRU/LSTM/transformer models. Each bug names the rule an expert would call its root cause; each healthy
control tempts a rule with something that is correct.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from _blindkit import (
    CNN,
    Encoder,
    GRUClassifier,
    SeqRegressor,
    batches,
    gen,
    images,
    mlp,
    sequences,
    tabular,
    tokens,
    watch,
)
from _kit import bug, healthy
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import DataLoader, Dataset, TensorDataset

# (scenario, sampling) -> why the watch misses it (a bug) or flags it (a control), at torch seed 0
KNOWN_MISSES: dict[tuple[str, str], str] = {}  # its one first-run miss (default sampling) is fixed


# ---- shared pieces ---------------------------------------------------------------------------------------------
def _sensor_frame(n: int = 640, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, 6)), columns=[f"s{i}" for i in range(6)])
    df["label"] = ((df.s0 + 0.5 * df.s1 - df.s2) > 0).astype(int) + (df.s3 > 1.0).astype(int)
    return df


class DictRows(Dataset):
    def __init__(self, **columns: torch.Tensor) -> None:
        self.columns = columns

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.columns.items()}


class HFClassifier(nn.Module):
    """Hugging-Face style: ``forward(input_ids, labels)`` returns a dict with the loss."""

    def __init__(self, vocab: int = 200, dim: int = 32, classes: int = 2, probs_out: bool = False) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(vocab, dim)
        layer = nn.TransformerEncoderLayer(dim, 4, dim_feedforward=64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1)
        self.classifier = nn.Linear(dim, classes)
        self.probs_out = probs_out

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.classifier(self.encoder(self.embeddings(input_ids)).mean(1))
        if self.probs_out:
            logits = logits.softmax(-1)  # "scores" returned to the caller, and fed to the loss below
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits, labels)
        return out


class TinyTrainer:
    """A Lightning-style trainer: ``module.configure_optimizers()``, ``module.training_step(batch, i)``."""

    def __init__(self, max_steps: int, forget_zero_grad: bool = False, epoch_sched: bool = False) -> None:
        self.max_steps, self.forget_zero_grad, self.epoch_sched = max_steps, forget_zero_grad, epoch_sched

    def fit(self, run, module: nn.Module, loader: DataLoader) -> None:
        opt, sched = module.configure_optimizers()
        watch(run, module, opt)
        module.train()
        step = 0
        while step < self.max_steps:
            for i, batch in enumerate(loader):
                loss = module.training_step(batch, i)
                if not self.forget_zero_grad:
                    opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                if step == self.max_steps:
                    return
            if sched is not None and self.epoch_sched:
                sched.step()


# ==== bugs ======================================================================================================
@bug("TW201")
def sensor_frame_with_unimputed_gaps_late_in_file(run) -> None:
    """A pandas recording whose sensor s4 dropped out late in the file; NaNs go straight into the tensor."""
    df = _sensor_frame()
    df.loc[400::7, "s4"] = np.nan
    x = torch.tensor(df.drop(columns="label").values, dtype=torch.float32)
    y = torch.tensor(df["label"].values)
    model = mlp(6, 32, 3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    for _epoch in range(2):
        for i in range(0, len(x), 32):  # file order: the gaps arrive at batch 12
            loss = F.cross_entropy(model(x[i:i + 32]), y[i:i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()


@bug("TW202")
def dict_batches_with_missing_targets_coded_nan(run) -> None:
    g = gen(3)
    x = torch.randn(600, 8, generator=g)
    y = x @ torch.randn(8, generator=g) + 0.1 * torch.randn(600, generator=g)
    y[torch.randperm(600, generator=g)[:4]] = float("nan")  # four unlabelled rows kept in the table
    loader = DataLoader(DictRows(features=x, target=y), batch_size=32, shuffle=True, generator=gen(4))
    model = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    for _epoch in range(3):
        for batch in loader:
            pred = model(batch["features"]).squeeze(-1)
            loss = F.mse_loss(pred, batch["target"])
            opt.zero_grad()
            loss.backward()
            opt.step()


def _hand_bce(logit: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logit)  # saturates to exactly 1.0 past a logit of ~17: log(1 - p) = -inf, 0 * -inf = NaN
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()


@bug("TW101")
def hand_written_bce_on_saturated_sigmoid(run) -> None:
    x, y = tabular(512, 12, 2, seed=5)
    model = mlp(12, 64, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    watch(run, model, opt)
    for xb, yb in _batches(x, y.float(), 100, 32):
        opt.zero_grad()
        _hand_bce(model(xb).squeeze(1), yb).backward()
        opt.step()


def _batches(x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, seed: int = 1):
    return batches(x, y, steps, batch, seed=seed)


class HFRegressor(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.out = nn.Linear(64, 1)

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        pred = self.out(self.body(features)).squeeze(-1)
        return {"loss": F.mse_loss(pred, targets), "pred": pred}


@bug("TW108", "TW307")
def hf_regressor_sgd_rate_copied_from_adam_sweep(run) -> None:
    g = gen(7)
    x = torch.randn(640, 8, generator=g)
    y = x @ torch.randn(8, generator=g) + 0.2 * torch.randn(640, generator=g)
    model = HFRegressor()
    opt = torch.optim.SGD(model.parameters(), lr=0.15, momentum=0.9)
    watch(run, model, opt)
    for xb, yb in _batches(x, y, 60, 64):
        out = model(features=xb, targets=yb)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()


@bug("TW212")
def hashed_tokenizer_ids_wrapped_into_small_table(run) -> None:
    ids, y = tokens(320, 16, vocab=600, seed=2)
    ids = ids % 256  # the table was sized for an older 256-id tokenizer
    model = GRUClassifier(vocab=256)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    for xb, yb in _batches(ids, y, 60, 32):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW212")
def transformer_ids_clamped_to_vocab(run) -> None:
    ids, y = tokens(320, 16, vocab=400, seed=3, heavy_tail=True)
    ids = ids.clamp(max=127)  # "fix" for an index error: every rarer token becomes id 127
    model = Encoder(vocab=128)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    watch(run, model, opt)
    for xb, yb in _batches(ids, y, 50, 32):
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()


@bug("TW213")
def channels_last_photos_reshaped_for_cnn(run) -> None:
    x, y = images(256, 3, 12, 4, seed=4)
    stored = x.permute(0, 2, 3, 1).contiguous()  # what the image decoder hands over: N, H, W, C
    x_in = stored.reshape(len(stored), 3, 12, 12)  # should have been .permute(0, 3, 1, 2)
    loader = DataLoader(TensorDataset(x_in, y), batch_size=32, shuffle=True, generator=gen(5))
    model = CNN(3, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    watch(run, model, opt)
    for _epoch in range(5):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()


@bug("TW214")
def first_batch_hoisted_out_of_the_loop(run) -> None:
    s, t = sequences(320, 10, 4, seed=6)
    loader = DataLoader(DictRows(seq=s, y=t), batch_size=32, shuffle=True, generator=gen(6))
    model = SeqRegressor(4, 24, lstm=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    batch = next(iter(loader))  # meant to peek at the shapes; the loop below then reuses it
    for _step in range(60):
        loss = F.mse_loss(model(batch["seq"]), batch["y"])
        opt.zero_grad()
        loss.backward()
        opt.step()


@bug("TW109")
def labels_taken_from_frame_before_sort(run) -> None:
    df = _sensor_frame(seed=8)
    feats = [f"s{i}" for i in range(6)]
    by_time = df.sort_values("s5").reset_index(drop=True)  # sorted for a plot, then used for training
    x = torch.tensor(by_time[feats].values, dtype=torch.float32)
    y = torch.tensor(df["label"].values)  # labels still in the original row order
    model = mlp(6, 32, 3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    for xb, yb in _batches(x, y, 100, 32):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW204")
def ratio_features_cast_to_int_in_pandas(run) -> None:
    rng = np.random.default_rng(9)
    df = pd.DataFrame(rng.uniform(size=(512, 5)), columns=["r1", "r2", "r3", "r4", "r5"])
    df["label"] = ((df.r1 + df.r2 - df.r3) > 0.5).astype(int)
    x = torch.tensor(df[["r1", "r2", "r3", "r4", "r5"]].astype("int64").values).float()  # every ratio -> 0
    y = torch.tensor(df["label"].values)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(9))
    model = mlp(5, 32, 2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    for _epoch in range(3):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()


@bug("TW303")
def adamw_decay_on_layernorm_embeddings_biases(run) -> None:
    ids, y = tokens(320, 12, 200, seed=10)
    model = Encoder(vocab=200)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)  # no no-decay group
    watch(run, model, opt)
    for xb, yb in _batches(ids, y, 40, 32):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW411")
def structured_pruning_left_on_before_training(run) -> None:
    x, y = images(256, 3, 12, 4, seed=11)
    model = CNN(3, 4)
    for conv in (model.features[0], model.features[3]):  # a pruning experiment's mask left in place
        prune.ln_structured(conv, "weight", amount=0.6, n=2, dim=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    for xb, yb in _batches(x, y, 40, 32):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW301")
def backbone_unfrozen_after_warmup_but_not_in_optimizer(run) -> None:
    ids, y = tokens(320, 12, 200, seed=12)
    model = GRUClassifier(vocab=200)
    for p in list(model.emb.parameters()) + list(model.rnn.parameters()):
        p.requires_grad = False
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    watch(run, model, opt)
    for step, (xb, yb) in enumerate(_batches(ids, y, 80, 32)):
        if step == 10:  # head warm-up over: unfreeze the backbone (the optimizer never hears of it)
            for p in model.parameters():
                p.requires_grad = True
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW301")
def classifier_head_swapped_after_optimizer_built(run) -> None:
    x, y = images(256, 3, 12, 6, seed=13)
    model = CNN(3, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.head = nn.Linear(16, 6)  # the dataset has 6 classes: new head, old optimizer
    watch(run, model, opt)
    for xb, yb in _batches(x, y, 50, 32):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


class LitSeqClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = GRUClassifier(vocab=200, lstm=True)

    def training_step(self, batch, batch_idx):
        ids, y = batch
        return F.cross_entropy(self.net(ids), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9), None


@bug("TW304")
def lightning_style_trainer_never_zeroes_grads(run) -> None:
    ids, y = tokens(320, 12, 200, seed=14)
    loader = DataLoader(TensorDataset(ids, y), batch_size=32, shuffle=True, generator=gen(14))
    TinyTrainer(60, forget_zero_grad=True).fit(run, LitSeqClassifier(), loader)


@bug("TW308")
def hf_loop_zero_grad_between_backward_and_step(run) -> None:
    ids, y = tokens(320, 12, 200, seed=15)
    model = HFClassifier(vocab=200)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    watch(run, model, opt)
    for xb, yb in _batches(ids, y, 40, 32):
        out = model(input_ids=xb, labels=yb)
        out["loss"].backward()
        opt.zero_grad()  # "clean up before stepping"
        opt.step()


@bug("TW308")
def per_epoch_decay_stepped_every_batch(run) -> None:
    x, y = tabular(512, 12, 4, seed=16)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=gen(16))
    model = mlp(12, 32, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)  # tuned as a per-epoch decay
    watch(run, model, opt)
    for _epoch in range(5):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            sched.step()  # ...stepped per batch: 0.9 ** 160 by the end


@bug("TW150")
def hf_model_feeds_softmax_scores_to_its_own_loss(run) -> None:
    ids, y = tokens(320, 12, 200, seed=17)
    model = HFClassifier(vocab=200, probs_out=True)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    watch(run, model, opt)
    for xb, yb in _batches(ids, y, 40, 32):
        out = model(input_ids=xb, labels=yb)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()


class LitBinaryCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(CNN(1, 1), nn.Sigmoid())  # the "probability" head
        self.criterion = nn.BCEWithLogitsLoss()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.criterion(self.net(x).squeeze(1), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3), None


@bug("TW150")
def lightning_binary_cnn_sigmoid_then_bce_with_logits(run) -> None:
    x, y = images(256, 1, 12, 2, seed=18)
    loader = DataLoader(TensorDataset(x, y.float()), batch_size=32, shuffle=True, generator=gen(18))
    TinyTrainer(40).fit(run, LitBinaryCNN(), loader)


@bug("TW401")
def validation_leaves_model_in_eval_mode(run) -> None:
    x, y = tabular(640, 12, 4, seed=19)
    xv, yv = x[512:], y[512:]
    model = nn.Sequential(nn.Linear(12, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 4))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    model.train()
    for step, (xb, yb) in enumerate(_batches(x[:512], y[:512], 60, 32)):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        if step == 5:  # a quick sanity validation early on; model.train() never called afterwards
            model.eval()
            with torch.no_grad():
                (model(xv).argmax(1) == yv).float().mean()


class TwoTower(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.num_tower = nn.Sequential(nn.Linear(6, 32), nn.ReLU())
        self.txt_emb = nn.EmbeddingBag(200, 32)
        self.head = nn.Linear(64, 2)

    def forward(self, num: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        a = self.num_tower(num)
        b = self.txt_emb(ids)  # noqa: F841  (the bug: computed, never used)
        return self.head(torch.cat([a, a], 1))  # typo: meant [a, b]


@bug("TW413")
def two_tower_text_branch_output_never_used(run) -> None:
    g = gen(20)
    ids, ty = tokens(384, 10, 200, seed=20)
    num = torch.randn(384, 6, generator=g)
    y = ((num[:, 0] > 0).long() + ty).clamp(max=1) * (1 - (num[:, 1] > 1.2).long())
    model = TwoTower()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    for step in range(60):
        i = (step * 32) % 384
        loss = F.cross_entropy(model(num[i:i + 32], ids[i:i + 32]), y[i:i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()


@bug("TW414")
def byol_like_views_without_predictor_or_stop_grad(run) -> None:
    x, _ = tabular(1024, 12, 4, seed=21)
    model = nn.Sequential(nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 16))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    watch(run, model, opt)
    for step in range(60):
        i = (step * 64) % len(x)
        xb = x[i:i + 64]
        z1 = F.normalize(model(xb + 0.5 * torch.randn_like(xb)), dim=1)
        z2 = F.normalize(model(xb + 0.5 * torch.randn_like(xb)), dim=1)
        loss = 2 - 2 * (z1 * z2).sum(1).mean()  # pull views together, nothing pushes samples apart
        opt.zero_grad()
        loss.backward()
        opt.step()


# ==== healthy controls ==========================================================================================
@healthy
def long_tail_classes_with_weighted_loss(run) -> None:
    g = gen(30)
    counts = [520, 110, 40, 18]
    centres = torch.randn(4, 10, generator=g) * 2.0
    x = torch.cat([centres[c] + torch.randn(n, 10, generator=g) for c, n in enumerate(counts)])
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    weight = (len(y) / (4 * torch.tensor(counts, dtype=torch.float)))
    model = mlp(10, 32, 4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    criterion = nn.CrossEntropyLoss(weight=weight)
    watch(run, model, opt)
    for xb, yb in _batches(x, y, 80, 64):
        opt.zero_grad()
        criterion(model(xb), yb).backward()
        opt.step()


@healthy
def noisy_lstm_regression(run) -> None:
    s, t = sequences(320, 10, 4, seed=31)
    t = t + 0.8 * torch.randn(t.shape, generator=gen(31))  # noisy sensor targets: the floor stays high
    model = SeqRegressor(4, 24, lstm=True)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    watch(run, model, opt)
    for sb, tb in _batches(s, t, 80, 32):
        opt.zero_grad()
        F.mse_loss(model(sb), tb).backward()
        opt.step()


@healthy
def curriculum_easy_rows_first(run) -> None:
    x, y = tabular(768, 12, 4, seed=32)
    logits = x @ torch.randn(12, 4, generator=gen(32))
    margin = logits.topk(2, 1).values.diff(dim=1).abs().squeeze(1)
    easy = margin > margin.median()
    model = mlp(12, 48, 4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    stage1 = _batches(x[easy], y[easy], 30, 32)
    stage2 = _batches(x, y, 60, 32, seed=2)
    for xb, yb in (*stage1, *stage2):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


class Augmented(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        img = self.x[i]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        shift = int(torch.randint(-1, 2, ()))
        img = torch.roll(img, shift, dims=-2)
        return img + 0.05 * torch.randn_like(img), self.y[i]


@healthy
def cnn_with_flip_shift_noise_augmentation(run) -> None:
    x, y = images(256, 3, 12, 4, seed=33)
    loader = DataLoader(Augmented(x, y), batch_size=32, shuffle=True, generator=gen(33))
    model = CNN(3, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    watch(run, model, opt)
    for _epoch in range(5):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()


@healthy
def transformer_linear_warmup_then_cosine(run) -> None:
    ids, y = tokens(384, 12, 200, seed=34)
    model = Encoder(vocab=200)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.0)
    total, warm = 60, 10
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + np.cos(np.pi * (s - warm) / (total - warm))))
    watch(run, model, opt)
    for xb, yb in _batches(ids, y, total, 32):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        sched.step()


@healthy
def frozen_cnn_backbone_new_head(run) -> None:
    x, y = images(320, 3, 12, 4, seed=35)
    model = CNN(3, 4)
    pre = torch.optim.Adam(model.parameters(), lr=3e-3)
    for xb, yb in _batches(x, y, 20, 32):  # "pretraining", before the audit
        pre.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        pre.step()
    y2 = torch.tensor([0, 0, 1, 2])[y]  # the downstream task: a coarser labelling of the same photos
    for p in model.features.parameters():
        p.requires_grad = False
    model.head = nn.Linear(16, 3)
    opt = torch.optim.Adam(model.head.parameters(), lr=5e-3)
    watch(run, model, opt)
    for xb, yb in _batches(x, y2, 50, 32, seed=2):
        model.train()
        model.features.eval()  # frozen BatchNorm statistics too
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@healthy
def ema_copy_evaluated_every_twenty_steps(run) -> None:
    x, y = tabular(640, 12, 4, seed=37)
    model = mlp(12, 48, 4)
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    for step, (xb, yb) in enumerate(_batches(x[:512], y[:512], 80, 32)):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.mul_(0.95).add_(pm, alpha=0.05)
        if step % 20 == 19:
            ema.eval()
            with torch.no_grad():
                F.cross_entropy(ema(x[512:]), y[512:])


@healthy
def lstm_clipped_gradients_at_brisk_rate(run) -> None:
    s, t = sequences(320, 12, 4, seed=38)
    model = SeqRegressor(4, 32, lstm=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    watch(run, model, opt)
    for sb, tb in _batches(s, t, 60, 32):
        opt.zero_grad()
        F.mse_loss(model(sb), tb).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()


@healthy
def pandas_mixed_units_standardised(run) -> None:
    rng = np.random.default_rng(39)
    n = 640
    df = pd.DataFrame({"income": rng.normal(52_000, 18_000, n), "age": rng.integers(18, 80, n),
                       "debt_ratio": rng.uniform(0, 1, n), "accounts": rng.poisson(3, n)})
    score = (df.income - 52_000) / 18_000 - 2 * (df.debt_ratio - 0.5) + 0.03 * (df.age - 49)
    df["label"] = (score > 0).astype(int)
    cols = ["income", "age", "debt_ratio", "accounts"]
    train = df.iloc[:512]
    mean, std = train[cols].mean(), train[cols].std()
    x = torch.tensor(((df[cols] - mean) / std).values, dtype=torch.float32)
    y = torch.tensor(df["label"].values)
    model = mlp(4, 32, 2)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    watch(run, model, opt)
    for xb, yb in _batches(x[:512], y[:512], 60, 32):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@healthy
def small_rate_finetune_on_shifted_task(run) -> None:
    g = gen(40)
    w = torch.randn(8, generator=g)
    x = torch.randn(640, 8, generator=g)
    model = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 1))
    pre = torch.optim.Adam(model.parameters(), lr=1e-2)
    for xb, yb in _batches(x, (x @ w)[:, None], 150, 64):
        pre.zero_grad()
        F.mse_loss(model(xb), yb).backward()
        pre.step()
    w2 = w + 0.4 * torch.randn(8, generator=g)  # the new site's data: a nearby task
    x2 = torch.randn(640, 8, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    watch(run, model, opt)
    for xb, yb in _batches(x2, (x2 @ w2)[:, None], 200, 32):
        opt.zero_grad()
        F.mse_loss(model(xb), yb).backward()
        opt.step()


class MaskedGRU(nn.Module):
    def __init__(self, vocab: int = 300, dim: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.rnn = nn.GRU(dim, dim, batch_first=True)
        self.head = nn.Linear(dim, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != 0).float().unsqueeze(-1)
        h, _ = self.rnn(self.emb(ids))
        return self.head((h * mask).sum(1) / mask.sum(1).clamp(min=1))


@healthy
def variable_length_text_padded_with_padding_idx(run) -> None:
    g = gen(41)
    n, maxlen = 384, 24
    lengths = torch.randint(4, maxlen + 1, (n,), generator=g)
    ids = torch.randint(1, 300, (n, maxlen), generator=g)
    ids[torch.arange(maxlen)[None, :] >= lengths[:, None]] = 0  # right padding
    score = torch.randn(300, generator=g)
    score[0] = 0
    y = ((score[ids].sum(1) / lengths) > 0).long()
    model = MaskedGRU()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    watch(run, model, opt)
    for xb, yb in _batches(ids, y, 60, 32):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


class MultiTask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.cls_head = nn.Linear(64, 4)
        self.reg_head = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.cls_head(h), self.reg_head(h).squeeze(-1)


@healthy
def multitask_class_and_value_heads(run) -> None:
    x, y = tabular(512, 12, 4, seed=42)
    v = x[:, :3].sum(1) + 0.1 * torch.randn(512, generator=gen(42))
    model = MultiTask()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    g = gen(43)
    for _step in range(60):
        idx = torch.randint(0, 512, (32,), generator=g)
        logits, value = model(x[idx])
        loss = F.cross_entropy(logits, y[idx]) + 0.5 * F.mse_loss(value, v[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


@healthy
def hf_model_validated_under_no_grad_in_eval(run) -> None:
    ids, y = tokens(448, 12, 200, seed=44)
    tr, va = slice(0, 384), slice(384, 448)
    model = HFClassifier(vocab=200)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    watch(run, model, opt)
    for step, (xb, yb) in enumerate(_batches(ids[tr], y[tr], 50, 32)):
        out = model(input_ids=xb, labels=yb)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        if step % 10 == 9:
            model.eval()
            with torch.no_grad():
                model(input_ids=ids[va], labels=y[va])["loss"]
            model.train()


@healthy
def deep_tanh_mlp_slow_but_steady_start(run) -> None:
    x, y = tabular(640, 12, 4, seed=45)
    model = mlp(12, 32, 4, depth=5, act=nn.Tanh)
    opt = torch.optim.SGD(model.parameters(), lr=0.03)
    watch(run, model, opt)
    for xb, yb in _batches(x, y, 200, 32):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


class LitCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = CNN(3, 4, dropout=0.1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)


@healthy
def lightning_style_cnn_step_lr_per_epoch(run) -> None:
    x, y = images(256, 3, 12, 4, seed=46)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(46))
    TinyTrainer(48, epoch_sched=True).fit(run, LitCNN(), loader)


class Tabular(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.city = nn.Embedding(20, 8)
        self.norm = nn.LayerNorm(11)
        self.mlp = nn.Sequential(nn.Linear(11, 32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, city: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(torch.cat([self.city(city), num], 1)))


@healthy
def pandas_categorical_embedding_with_no_decay_groups(run) -> None:
    rng = np.random.default_rng(47)
    n = 640
    df = pd.DataFrame({"city": rng.integers(0, 20, n), "a": rng.normal(size=n), "b": rng.normal(size=n),
                       "c": rng.normal(size=n)})
    city_effect = rng.normal(size=20)
    df["label"] = ((city_effect[df.city] + df.a - df.b) > 0).astype(int)
    city = torch.tensor(df.city.values)
    num = torch.tensor(df[["a", "b", "c"]].values, dtype=torch.float32)
    y = torch.tensor(df.label.values)
    model = Tabular()
    decay = [p for n_, p in model.named_parameters() if n_.startswith("mlp") and n_.endswith("weight")]
    rest = [p for n_, p in model.named_parameters() if not (n_.startswith("mlp") and n_.endswith("weight"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                            lr=5e-3)
    watch(run, model, opt)
    g = gen(48)
    for _step in range(70):
        idx = torch.randint(0, n, (32,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(city[idx], num[idx]), y[idx]).backward()
        opt.step()


@healthy
def simclr_style_contrastive_views(run) -> None:
    x, _ = tabular(1024, 12, 4, seed=49)
    model = nn.Sequential(nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 16))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    watch(run, model, opt)
    for step in range(60):
        i = (step * 64) % len(x)
        xb = x[i:i + 64]
        z1 = F.normalize(model(xb + 0.3 * torch.randn_like(xb)), dim=1)
        z2 = F.normalize(model(xb + 0.3 * torch.randn_like(xb)), dim=1)
        sim = z1 @ z2.T / 0.2  # InfoNCE: the other samples in the batch are negatives
        loss = (F.cross_entropy(sim, torch.arange(64)) + F.cross_entropy(sim.T, torch.arange(64))) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()


@healthy
def full_batch_adam_on_small_training_split(run) -> None:
    g = gen(50)
    x = torch.randn(240, 6, generator=g)
    y = torch.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2] + 0.05 * torch.randn(240, generator=g)
    x_tr, y_tr, x_va, y_va = x[:200], y[:200], x[200:], y[200:]
    model = nn.Sequential(nn.Linear(6, 64), nn.Tanh(), nn.Linear(64, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    watch(run, model, opt)
    for step in range(120):
        opt.zero_grad()
        F.mse_loss(model(x_tr).squeeze(-1), y_tr).backward()
        opt.step()
        if step % 40 == 39:
            with torch.no_grad():
                F.mse_loss(model(x_va).squeeze(-1), y_va)


@healthy
def dict_batches_with_gradient_accumulation(run) -> None:
    x, y = tabular(512, 12, 4, seed=51)
    loader = DataLoader(DictRows(x=x, label=y), batch_size=16, shuffle=True, generator=gen(51))
    model = mlp(12, 32, 4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    accum = 4
    for _epoch in range(4):
        for i, batch in enumerate(loader):
            loss = F.cross_entropy(model(batch["x"]), batch["label"]) / accum
            loss.backward()
            if i % accum == accum - 1:
                opt.step()
                opt.zero_grad()


@healthy
def gru_classifier_from_frame_of_token_lists(run) -> None:
    ids, y = tokens(320, 14, 200, seed=52, heavy_tail=True)
    df = pd.DataFrame({"tokens": ids.tolist(), "label": y.tolist()}).sample(frac=1.0, random_state=52)
    x = torch.tensor(np.stack(df.tokens.values))
    yy = torch.tensor(df.label.values)
    model = GRUClassifier(vocab=200)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    watch(run, model, opt)
    for xb, yb in _batches(x, yy, 60, 32):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
