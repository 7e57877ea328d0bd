"""Other forms of the bugs round 5's fixes catch (written after those fixes, so not blind), and healthy controls
that tempt the fixed rules: schedules that raise the rate on purpose or anneal it to 0 by hand, loaders
iterated by hand, planned freezes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _blindkit import CNN, GRUClassifier, batches, ce_loop, gen, images, mlp, tabular, tokens, watch
from _kit import bug, healthy
from torch.utils.data import DataLoader, TensorDataset


# ==== bugs =====================================================================================================
@bug("TW307", tolerated=("TW108",))
def midrun_rate_multiplied_each_step(run) -> None:
    """ExponentialLR(gamma=1.2) (meant 0.8) stepped per batch under SGD with momentum on a CNN: the rate grows
    ~1,500x over 40 steps."""
    x, y = images(n=1280, seed=500)
    model = CNN(bn=False)
    opt = torch.optim.SGD(model.parameters(), 0.02, momentum=0.9)
    ce_loop(run, model, opt, x, y, steps=40, sched=torch.optim.lr_scheduler.ExponentialLR(opt, 1.2))


# (scenario, sampling) -> why the watch misses it: strict xfail
KNOWN_MISSES: dict[tuple[str, str], str] = {
    ("ema_copy_evaluated_in_train_mode", "every-step"): "models outside the watch are seen only while a statistical "
    "audit is armed (a hook on every module call of the process costs each lean step too much): with every step "
    "audited, the copy's evaluation after steps 9, 19, 29, 39 meets lean steps only",
}

@bug("TW308")
def midrun_step_before_backward_gru_loader(run) -> None:
    """A DataLoader loop whose step() sits between the loss and its backward, right after zero_grad (a GRU)."""
    ids, y = tokens(n=640, seed=501)
    model = GRUClassifier()
    opt = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9)
    watch(run, model, opt)
    for xb, yb in DataLoader(TensorDataset(ids, y), batch_size=32, shuffle=True, generator=gen(502)):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        opt.step()
        loss.backward()


@bug("TW308")
def midrun_adam_lr_zeroed_transformer_style(run) -> None:
    """An 'lr finder' left in the loop sets every group's rate to 0 after step 5 (Adam, no scheduler)."""
    x, y = tabular(n=1280, seed=503)
    model = mlp(depth=3)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x, y, 40, 32)):
        if i == 5:
            for g in opt.param_groups:
                g["lr"] = 0.0
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW110")
def midrun_cnn_features_detached_from_step_12(run) -> None:
    """A CNN's pooled features are detached from step 12 on (a flag meant for evaluation), SGD with momentum."""
    class Net(CNN):
        cut = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.features(x).mean((2, 3))
            return self.head(h.detach() if self.cut else h)

    x, y = images(n=1280, seed=504)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x, y, 45, 32)):
        model.cut = i >= 12
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW110")
def midrun_prediction_rewrapped_as_tensor(run) -> None:
    """``torch.tensor(model(x).tolist(), requires_grad=True)`` to 'fix' a dtype: the loss meets a copy of the
    output outside the graph."""
    x, y = tabular(n=640, seed=505)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 30, 32):
        opt.zero_grad()
        pred = torch.tensor(model(xb).tolist(), requires_grad=True)
        F.cross_entropy(pred, yb).backward()
        opt.step()


@bug("TW214")
def midrun_next_with_default_keeps_batch(run) -> None:
    """``xb, yb = next(it, (xb, yb))``: once the iterator runs dry, the last batch is fed for the rest."""
    x, y = tabular(n=256, seed=506)
    it = iter(DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(507)))
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    xb, yb = next(it)
    for _ in range(30):
        xb, yb = next(it, (xb, yb))
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW305")
def midrun_noop_freeze_of_cnn_features(run) -> None:
    """``model.features.requires_grad = False`` at step 10 of a CNN run (the features keep training)."""
    x, y = images(n=640, seed=508)
    model = CNN()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x, y, 30, 32)):
        if i == 10:
            model.features.requires_grad = False
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW306")
def midrun_adam_frozen_embedding_keeps_moving(run) -> None:
    """A GRU's embedding frozen at step 10 with requires_grad_(False), zero_grad(set_to_none=False) under Adam:
    its moments keep moving it."""
    ids, y = tokens(n=1280, seed=509)
    model = GRUClassifier()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(ids, y, 40, 32)):
        if i == 10:
            model.emb.requires_grad_(False)
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


# ==== healthy controls =========================================================================================
@healthy
def midrun_ok_one_cycle(run) -> None:
    """OneCycleLR over 60 steps: the rate rises to 25x its initial value on purpose and the loss falls."""
    x, y = tabular(n=1920, seed=520)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=60)
    ce_loop(run, model, opt, x, y, steps=60, sched=sched)


@healthy
def midrun_ok_manual_linear_decay_to_zero(run) -> None:
    """The loop anneals the rate by hand, linearly to 0 at its last step (no scheduler object)."""
    x, y = tabular(n=1280, seed=521)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.2, momentum=0.9)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x, y, 40, 32)):
        for g in opt.param_groups:
            g["lr"] = 0.2 * (1 - i / 39)
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@healthy
def midrun_ok_iterator_restarted(run) -> None:
    """``next(it)`` by hand, the iterator re-created on StopIteration (a new epoch each time)."""
    x, y = tabular(n=256, seed=522)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(523))
    it = iter(loader)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for _ in range(30):
        try:
            xb, yb = next(it)
        except StopIteration:
            it = iter(loader)
            xb, yb = next(it)
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@healthy
def midrun_ok_linear_probe_after_warmup(run) -> None:
    """Fine-tuning, then linear probing: from step 15 the encoder runs under no_grad, frozen with
    requires_grad_(False), SGD with momentum and the default zero_grad."""
    class Net(CNN):
        probe = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.set_grad_enabled(not self.probe and torch.is_grad_enabled()):
                h = self.features(x).mean((2, 3))
            return self.head(h)

    x, y = images(n=1280, seed=524)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x, y, 40, 32)):
        if i == 15:
            model.probe = True
            model.features.requires_grad_(False)
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@healthy
def midrun_ok_head_optimizer_created_after_watch(run) -> None:
    """The encoder's optimizer is watched; the head's is created after the watch, both stepped every step."""
    x, y = tabular(n=960, seed=525)
    model = mlp()
    opt_body = torch.optim.Adam(model[0].parameters(), 3e-3)
    watch(run, model, opt_body)
    opt_head = torch.optim.SGD(model[2].parameters(), 0.05, momentum=0.9)
    for xb, yb in batches(x, y, 30, 32):
        opt_body.zero_grad()
        opt_head.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt_body.step()
        opt_head.step()


@healthy
def midrun_ok_head_optimizer_accumulates(run) -> None:
    """The watched optimizer steps the body every step; the head's optimizer accumulates 4 steps of gradients
    before each of its steps and zero_grad, on purpose."""
    x, y = tabular(n=960, seed=527)
    model = mlp()
    opt_body = torch.optim.Adam(model[0].parameters(), 3e-3)
    opt_head = torch.optim.SGD(model[2].parameters(), 0.02, momentum=0.9)
    watch(run, model, opt_body)
    for i, (xb, yb) in enumerate(batches(x, y, 30, 32)):
        opt_body.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt_body.step()
        if i % 4 == 3:
            opt_head.step()
            opt_head.zero_grad()


def _gradual_unfreeze(run, unfreeze) -> None:
    """A GRU classifier fine-tuned head first: the embedding and GRU frozen with requires_grad_(False), all
    parameters in the optimizer, the body unfrozen at step 12 by ``unfreeze(model)``."""
    ids, y = tokens(n=960, seed=531)
    model = GRUClassifier()
    model.emb.requires_grad_(False)
    model.rnn.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(ids, y, 36, 32)):
        if i == 12:
            unfreeze(model)
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW305")
def midrun_noop_unfreeze_of_gru_body(run) -> None:
    """The unfreeze written ``model.rnn.requires_grad = True``: an attribute; the GRU stays frozen."""
    def unfreeze(model) -> None:
        model.emb.requires_grad_(True)
        model.rnn.requires_grad = True

    _gradual_unfreeze(run, unfreeze)


@healthy
def midrun_ok_gradual_unfreeze(run) -> None:
    _gradual_unfreeze(run, lambda model: model.requires_grad_(True))



# ---- a learning rate far too low, whose updates are small but not negligible per step (TW308 at close) ----------
@bug("TW308")
def lr_too_low_sgd_cnn(run) -> None:
    """SGD at 1e-5 (meant 1e-2) on a CNN: each step moves the weights ~1e-5 of their norm; the loss never falls."""
    x, y = images(n=640, seed=541)
    model = CNN()
    ce_loop(run, model, torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9), x, y, steps=40)


@bug("TW308")
def lr_too_low_adam_gru(run) -> None:
    """Adam at 3e-7 (a misplaced exponent) on a GRU classifier over a DataLoader."""
    ids, y = tokens(n=960, seed=542)
    model = GRUClassifier()
    loader = DataLoader(TensorDataset(ids, y), batch_size=32, shuffle=True, generator=gen(542))
    opt = torch.optim.Adam(model.parameters(), lr=3e-7)
    watch(run, model, opt)
    for xb, yb in loader:
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@healthy
def fine_tune_converged_model_small_lr(run) -> None:
    """A model trained to convergence, then fine-tuned further at a small rate: the loss is flat, the updates
    tiny, and the loss far below chance."""
    x, y = tabular(n=1024, seed=543)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for xb, yb in batches(x, y, 300, 64):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    ce_loop(run, model, torch.optim.SGD(model.parameters(), lr=1e-5), x, y, steps=40)


@healthy
def slow_but_learning_sgd(run) -> None:
    """Plain SGD at 1e-2 without momentum on a regression MLP: slow, but the loss falls."""
    x = torch.randn(1024, 8, generator=gen(544))
    y = (x @ torch.randn(8, 1, generator=gen(545))).squeeze(1)
    model = mlp(d=8, c=1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 40, 32):
        opt.zero_grad()
        F.mse_loss(model(xb).squeeze(1), yb).backward()
        opt.step()


# ---- data sorted by label and fed unshuffled: each batch holds one class (TW210) --------------------------------
def _sorted_loop(run, model, x, y, *, shuffle: bool, steps: int = 40, batch: int = 32) -> None:
    order = torch.argsort(y, stable=True)  # the table as exported: grouped by class
    loader = DataLoader(TensorDataset(x[order], y[order]), batch_size=batch, shuffle=shuffle, generator=gen(551))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    step = 0
    while step < steps:
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            step += 1
            if step == steps:
                return


@bug("TW210")
def images_sorted_by_class_cnn(run) -> None:
    x, y = images(n=1024, seed=552)
    _sorted_loop(run, CNN(), x, y, shuffle=False)


@bug("TW210")
def reviews_sorted_by_sentiment_gru(run) -> None:
    ids, y = tokens(n=1024, seed=553)
    _sorted_loop(run, GRUClassifier(), ids, y, shuffle=False, batch=64)


@healthy
def images_sorted_by_class_shuffled_loader(run) -> None:
    x, y = images(n=1024, seed=552)
    _sorted_loop(run, CNN(), x, y, shuffle=True)


@healthy
def rare_class_weighted_small_batches(run) -> None:
    """6 % positives in batches of 16 (most batches hold negatives only), the loss weighted to balance them."""
    x, y = tabular(n=2048, c=2, seed=554)
    y = (torch.rand(2048, generator=gen(555)) < 0.06).long() | ((x[:, 0] > 2.2).long())
    counts = torch.bincount(y, minlength=2).float()
    model = mlp(c=2)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 60, 16):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb, weight=counts.sum() / (2 * counts)).backward()
        opt.step()


# ---- the output layer frozen by mistake (TW408) ----------------------------------------------------------------
@bug("TW408")
def cnn_classifier_frozen_by_last_params(run) -> None:
    """``for p in list(model.parameters())[-2:]: p.requires_grad = False`` meant "train only the last layer"."""
    x, y = images(n=640, seed=561)
    model = CNN()
    for p in list(model.parameters())[-2:]:
        p.requires_grad = False
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), x, y, steps=40)


@bug("TW408")
def gru_head_frozen_instead_of_embedding(run) -> None:
    ids, y = tokens(n=960, seed=562)
    model = GRUClassifier()
    model.head.requires_grad_(False)  # meant: model.emb
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), ids, y, steps=40)


class _Adapted(torch.nn.Module):
    """Frozen linear layers, each with a small trainable low-rank adapter beside it (LoRA-style)."""

    def __init__(self) -> None:
        super().__init__()
        self.base = torch.nn.ModuleList([torch.nn.Linear(12, 32), torch.nn.Linear(32, 4)])
        self.down = torch.nn.ModuleList([torch.nn.Linear(12, 2, bias=False), torch.nn.Linear(32, 2, bias=False)])
        self.up = torch.nn.ModuleList([torch.nn.Linear(2, 32, bias=False), torch.nn.Linear(2, 4, bias=False)])
        torch.nn.init.zeros_(self.up[0].weight)
        torch.nn.init.zeros_(self.up[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.base[0](x) + self.up[0](self.down[0](x)))
        return self.base[1](h) + self.up[1](self.down[1](h))


@healthy
def low_rank_adapters_over_frozen_layers(run) -> None:
    """The base layers trained first (the "pretrained" model), then frozen; adapters fine-tune it further."""
    x, y = tabular(n=960, seed=563)
    model = _Adapted()
    pre = torch.optim.Adam(model.base.parameters(), 1e-2)
    for xb, yb in batches(x, y, 60, 64):
        pre.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        pre.step()
    model.base.requires_grad_(False)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), x, y, steps=40)


@healthy
def fixed_random_classifier_left_out_of_the_optimizer(run) -> None:
    """A fixed random output projection, on purpose: frozen and not given to the optimizer."""
    x, y = tabular(n=960, seed=564)
    model = mlp(h=64)
    model[-1].requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 3e-3)
    ce_loop(run, model, opt, x, y, steps=40)


# ---- a model outside the watch run under no_grad in train mode (TW402) -----------------------------------------
def _distil(run, teacher: torch.nn.Module, steps: int = 40) -> None:
    """A student CNN distilled from ``teacher``'s soft targets, the teacher under no_grad."""
    x, y = images(n=640, seed=571)
    student = CNN()
    opt = torch.optim.Adam(student.parameters(), 2e-3)
    watch(run, student, opt)
    for xb, yb in batches(x, y, steps, 32):
        with torch.no_grad():
            soft = F.softmax(teacher(xb) / 2.0, dim=-1)
        out = student(xb)
        loss = F.kl_div(F.log_softmax(out / 2.0, -1), soft, reduction="batchmean") + F.cross_entropy(out, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()


class _DropoutCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.drop, self.head = CNN(), torch.nn.Dropout(0.3), torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.body(x)))


@bug("TW402")
def distillation_teacher_with_dropout_left_in_train_mode(run) -> None:
    teacher = _DropoutCNN().requires_grad_(False)  # frozen, but never teacher.eval()
    _distil(run, teacher)


@healthy
def distillation_teacher_in_eval_mode(run) -> None:
    _distil(run, _DropoutCNN().requires_grad_(False).eval())


@healthy
def target_network_with_batchnorm_in_train_mode(run) -> None:
    """A BYOL-style target copy run under no_grad in train mode: batch statistics on purpose, no dropout."""
    _distil(run, CNN().requires_grad_(False))


@bug("TW402")
def ema_copy_evaluated_in_train_mode(run) -> None:
    """An EMA copy of the model is evaluated every 10 steps under no_grad, never put in eval(): its dropout on."""
    x, y = tabular(n=960, seed=572)
    model = torch.nn.Sequential(torch.nn.Linear(12, 64), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(64, 4))
    ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x, y, 40, 32)):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        ema.update_parameters(model)
        if i % 10 == 9:
            with torch.no_grad():
                ema(x[:128]).argmax(1)


class _WithFrozenCritic(torch.nn.Module):
    """An autoencoder that holds, defined last, a frozen feature network its loss compares features with."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.dec = torch.nn.Linear(12, 4), torch.nn.Linear(4, 12)
        self.critic = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh()).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(torch.relu(self.enc(x)))


@healthy
def autoencoder_with_a_frozen_feature_loss_network(run) -> None:
    """All parameters given to the optimizer (the frozen critic's too, as ``model.parameters()`` does); 12 features
    driven by 4 factors, which the 4-unit code can hold."""
    x = torch.randn(960, 4, generator=gen(581)) @ torch.randn(4, 12, generator=gen(582))
    model = _WithFrozenCritic()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    watch(run, model, opt)
    for xb, _ in batches(x, x, 40, 32):
        out = model(xb)
        loss = F.mse_loss(out, xb) + F.mse_loss(model.critic(out), model.critic(xb))
        opt.zero_grad()
        loss.backward()
        opt.step()


def _accumulated(run, shuffle_labels: bool) -> None:
    """Adam over 40 steps of 4 micro-batches each, the loss divided by 4 before each backward."""
    x, y = tabular(n=1280, seed=591)
    if shuffle_labels:
        y = y[torch.randperm(len(y), generator=gen(592))]
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    micro = batches(x, y, 4 * 40, 16)
    for _ in range(40):
        opt.zero_grad()
        for _ in range(4):
            xb, yb = next(micro)
            (F.cross_entropy(model(xb), yb) / 4).backward()
        opt.step()


@bug("TW109")
def labels_shuffled_under_gradient_accumulation(run) -> None:
    """Labels permuted apart from their inputs, in a loop that divides the loss over 4 micro-batches per step: the
    loss given to backward is a quarter of the loss call's, at chance all the same."""
    _accumulated(run, shuffle_labels=True)


@healthy
def gradient_accumulation_learning(run) -> None:
    _accumulated(run, shuffle_labels=False)

# ---- optimizer settings that keep parameters still (TW308) -----------------------------------------------------
@bug("TW308")
def gru_body_group_with_lr_zero(run) -> None:
    """Discriminative rates written as ``[{"params": body, "lr": 0.0}, {"params": head, "lr": 3e-3}]`` (meant
    3e-4 for the body): the GRU and its embedding never train."""
    ids, y = tokens(n=960, seed=601)
    model = GRUClassifier()
    body = [*model.emb.parameters(), *model.rnn.parameters()]
    opt = torch.optim.Adam([{"params": body, "lr": 0.0}, {"params": model.head.parameters(), "lr": 3e-3}])
    ce_loop(run, model, opt, ids, y, steps=40)


@bug("TW308")
def adamw_eps_half_cnn(run) -> None:
    x, y = images(n=640, seed=602)
    model = CNN()
    ce_loop(run, model, torch.optim.AdamW(model.parameters(), 2e-3, eps=0.5), x, y, steps=40)


@healthy
def two_groups_warming_up_from_zero(run) -> None:
    """Both groups warm up linearly from lr 0 over 10 steps (LambdaLR), the body at a tenth of the head's rate."""
    x, y = tabular(n=960, seed=603)
    model = mlp()
    opt = torch.optim.Adam([{"params": model[0].parameters(), "lr": 3e-4},
                            {"params": model[2].parameters(), "lr": 3e-3}])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, s / 10))
    ce_loop(run, model, opt, x, y, steps=40, sched=sched)


@healthy
def adam_eps_for_stability(run) -> None:
    """eps=1e-5 (a common choice for stability in some recipes), not a typo."""
    x, y = images(n=640, seed=604)
    model = CNN()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3, eps=1e-5), x, y, steps=40)


# ---- a causal LM whose attention sees ahead (TW209) ------------------------------------------------------------
class _Block(torch.nn.Module):
    """One pre-norm decoder block over nn.MultiheadAttention, as a hand-written GPT has it."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.norm1, self.norm2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.attn = torch.nn.MultiheadAttention(dim, 4, batch_first=True)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 64), torch.nn.GELU(), torch.nn.Linear(64, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class _GPT(torch.nn.Module):
    def __init__(self, causal: bool, vocab: int = 24, dim: int = 32, length: int = 16) -> None:
        super().__init__()
        self.causal = causal
        self.tok, self.pos = torch.nn.Embedding(vocab, dim), torch.nn.Embedding(length, dim)
        self.blocks = torch.nn.ModuleList([_Block(dim), _Block(dim)])
        self.head = torch.nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        mask = torch.triu(torch.full((n, n), float("-inf")), diagonal=1) if self.causal else None
        x = self.tok(ids) + self.pos(torch.arange(n))
        for block in self.blocks:
            x = block(x, mask)
        return self.head(x)


def _gpt_loop(run, causal: bool) -> None:
    g = gen(611)
    text = torch.randint(0, 24, (640, 17), generator=g)
    text[:, 1::2] = (text[:, 0:-1:2] * 5 + 3) % 24  # every other token follows from the one before
    model = _GPT(causal)
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    watch(run, model, opt)
    for xb, yb in batches(text[:, :-1], text[:, 1:], 40, 32):
        opt.zero_grad()
        F.cross_entropy(model(xb).reshape(-1, 24), yb.reshape(-1)).backward()
        opt.step()


@bug("TW209")
def handwritten_gpt_without_causal_mask(run) -> None:
    _gpt_loop(run, causal=False)


@healthy
def handwritten_gpt_with_causal_mask(run) -> None:
    _gpt_loop(run, causal=True)


# ---- a warm-up never capped, which kills units rather than making the loss diverge (TW307) ----------------------
def _manual_warmup(run, capped: bool) -> None:
    """The loop sets the rate itself: ``lr = base * (step + 1) / 5``, meant to stop at ``base`` after 5 steps."""
    x, y = tabular(n=1280, seed=621)
    model = torch.nn.Sequential(torch.nn.Linear(12, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    watch(run, model, opt)
    for step, (xb, yb) in enumerate(batches(x, y, 80, 32)):
        factor = (step + 1) / 5
        for g in opt.param_groups:
            g["lr"] = 0.1 * (min(1.0, factor) if capped else factor)
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW307")
def manual_warmup_never_capped_mlp(run) -> None:
    _manual_warmup(run, capped=False)


@healthy
def manual_warmup_capped_mlp(run) -> None:
    _manual_warmup(run, capped=True)


# ---- a layer that makes NaN from finite inputs, first between audits (TW105, dated at the loss's NaN) -----------
class _Normalise(torch.nn.Module):
    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (x.norm(dim=1, keepdim=True) + self.eps)


def _zero_rows_loop(run, eps: float) -> None:
    """From step 21 one row of each batch is all zeros (an empty feature vector): a normalising layer divides by
    its norm."""
    x, y = tabular(n=1280, seed=631)
    model = torch.nn.Sequential(_Normalise(eps), mlp())
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for step, (xb, yb) in enumerate(batches(x, y, 40, 32)):
        if step > 20:
            xb = xb.clone()
            xb[0] = 0.0
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW105")
def normalise_divides_by_a_zero_norm_mid_run(run) -> None:
    _zero_rows_loop(run, eps=0.0)


@healthy
def normalise_with_eps_over_zero_rows(run) -> None:
    _zero_rows_loop(run, eps=1e-6)
