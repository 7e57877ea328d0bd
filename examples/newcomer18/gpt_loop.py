"""A tiny GPT-style causal language model on Tiny Shakespeare (characters), trained in a plain loop under
run.watch, with the functional loss (F.cross_entropy) the docs say is seen without loss_fn=.

    python examples/newcomer18/gpt_loop.py [--steps 120] [--bug no_causal_mask] [--run runs/gpt]

The bug: the attention mask is left out, so each position sees the character it must predict.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import torchwitness as tw

TEXT = Path("/work/shared/data/tinyshakespeare/input.txt")


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, causal: bool = True) -> None:
        super().__init__()
        self.causal = causal
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=0.1, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool, device=x.device), diagonal=1) if self.causal else None
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    def __init__(
        self, vocab: int, context: int = 64, dim: int = 64, layers: int = 2, heads: int = 4, causal: bool = True
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(context, dim)
        self.blocks = nn.Sequential(*(Block(dim, heads, causal) for _ in range(layers)))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.tok.weight  # tied embeddings, as in GPT-2

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        return self.head(self.ln(self.blocks(x)))


def main(
    run_dir: str | Path, steps: int = 120, seed: int = 0, context: int = 64, batch: int = 32, bug: str | None = None
):
    torch.manual_seed(seed)
    text = TEXT.read_text()[:200_000]
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text], dtype=torch.long)
    split = int(0.9 * len(data))
    train, val = data[:split], data[split:]
    model = TinyGPT(len(chars), context, causal=bug != "no_causal_mask")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "tok" not in n and "pos" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "tok" not in n and "pos" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=3e-3, betas=(0.9, 0.95)
    )

    def sample(source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, len(source) - context - 1, (batch,))
        x = torch.stack([source[s : s + context] for s in starts])
        y = torch.stack([source[s + 1 : s + context + 1] for s in starts])
        return x, y

    with tw.Run(run_dir) as run:
        run.log_params({"lr": 3e-3, "steps": steps, "context": context, "batch": batch, "vocab": len(chars)})
        run.watch(model, opt)
        for step in range(steps):
            x, y = sample(train)
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step % 40 == 39:
                model.eval()
                with torch.no_grad():
                    vx, vy = sample(val)
                    vl = model(vx)
                    val_loss = F.cross_entropy(vl.reshape(-1, vl.shape[-1]), vy.reshape(-1))
                model.train()
                run.log_metrics({"train_loss": loss.detach(), "val_loss": val_loss}, step=step)
        signer = run.ledger.public_key.fingerprint
    return run, signer


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--bug", choices=("no_causal_mask",))
    parser.add_argument("--run", default=None)
    args = parser.parse_args()
    run, signer = main(args.run or Path(tempfile.mkdtemp()) / "run", args.steps, bug=args.bug)
    for f in run.findings():
        print(
            f.rule_id, f.severity.name, f.first_step, f.location, f.message, "->", [c.rule_id for c in f.consequences]
        )
    print("signer:", signer)
