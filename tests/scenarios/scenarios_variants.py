"""The same bug classes in other settings: CNNs, recurrent, transformer and EmbeddingBag models, BCE/NLL/L1
losses, RMSprop and Adagrad, DataLoader loops and functional losses."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import pytest
import torch
from _kit import WATCH, blobs, bug, healthy, mlp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchwitness as tw


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised 3x10x10 images; label: is channel 0 brighter than channel 1."""
    x = torch.rand(n, 3, 10, 10, generator=_gen(0))
    return (x - 0.5) / 0.29, (x[:, 0].mean((1, 2)) > x[:, 1].mean((1, 2))).long()


def _tokens(n: int = 512, vocab: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """12 token ids in [1, vocab), 0 being padding; label: are most of them from the lower half of the vocabulary."""
    ids = torch.randint(1, vocab, (n, 12), generator=_gen(0))
    return ids, ((ids < vocab // 2).sum(1) > 6).long()


def _series(n: int = 256, t: int = 16, f: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T, F) sequences; target: the first feature summed over time, at unit variance."""
    x = torch.randn(n, t, f, generator=_gen(0))
    return x, x[..., 0].sum(1) / math.sqrt(t)


def _loader(x: torch.Tensor, y: torch.Tensor, batch: int = 32, seed: int = 0) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, generator=_gen(seed))


def _fit_loader(run: tw.Run, model: nn.Module, opt: torch.optim.Optimizer, loss_fn: Callable[..., torch.Tensor],
                x: torch.Tensor, y: torch.Tensor, *, batch: int = 32, epochs: int = 1,
                steps: int | None = None) -> None:
    """The DataLoader loop, reshuffled each epoch, stopping after ``steps`` steps when given. A functional loss is
    not handed to the watch, as a loop calling one would not."""
    run.watch(model, opt, loss_fn=loss_fn if isinstance(loss_fn, nn.Module) else None, **WATCH)
    step = 0
    for epoch in range(epochs):
        model.train()
        for xb, yb in _loader(x, y, batch, seed=epoch):
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
            step += 1
            if step == steps:
                return


def _small_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


class _ResBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ff(self.norm(x))


class _LastStep(nn.Module):
    """A recurrent layer read at its last time step, then a head."""

    def __init__(self, rnn: nn.RNNBase, head: nn.Module) -> None:
        super().__init__()
        self.rnn, self.head = rnn, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


class _LSTMClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(40, 16, padding_idx=0)
        self.lstm = nn.LSTM(16, 24, batch_first=True)
        self.head = nn.Linear(24, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(self.embed(ids))
        return self.head(h[-1])


class _TinyEncoder(nn.Module):
    def __init__(self, c: int = 2, per_token: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(40, 32)
        self.pos = nn.Parameter(torch.randn(1, 16, 32) * 0.02)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, c)
        self.per_token = per_token

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.enc(self.embed(ids) + self.pos[:, :ids.shape[1]]))
        return self.head(h if self.per_token else h.mean(1))


def _rmsle(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(nn.functional.mse_loss(torch.log1p(pred.clamp(min=0)), torch.log1p(target)))


@bug("TW101")
def lstm_rmsle_on_standardised_targets(run: tw.Run) -> None:
    """RMSLE on standardised targets: log1p of a target below -1 is NaN."""
    x, y = _series()
    model = _LastStep(nn.LSTM(1, 16, batch_first=True), nn.Linear(16, 1))
    _fit_loader(run, model, torch.optim.Adam(model.parameters(), 1e-3), _rmsle, x, y.unsqueeze(1))


class _EmbedClassifier(nn.Module):
    """Class scores and the embedding they come from, for a loss that also shapes the embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.head = mlp(10, 32, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embed(x)
        return self.head(e), e


@bug("TW102")
def pairwise_distance_sqrt_at_zero(run: tw.Run) -> None:
    """A spread regulariser takes sqrt of each embedding's zero distance to itself, whose gradient is NaN."""
    x, y = blobs()
    model = _EmbedClassifier()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    run.watch(model, opt, **WATCH)
    for xb, yb in _loader(x, y):
        opt.zero_grad()
        logits, e = model(xb)
        dist = ((e[:, None] - e[None]) ** 2).sum(-1).sqrt()
        (nn.functional.cross_entropy(logits, yb) - 0.01 * dist.mean()).backward()
        opt.step()


@bug("TW103")
def relu_rnn_identity_init_too_large(run: tw.Run) -> None:
    x, y = _series(128, t=30, f=4)
    rnn = nn.RNN(4, 32, nonlinearity="relu", batch_first=True)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(torch.eye(32) * 1.6)  # identity init at the wrong scale: the state grows each step
    model = _LastStep(rnn, nn.Linear(32, 1))
    _fit_loader(run, model, torch.optim.SGD(model.parameters(), 1e-6), nn.MSELoss(), x, y.unsqueeze(1), steps=4)


@bug("TW104")
def deep_tanh_with_transformer_init(run: tw.Run) -> None:
    """BERT's N(0, 0.02) init on a 13-layer tanh MLP: the signal shrinks to nothing layer by layer."""
    x, y = blobs(c=2)
    model = mlp(10, 64, 1, act=nn.Tanh, depth=13)
    for linear in model[::2]:
        nn.init.normal_(linear.weight, std=0.02)
        nn.init.zeros_(linear.bias)
    _fit_loader(run, model, torch.optim.RMSprop(model.parameters(), 1e-3), nn.BCEWithLogitsLoss(), x,
                y.float().unsqueeze(1), steps=6)


class _ExpAttentionGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 16, batch_first=True)
        self.score = nn.Linear(16, 1)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(x)
        w = torch.exp(self.score(h) / 1e-3)  # a sharp softmax written by hand, without subtracting the max
        return self.head((w / w.sum(1, keepdim=True) * h).sum(1))


@bug("TW105")
def gru_attention_softmax_by_hand_overflows(run: tw.Run) -> None:
    x, _ = _series(128, f=4)
    y = torch.randint(0, 3, (128,), generator=_gen(2))
    model = _ExpAttentionGRU()
    _fit_loader(run, model, torch.optim.Adam(model.parameters(), 1e-3), nn.CrossEntropyLoss(), x, y, steps=3)


@bug("TW109")
def embedding_bag_labels_shuffled(run: tw.Run) -> None:
    ids, _ = _tokens(1024, vocab=50)
    y = ((ids % 4) == 0).sum(1) % 4
    y = y[torch.randperm(len(y), generator=_gen(5))]  # labels re-ordered apart from the texts
    model = nn.Sequential(nn.EmbeddingBag(50, 16, mode="mean"), nn.Linear(16, 4))
    _fit_loader(run, model, torch.optim.Adagrad(model.parameters(), 0.05), nn.functional.cross_entropy, ids, y,
                epochs=3, steps=80)


class _RoundedCounts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), mlp(16, 32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(nn.functional.softplus(self.net(x)))  # whole counts, but round's gradient is 0


@bug("TW111")
def rounded_count_predictions(run: tw.Run) -> None:
    x, y = _series(t=8, f=2)
    model = _RoundedCounts()
    _fit_loader(run, model, torch.optim.Adam(model.parameters(), 1e-3), nn.MSELoss(), x,
                (y.abs() * 3).round().unsqueeze(1), steps=12)


class _SoftmaxEncoder(_TinyEncoder):
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids).softmax(-1)  # probabilities, which CrossEntropyLoss softmaxes again


@bug("TW150")
def transformer_softmax_into_ce_with_label_smoothing(run: tw.Run) -> None:
    ids, y = _tokens(256)
    model = _SoftmaxEncoder()
    _fit_loader(run, model, torch.optim.AdamW(model.parameters(), 1e-3), nn.CrossEntropyLoss(label_smoothing=0.1),
                ids, y, batch=16, steps=5)


class _GRUTagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(40, 16)
        self.gru = nn.GRU(16, 24, batch_first=True)
        self.out = nn.Linear(24, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.gru(self.embed(ids))[0]).transpose(1, 2)  # (B, C, T), as the per-token losses take it


@bug("TW151")
def gru_tagger_nll_on_raw_logits(run: tw.Run) -> None:
    """Per-token NLLLoss on (B, C, T) scores without the log_softmax it expects."""
    ids, _ = _tokens(256)
    model = _GRUTagger()
    _fit_loader(run, model, torch.optim.Adam(model.parameters(), 1e-3), nn.NLLLoss(), ids, ids % 5)


@bug("TW152")
def l1_squeezed_output_vs_column_target(run: tw.Run) -> None:
    """(B,) predictions against a (B, 1) target column: L1Loss broadcasts them to (B, B)."""
    x, y = _series(t=8, f=2)
    model = nn.Sequential(nn.Flatten(), mlp(16, 32, 1), nn.Flatten(0))
    _fit_loader(run, model, torch.optim.Adam(model.parameters(), 1e-3), nn.L1Loss(), x, y.unsqueeze(1))


@bug("TW153")
def multilabel_bce_with_count_targets(run: tw.Run) -> None:
    x, _ = blobs(d=12)
    y = (x[:, :4] > 0).float() + (x[:, :4] > 1).float()  # tag counts 0/1/2 where presence 0/1 was meant
    model = mlp(12, 32, 4)
    _fit_loader(run, model, torch.optim.RMSprop(model.parameters(), 1e-3),
                nn.functional.binary_cross_entropy_with_logits, x, y, batch=64)


@bug("TW210")
def rare_classes_nll_with_log_softmax(run: tw.Run) -> None:
    g = _gen(3)
    x = torch.randn(2000, 10, generator=g)
    y = torch.multinomial(torch.tensor([0.96, 0.01, 0.01, 0.01, 0.01]), 2000, replacement=True, generator=g)
    model = nn.Sequential(mlp(10, 32, 5), nn.LogSoftmax(-1))
    _fit_loader(run, model, torch.optim.SGD(model.parameters(), 0.05, momentum=0.9), nn.NLLLoss(), x, y, batch=64,
                steps=10)


@bug("TW211")
def padding_id_minus_one(run: tw.Run) -> None:
    ids, y = _tokens(128)
    ids[:, -3:] = -1  # a tokenizer that pads with -1
    model = _LSTMClassifier()
    with pytest.raises(IndexError):
        _fit_loader(run, model, torch.optim.Adam(model.parameters(), 1e-3), nn.CrossEntropyLoss(), ids, y, steps=3)


@bug("TW301")
def param_generator_consumed_by_logging(run: tw.Run) -> None:
    ids, y = _tokens(256)
    model = _LSTMClassifier()
    backbone = (p for n, p in model.named_parameters() if not n.startswith("head"))
    logging.getLogger(__name__).info("backbone parameters: %d", sum(p.numel() for p in backbone))  # exhausts it
    opt = torch.optim.Adam([{"params": list(backbone), "lr": 1e-4}, {"params": model.head.parameters(), "lr": 1e-3}])
    _fit_loader(run, model, opt, nn.CrossEntropyLoss(), ids, y, steps=5)


@bug("TW303")
def adamw_decays_layernorm_and_embeddings(run: tw.Run) -> None:
    """One AdamW group decays everything, LayerNorm scales, biases and the embedding table included."""
    ids, y = _tokens(256)
    model = _TinyEncoder()
    _fit_loader(run, model, torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.1), nn.CrossEntropyLoss(),
                ids, y, batch=16, steps=3)


@bug("TW304")
def grad_accumulation_never_resets(run: tw.Run) -> None:
    x, y = blobs()
    model = nn.Sequential(nn.Linear(10, 32), _ResBlock(32), _ResBlock(32), nn.LayerNorm(32), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), 0.02, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    run.watch(model, opt, loss_fn=crit, **WATCH)
    opt.zero_grad()
    for i, (xb, yb) in enumerate(_loader(x, y, 8)):
        (crit(model(xb), yb) / 4).backward()
        if i % 4 == 3:
            opt.step()  # the opt.zero_grad() that followed was lost in a refactor
        if i == 31:
            break


def _evaluate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x).argmax(1)


@bug("TW401")
def cnn_evaluate_helper_leaves_eval_mode(run: tw.Run) -> None:
    x, y = _images(192)
    model = nn.Sequential(_small_cnn()[:-1], nn.Dropout(0.3), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    run.watch(model, opt, loss_fn=crit, **WATCH)
    model.train()  # once, before the first epoch only
    for epoch in range(2):
        for xb, yb in _loader(x[:128], y[:128], 16, seed=epoch):
            opt.zero_grad()
            crit(model(xb), yb).backward()
            opt.step()
        _evaluate(model, x[128:])


@bug("TW407")
def batchnorm2d_batch_of_one(run: tw.Run) -> None:
    x, y = _images(32)
    model = _small_cnn()
    _fit_loader(run, model, torch.optim.SGD(model.parameters(), 0.01), nn.CrossEntropyLoss(), x, y, batch=1, steps=6)


@healthy
def lstm_right_padding_no_decay_groups_clipped(run: tw.Run) -> None:
    """Right-padded sequences (padding_idx 0), no weight decay on biases and the embedding, clipped gradients."""
    ids, y = _tokens()
    lengths = torch.randint(6, 13, (512,), generator=_gen(7))
    ids = ids.masked_fill(torch.arange(12) >= lengths[:, None], 0)
    model = _LSTMClassifier()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and not n.startswith("embed")]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2 or n.startswith("embed")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}], 1e-2)
    crit = nn.CrossEntropyLoss()
    run.watch(model, opt, loss_fn=crit, **WATCH)
    for epoch in range(3):
        for xb, yb in _loader(ids, y, seed=epoch):
            opt.zero_grad()
            crit(model(xb), yb).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()


@healthy
def transformer_tagger_with_warmup(run: tw.Run) -> None:
    """Per-token cross-entropy over (B, C, T) scores and (B, T) tags, a linear warm-up, clipping, eval each epoch."""
    ids, _ = _tokens(256)
    tags = (ids >= 20).long() + (ids % 2 == 0).long()
    model = _TinyEncoder(c=3, per_token=True)
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 5))
    crit = nn.CrossEntropyLoss()
    run.watch(model, opt, loss_fn=crit, **WATCH)
    for epoch in range(2):
        model.train()
        for xb, yb in _loader(ids, tags, seed=epoch):
            opt.zero_grad()
            crit(model(xb).transpose(1, 2), yb).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
        _evaluate(model, ids[:8])


@healthy
def gru_sigmoid_with_bce_loss(run: tw.Run) -> None:
    """Sigmoid outputs into BCELoss, which takes probabilities: not TW150."""
    x, y = _series(t=12, f=3)
    model = _LastStep(nn.GRU(3, 16, batch_first=True), nn.Sequential(nn.Linear(16, 1), nn.Sigmoid()))
    _fit_loader(run, model, torch.optim.Adam(model.parameters(), 1e-2), nn.BCELoss(), x,
                (y > 0).float().unsqueeze(1), epochs=3)


@healthy
def embedding_bag_sgd_nesterov(run: tw.Run) -> None:
    ids, y = _tokens(1024, vocab=50)
    model = nn.Sequential(nn.EmbeddingBag(50, 16, mode="mean", padding_idx=0), nn.Linear(16, 2))
    _fit_loader(run, model, torch.optim.SGD(model.parameters(), 0.5, momentum=0.9, nesterov=True),
                nn.CrossEntropyLoss(), ids, y, epochs=2)


def _nll_of_log_softmax(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.nll_loss(nn.functional.log_softmax(logits, dim=-1), target)


@healthy
def conv1d_functional_nll_adagrad(run: tw.Run) -> None:
    """NLL over an explicit log_softmax inside a functional loss: log-probabilities, not TW151."""
    x, y = _series(384, t=24, f=2)
    model = nn.Sequential(nn.Conv1d(2, 16, 5, padding=2), nn.ReLU(), nn.Conv1d(16, 16, 5, padding=2), nn.ReLU(),
                          nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, 3))
    _fit_loader(run, model, torch.optim.Adagrad(model.parameters(), 0.05), _nll_of_log_softmax, x.transpose(1, 2),
                torch.bucketize(y, torch.tensor([-0.5, 0.5])), epochs=2)
