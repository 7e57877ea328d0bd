"""Blind scenarios, sixth round: the classic silent bugs of PyTorch training, each in a form of its own (plain
loops, DataLoader loops, dict batches, HF-style models computing their loss in forward, CNN, GRU/LSTM, vanilla
RNN, transformer encoder; regression and classification; 20-200 steps), and healthy controls that tempt the rules
(tiny-LR fine-tuning, full-batch training, weighted imbalanced loss, a frozen backbone on purpose, label
smoothing, mixup soft targets, gradient accumulation, clipped RNNs, two optimizers, per-batch warm-up schedules).
Written before reading the rules or the earlier rounds' bug lists, and run before any change.
"""

from __future__ import annotations

import math

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
    sequences,
    tabular,
    tokens,
    two_views_loop,
    watch,
    zipf,
)
from _kit import bug, healthy
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

# Bugs the rules cannot see with what the watch collects today, per sampling mode, and what they would need;
# tests/scenarios/test_scenarios.py expects these to fail (strict xfail), so a probe change that fixes one shows.
KNOWN_MISSES: dict[tuple[str, str], str] = {
    (name, mode): "Zipf ids wrapped (% V) into the table keep a falling, step-free density (the fold test needs a "
                  "flat one); telling them apart needs the tokenizer's vocabulary size or a model of the tail"
    for name in ("blind6_token_ids_wrapped_modulo_hf",) for mode in ("default", "every-step")}


class _Records(Dataset):
    """A dataset of dict records, the form tabular pipelines and tokenised corpora take."""

    def __init__(self, **fields: torch.Tensor) -> None:
        self.fields = fields

    def __len__(self) -> int:
        return len(next(iter(self.fields.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.fields.items()}


class _SeqLM(nn.Module):
    """An HF-style classifier: ``forward(input_ids, attention_mask, labels)`` returns an object with ``.loss``."""

    class Output(dict):
        __getattr__ = dict.__getitem__

    def __init__(self, vocab: int = 200, dim: int = 32, classes: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        layer = nn.TransformerEncoderLayer(dim, 4, dim_feedforward=64, dropout=dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1)
        self.classifier = nn.Linear(dim, classes)
        self.label_smoothing = 0.0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> _SeqLM.Output:
        pad = None if attention_mask is None else attention_mask == 0
        h = self.encoder(self.emb(input_ids), src_key_padding_mask=pad)
        if attention_mask is None:
            pooled = h.mean(1)
        else:
            m = attention_mask.unsqueeze(-1).float()
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)
        logits = self.classifier(pooled)
        out = _SeqLM.Output(logits=logits)
        if labels is not None:
            out["loss"] = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return out


def _hf_train(run, model: nn.Module, opt: torch.optim.Optimizer, ids: torch.Tensor, y: torch.Tensor, *,
              steps: int = 40, batch: int = 32, mask: torch.Tensor | None = None) -> None:
    fields = {"input_ids": ids, "labels": y} | ({} if mask is None else {"attention_mask": mask})
    loader = DataLoader(_Records(**fields), batch_size=batch, shuffle=True, generator=gen(7))
    watch(run, model, opt)
    step = 0
    while step < steps:
        for b in loader:
            out = model(**b)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step == steps:
                return


class _Vanilla(nn.Module):
    """A vanilla ReLU RNN regressor."""

    def __init__(self, d: int = 4, h: int = 32) -> None:
        super().__init__()
        self.rnn = nn.RNN(d, h, batch_first=True, nonlinearity="relu")
        self.head = nn.Linear(h, 1)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(s)[0][:, -1])


# ==== optimizer-loop mistakes ==================================================================================
@bug("TW304")
def blind6_zero_grad_once_before_loader_loop(run) -> None:
    """A CNN on a DataLoader; ``opt.zero_grad()`` was hoisted above the epoch loop while tidying."""
    x, y = images(n=192, seed=600)
    model = CNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(1))
    watch(run, model, opt)
    opt.zero_grad()
    for _ in range(5):
        for xb, yb in loader:
            F.cross_entropy(model(xb), yb).backward()
            opt.step()


@bug("TW308")
def blind6_zero_grad_between_backward_and_step(run) -> None:
    """The gradients are cleared after backward and before the step: the optimizer never sees a gradient."""
    x, y = tabular(n=640, seed=601)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 40, 32):
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.zero_grad()
        opt.step()


@bug("TW401")
def blind6_eval_mode_from_the_start_dropout_bn(run) -> None:
    """``model.eval()`` was called after loading a checkpoint and the loop never calls ``model.train()``."""
    x, y = images(n=256, seed=602)
    model = CNN(dropout=0.3)
    model.eval()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), x, y, steps=30)


@bug("TW401")
def blind6_eval_left_on_after_validation_gru(run) -> None:
    """Validation at step 10 switches to eval and the loop forgets to switch back (GRU with dropout head)."""
    ids, y = tokens(n=480, seed=603)
    val = tokens(n=64, seed=6030)[0]
    model = GRUClassifier()
    model.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(ids, y, 40, 32)):
        if i == 10:
            model.eval()
            with torch.no_grad():
                model(val)
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW301")
def blind6_head_replaced_after_optimizer(run) -> None:
    """The classifier head is swapped for the new label set after the optimizer was built."""
    x, y = tabular(n=512, c=6, seed=604)
    model = mlp(c=4)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    model[-1] = nn.Linear(32, 6)
    ce_loop(run, model, opt, x, y, steps=30)


@bug("TW301")
def blind6_optimizer_built_from_a_submodule(run) -> None:
    """``Adam(model.encoder.parameters())``: the transformer's classifier is never in the optimizer."""
    ids, y = tokens(n=320, seed=605)
    model = Encoder()
    opt = torch.optim.Adam(list(model.emb.parameters()) + list(model.encoder.parameters()), 1e-3)
    ce_loop(run, model, opt, ids, y, steps=30)


@bug("TW308")
def blind6_lr_far_too_low(run) -> None:
    """A typo gave ``lr=1e-9`` (meant 1e-3) for SGD on a regression MLP."""
    x = torch.randn(512, 8, generator=gen(606))
    y = (x @ torch.randn(8, 1, generator=gen(607))).squeeze(1)
    model = mlp(d=8, c=1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-9)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 50, 32):
        opt.zero_grad()
        F.mse_loss(model(xb).squeeze(1), yb).backward()
        opt.step()


@bug("TW307", "TW108", tolerated=("TW101", "TW103"))
def blind6_lr_far_too_high_sgd(run) -> None:
    """SGD with ``lr=3.0`` and momentum on a 3-layer MLP: the loss blows up within a few dozen steps."""
    x, y = tabular(n=640, seed=608)
    model = mlp(depth=3)
    ce_loop(run, model, torch.optim.SGD(model.parameters(), lr=3.0, momentum=0.9), x, y, steps=40)


@bug("TW308")
def blind6_step_lr_stepped_every_batch(run) -> None:
    """``StepLR(step_size=1, gamma=0.5)`` meant per epoch is stepped per batch: the LR is ~0 by step 30."""
    x, y = tabular(n=1280, seed=609)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    ce_loop(run, model, opt, x, y, steps=60, sched=sched)


@bug("TW308")
def blind6_clip_grad_norm_tiny(run) -> None:
    """``clip_grad_norm_(params, 1e-6)`` (meant 1.0) on an SGD LSTM regressor: each step moves nothing."""
    s, t = sequences(n=320, seed=610)
    model = SeqRegressor()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    watch(run, model, opt)
    for xb, yb in batches(s, t, 40, 32):
        opt.zero_grad()
        F.mse_loss(model(xb), yb).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-6)
        opt.step()


@bug("TW302")
def blind6_adam_with_l2_weight_decay(run) -> None:
    """``Adam(weight_decay=0.05)``: the L2 term is rescaled by Adam's denominator (AdamW was meant)."""
    x, y = tabular(n=512, seed=611)
    model = mlp()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-3, weight_decay=0.05), x, y, steps=30)


@bug("TW303")
def blind6_weight_decay_on_layernorm_and_embeddings(run) -> None:
    """AdamW with ``weight_decay=0.1`` over every transformer parameter, LayerNorm gains and embeddings included."""
    ids, y = tokens(n=320, seed=612)
    model = Encoder()
    ce_loop(run, model, torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.1), ids, y, steps=30)


# ==== loss / output mismatches =================================================================================
@bug("TW150")
def blind6_softmax_layer_then_cross_entropy(run) -> None:
    """The model ends in ``nn.Softmax(dim=1)`` and is trained with ``nn.CrossEntropyLoss`` through a DataLoader."""
    x, y = tabular(n=512, seed=613)
    model = nn.Sequential(mlp(), nn.Softmax(dim=1))
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(2))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), loader, steps=40)


@bug("TW150")
def blind6_sigmoid_then_bce_with_logits(run) -> None:
    """Multi-label CNN: ``torch.sigmoid`` in forward and ``BCEWithLogitsLoss`` on top."""
    x, y = images(n=256, seed=614)
    multi = F.one_hot(y, 4).float()

    class Net(CNN):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(super().forward(x))

    model = Net()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    watch(run, model, opt)
    for xb, yb in batches(x, multi, 30, 32):
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()


@bug("TW151")
def blind6_nll_loss_on_raw_logits(run) -> None:
    """``F.nll_loss(model(x), y)`` without the ``log_softmax``."""
    x, y = tabular(n=512, seed=615)
    model = mlp()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), x, y, steps=30, loss_fn=F.nll_loss)


@bug("TW152")
def blind6_mse_on_class_ids_broadcast(run) -> None:
    """Class ids regressed with MSE by a one-output model: ``(N, 1)`` against ``(N,)`` broadcasts to ``(N, N)``."""
    x, y = tabular(n=512, seed=616)
    model = mlp(c=1)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 30, 32):
        opt.zero_grad()
        F.mse_loss(model(xb), yb.float()).backward()
        opt.step()


@bug("TW152")
def blind6_regression_target_shape_broadcast_gru(run) -> None:
    """A GRU regressor outputs ``(N, 1)``; the targets are ``(N,)``: the loss compares every pair."""
    s, t = sequences(n=320, seed=617)
    t = t.squeeze(1)
    model = SeqRegressor(lstm=False)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for xb, yb in batches(s, t, 30, 32):
        opt.zero_grad()
        nn.MSELoss()(model(xb), yb).backward()
        opt.step()


@bug("TW153")
def blind6_bce_targets_are_0_255_masks(run) -> None:
    """Segmentation-style masks stored as 0/255 go straight into ``BCEWithLogitsLoss``."""
    x, y = images(n=192, classes=2, seed=618)
    target = (y.float() * 255).unsqueeze(1)
    model = CNN(classes=1)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    watch(run, model, opt)
    for xb, yb in batches(x, target, 30, 32):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(model(xb), yb).backward()
        opt.step()


@bug("TW101", tolerated=("TW102", "TW105"))
def blind6_log_of_underflowed_softmax(run) -> None:
    """A hand-written NLL, ``-log(softmax(z)[y])``, with logits multiplied by a temperature of 500 (meant
    divided): a probability underflows to 0 and the loss becomes inf."""
    x, y = tabular(n=512, seed=619)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 40, 32):
        p = torch.softmax(model(xb) * 500.0, dim=1)
        loss = -torch.log(p[torch.arange(len(yb)), yb]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


# ==== data mistakes ============================================================================================
@bug("TW109")
def blind6_labels_shuffled_separately(run) -> None:
    """The loader shuffles features and labels with two different permutations."""
    x, y = tabular(n=1280, seed=620)
    perm_x, perm_y = torch.randperm(1280, generator=gen(3)), torch.randperm(1280, generator=gen(4))
    x, y = x[perm_x], y[perm_y]
    model = mlp()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), x, y, steps=60)


@bug("TW203")
def blind6_one_feature_in_raw_units(run) -> None:
    """One column (an income in currency units) is ~1e4 times the scale of the others."""
    x, y = tabular(n=512, seed=621)
    x[:, 3] = x[:, 3] * 1e4 + 5e4
    model = mlp()
    ce_loop(run, model, torch.optim.SGD(model.parameters(), lr=1e-6), x, y, steps=30)


@bug("TW203")
def blind6_raw_uint8_pixels(run) -> None:
    """Images converted with ``.float()`` but never divided by 255."""
    x, y = images(n=192, seed=622)
    x = ((x - x.min()) / (x.max() - x.min()) * 255).round()
    model = CNN(bn=False)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), x, y, steps=30)


@bug("TW201", tolerated=("TW101", "TW102", "TW105"))
def blind6_nan_rows_from_step_35_dict_loader(run) -> None:
    """A dict-record DataLoader whose second half has NaN in a feature (a failed join), unshuffled."""
    x, y = tabular(n=2560, seed=623)
    x[1120:, 5] = float("nan")
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    loader = DataLoader(_Records(x=x, y=y), batch_size=32, shuffle=False)
    watch(run, model, opt)
    for step, b in enumerate(loader):
        opt.zero_grad()
        F.cross_entropy(model(b["x"]), b["y"]).backward()
        opt.step()
        if step == 59:
            break


@bug("TW202", tolerated=("TW101", "TW102"))
def blind6_inf_in_regression_targets(run) -> None:
    """A log-transformed target with a zero in it: ``log(0) = -inf`` in a few rows."""
    x = torch.randn(512, 8, generator=gen(624))
    raw = (x @ torch.randn(8, generator=gen(625))).exp()
    raw[::37] = 0.0
    y = raw.log().unsqueeze(1)
    model = mlp(d=8, c=1)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 30, 32):
        opt.zero_grad()
        F.mse_loss(model(xb), yb).backward()
        opt.step()


@bug("TW204")
def blind6_inputs_multiplied_by_zero_mask(run) -> None:
    """An augmentation's keep-mask was built with ``rand < 0`` instead of ``rand < 0.9``: every input is zero."""
    x, y = tabular(n=512, seed=626)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    g = gen(5)
    for xb, yb in batches(x, y, 40, 32):
        keep = (torch.rand(xb.shape, generator=g) < 0).float()
        opt.zero_grad()
        F.cross_entropy(model(xb * keep), yb).backward()
        opt.step()


@bug("TW209")
def blind6_label_leaks_into_features(run) -> None:
    """The label column was not dropped from the feature frame (last column == class id)."""
    x, y = tabular(n=512, seed=627)
    x = torch.cat([x, y.float().unsqueeze(1)], 1)
    model = mlp(d=13)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), x, y, steps=30)


@bug("TW210")
def blind6_severe_class_imbalance_unweighted(run) -> None:
    """Fraud-style data: 1% positives, plain unweighted cross-entropy."""
    g = gen(628)
    x = torch.randn(3200, 12, generator=g)
    y = (torch.rand(3200, generator=g) < 0.01).long()
    x[y == 1] += 1.5
    model = mlp(c=2)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), x, y, steps=60, batch=64)


@bug("TW214", tolerated=("TW206",))
def blind6_first_batch_reused_every_step(run) -> None:
    """``xb, yb = next(iter(loader))`` sits above the loop: the same batch tensor is trained on 50 times."""
    x, y = images(n=256, seed=629)
    model = CNN()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(6))
    watch(run, model, opt)
    xb, yb = next(iter(loader))
    for _ in range(50):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW207")
def blind6_oversampled_duplicates_in_batches(run) -> None:
    """A tiny dataset of 20 rows was "balanced" by repeating it 40 times; batches of 64 repeat rows."""
    x, y = tabular(n=20, seed=630)
    x, y = x.repeat(40, 1), y.repeat(40)
    model = mlp()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), x, y, steps=30, batch=64)


@bug("TW208")
def blind6_validation_split_overlaps_train(run) -> None:
    """The validation set is ``x[:128]`` of the very tensor the loop trains on."""
    x, y = tabular(n=640, seed=631)
    model = mlp()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), x, y, steps=40, val=x[:128])


@bug("TW213")
def blind6_nhwc_reshaped_not_permuted(run) -> None:
    """Channels-last images made NCHW with ``.reshape`` instead of ``.permute``: the pixels are scrambled."""
    x, y = images(n=256, seed=632)
    nhwc = x.permute(0, 2, 3, 1).contiguous()
    x = nhwc.reshape(nhwc.shape[0], 3, 12, 12)
    model = CNN()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), x, y, steps=30)


@bug("TW212")
def blind6_token_ids_clamped_to_small_vocab(run) -> None:
    """The tokenizer's vocabulary (5000) is clamped to the model's 200-row table: most ids pile onto 199."""
    g = gen(633)
    ids = torch.randint(0, 5000, (320, 16), generator=g)
    y = (ids.float().mean(1) > 2500).long()
    model = GRUClassifier(vocab=200)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), ids.clamp(max=199), y, steps=30)


@bug("TW212")
def blind6_token_ids_wrapped_modulo_hf(run) -> None:
    """HF-style model; the (Zipf-distributed) ids of a 3000-token vocabulary wrapped with ``% 200`` into the
    embedding table."""
    g = gen(634)
    ids = zipf(320 * 16, 3000, g).view(320, 16)
    score = torch.randn(3000, generator=g)[ids].mean(1)
    y = (score > score.median()).long()
    model = _SeqLM()
    _hf_train(run, model, torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.0), ids % 200, y, steps=30)


# ==== model / numerics =========================================================================================
@bug("TW403")
def blind6_dead_relus_from_negative_bias_init(run) -> None:
    """A custom init sets every hidden bias to -8: the ReLUs never fire."""
    x, y = tabular(n=512, seed=635)
    model = mlp(depth=3)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear) and m.out_features == 32:
                m.bias.fill_(-8.0)
    ce_loop(run, model, torch.optim.SGD(model.parameters(), lr=0.05), x, y, steps=30)


@bug("TW404")
def blind6_dead_conv_filters_bias_init(run) -> None:
    """The first convolution's bias was initialised to -10 (a copy of a 'negative slope' constant)."""
    x, y = images(n=192, seed=636)
    model = CNN(bn=False)
    with torch.no_grad():
        model.features[0].bias.fill_(-10.0)
    ce_loop(run, model, torch.optim.SGD(model.parameters(), lr=0.02), x, y, steps=30)


@bug("TW104")
def blind6_deep_sigmoid_stack_vanishes(run) -> None:
    """A 16-layer sigmoid MLP with default init: gradients at the first layers are ~1e-10 of the last."""
    x, y = tabular(n=512, seed=637)
    model = mlp(depth=16, act=nn.Sigmoid)
    ce_loop(run, model, torch.optim.SGD(model.parameters(), lr=0.05), x, y, steps=30)


@bug("TW103", tolerated=("TW101", "TW102", "TW108", "TW307"))
def blind6_exploding_deep_linear_init(run) -> None:
    """A 10-layer tanh-free network initialised with std 1.0 weights (no fan-in scaling)."""
    x, y = torch.randn(512, 16, generator=gen(638)), torch.randn(512, 1, generator=gen(639))
    layers: list[nn.Module] = []
    for _ in range(10):
        lin = nn.Linear(16, 16)
        nn.init.normal_(lin.weight, std=1.0)
        layers += [lin, nn.LeakyReLU(0.5)]
    model = nn.Sequential(*layers, nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 30, 32):
        opt.zero_grad()
        F.mse_loss(model(xb), yb).backward()
        opt.step()


@bug("TW103", tolerated=("TW101", "TW102", "TW108", "TW307"))
def blind6_vanilla_rnn_explodes_long_sequences(run) -> None:
    """A ReLU RNN with an 'identity' recurrent init scaled to 1.08 (meant 1.0) on 40-step sequences, no
    clipping: the backward through time multiplies the gradient by ~1.08 per step."""
    g = gen(640)
    s = torch.randn(256, 40, 4, generator=g)
    t = s[:, :, 0].mean(1, keepdim=True)
    model = _Vanilla()
    with torch.no_grad():
        model.rnn.weight_hh_l0.copy_(torch.eye(32) * 1.08 + 0.02 * torch.randn(32, 32, generator=gen(641)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    watch(run, model, opt)
    for xb, yb in batches(s, t, 30, 32):
        opt.zero_grad()
        F.mse_loss(model(xb), yb).backward()
        opt.step()


@bug("TW110")
def blind6_features_detached_before_head(run) -> None:
    """``feats = self.encoder(x).detach()`` left in from a linear-probe experiment; the encoder is in the
    optimizer and meant to train."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
            self.head = nn.Linear(32, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.encoder(x).detach())

    x, y = tabular(n=512, seed=641)
    model = Net()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), x, y, steps=30)


@bug("TW110")
def blind6_encoder_forward_under_no_grad(run) -> None:
    """The CNN's backbone runs inside ``torch.no_grad()`` (copied from the inference path)."""

    class Net(CNN):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                f = self.features(x)
            return self.head(f.mean((2, 3)))

    x, y = images(n=192, seed=642)
    model = Net()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), x, y, steps=30)


@bug("TW407")
def blind6_batchnorm_cnn_with_batch_size_one(run) -> None:
    """Per-image updates (batch size 1) through a BatchNorm CNN: every statistic is one image's."""
    x, y = images(n=128, seed=643)
    model = CNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 60, 1):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW413")
def blind6_layernorm_output_discarded(run) -> None:
    """``self.norm(h)`` is called but its result is never assigned: the norm's output never reaches the loss."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(12, 32)
            self.norm = nn.LayerNorm(32)
            self.head = nn.Linear(32, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.fc(x))
            self.norm(h)
            return self.head(h)

    x, y = tabular(n=512, seed=644)
    model = Net()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), x, y, steps=30)


@bug("TW414")
def blind6_siamese_mse_collapses(run) -> None:
    """A siamese encoder trained to make two views' embeddings equal with plain MSE, no negatives or predictor:
    the embedding collapses to a constant."""
    data = torch.randn(640, 16, generator=gen(645))
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32))
    two_views_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), data,
                   lambda m, a, b: F.mse_loss(m(a), m(b)), noise=0.1, steps=60)


@bug("TW106")
def blind6_float64_everywhere(run) -> None:
    """``torch.set_default_dtype(torch.float64)`` left from a numerics test: the model trains in float64."""
    x, y = tabular(n=512, seed=646)
    model = mlp().double()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), x.double(), y, steps=30)


# ==== healthy controls =========================================================================================
@healthy
def blind6_ok_tiny_lr_finetune_transformer(run) -> None:
    """Fine-tuning a (briefly pre-trained) transformer at ``lr=2e-5`` with AdamW and decay only on matrices."""
    ids, y = tokens(n=320, seed=650)
    model = Encoder()
    pre = torch.optim.Adam(model.parameters(), 3e-3)
    for xb, yb in batches(ids, y, 20, 32, seed=9):
        pre.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        pre.step()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "emb" not in n and "pos" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "emb" not in n and "pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=2e-5)
    ce_loop(run, model, opt, ids, y, steps=30)


@healthy
def blind6_ok_full_batch_regression(run) -> None:
    """Full-batch gradient descent on 256 samples: the same (whole) data every step, by design."""
    x = torch.randn(256, 8, generator=gen(651))
    y = x @ torch.randn(8, 1, generator=gen(652)) + 0.05 * torch.randn(256, 1, generator=gen(653))
    model = mlp(d=8, c=1)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    watch(run, model, opt)
    for _ in range(60):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()


@healthy
def blind6_ok_imbalanced_with_class_weights(run) -> None:
    """8% positives, handled by class weights in the loss."""
    g = gen(654)
    x = torch.randn(1600, 12, generator=g)
    y = (torch.rand(1600, generator=g) < 0.08).long()
    x[y == 1] += 1.0
    model = mlp(c=2)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 11.5]))
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), x, y, steps=50, loss_fn=loss_fn)


@healthy
def blind6_ok_frozen_backbone_linear_probe(run) -> None:
    """Linear probing a pre-trained backbone: ``requires_grad=False`` on it, a fresh head, the optimizer holds
    only the head."""
    x, y = images(n=256, seed=655)
    model = CNN()
    pre = torch.optim.Adam(model.parameters(), 3e-3)
    for xb, yb in batches(x, y, 30, 32, seed=10):  # the backbone's pre-training, before this run
        pre.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        pre.step()
    model.head.reset_parameters()
    for p in model.features.parameters():
        p.requires_grad_(False)
    model.features.eval()
    opt = torch.optim.Adam(model.head.parameters(), 1e-2)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 30, 32):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@healthy
def blind6_ok_label_smoothing_hf_style(run) -> None:
    """HF-style model with padding masks and label smoothing 0.1, loss computed in forward."""
    ids, y = tokens(n=320, length=16, seed=656)
    lengths = torch.randint(6, 17, (320,), generator=gen(657))
    mask = (torch.arange(16).unsqueeze(0) < lengths.unsqueeze(1)).long()
    ids = ids * mask
    model = _SeqLM()
    model.label_smoothing = 0.1
    _hf_train(run, model, torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.0), ids, y, mask=mask,
              steps=40)


@healthy
def blind6_ok_mixup_soft_targets_cnn(run) -> None:
    """Mixup: images and one-hot targets blended with a Beta(0.4, 0.4) weight; cross-entropy on soft targets."""
    x, y = images(n=256, seed=658)
    model = CNN()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    beta = torch.distributions.Beta(0.4, 0.4)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 40, 32):
        lam = float(beta.sample())
        perm = torch.randperm(len(xb))
        xm = lam * xb + (1 - lam) * xb[perm]
        ym = lam * F.one_hot(yb, 4).float() + (1 - lam) * F.one_hot(yb[perm], 4).float()
        opt.zero_grad()
        F.cross_entropy(model(xm), ym).backward()
        opt.step()


@healthy
def blind6_ok_gradient_accumulation_four_micro_batches(run) -> None:
    """Four micro-batches of 16 per optimizer step, each loss divided by 4, zero_grad after each step."""
    x, y = tabular(n=1024, seed=659)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x, y, 160, 16)):
        (F.cross_entropy(model(xb), yb) / 4).backward()
        if i % 4 == 3:
            opt.step()
            opt.zero_grad()


@healthy
def blind6_ok_lstm_with_clipping_and_loader(run) -> None:
    """An LSTM regressor through a DataLoader with ``clip_grad_norm_(..., 1.0)`` and Adam."""
    s, t = sequences(n=384, seed=660)
    model = SeqRegressor()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    loader = DataLoader(TensorDataset(s, t), batch_size=32, shuffle=True, generator=gen(8))
    watch(run, model, opt)
    step = 0
    while step < 40:
        for xb, yb in loader:
            opt.zero_grad()
            F.mse_loss(model(xb), yb).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            if step == 40:
                break


@healthy
def blind6_ok_two_optimizers_encoder_and_head(run) -> None:
    """Encoder on SGD with momentum, head on Adam, both zeroed and stepped every iteration."""
    ids, y = tokens(n=384, seed=661)
    model = GRUClassifier()
    enc = torch.optim.SGD(list(model.emb.parameters()) + list(model.rnn.parameters()), lr=0.05, momentum=0.9)
    head = torch.optim.Adam(model.head.parameters(), 3e-3)
    watch(run, model, enc)
    for xb, yb in batches(ids, y, 40, 32):
        enc.zero_grad()
        head.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        enc.step()
        head.step()


@healthy
def blind6_ok_warmup_cosine_per_batch(run) -> None:
    """Linear warm-up then cosine decay, stepped per batch on purpose (the transformer recipe)."""
    ids, y = tokens(n=384, seed=662)
    model = Encoder()
    opt = torch.optim.AdamW([{"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": 0.01},
                             {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}], 2e-3)
    total, warm = 50, 5
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm))))
    ce_loop(run, model, opt, ids, y, steps=total, sched=sched)


@healthy
def blind6_ok_sigmoid_bce_multilabel_with_validation(run) -> None:
    """Multi-label: ``sigmoid`` + ``BCELoss`` (a correct pair), validation on a disjoint split under eval()."""
    x, y = tabular(n=768, seed=663)
    multi = torch.stack([y == 0, y == 1, (y == 2) | (y == 3)], 1).float()
    train_x, train_y, val_x = x[:640], multi[:640], x[640:]
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3), nn.Sigmoid())
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(train_x, train_y, 40, 32)):
        opt.zero_grad()
        F.binary_cross_entropy(model(xb), yb).backward()
        opt.step()
        if i % 10 == 9:
            model.eval()
            with torch.no_grad():
                model(val_x)
            model.train()


@healthy
def blind6_ok_batchnorm_cnn_small_but_fine_batches(run) -> None:
    """A BatchNorm CNN with batch size 8 (small, not degenerate) and SGD with a step-per-epoch schedule."""
    x, y = images(n=160, seed=664)
    model = CNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x, y, 60, 8)):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        if i % 20 == 19:
            sched.step()


# ==== second batch (written after the first run, with the rule list known): more forms of the classic bugs ========
@bug("TW402")
def blind6_validation_without_eval_dropout_cnn(run) -> None:
    """Validation every 10 steps under ``no_grad`` but without ``model.eval()``: dropout and batch statistics
    stay in training mode while evaluating."""
    x, y = images(n=256, seed=670)
    val = images(n=64, seed=671)[0]
    model = CNN(dropout=0.3)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x, y, 40, 32)):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        if i % 10 == 9:
            with torch.no_grad():
                model(val)


@bug("TW304")
def blind6_hf_style_loop_without_zero_grad_adam(run) -> None:
    """An HF-style loop (loss from forward, dict batches) whose ``optimizer.zero_grad()`` was deleted with the
    gradient-accumulation branch; Adam."""
    ids, y = tokens(n=640, length=16, seed=672)
    model = _SeqLM()
    opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.0)
    loader = DataLoader(_Records(input_ids=ids, labels=y), batch_size=32, shuffle=True, generator=gen(11))
    watch(run, model, opt)
    for step, b in enumerate(loader):
        model(**b).loss.backward()
        opt.step()
        if step == 19:
            break


@bug("TW306")
def blind6_layers_frozen_after_optimizer_with_momentum(run) -> None:
    """The first layer is frozen (``requires_grad_(False)``) at step 15 of a momentum-SGD run, after its
    gradient was last cleared with ``set_to_none=False``: momentum keeps moving the "frozen" weights."""
    x, y = tabular(n=1280, seed=673)
    model = mlp(depth=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x, y, 50, 32)):
        if i == 15:
            model[0].requires_grad_(False)
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW206")
def blind6_loader_yields_each_batch_twice(run) -> None:
    """A buggy generator wrapper yields every batch twice in a row (a retry loop that never breaks)."""
    x, y = tabular(n=1280, seed=674)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)

    def twice():
        for xb, yb in batches(x, y, 20, 32):
            yield xb, yb
            yield xb.clone(), yb.clone()

    for xb, yb in twice():
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW205")
def blind6_channels_last_images_into_a_conv_that_accepts_them(run) -> None:
    """``(N, 12, 12, 3)`` images fed as they are to a CNN whose first convolution was given 12 input channels to
    make the shapes line up."""
    x, y = images(n=256, seed=675)
    x = x.permute(0, 2, 3, 1).contiguous()
    model = CNN(c=12)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), x, y, steps=30)


@bug("TW406")
def blind6_one_batchnorm_shared_by_two_blocks(run) -> None:
    """One ``nn.BatchNorm1d`` instance used after both hidden layers: its running statistics mix two
    different distributions."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.head = nn.Linear(12, 32), nn.Linear(32, 32), nn.Linear(32, 4)
            self.bn = nn.BatchNorm1d(32)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.bn(self.fc1(x)))
            return self.head(torch.relu(self.bn(self.fc2(h))))

    x, y = tabular(n=512, seed=676)
    model = Net()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), x, y, steps=30)


@bug("TW412")
def blind6_watched_model_is_not_the_trained_one(run) -> None:
    """The loop trains a ``copy.deepcopy`` of the model made for an EMA, while the optimizer steps the original:
    the watched (and optimized) model's forward never runs."""
    import copy

    x, y = tabular(n=512, seed=677)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    twin = copy.deepcopy(model)
    for xb, yb in batches(x, y, 30, 32):
        opt.zero_grad()
        F.cross_entropy(twin(xb), yb).backward()
        opt.step()


@bug("TW301")
def blind6_adapter_added_after_optimizer(run) -> None:
    """A LoRA-style adapter is attached to the GRU classifier after the optimizer was built over the model."""
    ids, y = tokens(n=384, seed=678)
    model = GRUClassifier()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    base = model.head
    model.adapter = nn.Sequential(nn.Linear(32, 4, bias=False), nn.Linear(4, 2, bias=False))

    class WithAdapter(nn.Module):
        def forward(self, h: torch.Tensor) -> torch.Tensor:
            return base(h) + model.adapter(h)

    model.head = WithAdapter()
    ce_loop(run, model, opt, ids, y, steps=30)


@healthy
def blind6_ok_ema_teacher_updated_by_hand(run) -> None:
    """Mean-teacher: a student trained by the optimizer, an EMA teacher updated under ``no_grad`` and used for
    consistency targets (the teacher is never in the optimizer and never gets gradients)."""
    import copy

    x, y = tabular(n=768, seed=679)
    student = mlp()
    teacher = copy.deepcopy(student).requires_grad_(False)
    opt = torch.optim.Adam(student.parameters(), 3e-3)
    watch(run, student, opt)
    for xb, yb in batches(x, y, 40, 32):
        out = student(xb)
        with torch.no_grad():
            soft = teacher(xb + 0.05 * torch.randn_like(xb)).softmax(1)
        loss = F.cross_entropy(out, yb) + 0.5 * F.kl_div(out.log_softmax(1), soft, reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pt, ps in zip(teacher.parameters(), student.parameters(), strict=True):
                pt.mul_(0.99).add_(ps, alpha=0.01)


@healthy
def blind6_ok_lora_adapter_only_trained(run) -> None:
    """Parameter-efficient fine-tuning: the base transformer frozen, a small adapter and the head trained, the
    optimizer built after freezing over the trainable parameters only."""
    ids, y = tokens(n=384, seed=680)
    model = Encoder()
    for p in model.parameters():
        p.requires_grad_(False)
    model.adapter = nn.Sequential(nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 32))
    model.head = nn.Linear(32, 2)
    inner = model.encoder

    class Adapted(nn.Module):
        def forward(self, h: torch.Tensor) -> torch.Tensor:
            h = inner(h)
            return h + model.adapter(h)

    model.encoder = Adapted()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-2, weight_decay=0.0)
    ce_loop(run, model, opt, ids, y, steps=60)
