"""Round 16's third batch of healthy but unusual loops (written after the second batch's scored run): pruning
masks and quantization-aware training, masked-language-model and seq2seq transformers, domain-adversarial
training with gradient reversal, episodic prototypical networks, the less common torch optimizers, GPT-style
decay groups, token classification with ignored labels and a custom parametrization. Same contract as
``scenarios_healthy16``; ``python tests/scenarios/scenarios_healthy16c.py`` checks each loop learns, bare.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _blindkit import batches, gen, mlp, tabular
from _kit import healthy
from scenarios_healthy16 import Outcome, _acc, _out, _plain, _tab, _watch, report_bare
from torch import nn
from torch.nn.utils import parametrize, prune

KNOWN_MISSES: dict = {}  # the first run's two (TW402 on models whose only dropouts have p=0) were fixed


@healthy
def unstructured_magnitude_pruning_then_finetune(run) -> Outcome:
    """Half of each weight matrix's smallest weights masked out (``prune.l1_unstructured``) after 30 steps."""
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 64, 4, depth=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for i, (xb, yb) in enumerate(batches(xtr, ytr, 70, 32)):
        if i == 30:
            for layer in (model[0], model[2]):
                prune.l1_unstructured(layer, "weight", amount=0.5)
            # the pruned tensor stays the optimizer's (renamed weight_orig); weight is recomputed with the mask
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def quantization_aware_training_fake_quant(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = nn.Sequential(torch.ao.quantization.QuantStub(), nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 4),
                          torch.ao.quantization.DeQuantStub())
    model.qconfig = torch.ao.quantization.get_default_qat_qconfig("fbgemm")
    torch.ao.quantization.prepare_qat(model, inplace=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = _plain(run, model, opt, xtr, ytr)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


class _MLM(nn.Module):
    def __init__(self, vocab: int = 40) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 32)
        self.pos = nn.Parameter(torch.randn(1, 16, 32) * 0.02)
        layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.lm_head = nn.Linear(32, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.encoder(self.emb(ids) + self.pos[:, :ids.shape[1]]))


def _repeating(n: int, g: torch.Generator, vocab: int = 40) -> torch.Tensor:
    """Sequences of a 4-token motif repeated four times (ids 2..vocab-1; 0 is padding, 1 is [MASK])."""
    motif = torch.randint(2, vocab, (n, 4), generator=g)
    return motif.repeat(1, 4)


def _mask_80_10_10(ids: torch.Tensor, g: torch.Generator, vocab: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    chosen = torch.rand(ids.shape, generator=g) < 0.15
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=g)
    inputs = torch.where(chosen & (roll < 0.8), torch.ones_like(ids), ids)
    random_ids = torch.randint(2, vocab, ids.shape, generator=g)
    inputs = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, labels


@healthy
def masked_language_model_80_10_10(run) -> Outcome:
    """BERT-style: bidirectional attention (no causal mask, on purpose), 15 % of positions predicted."""
    g = gen(60)
    model = _MLM()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.01)
    _watch(run, model, opt)
    losses = []
    for _ in range(100):
        inputs, labels = _mask_80_10_10(_repeating(32, g), g)
        loss = F.cross_entropy(model(inputs).reshape(-1, 40), labels.reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    inputs, labels = _mask_80_10_10(_repeating(64, gen(61)), gen(62))
    with torch.no_grad():
        pred = model(inputs).argmax(-1)
    keep = labels != -100
    return _out(losses, [model], (pred[keep] == labels[keep]).float().mean(), 1 / 38)


class _Seq2Seq(nn.Module):
    """Reverses a sequence: encoder without a mask (it sees the whole source), causal decoder, teacher forcing."""

    def __init__(self, vocab: int = 20) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 32)
        self.pos = nn.Parameter(torch.randn(1, 12, 32) * 0.02)
        self.core = nn.Transformer(32, 4, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=64,
                                   dropout=0.0, batch_first=True)
        self.out = nn.Linear(32, vocab)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1])
        h = self.core(self.emb(src) + self.pos[:, :src.shape[1]], self.emb(tgt_in) + self.pos[:, :tgt_in.shape[1]],
                      tgt_mask=causal, tgt_is_causal=True)
        return self.out(h)


@healthy
def seq2seq_transformer_teacher_forcing(run) -> Outcome:
    g = gen(63)
    model = _Seq2Seq()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    _watch(run, model, opt)
    losses, bos = [], 1
    for _ in range(100):
        src = torch.randint(2, 20, (32, 8), generator=g)
        tgt = src.flip(1)
        tgt_in = torch.cat([torch.full((32, 1), bos), tgt[:, :-1]], 1)
        loss = F.cross_entropy(model(src, tgt_in).reshape(-1, 20), tgt.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    src = torch.randint(2, 20, (64, 8), generator=gen(64))
    tgt = src.flip(1)
    with torch.no_grad():
        pred = model(src, torch.cat([torch.full((64, 1), bos), tgt[:, :-1]], 1)).argmax(-1)
    return _out(losses, [model], (pred == tgt).float().mean(), 1 / 18)


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lam * g, None


class _DANN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(12, 32), nn.ReLU())
        self.label = nn.Linear(32, 4)
        self.domain = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor, lam: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.label(f), self.domain(_Reverse.apply(f, lam))


@healthy
def domain_adversarial_gradient_reversal(run) -> Outcome:
    """DANN: labelled source rows, unlabelled target rows shifted by an offset, a domain head behind a reversal."""
    x, y = tabular(1280, 12, 4, seed=65)
    xs, ys = x[:640], y[:640]
    xt, yt = x[640:] + torch.randn(12, generator=gen(66)) * 0.8, y[640:]  # another domain, same labelling rule
    model = _DANN()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    _watch(run, model, opt)
    g, losses = gen(67), []
    for _ in range(80):
        si = torch.randint(0, len(xs), (32,), generator=g)
        ti = torch.randint(64, len(xt), (32,), generator=g)
        logits, dom_s = model(xs[si])
        _, dom_t = model(xt[ti])
        ce = F.cross_entropy(logits, ys[si])
        dom = F.cross_entropy(torch.cat([dom_s, dom_t]), torch.cat([torch.zeros(32), torch.ones(32)]).long())
        opt.zero_grad()
        (ce + dom).backward()
        opt.step()
        losses.append(ce.detach())
    model.eval()
    with torch.no_grad():
        acc = (model(xt[:64])[0].argmax(1) == yt[:64]).float().mean()
    return _out(losses, [model], acc, 0.25)


@healthy
def prototypical_network_episodes(run) -> Outcome:
    """Few-shot episodes: 4 of 10 classes drawn each step, labels 0..3 re-assigned per episode."""
    g = gen(68)
    centres = torch.randn(10, 16, generator=g) * 0.4
    encoder = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))
    opt = torch.optim.Adam(encoder.parameters(), lr=3e-3)
    _watch(run, encoder, opt)

    def episode(classes_from: int, classes_to: int, gen_: torch.Generator) -> tuple:
        cls = classes_from + torch.randperm(classes_to - classes_from, generator=gen_)[:4]
        pts = centres[cls].repeat_interleave(10, 0) + torch.randn(40, 16, generator=gen_)
        label = torch.arange(4).repeat_interleave(10)
        support = torch.cat([torch.arange(i * 10, i * 10 + 5) for i in range(4)])
        query = torch.cat([torch.arange(i * 10 + 5, i * 10 + 10) for i in range(4)])
        return pts, label, support, query

    def logits_of(pts, support, query) -> torch.Tensor:
        z = encoder(pts)
        protos = z[support].view(4, 5, -1).mean(1)
        return -torch.cdist(z[query], protos) ** 2

    losses = []
    for _ in range(80):
        pts, label, support, query = episode(0, 7, g)
        loss = F.cross_entropy(logits_of(pts, support, query), label[query])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    with torch.no_grad():  # three held-out classes never trained on (+1 seen, to make 4)
        hits = []
        for i in range(10):
            pts, label, support, query = episode(6, 10, gen(200 + i))
            hits.append((logits_of(pts, support, query).argmax(1) == label[query]).float().mean())
    return _out(losses, [encoder], sum(hits) / len(hits), 0.25)


@healthy
def rprop_full_batch(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    opt = torch.optim.Rprop(model.parameters(), lr=0.01)
    _watch(run, model, opt)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = F.cross_entropy(model(xtr), ytr)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def adadelta_default_rate(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    losses = _plain(run, model, torch.optim.Adadelta(model.parameters()), xtr, ytr, steps=80)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def radam_decoupled_decay(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    opt = torch.optim.RAdam(model.parameters(), lr=3e-2, weight_decay=1e-2, decoupled_weight_decay=True)
    losses = _plain(run, model, opt, xtr, ytr)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def asgd_averaged(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    losses = _plain(run, model, torch.optim.ASGD(model.parameters(), lr=0.1, t0=20), xtr, ytr)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def adafactor_transformer_style(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4)
    losses = _plain(run, model, torch.optim.Adafactor(model.parameters(), lr=3e-2), xtr, ytr)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


@healthy
def nadam_adamax_param_groups(run) -> Outcome:
    """Two optimizers of rarer kinds over two halves of one model, both stepped every step."""
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4, depth=3)
    opt = torch.optim.NAdam(model[:2].parameters(), lr=1e-2)
    other = torch.optim.Adamax(model[2:].parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(xtr, ytr, 60, 32):
        opt.zero_grad()
        other.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        other.step()
        losses.append(loss.detach())
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(32)
        self.ff = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ff(self.ln(x))


@healthy
def gpt_style_decay_groups(run) -> Outcome:
    """AdamW at weight decay 0.1 on matrices only; biases, norms and embeddings in a no-decay group."""
    xtr, ytr, xv, yv = _tab()
    model = nn.Sequential(nn.Linear(12, 32), _Block(), _Block(), nn.LayerNorm(32), nn.Linear(32, 4))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-3, betas=(0.9, 0.95))
    losses = _plain(run, model, opt, xtr, ytr)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


class _Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 24, padding_idx=0)
        self.rnn = nn.GRU(24, 24, batch_first=True, bidirectional=True)
        self.tag = nn.Linear(48, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.tag(self.rnn(self.emb(ids))[0])


def _tagged(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Token tags from the token and its left neighbour; padded positions labelled -100."""
    lengths = torch.randint(5, 15, (n,), generator=g)
    ids = torch.randint(1, 30, (n, 14), generator=g)
    pad = torch.arange(14)[None] >= lengths[:, None]
    ids[pad] = 0
    left = torch.cat([torch.zeros(n, 1, dtype=torch.long), ids[:, :-1]], 1)
    tags = ((ids % 3) + (left > 15).long()) % 3
    return ids, tags.masked_fill(pad, -100)


@healthy
def token_classification_ignore_index(run) -> Outcome:
    g = gen(69)
    ids, tags = _tagged(448, g)
    model = _Tagger()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _watch(run, model, opt)
    losses = []
    for xb, yb in batches(ids[64:], tags[64:], 60, 32):
        loss = F.cross_entropy(model(xb).reshape(-1, 3), yb.reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    with torch.no_grad():
        pred = model(ids[:64]).argmax(-1)
    keep = tags[:64] != -100
    return _out(losses, [model], (pred[keep] == tags[:64][keep]).float().mean(), 0.34)


class _Symmetric(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w.triu() + w.triu(1).T


@healthy
def custom_symmetric_parametrization(run) -> Outcome:
    xtr, ytr, xv, yv = _tab()
    model = mlp(12, 32, 4, depth=3)
    parametrize.register_parametrization(model[2], "weight", _Symmetric())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = _plain(run, model, opt, xtr, ytr)
    return _out(losses, [model], _acc(model, xv, yv), 0.25)


if __name__ == "__main__":
    report_bare(__name__)
