"""The loss taps are process-wide: a loss another thread computes while an audited step is open is not the
step's loss, and must neither be judged nor break the watch."""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

import torchwitness as tw


def test_a_loss_computed_in_another_thread_is_left_alone(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe, labels = torch.randn(64, 5), torch.zeros(64, dtype=torch.long)  # a metric over another head's logits
    stop, calls = threading.Event(), [0]

    def metric() -> None:
        while not stop.is_set():
            F.cross_entropy(probe, labels)
            calls[0] += 1

    with tw.Run(tmp_path / "r") as run:
        watch = run.watch(model, opt, every_n_steps=1, first_steps=0)
        worker = threading.Thread(target=metric)
        worker.start()
        try:
            for _ in range(40):
                x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
        finally:
            stop.set()
            worker.join()
        assert calls[0] > 0
        assert not watch.errors
        found = {f.rule_id for f in run.findings()}
    assert not found & {"TW210", "TW150", "TW151", "TW152"}  # nothing judged from the other thread's loss
