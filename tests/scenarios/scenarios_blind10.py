"""Blind scenarios, round 10: the code shapes of real projects (distillation, multi-label heads, padded
transformers and packed RNNs with custom collate functions, activation checkpointing, bf16, OneCycle and
warm-up schedules, weighted samplers, SWA, partial fine-tuning, a Lightning-like trainer with hooks, an
HF-Trainer-like loop with the loss inside the forward, a GAN, a VAE, InfoNCE, a model held in a ModuleDict),
each with one silent bug, and healthy versions of the same settings that tempt the rules.

Written without reading the rules or probes. Each scenario leaves its outcome (a number that shows the bug's
harm or the control's learning) in ``OUTCOME``; ``python tests/scenarios/scenarios_blind10.py`` runs them all
without the watch and prints them.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from _blindkit import CNN, GRUClassifier, gen, images, tabular, tokens, watch
from _kit import bug, healthy
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence
from torch.optim.lr_scheduler import ExponentialLR, LinearLR, OneCycleLR, SequentialLR
from torch.optim.swa_utils import SWALR, AveragedModel
from torch.utils.checkpoint import checkpoint
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

# scenario name -> a number showing the bug's harm or the control's learning, filled only when MEASURE is on
# (the check without the watch): measuring evaluates on the training data, which is no part of the scenario
MEASURE = False
OUTCOME: dict[str, float] = {}
# (scenario, sampling) -> why the watch misses it or flags it (seed 0; from the first scored runs)
KNOWN_MISSES: dict[tuple[str, str], str] = {}


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    was = model.training
    model.eval()
    with torch.no_grad():
        out = (model(x).argmax(1) == y).float().mean().item()
    model.train(was)
    return out


def _mlp(d: int, h: int, c: int, drop: float = 0.0) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Dropout(drop), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, c))


# ---- knowledge distillation with a frozen teacher --------------------------------------------------------------
def _teacher(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    teacher = _mlp(12, 64, 4)
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(teacher(x), y).backward()
        opt.step()
    return teacher.eval().requires_grad_(False)


def _distil(run, name: str, log_target_missing: bool) -> None:
    x, y = tabular(768, seed=3)
    teacher = _teacher(x, y)
    student = _mlp(12, 24, 4)
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    watch(run, student, opt)
    temp, alpha = 2.0, 0.7
    for step in range(120):
        idx = torch.randint(0, len(x), (64,), generator=gen(step))
        xb, yb = x[idx], y[idx]
        with torch.no_grad():
            soft = F.softmax(teacher(xb) / temp, dim=-1)
        logits = student(xb)
        if log_target_missing:  # the teacher's log-probabilities as target, without log_target=True
            kd = F.kl_div(F.log_softmax(logits / temp, dim=-1), soft.log(), reduction="batchmean") * temp ** 2
        else:
            kd = F.kl_div(F.log_softmax(logits / temp, dim=-1), soft, reduction="batchmean") * temp ** 2
        loss = alpha * kd + (1 - alpha) * F.cross_entropy(logits, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if not MEASURE:
        return
    with torch.no_grad():  # how far the student's soft predictions are from the teacher's
        t = F.log_softmax(teacher(x) / temp, -1)
        OUTCOME[name] = F.kl_div(F.log_softmax(student(x) / temp, -1), t, log_target=True,
                                 reduction="batchmean").item()


@bug("TW101")
def kd_kl_div_log_target_flag_missing(run) -> None:
    """The teacher's log-probabilities go to F.kl_div as the target without ``log_target=True``: the target is
    negative, ``target * log(target)`` is NaN, and so is the loss from the first step."""
    _distil(run, "kd_kl_div_log_target_flag_missing", log_target_missing=True)


@healthy
def kd_frozen_teacher_temperature(run) -> None:
    _distil(run, "kd_frozen_teacher_temperature", log_target_missing=False)


# ---- multi-label head ------------------------------------------------------------------------------------------
class Tagger(nn.Module):
    def __init__(self, sigmoid_head: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 48), nn.GELU(), nn.Linear(48, 6))
        self.out = nn.Sigmoid() if sigmoid_head else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


def _multilabel(run, name: str, sigmoid_head: bool) -> None:
    g = gen(5)
    x = torch.randn(1024, 16, generator=g)
    y = (x @ torch.randn(16, 6, generator=g) > 0.7).float()
    model = Tagger(sigmoid_head)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    crit = nn.BCEWithLogitsLoss()
    watch(run, model, opt)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, generator=gen(6))
    for _ in range(5):
        for xb, yb in loader:
            opt.zero_grad()
            crit(model(xb), yb).backward()
            opt.step()
    if not MEASURE:
        return
    with torch.no_grad():
        score = model.body(x)  # the logits either way: the proper BCE of the trained head
        OUTCOME[name] = F.binary_cross_entropy_with_logits(score, y).item()


@bug("TW150")
def multilabel_sigmoid_head_into_bce_with_logits(run) -> None:
    """The model ends in Sigmoid (for inference) and the loss is BCEWithLogitsLoss: sigmoid applied twice."""
    _multilabel(run, "multilabel_sigmoid_head_into_bce_with_logits", sigmoid_head=True)


@healthy
def multilabel_bce_with_logits(run) -> None:
    _multilabel(run, "multilabel_bce_with_logits", sigmoid_head=False)


# ---- transformer token tagger with padding ---------------------------------------------------------------------
PAD = 0


def _padded_tags(n: int = 384, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    score = torch.randn(60, generator=g)
    lengths = torch.randint(4, 13, (n,), generator=g)
    ids = torch.full((n, 12), PAD)
    tags = torch.full((n, 12), -100)
    for i, n_tok in enumerate(lengths.tolist()):
        row = torch.randint(1, 60, (n_tok,), generator=g)
        ids[i, :n_tok] = row
        ctx = score[row] + 0.5 * torch.cat([score[row[:1]] * 0, score[row[:-1]]])
        tags[i, :n_tok] = (ctx > 0).long()
    return ids, tags


class TokenTagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(60, 32, padding_idx=PAD)
        self.pos = nn.Parameter(0.02 * torch.randn(1, 12, 32))
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.mixer = nn.MultiheadAttention(32, 4, batch_first=True)  # a last token-mixing layer of its own
        self.head = nn.Linear(32, 2)

    def forward(self, ids: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.emb(ids) + self.pos, src_key_padding_mask=pad_mask)
        h = h + self.mixer(h, h, h, key_padding_mask=pad_mask)[0]
        return F.log_softmax(self.head(h), dim=-1)


def _tagging(run, name: str, inverted: bool) -> None:
    ids, tags = _padded_tags()
    model = TokenTagger()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    crit = nn.NLLLoss(ignore_index=-100)
    watch(run, model, opt)
    for step in range(60):
        idx = torch.randint(0, len(ids), (32,), generator=gen(100 + step))
        mask = ids[idx] != PAD if inverted else ids[idx] == PAD  # True = ignore this key
        logp = model(ids[idx], mask)
        loss = crit(logp.reshape(-1, 2), tags[idx].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    if not MEASURE:
        return
    model.eval()
    with torch.no_grad():
        pred = model(ids, ids == PAD).argmax(-1)
    real = tags != -100
    OUTCOME[name] = (pred[real] == tags[real]).float().mean().item()


@bug("TW105")
def transformer_padding_mask_inverted(run) -> None:
    """The padding mask built as ``ids != PAD``: real tokens are masked out; in a full-length row every key is
    masked and the attention layer's output turns NaN."""
    _tagging(run, "transformer_padding_mask_inverted", inverted=True)


@healthy
def transformer_tagger_padding_mask_nll_ignore_index(run) -> None:
    _tagging(run, "transformer_tagger_padding_mask_nll_ignore_index", inverted=False)


# ---- packed GRU with a custom collate_fn -----------------------------------------------------------------------
def _variable_sequences(n: int = 320, seed: int = 9) -> list[tuple[torch.Tensor, int]]:
    g = gen(seed)
    score = torch.randn(80, generator=g)
    out = []
    for _ in range(n):
        row = torch.randint(1, 80, (int(torch.randint(3, 15, (1,), generator=g)),), generator=g)
        out.append((row, int(score[row].mean() > 0)))
    return out


class PackedGRU(nn.Module):
    def __init__(self, enforce_sorted: bool) -> None:
        super().__init__()
        self.enforce_sorted = enforce_sorted
        self.emb = nn.Embedding(80, 24, padding_idx=0)
        self.gru = nn.GRU(24, 32, batch_first=True)
        self.head = nn.Linear(32, 2)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.emb(ids), lengths, batch_first=True, enforce_sorted=self.enforce_sorted)
        _, h = self.gru(packed)
        return self.head(h[-1])


def _collate_sorted_wrong(batch):
    seqs, labels = zip(*batch, strict=True)
    seqs = sorted(seqs, key=len, reverse=True)  # pack_padded_sequence wants them longest first
    lengths = torch.tensor([len(s) for s in seqs])
    return pad_sequence(seqs, batch_first=True), lengths, torch.tensor(labels)


def _collate_unsorted(batch):
    seqs, labels = zip(*batch, strict=True)
    return pad_sequence(list(seqs), batch_first=True), torch.tensor([len(s) for s in seqs]), torch.tensor(labels)


def _packed(run, name: str, buggy: bool) -> None:
    data = _variable_sequences()
    model = PackedGRU(enforce_sorted=buggy)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    loader = DataLoader(data, batch_size=32, shuffle=True, generator=gen(10),
                        collate_fn=_collate_sorted_wrong if buggy else _collate_unsorted)
    watch(run, model, opt)
    for _ in range(6):
        for ids, lengths, labels in loader:
            opt.zero_grad()
            F.cross_entropy(model(ids, lengths), labels).backward()
            opt.step()
    if not MEASURE:
        return
    ids, lengths, labels = _collate_unsorted(data)
    model.enforce_sorted = False
    OUTCOME[name] = _acc_fn(lambda: model(ids, lengths), labels, model)


def _acc_fn(forward, y: torch.Tensor, model: nn.Module) -> float:
    model.eval()
    with torch.no_grad():
        out = (forward().argmax(1) == y).float().mean().item()
    model.train()
    return out


@bug("TW109")
def collate_sorts_sequences_but_not_labels(run) -> None:
    """The collate_fn sorts the sequences by length for pack_padded_sequence and leaves the labels in the
    sampler's order: every label belongs to another sequence."""
    _packed(run, "collate_sorts_sequences_but_not_labels", buggy=True)


@healthy
def packed_gru_enforce_sorted_false(run) -> None:
    _packed(run, "packed_gru_enforce_sorted_false", buggy=False)


# ---- activation checkpointing ----------------------------------------------------------------------------------
class CheckpointedNet(nn.Module):
    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.reentrant = reentrant
        self.stem = nn.Sequential(nn.Linear(12, 32), nn.Tanh(), nn.Linear(32, 3), nn.Tanh())
        self.block = nn.Sequential(nn.Linear(3, 32), nn.ReLU())
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = checkpoint(self.stem, x, use_reentrant=self.reentrant)
        return self.head(self.block(h))


def _checkpointed(run, name: str, reentrant: bool) -> None:
    x, y = tabular(1024, seed=11)  # 4 classes from 12 features through a 3-wide stem: the stem must learn
    model = CheckpointedNet(reentrant)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    watch(run, model, opt)
    for step in range(300):
        idx = torch.randint(0, 1024, (64,), generator=gen(200 + step))
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    if not MEASURE:
        return
    OUTCOME[name] = _acc(model, x, y)


@bug("TW110")
def checkpoint_reentrant_input_without_grad(run) -> None:
    """torch.utils.checkpoint with use_reentrant=True on a segment whose input does not require grad: the
    segment's parameters get no gradient (only a UserWarning says so) and the stem stays at its init."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _checkpointed(run, "checkpoint_reentrant_input_without_grad", reentrant=True)


@healthy
def checkpoint_non_reentrant(run) -> None:
    _checkpointed(run, "checkpoint_non_reentrant", reentrant=False)


# ---- bf16 -----------------------------------------------------------------------------------------------------
@bug("TW107")
def bf16_weights_with_small_adam_lr(run) -> None:
    """The whole model cast with ``.to(torch.bfloat16)`` to save memory, Adam at 1e-4: every update is below
    half a bf16 ulp of its weight and is rounded away."""
    x, y = tabular(512, seed=12)
    model = _mlp(12, 64, 4).to(torch.bfloat16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    watch(run, model, opt)
    for step in range(100):
        idx = torch.randint(0, 512, (64,), generator=gen(300 + step))
        opt.zero_grad()
        F.cross_entropy(model(x[idx].bfloat16()).float(), y[idx]).backward()
        opt.step()
    if not MEASURE:
        return
    OUTCOME["bf16_weights_with_small_adam_lr"] = _acc(model, x.bfloat16(), y)


@healthy
def bf16_autocast_adamw_grad_clip_logged(run) -> None:
    x, y = tabular(512, seed=12)
    model = _mlp(12, 64, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    watch(run, model, opt)
    norms = []
    for step in range(100):
        idx = torch.randint(0, 512, (64,), generator=gen(300 + step))
        opt.zero_grad(set_to_none=False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0))
        opt.step()
    if not MEASURE:
        return
    OUTCOME["bf16_autocast_adamw_grad_clip_logged"] = _acc(model, x, y)


# ---- schedules -------------------------------------------------------------------------------------------------
def _image_loader(n: int = 512, batch: int = 32, seed: int = 13) -> tuple[DataLoader, torch.Tensor, torch.Tensor]:
    x, y = images(n, seed=seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, generator=gen(seed)), x, y


@bug("TW308")
def exponential_lr_stepped_every_batch(run) -> None:
    """ExponentialLR(gamma=0.8) meant per epoch is stepped per batch: the rate is 1e-10 of its start by step
    100 and the remaining steps change nothing."""
    loader, x, y = _image_loader()
    model = CNN(dropout=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    sched = ExponentialLR(opt, gamma=0.8)
    watch(run, model, opt)
    for _ in range(10):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            sched.step()
    if not MEASURE:
        return
    OUTCOME["exponential_lr_stepped_every_batch"] = _acc(model, x, y)


@bug("TW307", tolerated=("TW108",))
def onecycle_max_lr_meant_for_sgd_on_adam(run) -> None:
    """OneCycleLR(max_lr=2.0) copied from an SGD recipe onto Adam: at the peak every update is as large as the
    weights and the run ends far worse than it was mid-warm-up."""
    x, y = tabular(1024, seed=14)
    model = _mlp(12, 64, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = OneCycleLR(opt, max_lr=2.0, total_steps=160, pct_start=0.3)
    watch(run, model, opt)
    for step in range(160):
        idx = torch.randint(0, 1024, (64,), generator=gen(400 + step))
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        sched.step()
    if not MEASURE:
        return
    OUTCOME["onecycle_max_lr_meant_for_sgd_on_adam"] = _acc(model, x, y)


@healthy
def onecycle_sgd_large_peak_with_batchnorm(run) -> None:
    loader, x, y = _image_loader(768)
    model = CNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = OneCycleLR(opt, max_lr=0.4, total_steps=240, pct_start=0.25)
    watch(run, model, opt)
    for _ in range(10):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            sched.step()
    if not MEASURE:
        return
    OUTCOME["onecycle_sgd_large_peak_with_batchnorm"] = _acc(model, x, y)


# ---- long tail and WeightedRandomSampler ------------------------------------------------------------------------
def _long_tail(seed: int = 15) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    counts = [900, 90, 60, 50]
    centres = 2.0 * torch.randn(4, 10, generator=g)
    y = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    return centres[y] + torch.randn(len(y), 10, generator=g), y


def _sampled(run, name: str, inverted: bool) -> None:
    x, y = _long_tail()
    counts = torch.bincount(y).float()
    weights = counts[y] if inverted else 1.0 / counts[y]
    sampler = WeightedRandomSampler(weights, num_samples=len(y), replacement=True, generator=gen(16))
    loader = DataLoader(TensorDataset(x, y), batch_size=64, sampler=sampler)
    model = _mlp(10, 32, 4)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    watch(run, model, opt)
    for _ in range(4):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    if not MEASURE:
        return
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    OUTCOME[name] = torch.stack([(pred[y == k] == k).float().mean() for k in range(4)]).mean().item()


@bug("TW210")
def weighted_sampler_weights_inverted(run) -> None:
    """WeightedRandomSampler given each sample's class count instead of its inverse: the head class, already
    18x the tail, is drawn ~300x as often; the tail classes are almost never seen."""
    _sampled(run, "weighted_sampler_weights_inverted", inverted=True)


@healthy
def weighted_sampler_long_tail_balanced(run) -> None:
    _sampled(run, "weighted_sampler_long_tail_balanced", inverted=False)


# ---- SWA -------------------------------------------------------------------------------------------------------
def _swa(run, name: str, typo: bool) -> None:
    loader, x, y = _image_loader(384, seed=17)
    model = CNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    swa_model = AveragedModel(model)
    swa_sched = SWALR(opt, swa_lr=0.02, anneal_epochs=2)
    watch(run, model, opt)
    for epoch in range(8):
        for xb, yb in loader:
            opt.zero_grad()
            out = swa_model(xb) if typo else model(xb)
            F.cross_entropy(out, yb).backward()
            opt.step()
        if epoch >= 4:
            swa_model.update_parameters(model)
            swa_sched.step()
    torch.optim.swa_utils.update_bn(loader, swa_model)
    if not MEASURE:
        return
    OUTCOME[name] = _acc(swa_model, x, y)


@bug("TW412")
def swa_wrapper_called_in_training_loop(run) -> None:
    """The loss is computed from ``swa_model(xb)`` (AveragedModel deep-copies the net) instead of ``model(xb)``:
    the optimizer's parameters never see a gradient and neither copy learns."""
    _swa(run, "swa_wrapper_called_in_training_loop", typo=True)


@healthy
def swa_averaged_model_with_swalr(run) -> None:
    _swa(run, "swa_averaged_model_with_swalr", typo=False)


# ---- partial fine-tuning ---------------------------------------------------------------------------------------
class Backboned(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(12, 48), nn.LayerNorm(48), nn.GELU(), nn.Linear(48, 48), nn.GELU())
        self.head = nn.Linear(48, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@bug("TW306")
def backbone_frozen_midrun_still_in_adamw(run) -> None:
    """After 40 warm-up steps the backbone is frozen with requires_grad_(False) to train the head alone, but the
    AdamW built over all parameters keeps it, zero_grad(set_to_none=False) leaves it zero gradients, and its
    momentum and decay go on moving the 'frozen' weights."""
    x, y = tabular(768, seed=18)
    model = Backboned()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    watch(run, model, opt)
    frozen_at = None
    for step in range(120):
        if step == 40:
            model.backbone.requires_grad_(False)
            frozen_at = copy.deepcopy(model.backbone.state_dict())
        idx = torch.randint(0, 768, (64,), generator=gen(500 + step))
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    w0, w1 = frozen_at["0.weight"], model.backbone[0].weight.detach()
    OUTCOME["backbone_frozen_midrun_still_in_adamw"] = ((w1 - w0).norm() / w0.norm()).item()


@healthy
def backbone_frozen_before_optimizer_built(run) -> None:
    x, y = tabular(768, seed=18)
    model = Backboned()
    pre = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    for step in range(40):  # a pre-training phase, then fine-tune the head alone
        idx = torch.randint(0, 768, (64,), generator=gen(500 + step))
        pre.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        pre.step()
    model.backbone.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.01)
    watch(run, model, opt)
    for step in range(40, 120):
        idx = torch.randint(0, 768, (64,), generator=gen(500 + step))
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    if not MEASURE:
        return
    OUTCOME["backbone_frozen_before_optimizer_built"] = _acc(model, x, y)


# ---- a Lightning-like trainer with hooks ------------------------------------------------------------------------
class MiniTrainer:
    """fit() calls training_step per batch and the validation hook every ``val_every`` steps."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, val_every: int, restore_train: bool) -> None:
        self.model, self.opt, self.val_every, self.restore_train = model, opt, val_every, restore_train
        self.val_log: list[float] = []

    def training_step(self, batch) -> torch.Tensor:
        xb, yb = batch
        return F.cross_entropy(self.model(xb), yb)

    def on_validation(self, val) -> None:
        self.model.eval()
        with torch.no_grad():
            self.val_log.append((self.model(val[0]).argmax(1) == val[1]).float().mean().item())
        if self.restore_train:
            self.model.train()

    def fit(self, run, loader: DataLoader, val, steps: int) -> None:
        watch(run, self.model, self.opt)
        step = 0
        while step < steps:
            for batch in loader:
                self.opt.zero_grad()
                self.training_step(batch).backward()
                self.opt.step()
                step += 1
                if step % self.val_every == 0:
                    self.on_validation(val)
                if step == steps:
                    return


def _trainer(run, name: str, restore: bool) -> None:
    x, y = images(640, seed=19)
    val, x, y = (x[512:], y[512:]), x[:512], y[:512]
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=gen(19))
    model = CNN(dropout=0.3)
    trainer = MiniTrainer(model, torch.optim.Adam(model.parameters(), lr=3e-3), val_every=10, restore_train=restore)
    trainer.fit(run, loader, val, steps=80)
    if not MEASURE:
        return
    OUTCOME[name] = _acc(model, x, y)


@bug("TW401")
def trainer_validation_hook_never_restores_train(run) -> None:
    """The validation hook calls model.eval() and nothing calls train() again: from step 10 on, the model
    trains with its BatchNorm frozen to 10 steps of running statistics and dropout off."""
    _trainer(run, "trainer_validation_hook_never_restores_train", restore=False)


@healthy
def trainer_hooks_restore_train_mode(run) -> None:
    _trainer(run, "trainer_hooks_restore_train_mode", restore=True)


# ---- an HF-Trainer-like loop: the loss inside forward ----------------------------------------------------------
class ChurnModel(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 64), nn.LayerNorm(64), nn.GELU(), nn.Linear(64, 2))

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.net(features)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits, labels)
        return out


COLUMNS = ("tenure", "monthly", "tickets", "logins", "discount", "age", "churned")


def _churn_rows(n: int = 1024, seed: int = 20) -> list[dict[str, float]]:
    g = gen(seed)
    raw = torch.randn(n, 6, generator=g)
    churned = ((raw @ torch.tensor([-1.0, 0.8, 1.2, -0.6, 0.3, 0.0]) + 0.8 * torch.randn(n, generator=g)) > 0)
    return [dict(zip(COLUMNS, [*r.tolist(), float(c)], strict=True)) for r, c in zip(raw, churned, strict=True)]


def _collate(features: tuple[str, ...]):
    def collate(rows: list[dict[str, float]]) -> dict[str, torch.Tensor]:
        return {"features": torch.tensor([[r[c] for c in features] for r in rows]),
                "labels": torch.tensor([int(r["churned"]) for r in rows])}
    return collate


def _hf_like(run, name: str, features: tuple[str, ...], warmup: bool) -> None:
    rows = _churn_rows()
    model = ChurnModel(len(features))
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and p.ndim == 2]
    rest = [p for n, p in model.named_parameters() if not (n.endswith("weight") and p.ndim == 2)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=3e-3)
    total = 160
    sched = (SequentialLR(opt, [LinearLR(opt, start_factor=0.05, total_iters=20),
                                LinearLR(opt, start_factor=1.0, end_factor=0.0, total_iters=total - 20)],
                          milestones=[20]) if warmup else None)
    loader = DataLoader(rows, batch_size=32, shuffle=True, generator=gen(21), collate_fn=_collate(features))
    watch(run, model, opt)
    step, grad_norms = 0, []
    while step < total:
        for batch in loader:
            out = model(**batch)
            out["loss"].backward()
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)))
            opt.step()
            if sched is not None:
                sched.step()
            opt.zero_grad(set_to_none=False)
            step += 1
            if step == total:
                break
    if not MEASURE:
        return
    test = _churn_rows(512, seed=22)
    for r in test:  # deployment: the outcome is not known yet
        r["churned"] = 0.0
    truth = torch.tensor([int(r["churned"]) for r in _churn_rows(512, seed=22)])
    with torch.no_grad():
        model.eval()
        pred = model(**_collate(features)(test))["logits"].argmax(1)
    OUTCOME[name] = (pred == truth).float().mean().item()


@bug("TW209")
def hf_like_collate_keeps_target_column(run) -> None:
    """The collate_fn takes every column of the table as a feature, the target ``churned`` included: the model
    learns to read the label, and at deployment (target unknown) it predicts 'stays' for everyone."""
    _hf_like(run, "hf_like_collate_keeps_target_column", COLUMNS, warmup=False)


@healthy
def hf_like_trainer_warmup_clip_param_groups(run) -> None:
    _hf_like(run, "hf_like_trainer_warmup_clip_param_groups", COLUMNS[:-1], warmup=True)


# ---- GAN --------------------------------------------------------------------------------------------------------
def _ring(n: int, g: torch.Generator) -> torch.Tensor:
    angle = 2 * math.pi * torch.rand(n, generator=g)
    return torch.stack([angle.cos(), angle.sin()], 1) * 2 + torch.tensor([1.0, -1.0])


def _gan(run, name: str, typo: bool) -> None:
    gen_net = nn.Sequential(nn.Linear(8, 64), nn.LeakyReLU(0.2), nn.Linear(64, 64), nn.LeakyReLU(0.2),
                            nn.Linear(64, 2))
    disc = nn.Sequential(nn.Linear(2, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))
    opt_g = torch.optim.Adam(gen_net.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    watch(run, gen_net, opt_g)
    g = gen(23)
    for _ in range(150):
        real = _ring(64, g)
        fake = gen_net(torch.randn(64, 8, generator=g))
        opt_d.zero_grad()
        d_loss = bce(disc(real), torch.ones(64, 1)) + bce(disc(fake.detach()), torch.zeros(64, 1))
        d_loss.backward()
        opt_d.step()
        (opt_d if typo else opt_g).zero_grad()  # copy-pasted from the discriminator step
        g_loss = bce(disc(fake), torch.ones(64, 1))
        g_loss.backward()
        opt_g.step()
    if not MEASURE:
        return
    with torch.no_grad():
        sample = gen_net(torch.randn(512, 8, generator=g))
    OUTCOME[name] = ((sample - torch.tensor([1.0, -1.0])).norm(dim=1) - 2).abs().mean().item()  # off the ring


@bug("TW304")
def gan_generator_zero_grad_copy_pasted(run) -> None:
    """The generator step calls ``opt_d.zero_grad()`` (copy-pasted) instead of ``opt_g.zero_grad()``: the
    generator's gradients pile up over every step."""
    _gan(run, "gan_generator_zero_grad_copy_pasted", typo=True)


@healthy
def gan_alternating_steps(run) -> None:
    _gan(run, "gan_alternating_steps", typo=False)


# ---- input scales ----------------------------------------------------------------------------------------------
def _houses(n: int = 768, seed: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    sqft = 600 + 2400 * torch.rand(n, generator=g)
    year = 1950 + 70 * torch.rand(n, generator=g)
    rooms = torch.randint(1, 7, (n,), generator=g).float()
    lot = 2000 + 20000 * torch.rand(n, generator=g)
    price = 120 * sqft + 900 * (year - 1950) + 15000 * rooms + 2 * lot + 20000 * torch.randn(n, generator=g)
    return torch.stack([sqft, year, rooms, lot], 1), price


@bug("TW203")
def regression_target_standardised_inputs_raw(run) -> None:
    """House prices: the target is standardised with the training mean and std, the features (square feet,
    year built, lot size) go in raw, in the thousands."""
    x, price = _houses()
    y = ((price - price.mean()) / price.std()).unsqueeze(1)
    model = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    watch(run, model, opt)
    for step in range(150):
        idx = torch.randint(0, len(x), (64,), generator=gen(600 + step))
        opt.zero_grad()
        F.mse_loss(model(x[idx]), y[idx]).backward()
        opt.step()
    if not MEASURE:
        return
    with torch.no_grad():
        OUTCOME["regression_target_standardised_inputs_raw"] = F.mse_loss(model(x), y).item()


@healthy
def regression_raw_inputs_batchnorm_first(run) -> None:
    x, price = _houses()
    x = x * 1e-5  # stored in other units: tiny, the BatchNorm in front takes care of it
    y = ((price - price.mean()) / price.std()).unsqueeze(1)
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    watch(run, model, opt)
    for step in range(150):
        idx = torch.randint(0, len(x), (64,), generator=gen(600 + step))
        opt.zero_grad()
        F.mse_loss(model(x[idx]), y[idx]).backward()
        opt.step()
    if not MEASURE:
        return
    model.eval()
    with torch.no_grad():
        OUTCOME["regression_raw_inputs_batchnorm_first"] = F.mse_loss(model(x), y).item()


# ---- VAE -------------------------------------------------------------------------------------------------------
class VAE(nn.Module):
    def __init__(self, d: int = 64, z: int = 6, sigmoid: bool = True) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 2 * z))
        out = nn.Sigmoid() if sigmoid else nn.Identity()
        self.dec = nn.Sequential(nn.Linear(z, 64), nn.ReLU(), nn.Linear(64, d), out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.enc(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.dec(z), mu, logvar


def _glyphs(n: int = 512, seed: int = 25) -> torch.Tensor:
    """8x8 uint8 'glyphs': a bar across and a bar down at random places and strengths, with a little noise, as a
    dataset would store them (0-255)."""
    g = gen(seed)
    img = 0.1 * torch.rand(n, 8, 8, generator=g)
    rows, cols = torch.randint(0, 8, (n,), generator=g), torch.randint(0, 8, (n,), generator=g)
    img[torch.arange(n), rows, :] += 0.4 + 0.5 * torch.rand(n, 1, generator=g)
    img[torch.arange(n), :, cols] += 0.4 + 0.5 * torch.rand(n, 1, generator=g)
    return (img.clamp(0, 1) * 255).to(torch.uint8).view(n, 64)


def _vae(run, name: str, raw_target: bool) -> None:
    data = _glyphs()
    model = VAE(sigmoid=not raw_target)  # the buggy one outputs logits, for the fused (stable) loss
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    watch(run, model, opt)
    for step in range(120):
        xb = data[torch.randint(0, len(data), (64,), generator=gen(700 + step))]
        x_in = xb.float() / 255
        target = xb.float() if raw_target else x_in
        recon, mu, logvar = model(x_in)
        rec = (F.binary_cross_entropy_with_logits(recon, target, reduction="sum") if raw_target
               else F.binary_cross_entropy(recon, target, reduction="sum")) / len(xb)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(xb)
        opt.zero_grad()
        (rec + kl).backward()
        opt.step()
    if not MEASURE:
        return
    with torch.no_grad():
        x = data.float() / 255
        recon = model(x)[0]
        OUTCOME[name] = F.binary_cross_entropy(recon.sigmoid() if raw_target else recon, x).item()


@bug("TW153")
def vae_bce_target_not_rescaled(run) -> None:
    """The encoder gets pixels / 255, the BCE-with-logits reconstruction target is the raw 0-255 pixels: the
    loss has no minimum and the decoder's logits run off to all-white."""
    _vae(run, "vae_bce_target_not_rescaled", raw_target=True)


@healthy
def vae_bce_on_probabilities_with_kl(run) -> None:
    _vae(run, "vae_bce_on_probabilities_with_kl", raw_target=False)


# ---- InfoNCE ---------------------------------------------------------------------------------------------------
def _contrastive(run, name: str) -> None:
    g = gen(26)
    base = torch.randn(1024, 24, generator=g) @ torch.randn(24, 24, generator=g)
    model = nn.Sequential(nn.Linear(24, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 16))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    watch(run, model, opt)
    for step in range(100):
        xb = base[torch.randint(0, 1024, (128,), generator=gen(800 + step))]
        v1, v2 = xb + 0.3 * torch.randn_like(xb), xb * (1 + 0.1 * torch.randn_like(xb))
        z1, z2 = F.normalize(model(v1), dim=1), F.normalize(model(v2), dim=1)
        logits = z1 @ z2.T / 0.1
        loss = F.cross_entropy(logits, torch.arange(len(xb)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    if not MEASURE:
        return
    model.eval()
    with torch.no_grad():  # top-1 retrieval of each sample's other view among 256
        xb = base[:256]
        z1 = F.normalize(model(xb + 0.3 * torch.randn_like(xb)), dim=1)
        z2 = F.normalize(model(xb * (1 + 0.1 * torch.randn_like(xb))), dim=1)
        OUTCOME[name] = ((z1 @ z2.T).argmax(1) == torch.arange(256)).float().mean().item()


@healthy
def infonce_two_views_temperature(run) -> None:
    _contrastive(run, "infonce_two_views_temperature")


# ---- a model held in a ModuleDict with param groups ------------------------------------------------------------
def _moduledict(run, name: str, forget_embed: bool) -> None:
    ids, y = tokens(512, length=10, vocab=150, seed=27)
    parts = nn.ModuleDict({"embed": nn.Embedding(150, 32), "encoder": nn.GRU(32, 32, batch_first=True),
                           "head": nn.Linear(32, 2)})
    groups = [{"params": parts["encoder"].parameters(), "lr": 2e-3},
              {"params": parts["head"].parameters(), "lr": 5e-3}]
    if not forget_embed:
        groups.append({"params": parts["embed"].parameters(), "lr": 1e-2})
    opt = torch.optim.Adam(groups)
    watch(run, parts, opt)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return parts["head"](parts["encoder"](parts["embed"](batch))[0].mean(1))

    for step in range(120):
        idx = torch.randint(0, len(ids), (32,), generator=gen(900 + step))
        opt.zero_grad()
        F.cross_entropy(forward(ids[idx]), y[idx]).backward()
        opt.step()
    if not MEASURE:
        return
    with torch.no_grad():
        OUTCOME[name] = (forward(ids).argmax(1) == y).float().mean().item()


@bug("TW301")
def moduledict_param_groups_forget_embedding(run) -> None:
    """Param groups with their own rates are listed part by part from the ModuleDict; the embedding table is
    left out and stays at its random init."""
    _moduledict(run, "moduledict_param_groups_forget_embedding", forget_embed=True)


@healthy
def moduledict_param_groups_per_part_lr(run) -> None:
    _moduledict(run, "moduledict_param_groups_per_part_lr", forget_embed=False)


# ---- shapes and batches ----------------------------------------------------------------------------------------
class Forecaster(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(4, 32, batch_first=True)
        self.head = nn.Linear(32, 1)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(s)[0][:, -1])


@bug("TW152")
def forecaster_target_squeezed_prediction_not(run) -> None:
    """The dataset stores the next value as shape (N,) (``y.squeeze(1)``), the model predicts (N, 1): MSE
    broadcasts to (N, N) and the model learns the batch mean."""
    g = gen(28)
    s = torch.randn(640, 10, 4, generator=g)
    y = (s[:, :, 0].mean(1) * 2 + s[:, -1, 1]).unsqueeze(1)
    loader = DataLoader(TensorDataset(s, y.squeeze(1)), batch_size=32, shuffle=True, generator=gen(29))
    model = Forecaster()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    for _ in range(4):
        for sb, yb in loader:
            opt.zero_grad()
            F.mse_loss(model(sb), yb).backward()
            opt.step()
    if not MEASURE:
        return
    with torch.no_grad():
        OUTCOME["forecaster_target_squeezed_prediction_not"] = F.mse_loss(model(s), y).item()


def _truncate_collate(rows):
    """Crops every sequence of the batch to a random window (a cheap augmentation)."""
    ids = torch.stack([r[0] for r in rows])
    start = int(torch.randint(0, 3, (1,)))
    return ids[:, start:start + 12], torch.stack([r[1] for r in rows])


@bug("TW214")
def overfit_one_batch_debug_left_in(run) -> None:
    """``xb, yb = next(iter(loader))`` from a sanity check (overfit one batch) is left above the loop: 150 steps
    train on the same 32 sequences of a 640-sequence loader."""
    ids, y = tokens(896, length=14, vocab=200, seed=30)
    test_ids, test_y, ids, y = ids[640:, :12], y[640:], ids[:640], y[:640]
    loader = DataLoader(TensorDataset(ids, y), batch_size=32, shuffle=True, generator=gen(30),
                        collate_fn=_truncate_collate)
    model = GRUClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    watch(run, model, opt)
    xb, yb = next(iter(loader))
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    if not MEASURE:
        return
    OUTCOME["overfit_one_batch_debug_left_in"] = _acc(model, test_ids, test_y)



# ---- round 10b: subtler versions, written after the first scored run (still without reading the rules) --------
def _dropout_teacher(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    teacher = _mlp(12, 128, 4, drop=0.5)
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(teacher(x), y).backward()
        opt.step()
    return teacher.requires_grad_(False)  # frozen, but still in train mode: its dropout stays on


@bug("TW402")
def kd_teacher_left_in_train_mode(run) -> None:
    """The teacher is frozen with requires_grad_(False) but never put in eval(): its 0.5 dropout makes every soft
    target a random sub-network's guess."""
    x, y = tabular(768, seed=3)
    teacher = _dropout_teacher(x, y)
    student = _mlp(12, 24, 4)
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    watch(run, student, opt)
    for step in range(120):
        xb = x[torch.randint(0, len(x), (64,), generator=gen(step))]
        with torch.no_grad():
            soft = F.softmax(teacher(xb) / 2.0, dim=-1)
        loss = F.kl_div(F.log_softmax(student(xb) / 2.0, dim=-1), soft, reduction="batchmean") * 4.0
        opt.zero_grad()
        loss.backward()
        opt.step()
    if not MEASURE:
        return
    teacher.eval()
    with torch.no_grad():
        t = F.log_softmax(teacher(x) / 2.0, -1)
        OUTCOME["kd_teacher_left_in_train_mode"] = F.kl_div(F.log_softmax(student(x) / 2.0, -1), t,
                                                            log_target=True, reduction="batchmean").item()


@bug("TW307")
def warmup_lambda_never_capped(run) -> None:
    """A LambdaLR warm-up written ``lambda s: (s + 1) / 10`` instead of ``min(1, (s + 1) / 10)``: the rate keeps
    growing, 20x its target by step 200, and the run falls apart in its second half."""
    x, y = tabular(1024, seed=40)
    model = _mlp(12, 64, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / 10)
    watch(run, model, opt)
    for step in range(240):
        idx = torch.randint(0, 1024, (64,), generator=gen(1000 + step))
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        sched.step()
    if not MEASURE:
        return
    OUTCOME["warmup_lambda_never_capped"] = _acc(model, x, y)


@bug("TW208")
def random_split_twice_val_overlaps_train(run) -> None:
    """Train and validation sets come from two random_split calls with different generators: 80 % of the
    validation images were trained on, and the hook's validation accuracy is inflated."""
    from torch.utils.data import random_split

    x, y = images(640, seed=41)
    data = TensorDataset(x, y)
    train_set, _ = random_split(data, [0.8, 0.2], generator=gen(1))
    _, val_set = random_split(data, [0.8, 0.2], generator=gen(2))
    val = next(iter(DataLoader(val_set, batch_size=len(val_set))))
    model = CNN(dropout=0.2)
    trainer = MiniTrainer(model, torch.optim.Adam(model.parameters(), lr=3e-3), val_every=20, restore_train=True)
    trainer.fit(run, DataLoader(train_set, batch_size=32, shuffle=True, generator=gen(42)), val, steps=80)
    if not MEASURE:
        return
    overlap = len(set(train_set.indices) & set(val_set.indices)) / len(val_set)
    OUTCOME["random_split_twice_val_overlaps_train"] = overlap


@bug("TW407")
def per_sample_batchnorm_with_accumulation(run) -> None:
    """Images of different sizes go through one at a time with gradient accumulation over 16: every BatchNorm
    normalises a single image with its own statistics, and the running statistics used at eval are noise."""
    x, y = images(512, seed=43)
    model = CNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    watch(run, model, opt)
    accum = 16
    for step in range(320):
        i = int(torch.randint(0, 512, (1,), generator=gen(1100 + step)))
        crop = 12 - step % 3  # the sizes differ, so no two images stack into one batch
        loss = F.cross_entropy(model(x[i:i + 1, :, :crop, :crop]), y[i:i + 1]) / accum
        loss.backward()
        if step % accum == accum - 1:
            opt.step()
            opt.zero_grad()
    if not MEASURE:
        return
    OUTCOME["per_sample_batchnorm_with_accumulation"] = _acc(model, x, y)


class HWCDataset(torch.utils.data.Dataset):
    """Images stored height x width x channels (as decoded from PNG), turned to CHW per item."""

    def __init__(self, hwc: torch.Tensor, y: torch.Tensor, permute: bool) -> None:
        self.hwc, self.y, self.permute = hwc, y, permute

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.hwc[i]
        chw = img.permute(2, 0, 1) if self.permute else img.reshape(img.shape[2], img.shape[0], img.shape[1])
        return chw.contiguous(), self.y[i]


def _hwc_images(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = images(512, hw=16, seed=seed)
    return x.permute(0, 2, 3, 1).contiguous(), y


def loader_loop_steps(run, model: nn.Module, opt: torch.optim.Optimizer, loader: DataLoader, steps: int) -> None:
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


@healthy
def dataset_permutes_hwc_to_chw(run) -> None:
    hwc, y = _hwc_images(44)
    loader = DataLoader(HWCDataset(hwc, y, permute=True), batch_size=32, shuffle=True, generator=gen(44))
    model = CNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader_loop_steps(run, model, opt, loader, 64)
    if not MEASURE:
        return
    OUTCOME["dataset_permutes_hwc_to_chw"] = _acc(model, hwc.permute(0, 3, 1, 2), y)


def _hashed_tokens(seed: int = 45) -> tuple[torch.Tensor, torch.Tensor]:
    """A tokenizer with 1,000 ids (Zipf-distributed text) labelled by a hidden per-token score."""
    g = gen(seed)
    ids = (torch.multinomial(1.0 / torch.arange(1, 1001).float() ** 0.8, 640 * 16, replacement=True,
                             generator=g)).view(640, 16)
    score = torch.randn(1000, generator=g)[ids].mean(1)
    return ids, (score > score.median()).long()


@bug("TW212")
def token_ids_clamped_to_small_vocab(run) -> None:
    """The model's embedding table was sized for an older 256-id tokenizer; ``ids.clamp(max=255)`` silences
    the index error and every id past 255 becomes the same token."""
    ids, y = _hashed_tokens()
    model = GRUClassifier(vocab=256, dim=32)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    watch(run, model, opt)
    for step in range(120):
        idx = torch.randint(0, 640, (32,), generator=gen(1200 + step))
        opt.zero_grad()
        F.cross_entropy(model(ids[idx].clamp(max=255)), y[idx]).backward()
        opt.step()
    if not MEASURE:
        return
    OUTCOME["token_ids_clamped_to_small_vocab"] = _acc(model, ids.clamp(max=255), y)


@healthy
def token_ids_full_vocab_heavy_tail(run) -> None:
    ids, y = _hashed_tokens()
    model = GRUClassifier(vocab=1000, dim=32)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    watch(run, model, opt)
    for step in range(120):
        idx = torch.randint(0, 640, (32,), generator=gen(1200 + step))
        opt.zero_grad()
        F.cross_entropy(model(ids[idx]), y[idx]).backward()
        opt.step()
    if not MEASURE:
        return
    OUTCOME["token_ids_full_vocab_heavy_tail"] = _acc(model, ids, y)


if __name__ == "__main__":  # each scenario without the watch: the outcome and its CPU time
    import time

    from _kit import BUGGY, HEALTHY

    class _NoWatch:
        def watch(self, *args, **kwargs) -> None:
            return None

    torch.set_num_threads(1)
    MEASURE = True
    for s in BUGGY + HEALTHY:
        if s.fn.__module__ != __name__:
            continue
        torch.manual_seed(0)
        start = time.process_time()
        s.fn(_NoWatch())
        print(f"{'bug' if s.expected else 'ok '} {s.name:50s} {OUTCOME.get(s.name, float('nan')):.4f} "
              f"{time.process_time() - start:.2f}s")
