"""A masked LM's [MASK] id on the table's last row is no pile of clamped ids; the same pile under a causal LM's
targets (every position counts) still is. A GRU over BERT-style 80/10/10 masking here, unlike the trial's
bag-of-embeddings model with plain masking."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchwitness as tw

SAMPLING = ({"every_n_steps": 1, "first_steps": 0}, {})
VOCAB = 61  # ids 0-59 are text, 60 is [MASK] (or, in the twin, where ids past the table are clamped)


class _Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.rnn, self.head = nn.Embedding(VOCAB, 24), nn.GRU(24, 32, batch_first=True), nn.Linear(32, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.emb(ids))[0])


def _run(tmp_path, watch: dict, *, masked_lm: bool) -> set[str]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    text = torch.randint(0, 80, (640, 24), generator=g)  # a tokenizer of 80 ids
    model = _Tagger()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with tw.Run(tmp_path / "run") as run:
        run.watch(model, opt, **watch)
        for step in range(40):
            xb = text[step * 16 % 640:][:16] % 60  # the text's ids fit the table
            if masked_lm:
                chosen = torch.rand(xb.shape, generator=g) < 0.15
                roll = torch.rand(xb.shape, generator=g)
                inp = torch.where(chosen & (roll < 0.8), torch.full_like(xb, VOCAB - 1), xb)
                inp = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), torch.randint_like(xb, 0, 60), inp)
                out, target = model(inp), xb.masked_fill(~chosen, -100)
            else:  # a causal LM over ids clamped into the table: a pile on its last row, every target counts
                ids = text[step * 16 % 640:][:16].clamp(max=VOCAB - 1)
                out, target = model(ids[:, :-1]), ids[:, 1:]
            opt.zero_grad()
            nn.functional.cross_entropy(out.reshape(-1, VOCAB), target.reshape(-1)).backward()
            opt.step()
    return {f.rule_id for f in run.findings()}


@pytest.mark.parametrize("watch", SAMPLING)
def test_mask_token_on_the_last_row_is_not_a_pile(tmp_path, watch):
    assert "TW212" not in _run(tmp_path, watch, masked_lm=True)


@pytest.mark.parametrize("watch", SAMPLING)
def test_ids_clamped_onto_the_last_row_are_still_a_pile(tmp_path, watch):
    assert "TW212" in _run(tmp_path, watch, masked_lm=False)
