"""The tiny GPT-2 architecture and the Tiny Shakespeare text, and a ``--factory`` for the CLI tests."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from torchwitness.certify.windows import CharTokenizer

# ../shared/data beside the repository, as the root conftest's ``shared_data``; a session fixture cannot use that
# function-scoped fixture, and TORCHWITNESS_SHARED_DATA points elsewhere (e.g. from a git worktree).
DATA = Path(os.environ.get("TORCHWITNESS_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
SHAKESPEARE = DATA / "tinyshakespeare" / "input.txt"


def tiny_gpt2(vocab: int) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab, n_positions=128, n_embd=64, n_layer=2, n_head=4, n_inner=256,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                     eos_token_id=0)
    return GPT2LMHeadModel(cfg)


def build():
    tokenizer = CharTokenizer(SHAKESPEARE.read_text())
    return tiny_gpt2(len(tokenizer.vocabulary)), tokenizer
