"""Healthy controls: correct loops that look unusual. None may get a WARN or ERROR."""

from __future__ import annotations

import torch
from _kit import WATCH, blobs, fit, healthy, mlp, regression
from torch import nn

import torchwitness as tw


@healthy
def adamw_with_no_decay_groups(run: tw.Run) -> None:
    x, y = blobs()
    model = mlp()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-3)
    fit(run, model, opt, nn.CrossEntropyLoss(), x, y, steps=60)


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(10, 32), nn.ReLU())
        self.head_a, self.head_b = nn.Linear(32, 3), nn.Linear(32, 3)

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return (self.head_a if task == 0 else self.head_b)(self.body(x))


@healthy
def conditional_compute_heads(run: tw.Run) -> None:
    x, y = blobs()
    model = _TwoHeads()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    crit = nn.CrossEntropyLoss()
    run.watch(model, opt, loss_fn=crit, **WATCH)
    for step in range(30):
        task = int(step % 3 == 2)  # head_b only every third step
        idx = torch.randint(0, 512, (32,))
        opt.zero_grad()
        crit(model(x[idx], task), y[idx]).backward()
        opt.step()


@healthy
def gradient_accumulation_done_right(run: tw.Run) -> None:
    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    run.watch(model, opt, loss_fn=crit, **WATCH)
    for _step in range(20):
        for _micro in range(4):
            idx = torch.randint(0, 512, (8,))
            (crit(model(x[idx]), y[idx]) / 4).backward()
        opt.step()
        opt.zero_grad()


@healthy
def frozen_backbone_with_batchnorm(run: tw.Run) -> None:
    x, y = blobs()
    backbone = nn.Sequential(nn.Linear(10, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU())
    model = nn.Sequential(backbone, nn.Linear(32, 3))
    backbone.requires_grad_(False)
    opt = torch.optim.Adam(model[1].parameters(), 1e-3)
    crit = nn.CrossEntropyLoss()
    run.watch(model, opt, loss_fn=crit, **WATCH)
    for _step in range(25):
        model.train()
        backbone.eval()  # frozen statistics too
        idx = torch.randint(0, 512, (32,))
        opt.zero_grad()
        crit(model(x[idx]), y[idx]).backward()
        opt.step()


@healthy
def bf16_autocast_on_cpu(run: tw.Run) -> None:
    x, y = blobs()
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.0)
    crit = nn.CrossEntropyLoss()
    run.watch(model, opt, loss_fn=crit, **WATCH)
    for _step in range(25):
        idx = torch.randint(0, 512, (32,))
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = crit(model(x[idx]), y[idx])
        loss.backward()
        opt.step()


class _TinyTransformer(nn.Module):
    def __init__(self, vocab: int = 50, d: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(1, 16, d))
        layer = nn.TransformerEncoderLayer(d, 4, 64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids) + self.pos[:, :ids.shape[1]]
        mask = nn.Transformer.generate_square_subsequent_mask(ids.shape[1])
        return self.lm_head(self.norm(self.encoder(h, mask=mask, is_causal=True)))


@healthy
def tiny_causal_transformer(run: tw.Run) -> None:
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 50, (256, 17), generator=g)
    model = _TinyTransformer()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    crit = nn.CrossEntropyLoss()
    run.watch(model, opt, loss_fn=crit, **WATCH)
    for step in range(12):
        batch = data[torch.randint(0, 256, (16,), generator=g)]
        opt.zero_grad()
        logits = model(batch[:, :-1])
        crit(logits.reshape(-1, 50), batch[:, 1:].reshape(-1)).backward()
        opt.step()
        if step % 6 == 5:
            model.eval()
            with torch.no_grad():
                model(data[:8, :-1])
            model.train()


@healthy
def cnn_with_batchnorm_and_validation(run: tw.Run) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(192, 3, 12, 12, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0.5).long()
    x = (x - 0.5) / 0.29
    xt, yt, xv = x[:160], y[:160], x[160:]
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    run.watch(model, opt, loss_fn=crit, **WATCH)
    for step in range(20):
        idx = torch.randint(0, 160, (16,), generator=g)
        opt.zero_grad()
        crit(model(xt[idx]), yt[idx]).backward()
        opt.step()
        if step % 10 == 9:
            model.eval()
            with torch.no_grad():
                model(xv)
            model.train()


@healthy
def regression_with_matching_shapes(run: tw.Run) -> None:
    x, y = regression()
    model = mlp(8, 32, 1)
    fit(run, model, torch.optim.Adam(model.parameters(), 3e-3), nn.MSELoss(), x, y.unsqueeze(1), steps=80)


@healthy
def full_batch_gradient_descent(run: tw.Run) -> None:
    x, y = blobs(n=128)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    crit = nn.CrossEntropyLoss()
    run.watch(model, opt, loss_fn=crit, **WATCH)
    for _ in range(30):
        opt.zero_grad()
        crit(model(x), y).backward()  # the same batch on purpose
        opt.step()


@healthy
def imbalanced_but_weighted(run: tw.Run) -> None:
    x = torch.randn(1000, 10)
    y = ((x[:, 0] > 1.9) | (torch.rand(1000) < 0.01)).long()
    model = mlp(10, 32, 1)
    pos = float((y == 0).sum() / (y == 1).sum())
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-3), nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos)),
        x, y.float().unsqueeze(1), steps=20)


@healthy
def no_optimizer_manual_sgd(run: tw.Run) -> None:
    x, y = blobs()
    model = mlp()
    crit = nn.CrossEntropyLoss()
    run.watch(model, loss_fn=crit, **WATCH)
    for _step in range(15):
        idx = torch.randint(0, 512, (32,))
        crit(model(x[idx]), y[idx]).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.05 * p.grad
                p.grad = None


@healthy
def functional_cross_entropy_with_label_smoothing(run: tw.Run) -> None:
    x, y = blobs()
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), 2e-3)
    run.watch(model, opt, every_n_steps=5, first_steps=3)
    for _ in range(30):
        idx = torch.randint(0, 512, (32,))
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx], label_smoothing=0.1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()


class _AlternatingLossHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(10, 32), nn.ReLU())
        self.cls_head, self.aux_head = nn.Linear(32, 3), nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.cls_head(h), self.aux_head(h)  # both heads always run


@healthy
def both_heads_run_loss_alternates(run: tw.Run) -> None:
    x, y = blobs()
    model = _AlternatingLossHeads()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    run.watch(model, opt, **WATCH)
    for step in range(24):
        idx = torch.randint(0, 512, (32,))
        main, aux = model(x[idx])
        opt.zero_grad()
        nn.functional.cross_entropy(main if step % 2 == 0 else aux, y[idx]).backward()
        opt.step()


@healthy
def binary_cnn_with_pooled_logit_head(run: tw.Run) -> None:
    """A fresh global-average-pool head gives near-constant logits around 0.5: not sigmoid outputs (TW150)."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(192, 1, 12, 12, generator=g)
    y = (x[:, :, :6].mean((1, 2, 3)) > x[:, :, 6:].mean((1, 2, 3))).float().unsqueeze(1)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 1))
    with torch.no_grad():
        model[-1].bias.fill_(0.5)  # logits start inside [0, 1]
    fit(run, model, torch.optim.AdamW(model.parameters(), 2e-3), nn.BCEWithLogitsLoss(), x, y, steps=12, batch=16)


@healthy
def conv1d_sequence_classifier(run: tw.Run) -> None:
    """Conv1d + BatchNorm1d + ReLU + dropout over (B, C, L) series, pooled: channels judged as units."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(256, 3, 32, generator=g)
    y = (x[:, 1].mean(1) > x[:, 2].mean(1)).long()
    model = nn.Sequential(nn.Conv1d(3, 16, 5, padding=2), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1),
                          nn.Conv1d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                          nn.Linear(16, 2))
    fit(run, model, torch.optim.AdamW(model.parameters(), 3e-3), nn.CrossEntropyLoss(), x, y, steps=24)


@healthy
def one_feature_regression_with_a_strong_predictor(run: tw.Run) -> None:
    """A single feature that predicts the target at r ~ 0.998 is a good feature, not a leak (TW209)."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(512, 1, generator=g)
    y = 3.0 * x[:, 0] + 0.2 * torch.randn(512, generator=g)
    model = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-2), nn.MSELoss(), x, y.unsqueeze(1), steps=24)


@healthy
def unshuffled_epochs_audited_once_per_epoch(run: tw.Run) -> None:
    """Ten batches an epoch, no shuffling, an audit every 10th step: every audit sees the same first batch, one
    epoch apart, which is not a repeated batch (TW206 compares consecutive steps only)."""
    x, y = blobs(320)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.05)
    crit = nn.CrossEntropyLoss()
    run.watch(model, opt, loss_fn=crit, every_n_steps=10, first_steps=1)
    for step in range(31):
        start = (step % 10) * 32
        xb, yb = x[start:start + 32].clone(), y[start:start + 32].clone()  # a loader's fresh batch tensors
        opt.zero_grad()
        crit(model(xb), yb).backward()
        opt.step()


@healthy
def gan_with_constructed_labels(run: tw.Run) -> None:
    """A GAN: the discriminator's targets are ones for real and zeros for fake rows, made by torch.ones/zeros in
    the loop (not class labels of a data set), and the generator's loss meets D's gradients on purpose."""
    g = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    d = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    opt_g = torch.optim.Adam(g.parameters(), 2e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-3, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    run.watch(d, opt_d, **WATCH)
    run.watch(g, opt_g, **WATCH)
    for _ in range(120):
        real = torch.randn(64, 2) * 0.5 + torch.tensor([2.0, -1.0])
        fake = g(torch.randn(64, 8))
        opt_d.zero_grad()
        d_real = d(real)
        loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d(fake.detach()), torch.zeros(64, 1))
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        d_fake = d(fake)
        bce(d_fake, torch.ones_like(d_fake)).backward()
        opt_g.step()


@healthy
def gan_tutorial_order_labels_made_before_the_forward(run: tw.Run) -> None:
    """The DCGAN tutorial's order, the discriminator watched: real/fake labels made before D's forward, D's real
    and fake losses summed, then G's loss through D (before D's next zero_grad). The run ends on a step count a
    dense watch audits: its last window never meets D's optimizer step."""
    g = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 8))
    d = nn.Sequential(nn.Linear(8, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    opt_g = torch.optim.Adam(g.parameters(), 2e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-3, betas=(0.5, 0.999))
    crit = nn.BCEWithLogitsLoss()
    run.watch(d, opt_d, **WATCH)
    for _ in range(48):
        real = torch.randn(32, 8) * 0.5 + 1
        ones, zeros = torch.ones(32, 1), torch.zeros(32, 1)
        fake = g(torch.randn(32, 4))
        opt_d.zero_grad()
        (crit(d(real), ones) + crit(d(fake.detach()), zeros)).backward()
        opt_d.step()
        opt_g.zero_grad()
        crit(d(fake), ones).backward()
        opt_g.step()


@healthy
def train_and_validation_accuracy_each_epoch(run: tw.Run) -> None:
    """Accuracy on the whole training set and on a held-out set under no_grad after each epoch: training
    metrics beside a held-out evaluation, not an overlap of the splits."""
    x, y = blobs()
    xv, yv = x[-100:], y[-100:]
    x, y = x[:-100], y[:-100]
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    run.watch(model, opt, **WATCH)
    for _ in range(4):
        for i in range(0, len(x) - 63, 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            (model(x).argmax(1) == y).float().mean()
            (model(xv).argmax(1) == yv).float().mean()
        model.train()
