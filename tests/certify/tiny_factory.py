"""A ``--factory`` for the CLI tests: the tiny GPT-2 architecture and the Tiny Shakespeare char tokenizer."""

from __future__ import annotations

from conftest import SHAKESPEARE, tiny_gpt2
from torchwitness.certify.windows import CharTokenizer


def build():
    tokenizer = CharTokenizer(SHAKESPEARE.read_text())
    return tiny_gpt2(len(tokenizer.vocabulary)), tokenizer
