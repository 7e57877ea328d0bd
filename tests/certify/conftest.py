"""A tiny GPT-2 trained for a few seconds on Tiny Shakespeare (char-level), shared by the whole session."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_factory import SHAKESPEARE, tiny_gpt2

from torchwitness.certify.windows import CharTokenizer


@dataclass
class TinyLM:
    model: torch.nn.Module
    tokenizer: CharTokenizer
    train: np.ndarray  # token stream the model was trained on
    held_out: np.ndarray  # token stream for certification
    text_path: Path
    seconds: float

    def copy(self) -> torch.nn.Module:
        return copy.deepcopy(self.model)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tiny models run 10x faster on one thread than on two contended ones (CI runs two workers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_lm() -> TinyLM:
    if not SHAKESPEARE.is_file():
        pytest.skip(f"Tiny Shakespeare not found at {SHAKESPEARE}")
    text = SHAKESPEARE.read_text()
    tok = CharTokenizer(text)
    stream = np.asarray(tok.encode(text), dtype=np.int64)
    split = int(len(stream) * 0.9)
    train, held = stream[:split], stream[split:]
    torch.manual_seed(0)
    model = tiny_gpt2(len(tok.vocabulary))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures are set up before the module-scoped _one_thread
    model.train()
    for _ in range(80):
        idx = rng.integers(0, len(train) - 65, 16)
        batch = torch.from_numpy(train[idx[:, None] + np.arange(65)])
        logits = model(batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    torch.set_num_threads(threads)
    return TinyLM(model, tok, train, held, SHAKESPEARE, time.perf_counter() - start)
