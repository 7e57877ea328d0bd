"""Blind scenarios, third round: short (20-step) forms of the held-out classes and more classic loop mistakes,
written after round 2's fixes and run before any further change.
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
)
from _kit import bug, healthy
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import DataLoader, TensorDataset


# ==== 20-step forms ============================================================================================
@bug("TW404")
def blind3_short_dead_filters(run) -> None:
    """Twenty steps of a CNN whose first conv biases were set to -8 by a bad init (no BatchNorm)."""
    x, y = images(n=320, seed=200)
    model = CNN(bn=False)
    nn.init.constant_(model.features[0].bias, -8.0)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), x, y, steps=20)


@bug("TW204")
def blind3_short_constant_tokens_embedding_free(run) -> None:
    """Twenty steps of an MLP whose inputs were all overwritten with the value 1.0 (a fill_ meant for a mask)."""
    x, y = tabular(n=640, seed=201)
    x.fill_(1.0)
    model = mlp()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), x, y, steps=20)


@bug("TW413")
def blind3_short_discarded_gru_layer(run) -> None:
    """A second GRU layer runs, but the head reads the first layer's output; 20 steps."""
    class Net(GRUClassifier):
        def __init__(self) -> None:
            super().__init__()
            self.rnn2 = nn.GRU(32, 32, batch_first=True)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(self.emb(ids))
            self.rnn2(out)
            return self.head(out.mean(1))

    ids, y = tokens(n=640, seed=202)
    model = Net()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), ids, y, steps=20)


@bug("TW214")
def blind3_short_same_batch(run) -> None:
    """Twenty steps on X[:32] taken once before the loop (the rest of the 640 rows never used)."""
    x, y = tabular(n=640, seed=203)
    model = mlp()
    xb, yb = x[:32], y[:32]
    ce_loop(run, model, torch.optim.SGD(model.parameters(), 0.1), xb, yb, steps=20, full_batch=True)


@bug("TW201")
def blind3_short_nan_late(run) -> None:
    """A NaN row arrives at step 15 of a 20-step transformer run (unshuffled data)."""
    ids, y = tokens(n=640, seed=204)

    class Net(Encoder):
        def forward(self, ids: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
            return super().forward(ids) + feats.sum(1, keepdim=True) * 0.01

    feats = torch.randn(640, 4, generator=gen(205))
    feats[15 * 32 + 3, 2] = float("nan")
    model = Net()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    watch(run, model, opt)
    for step in range(20):
        sl = slice(step * 32, step * 32 + 32)
        opt.zero_grad()
        F.cross_entropy(model(ids[sl], feats[sl]), y[sl]).backward()
        opt.step()


@bug("TW213")
def blind3_short_reshaped_images(run) -> None:
    """Twenty steps of a CNN on NHWC images reshaped to NCHW, batch 64."""
    x, y = images(n=640, hw=12, seed=206)
    scrambled = x.permute(0, 2, 3, 1).contiguous().reshape(640, 3, 12, 12)
    model = CNN()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), scrambled, y, steps=20, batch=32)


# ==== loop mistakes ============================================================================================
@bug("TW308")
def blind3_zero_grad_between_backward_and_step(run) -> None:
    """loss.backward(); opt.zero_grad(); opt.step(): the step sees no gradient."""
    x, y = images(n=256, seed=207)
    model = CNN()
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 30, 32):
        F.cross_entropy(model(xb), yb).backward()
        opt.zero_grad()
        opt.step()


@bug("TW307")
def blind3_sum_reduction_sgd(run) -> None:
    """CrossEntropyLoss(reduction='sum') with batch 128 under SGD tuned for a mean: steps 128x too large."""
    x, y = tabular(n=1024, seed=208)
    model = mlp(h=64)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    opt = torch.optim.SGD(model.parameters(), 0.5)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 30, 128):
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()


@bug("TW208")
def blind3_validation_on_training_rows(run) -> None:
    """The 'validation' split is a slice of the training data, evaluated under no_grad every 10 steps."""
    x, y = tabular(n=512, seed=209)
    val = x[:128]
    model = mlp()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), x, y, val=val)


@bug("TW411")
def blind3_pruned_linear_neurons(run) -> None:
    """ln_structured pruning of 50% of a hidden Linear layer's neurons (rows) before training."""
    x, y = tabular(n=512, seed=210)
    model = mlp(h=64, depth=3)
    prune.ln_structured(model[2], "weight", amount=0.5, n=2, dim=0)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), x, y, steps=30)


@bug("TW414")
def blind3_mse_between_views_collapse(run) -> None:
    """Two augmented views, loss = MSE(f(v1), f(v2)) on unnormalised embeddings, nothing against collapse."""
    g = gen(211)
    data = torch.randn(512, 16, generator=g)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32))
    two_views_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), data,
                   lambda m, a, b: F.mse_loss(m(a), m(b)), noise=0.2)


@bug("TW303")
def blind3_adamw_default_decay_explicit_large_lr(run) -> None:
    """AdamW(weight_decay=0.05) over a LayerNorm transformer, no parameter groups."""
    ids, y = tokens(n=320, seed=212)
    model = Encoder(layers=2)
    ce_loop(run, model, torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.05), ids, y, steps=30)


@bug("TW109")
def blind3_labels_from_other_split(run) -> None:
    """Labels taken from another split (y_test) of the same size: misaligned with the inputs."""
    x, _ = tabular(n=512, seed=213)
    _, y_other = tabular(n=512, seed=214)
    model = mlp()
    loader = DataLoader(TensorDataset(x, y_other), batch_size=32, shuffle=True, generator=gen(215))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    step = 0
    while step < 40:
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            step += 1
            if step == 40:
                break


# ==== healthy controls =========================================================================================
@healthy
def blind3_ok_short_cnn_20_steps(run) -> None:
    """Twenty steps of a healthy BatchNorm CNN."""
    x, y = images(n=640, seed=220)
    model = CNN()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), x, y, steps=20)


@healthy
def blind3_ok_short_transformer_20_steps(run) -> None:
    """Twenty steps of a healthy transformer encoder over Zipf tokens."""
    ids, y = tokens(n=640, length=16, heavy_tail=True, seed=221)
    model = Encoder()
    ce_loop(run, model, torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=0.0), ids, y, steps=20)


@healthy
def blind3_ok_pretrained_sparse_head(run) -> None:
    """Unstructured (L1) pruning of 30% of a Linear layer's weights: single zeros, no dead neurons."""
    x, y = tabular(n=512, seed=222)
    model = mlp(h=64, depth=3)
    prune.l1_unstructured(model[2], "weight", amount=0.3)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), x, y, steps=30)


@healthy
def blind3_ok_validation_held_out(run) -> None:
    """A validation split disjoint from training, evaluated under eval()/no_grad every 10 steps."""
    x, y = tabular(n=640, seed=223)
    model = mlp()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), x[:512], y[:512], val=x[512:])


@healthy
def blind3_ok_sum_reduction_scaled_lr(run) -> None:
    """reduction='sum' with the learning rate divided by the batch size (equivalent to a mean)."""
    x, y = tabular(n=1024, seed=224)
    model = mlp(h=64)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    opt = torch.optim.SGD(model.parameters(), 0.1 / 128, momentum=0.9)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 30, 128):
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()


@healthy
def blind3_ok_vicreg_like(run) -> None:
    """Two views with an invariance term plus a variance hinge that keeps every dimension spread (VICReg-like)."""
    g = gen(225)
    data = torch.randn(512, 16, generator=g)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32))
    def vicreg(m: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        z1, z2 = m(a), m(b)
        hinge = F.relu(1 - torch.sqrt(z1.var(0) + 1e-4)).mean() + F.relu(1 - torch.sqrt(z2.var(0) + 1e-4)).mean()
        return F.mse_loss(z1, z2) + hinge

    two_views_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), data, vicreg, noise=0.2)


@healthy
def blind3_ok_zero_init_residual_branch(run) -> None:
    """A residual MLP whose branches' last Linear is zero-initialised on purpose (every row zero at the start)."""
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(32, 32), nn.Linear(32, 32)
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            return h + self.fc2(F.relu(self.fc1(h)))

    x, y = tabular(n=512, seed=226)
    model = nn.Sequential(nn.Linear(12, 32), Block(), Block(), nn.Linear(32, 4))
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), x, y, steps=30)


@healthy
def blind3_ok_full_batch_on_train_split(run) -> None:
    """Full-batch training on the first 96 rows of a 240-row table, validated on the rest every 10 steps."""
    x, y = tabular(n=240, seed=227)
    model = mlp()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), x[:96], y[:96], steps=40, full_batch=True,
            val=x[96:])


@healthy
def blind3_ok_full_batch_split_no_validation(run) -> None:
    """Full-batch training on a 128-row training split (x[:128]) of a 320-row table; the rest is held back."""
    x, y = tabular(n=320, seed=228)
    x_train, y_train = x[:128], y[:128]
    model = mlp()
    ce_loop(run, model, torch.optim.SGD(model.parameters(), 0.1, momentum=0.9), x_train, y_train, steps=40,
            full_batch=True)


@healthy
def blind3_ok_full_batch_loader_whole_dataset(run) -> None:
    """A DataLoader whose one batch is its whole 300-row dataset (batch_size=len(dataset), no shuffle)."""
    x, y = tabular(n=300, seed=229)
    ds = TensorDataset(x, y)
    model = mlp()
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), DataLoader(ds, batch_size=len(ds)), steps=30)


@healthy
def blind3_ok_ten_step_run(run) -> None:
    """Only ten steps of a healthy run (a smoke test of the loop)."""
    x, y = tabular(n=320, seed=230)
    model = mlp()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), x, y, steps=10)


@healthy
def blind3_ok_frozen_pretrained_embeddings(run) -> None:
    """Pretrained word vectors loaded into an Embedding with requires_grad=False; the GRU and head train."""
    ids, y = tokens(n=320, length=16, vocab=200, heavy_tail=True, seed=231)
    model = GRUClassifier()
    with torch.no_grad():
        model.emb.weight.copy_(torch.randn(200, 32, generator=gen(232)))
    model.emb.weight.requires_grad = False
    trainable = [p for p in model.parameters() if p.requires_grad]
    ce_loop(run, model, torch.optim.Adam(trainable, 3e-3), ids, y, steps=30)


@healthy
def blind3_ok_frozen_body_batchnorm_in_train_mode(run) -> None:
    """A frozen (requires_grad=False) pretrained CNN body left in train mode (BatchNorm statistics keep adapting,
    as in some fine-tuning recipes), a new head trained with SGD."""
    x, y = images(n=256, seed=233)
    model = CNN()
    pre = torch.optim.Adam(model.parameters(), 3e-3)
    for xb, yb in batches(x, y, 24, 32, seed=234):
        pre.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        pre.step()
    model.features.requires_grad_(False)
    model.head = nn.Linear(16, 4)
    ce_loop(run, model, torch.optim.SGD(model.head.parameters(), 0.1, momentum=0.9), x, y, steps=30)


@healthy
def blind3_ok_padded_feature_columns(run) -> None:
    """A table padded with four all-zero feature columns (a fixed-width schema), MLP regression with MSE."""
    g = gen(235)
    x = torch.cat([torch.randn(512, 8, generator=g), torch.zeros(512, 4)], 1)
    y = x[:, :8] @ torch.randn(8, 1, generator=g)
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 1))
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), x, y, loss_fn=F.mse_loss)


@healthy
def blind3_ok_permuted_nhwc_in_loop(run) -> None:
    """NHWC batches permuted to NCHW inside forward (x.permute(0, 3, 1, 2)), BatchNorm CNN, Adam."""
    x, y = images(n=256, hw=16, seed=236)
    nhwc = x.permute(0, 2, 3, 1).contiguous()

    class Net(CNN):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x.permute(0, 3, 1, 2))

    model = Net()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), nhwc, y)
