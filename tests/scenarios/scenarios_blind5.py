"""Blind scenarios, fifth round: short runs (20-60 steps) and bugs that start mid-run (labels collapsing, a layer
detached or frozen, the loader repeating one batch, NaN rows, schedule mistakes), DataLoader loops, recurrent,
transformer and CNN models, gradient accumulation, several optimizers, dict/tuple outputs and HF-style models
computing their loss inside forward; written before reading the rules and run before any change.
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
from torch.nn.utils import prune
from torch.utils.data import DataLoader, Dataset, TensorDataset

# Bugs the rules cannot see with what the watch collects today, per sampling mode, and what they would need;
# tests/scenarios/test_scenarios.py expects these to fail (strict xfail), so a probe change that fixes one shows.
KNOWN_MISSES: dict[tuple[str, str], str] = {}


class _TwoPart(nn.Module):
    """An encoder and a head, the shape loops with one optimizer per part use."""

    def __init__(self, d: int = 12, c: int = 4, h: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.head = nn.Linear(h, c)
        self.detach_encoder = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.head(h.detach() if self.detach_encoder else h), h


class _HFStyle(nn.Module):
    """A Hugging Face-style sequence model: ``forward(input_ids, labels=None)`` returns a dict with the loss."""

    def __init__(self, vocab: int = 120, dim: int = 32, classes: int = 2, causal_lm: bool = False,
                 probs_into_ce: bool = False, pooler_unused: bool = False, shift: bool = False) -> None:
        super().__init__()
        self.shift = shift
        self.emb = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(1, 32, dim))
        layer = nn.TransformerEncoderLayer(dim, 4, dim_feedforward=64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1)
        self.pooler = None if causal_lm else nn.Sequential(nn.Linear(dim, dim), nn.Tanh())
        self.head = nn.Linear(dim, vocab if causal_lm else classes)
        self.causal_lm, self.probs_into_ce, self.pooler_unused = causal_lm, probs_into_ce, pooler_unused

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        n = input_ids.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(n) if self.causal_lm else None
        h = self.encoder(self.emb(input_ids) + self.pos[:, :n], mask=mask, is_causal=self.causal_lm)
        if self.causal_lm:
            logits = self.head(h)
            out = {"logits": logits}
            if labels is not None:
                if self.shift:  # Hugging Face's causal LMs: position t predicts token t + 1
                    logits, labels = logits[:, :-1], labels[:, 1:]
                out["loss"] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
            return out
        pooled = self.pooler(h[:, 0])
        logits = self.head(h.mean(1) if self.pooler_unused else pooled)
        out = {"logits": logits, "pooled": pooled}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits.softmax(-1) if self.probs_into_ce else logits, labels)
        return out


def _hf_loop(run, model: nn.Module, opt: torch.optim.Optimizer, ids: torch.Tensor, y: torch.Tensor,
             steps: int = 30, batch: int = 32) -> None:
    watch(run, model, opt)
    for xb, yb in batches(ids, y, steps, batch):
        loss = model(xb, labels=yb)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad()


class _Pairs(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


def _dict_loader_loop(run, model: nn.Module, opt: torch.optim.Optimizer, loader: DataLoader, steps: int) -> None:
    watch(run, model, opt)
    step = 0
    while step < steps:
        for b in loader:
            opt.zero_grad()
            F.cross_entropy(model(b["x"]), b["y"]).backward()
            opt.step()
            step += 1
            if step == steps:
                return


# ==== bugs that start mid-run ==================================================================================
@bug("TW210")
def blind5_labels_collapse_mid_run(run) -> None:
    """The second shard's labels were read from an empty column: from step 20 of 60 every label is 0."""
    x, y = tabular(n=1920, seed=400)
    y[640:] = 0
    model = mlp()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), x, y, steps=60, shuffle=False)


@bug("TW110")
def blind5_encoder_detached_mid_run(run) -> None:
    """A 'cache the features' switch turned on at step 20 detaches the encoder, which the optimizer still holds."""
    x, y = tabular(n=1280, seed=401)
    model = _TwoPart()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x, y, 50, 32)):
        model.detach_encoder = i >= 20
        opt.zero_grad()
        logits, _ = model(xb)
        F.cross_entropy(logits, yb).backward()
        opt.step()


@bug("TW214")
def blind5_loader_exhausted_keeps_last_batch(run) -> None:
    """``next(it)`` in a try/except StopIteration that passes: after one epoch (10 batches) the last batch is
    trained on for the remaining 30 steps."""
    x, y = images(n=320, seed=402)
    it = iter(DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(403)))
    model = CNN()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    watch(run, model, opt)
    xb = yb = None
    for _ in range(40):
        try:  # noqa: SIM105  (the loop as written)
            xb, yb = next(it)
        except StopIteration:
            pass
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW201")
def blind5_nan_pixels_from_step_25_loader(run) -> None:
    """Corrupt images (a NaN pixel each) fill the last part of an unshuffled DataLoader: from step 25 of 40."""
    x, y = images(n=1280, seed=404)
    x[25 * 32::7, 1, 3, 3] = float("nan")
    model = CNN()
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=False)
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), loader, steps=40)


@bug("TW202")
def blind5_nan_targets_from_step_30_lstm(run) -> None:
    """Targets are log(count); a later shard has zero/negative counts: NaN targets from step 30 of 45."""
    s, y = sequences(n=45 * 32, seed=405)
    counts = y.exp()
    counts[30 * 32::5] = -1.0
    model = SeqRegressor()
    opt = torch.optim.Adam(model.parameters(), 5e-3)
    watch(run, model, opt)
    for xb, yb in batches(s, counts.log(), 45, 32, shuffle=False):
        opt.zero_grad()
        F.mse_loss(model(xb), yb).backward()
        opt.step()


@bug("TW204")
def blind5_inputs_blanked_mid_run(run) -> None:
    """An input-masking curriculum whose masked fraction reaches 1.0 at step 20: every input is zero from then
    on."""
    x, y = tabular(n=1920, seed=406)
    g = gen(456)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x, y, 50, 32)):
        opt.zero_grad()
        F.cross_entropy(model(xb * (torch.rand(xb.shape, generator=g) >= min(1.0, i / 20))), yb).backward()
        opt.step()


@bug("TW401")
def blind5_eval_mode_after_mid_run_validation(run) -> None:
    """Validation at step 15 calls model.eval() and the loop never calls model.train() again (CNN with BN and
    dropout)."""
    x, y = images(n=704, seed=407)
    model = CNN(dropout=0.3)
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x[:640], y[:640], 45, 32)):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        if i == 15:
            model.eval()
            with torch.no_grad():
                model(x[640:])


@bug("TW305")
def blind5_noop_freeze_mid_run(run) -> None:
    """At step 15 the loop starts head-only fine-tuning with ``model.encoder.requires_grad = False`` (an attribute
    on the Module: nothing is frozen)."""
    x, y = tabular(n=1280, seed=408)
    model = _TwoPart()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x, y, 40, 32)):
        if i == 15:
            model.encoder.requires_grad = False
        opt.zero_grad()
        F.cross_entropy(model(xb)[0], yb).backward()
        opt.step()


@bug("TW306")
def blind5_frozen_mid_run_still_moves(run) -> None:
    """At step 20 the encoder is frozen with requires_grad_(False), but zero_grad(set_to_none=False) keeps zero
    gradients and SGD's momentum and weight decay keep moving the 'frozen' weights."""
    x, y = tabular(n=1600, seed=409)
    model = _TwoPart()
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9, weight_decay=1e-4)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x, y, 50, 32)):
        if i == 20:
            model.encoder.requires_grad_(False)
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(model(xb)[0], yb).backward()
        opt.step()


@bug("TW308")
def blind5_steplr_stepped_per_batch(run) -> None:
    """StepLR(step_size=5, gamma=0.1) meant per epoch, stepped per batch: the rate is 1e-8 of its start by step
    40 of a 40-step GRU run."""
    ids, y = tokens(n=1280, seed=410)
    model = GRUClassifier()
    opt = torch.optim.SGD(model.parameters(), 0.5, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.1)
    ce_loop(run, model, opt, ids, y, steps=40, sched=sched)


@bug("TW308")
def blind5_lr_zeroed_mid_run(run) -> None:
    """At step 10 a 'freeze the first group' helper sets lr=0 on every param group instead of the first."""
    x, y = images(n=640, seed=411)
    model = CNN()
    opt = torch.optim.SGD([{"params": model.features.parameters()}, {"params": model.head.parameters()}], 0.05,
                          momentum=0.9)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x, y, 40, 32)):
        if i == 10:
            for group in opt.param_groups:
                group["lr"] = 0.0
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@bug("TW307", tolerated=("TW108",))
def blind5_warmup_never_capped(run) -> None:
    """A linear warm-up LambdaLR(lambda s: s + 1) that forgot to divide by the warm-up length: the rate grows
    to 60x its base by the end of a 60-step run."""
    x, y = tabular(n=1920, seed=412)
    model = mlp(h=64)
    opt = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s + 1)
    ce_loop(run, model, opt, x, y, steps=60, sched=sched)


# ==== several optimizers, accumulation =========================================================================
@bug("TW301")
def blind5_second_optimizer_copy_paste(run) -> None:
    """One optimizer per part, but the head's was built over the encoder's parameters (copy-paste): the head is
    never updated."""
    x, y = tabular(n=960, seed=413)
    model = _TwoPart()
    opt_enc = torch.optim.Adam(model.encoder.parameters(), 3e-3)
    opt_head = torch.optim.SGD(model.encoder.parameters(), 0.05)
    watch(run, model, opt_enc)
    for xb, yb in batches(x, y, 30, 32):
        opt_enc.zero_grad()
        opt_head.zero_grad()
        F.cross_entropy(model(xb)[0], yb).backward()
        opt_enc.step()
        opt_head.step()


@bug("TW304")
def blind5_second_optimizer_never_zeroed(run) -> None:
    """Two optimizers; the loop zeroes the encoder's twice (a typo) and never the head's: the head's gradients
    accumulate across steps."""
    x, y = tabular(n=960, seed=414)
    model = _TwoPart()
    opt_enc = torch.optim.Adam(model.encoder.parameters(), 3e-3)
    opt_head = torch.optim.SGD(model.head.parameters(), 0.05, momentum=0.9)
    watch(run, model, opt_enc)
    for xb, yb in batches(x, y, 30, 32):
        opt_enc.zero_grad()
        opt_enc.zero_grad()
        F.cross_entropy(model(xb)[0], yb).backward()
        opt_enc.step()
        opt_head.step()


@bug("TW304")
def blind5_accumulation_zero_grad_misplaced_loader(run) -> None:
    """Gradient accumulation over a DataLoader where zero_grad sits under ``if step % accum == 0`` before the
    counter starts at 1 and runs only once every 100 steps."""
    x, y = images(n=640, seed=415)
    model = CNN()
    opt = torch.optim.SGD(model.parameters(), 0.02, momentum=0.9)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=gen(416))
    watch(run, model, opt)
    for step, (xb, yb) in enumerate(loader, start=1):
        if step % 100 == 0:
            opt.zero_grad()
        (F.cross_entropy(model(xb), yb) / 4).backward()
        if step % 4 == 0:
            opt.step()


@bug("TW308")
def blind5_step_before_backward_transformer(run) -> None:
    """A refactor moved opt.step() above loss.backward(): each step finds the gradients just zeroed."""
    ids, y = tokens(n=640, seed=417)
    model = Encoder()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    watch(run, model, opt)
    for xb, yb in batches(ids, y, 30, 32):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        opt.step()
        loss.backward()


# ==== HF-style models, dict/tuple outputs ======================================================================
@bug("TW209")
def blind5_hf_causal_lm_labels_not_shifted(run) -> None:
    """A causal LM whose labels are the input ids themselves (the shift forgotten): each position sees its own
    target and learns to copy it."""
    ids = zipf(640 * 16, 120, gen(418)).view(640, 16)
    model = _HFStyle(causal_lm=True)
    _hf_loop(run, model, torch.optim.AdamW(model.parameters(), 3e-3), ids, ids.clone(), steps=30)


@bug("TW150")
def blind5_hf_loss_on_softmax(run) -> None:
    """The model's own loss applies cross_entropy to softmax probabilities."""
    ids, y = tokens(n=640, vocab=120, seed=419)
    model = _HFStyle(probs_into_ce=True)
    _hf_loop(run, model, torch.optim.AdamW(model.parameters(), 3e-3), ids, y)


@bug("TW413")
def blind5_hf_pooler_output_unused(run) -> None:
    """The pooler runs and lands in the output dict, but the classifier reads the mean of the hidden states."""
    ids, y = tokens(n=640, vocab=120, seed=420)
    model = _HFStyle(pooler_unused=True)
    _hf_loop(run, model, torch.optim.AdamW(model.parameters(), 3e-3), ids, y)


@bug("TW110")
def blind5_prediction_detached_then_requires_grad(run) -> None:
    """``pred = model(x).detach().requires_grad_()`` (to silence an error): the loss has a gradient, the model
    none."""
    x, y = tabular(n=640, seed=421)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for xb, yb in batches(x, y, 30, 32):
        opt.zero_grad()
        pred = model(xb).detach().requires_grad_()
        F.cross_entropy(pred, yb).backward()
        opt.step()


# ==== loss calls ===============================================================================================
@bug("TW153")
def blind5_mask_targets_0_255(run) -> None:
    """A segmentation-like CNN trained with BCEWithLogits against masks stored as 0/255."""
    x, _ = images(n=320, c=1, seed=422)
    masks = (x > 0.5).float() * 255

    class Seg(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.net(t)

    model = Seg()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), x, masks, steps=25,
            loss_fn=F.binary_cross_entropy_with_logits)


@bug("TW152")
def blind5_gru_regression_broadcast_loader(run) -> None:
    """A GRU regressor outputs (N, 1); the DataLoader's targets are (N,): MSE broadcasts to (N, N)."""
    s, y = sequences(seed=423)
    model = SeqRegressor(lstm=False)
    loader = DataLoader(TensorDataset(s, y.squeeze(1)), batch_size=32, shuffle=True, generator=gen(424))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 5e-3), loader, steps=30, loss_fn=nn.MSELoss())


@bug("TW151")
def blind5_nll_on_logits_transformer(run) -> None:
    """NLLLoss on the encoder's raw logits (the log_softmax forgotten)."""
    ids, y = tokens(n=640, seed=425)
    model = Encoder()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), ids, y, steps=30, loss_fn=F.nll_loss)


@bug("TW307")
def blind5_token_sum_loss_sgd(run) -> None:
    """A GRU's CrossEntropyLoss(reduction='sum') over 64-row batches with an SGD rate tuned for a mean."""
    ids, y = tokens(n=1280, seed=426)
    model = GRUClassifier()
    opt = torch.optim.SGD(model.parameters(), 0.3)
    ce_loop(run, model, opt, ids, y, steps=30, batch=64, loss_fn=nn.CrossEntropyLoss(reduction="sum"))


# ==== data that looks valid ====================================================================================
@bug("TW109")
def blind5_labels_permuted_loader(run) -> None:
    """Labels shuffled apart from their rows before the DataLoader is built; 60 steps."""
    x, y = tabular(n=960, seed=427)
    y = y[torch.randperm(960, generator=gen(428))]
    model = mlp()
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(429))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), loader, steps=60)


@bug("TW209")
def blind5_label_column_dict_batches(run) -> None:
    """A dict-batch dataset whose features still include the label column."""
    x, y = tabular(n=640, seed=430)
    x = torch.cat([x, y.float().unsqueeze(1)], 1)
    model = mlp(d=13)
    loader = DataLoader(_Pairs(x, y), batch_size=32, shuffle=True, generator=gen(431))
    _dict_loader_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), loader, steps=30)


@bug("TW203")
def blind5_pixels_0_255_loader(run) -> None:
    """uint8 images converted with .float() but never divided by 255, through a DataLoader into a CNN."""
    x, y = images(n=320, seed=432)
    raw = ((x - x.min()) / (x.max() - x.min()) * 255).to(torch.uint8)
    model = CNN(bn=False)
    loader = DataLoader(TensorDataset(raw.float(), y), batch_size=32, shuffle=True, generator=gen(433))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), loader, steps=25)


@bug("TW213")
def blind5_dataset_reshapes_hwc(run) -> None:
    """A Dataset stores HWC images and __getitem__ returns ``img.reshape(3, H, W)``."""
    x, y = images(n=320, hw=12, seed=434)
    hwc = x.permute(0, 2, 3, 1).contiguous()

    class Imgs(Dataset):
        def __len__(self) -> int:
            return len(hwc)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return hwc[i].reshape(3, 12, 12), y[i]

    model = CNN()
    loader = DataLoader(Imgs(), batch_size=32, shuffle=True, generator=gen(435))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), loader, steps=25)


@bug("TW212")
def blind5_token_ids_modulo_vocab_transformer(run) -> None:
    """A tokenizer with 600 ids meets an embedding of 256: ``ids % 256`` silences the index error."""
    raw = torch.randint(0, 600, (640, 16), generator=gen(436))
    y = (torch.randn(600, generator=gen(437))[raw].mean(1) > 0).long()
    model = Encoder(vocab=256)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-3), raw % 256, y, steps=25)


@bug("TW212")
def blind5_token_ids_clamped_lstm(run) -> None:
    """A heavy-tailed 3000-token corpus clamped into a 500-row embedding: every rare token becomes id 499."""
    g = gen(438)
    raw = zipf(640 * 16, 3000, g, s=0.9).view(640, 16)
    y = (torch.randn(3000, generator=g)[raw].mean(1) > 0).long()
    model = GRUClassifier(vocab=500, lstm=True)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), raw.clamp(max=499), y, steps=25)


@bug("TW207")
def blind5_collate_repeats_samples(run) -> None:
    """An 'oversampling' collate repeats each of 4 samples 8 times to fill a batch of 32 (no augmentation)."""
    x, y = tabular(n=640, seed=439)

    def collate(rows):
        xs = torch.stack([r[0] for r in rows[:4]]).repeat(8, 1)
        return xs, torch.stack([r[1] for r in rows[:4]]).repeat(8)

    model = mlp()
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(440), collate_fn=collate)
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), loader, steps=20)


# ==== configuration and architecture ===========================================================================
@bug("TW302")
def blind5_adam_l2_transformer(run) -> None:
    """Adam(weight_decay=1e-2): L2 through Adam's adaptive scaling, not decoupled decay."""
    ids, y = tokens(n=1280, vocab=60, seed=441)
    model = Encoder(vocab=60)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3, weight_decay=1e-2), ids, y, steps=40)


@bug("TW303")
def blind5_adamw_strong_decay_gru(run) -> None:
    """AdamW(weight_decay=0.1) over a GRU classifier: its embedding table and biases decay too."""
    ids, y = tokens(n=640, seed=442)
    model = GRUClassifier()
    ce_loop(run, model, torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=0.1), ids, y, steps=25)


@bug("TW106")
def blind5_float64_cnn(run) -> None:
    """A CNN and its images cast to float64 'for precision'."""
    x, y = images(n=320, seed=443)
    model = CNN().double()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), x.double(), y, steps=20)


@bug("TW407")
def blind5_batchnorm_batch_of_two_loader(run) -> None:
    """A CNN with BatchNorm trained through a DataLoader of batch size 2."""
    x, y = images(n=128, seed=444)
    model = CNN()
    loader = DataLoader(TensorDataset(x, y), batch_size=2, shuffle=True, generator=gen(445))
    loader_loop(run, model, torch.optim.SGD(model.parameters(), 0.01), loader, steps=30)


@bug("TW408")
def blind5_unused_projection_layer(run) -> None:
    """A GRU model defines a projection layer that forward never calls."""
    class Net(GRUClassifier):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(32, 32)

    ids, y = tokens(n=640, seed=446)
    model = Net()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), ids, y, steps=30)


@bug("TW406")
def blind5_batchnorm_reused_for_two_inputs(run) -> None:
    """One BatchNorm1d normalises both the numeric and the embedded features of a two-tower model."""
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(12, 32), nn.Linear(12, 32)
            self.norm = nn.BatchNorm1d(32)
            self.head = nn.Linear(64, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.cat([F.relu(self.norm(self.a(x))), F.relu(self.norm(self.b(x * x)))], 1))

    x, y = tabular(n=640, seed=447)
    model = Net()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), x, y, steps=30)


@bug("TW414")
def blind5_simsiam_without_stop_grad_cnn(run) -> None:
    """SimSiam-style negative cosine between two views of a small conv encoder, no stop-gradient, no predictor."""
    x, _ = images(n=640, c=1, seed=448)
    encoder = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                            nn.Linear(32, 16))

    def loss_of(model, v1, v2):
        return -F.cosine_similarity(model(v1), model(v2)).mean()

    two_views_loop(run, encoder, torch.optim.SGD(encoder.parameters(), 0.1, momentum=0.9), x, loss_of,
                   noise=0.1, steps=40)


@bug("TW411")
def blind5_pruned_conv_filters(run) -> None:
    """ln_structured pruning of 60% of the second conv's filters, then training."""
    x, y = images(n=640, seed=449)
    model = CNN(bn=False)
    prune.ln_structured(model.features[3], "weight", amount=0.6, n=2, dim=0)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 2e-3), x, y, steps=25)


@bug("TW104")
def blind5_deep_sigmoid_short(run) -> None:
    """Ten sigmoid layers, SGD, 30 steps: the first layers get almost no gradient."""
    x, y = tabular(n=960, seed=450)
    model = mlp(depth=10, act=nn.Sigmoid)
    ce_loop(run, model, torch.optim.SGD(model.parameters(), 0.05), x, y, steps=30)


# ==== healthy controls =========================================================================================
@healthy
def blind5_ok_hf_causal_lm_shifted(run) -> None:
    """labels = input_ids, shifted inside forward as Hugging Face's causal LMs do: the targets are the input ids
    one position on (the very tensor, the same values), which must not read as a copied input."""
    start = torch.randint(0, 120, (640, 1), generator=gen(421))
    ids = (start + torch.arange(16) * torch.randint(1, 3, (640, 1), generator=gen(422))) % 120  # learnable
    model = _HFStyle(causal_lm=True, shift=True)
    _hf_loop(run, model, torch.optim.AdamW(model.parameters(), 3e-3), ids, ids.clone(), steps=30)


@healthy
def blind5_ok_full_batch_one_tensor(run) -> None:
    """Full-batch Adam on one 256-row tensor for 60 steps (the same tensor object every step, on purpose)."""
    x, y = tabular(n=256, seed=460)
    model = mlp()
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), x, y, steps=60, full_batch=True)


@healthy
def blind5_ok_near_constant_targets(run) -> None:
    """Regression onto targets that are almost constant (5.0 plus a small signal), MSE, 40 steps."""
    g = gen(461)
    x = torch.randn(1280, 8, generator=g)
    y = 5.0 + 0.05 * (x @ torch.randn(8, 1, generator=g))
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), x, y, steps=40, loss_fn=F.mse_loss)


@healthy
def blind5_ok_tiny_lr_finetune(run) -> None:
    """A model trained for 30 steps, then fine-tuned at AdamW lr=1e-5 for 30 more (one loop, one watch)."""
    x, y = tabular(n=1920, seed=462)
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), 1e-2)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x, y, 60, 32)):
        if i == 30:
            for group in opt.param_groups:
                group["lr"] = 1e-5
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@healthy
def blind5_ok_heavy_dropout_gru(run) -> None:
    """A GRU classifier with dropout 0.5 on the embeddings and before the head."""
    class Net(GRUClassifier):
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(F.dropout(self.emb(ids), 0.5, self.training))
            return self.head(F.dropout(out.mean(1), 0.5, self.training))

    ids, y = tokens(n=1920, vocab=60, seed=463)
    model = Net(vocab=60)
    ce_loop(run, model, torch.optim.Adam(model.parameters(), 1e-2), ids, y, steps=60)


@healthy
def blind5_ok_imbalanced_weighted_loss(run) -> None:
    """A 9:1 binary task with class weights in the loss, shuffled DataLoader."""
    x, y = tabular(n=960, c=2, seed=464)
    y = (x[:, 0] > 1.28).long()
    model = mlp(c=2)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(465))
    loader_loop(run, model, torch.optim.Adam(model.parameters(), 3e-3), loader, steps=30,
                loss_fn=nn.CrossEntropyLoss(weight=torch.tensor([1.0, 9.0])))


@healthy
def blind5_ok_frozen_backbone_finetune(run) -> None:
    """A CNN pretrained (unwatched) on one task, its backbone then frozen with requires_grad_(False) and kept in
    eval(), a fresh head trained on another labelling of the same images with an optimizer over the head only."""
    x, y = images(n=640, seed=466)
    model = CNN()
    pre = torch.optim.Adam(model.parameters(), 3e-3)
    for xb, yb in batches(x, y, 30, 32):
        pre.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        pre.step()
    model.features.requires_grad_(False)
    model.head = nn.Linear(16, 2)
    opt = torch.optim.Adam(model.head.parameters(), 1e-2)
    watch(run, model, opt)
    for xb, yb in batches(x, y % 2, 30, 32, seed=2):
        model.features.eval()
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


@healthy
def blind5_ok_decay_param_groups_transformer(run) -> None:
    """AdamW with decay 0.1 on weight matrices only: biases, LayerNorms and embeddings in a no-decay group."""
    ids, y = tokens(n=640, seed=467)
    model = Encoder()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "emb" not in n and "pos" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "emb" not in n and "pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], 1e-3)
    ce_loop(run, model, opt, ids, y, steps=30)


@healthy
def blind5_ok_hf_style_classifier(run) -> None:
    """The HF-style model with its loss inside forward, AdamW, labels passed in."""
    ids, y = tokens(n=640, vocab=120, seed=468)
    model = _HFStyle()
    _hf_loop(run, model, torch.optim.AdamW(model.parameters(), 3e-3), ids, y)


@healthy
def blind5_ok_two_optimizers(run) -> None:
    """Adam for the encoder, SGD for the head, both zeroed and stepped each step."""
    x, y = tabular(n=960, seed=469)
    model = _TwoPart()
    opt_enc = torch.optim.Adam(model.encoder.parameters(), 3e-3)
    opt_head = torch.optim.SGD(model.head.parameters(), 0.05, momentum=0.9)
    watch(run, model, opt_enc)
    for xb, yb in batches(x, y, 30, 32):
        opt_enc.zero_grad()
        opt_head.zero_grad()
        F.cross_entropy(model(xb)[0], yb).backward()
        opt_enc.step()
        opt_head.step()


@healthy
def blind5_ok_planned_freeze_mid_run(run) -> None:
    """Warm-up of the whole model for 20 steps, then the encoder frozen properly (requires_grad_(False), default
    zero_grad to None) and the head trained on."""
    x, y = tabular(n=1600, seed=470)
    model = _TwoPart()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(x, y, 50, 32)):
        if i == 20:
            model.encoder.requires_grad_(False)
        opt.zero_grad()
        F.cross_entropy(model(xb)[0], yb).backward()
        opt.step()


@healthy
def blind5_ok_warmup_cosine_lstm_accumulation(run) -> None:
    """An LSTM regressor, linear warm-up then cosine decay to 10% (LambdaLR per optimizer step), gradients
    accumulated over 2 micro-batches."""
    import math

    s, y = sequences(n=1280, seed=471)
    model = SeqRegressor()
    opt = torch.optim.Adam(model.parameters(), 5e-3)
    total = 30
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: (k + 1) / 5 if k < 5 else 0.1 + 0.45 * (1 + math.cos(math.pi * (k - 5) / (total - 5))))
    watch(run, model, opt)
    for i, (xb, yb) in enumerate(batches(s, y, 2 * total, 32)):
        (F.mse_loss(model(xb), yb) / 2).backward()
        if i % 2 == 1:
            opt.step()
            opt.zero_grad()
            sched.step()


@healthy
def blind5_ok_validation_every_10_proper(run) -> None:
    """A CNN with BN and dropout, validated on a held-out split every 10 steps under eval()/no_grad, then
    train() again; DataLoader loop."""
    x, y = images(n=800, seed=472)
    model = CNN(dropout=0.3)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    watch(run, model, opt)
    loader = DataLoader(TensorDataset(x[:640], y[:640]), batch_size=32, shuffle=True, generator=gen(473))
    for i, (xb, yb) in enumerate(loader):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        if i % 10 == 9:
            model.eval()
            with torch.no_grad():
                model(x[640:])
            model.train()
