"""Two CPU ranks (gloo) accumulate halves; compute() on each rank equals one process over all rows."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from torchwitness.controls.fairness import FairnessAccumulator, GroupEncoder

ENC = GroupEncoder(categories={"sex": ("F", "M"), "race": ("a", "b", "c")})


def _data():
    rng = np.random.default_rng(5)
    return (torch.from_numpy(rng.integers(0, 2, 3000)), torch.from_numpy(rng.integers(0, 2, 3000)),
            torch.from_numpy(rng.integers(0, 6, 3000)))


def _rank(rank: int, port: int, out) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        pred, y, g = _data()
        acc = FairnessAccumulator(ENC, reps=200)
        acc.update(pred[rank::2], y[rank::2], g[rank::2])
        result = acc.compute()
        out[rank] = [d.estimate for v in result.views for d in v.disparities]
        assert int(acc.counts.sum()) == 1500  # the local state is untouched by the reduction
    finally:
        dist.destroy_process_group()


def test_two_ranks_reduce_to_the_single_process_result():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.get_context("fork").Manager().dict()
    # fork, not spawn: the ranks inherit the imported torch instead of paying for a fresh interpreter each
    mp.start_processes(_rank, args=(port, out), nprocs=2, join=True, start_method="fork")
    pred, y, g = _data()
    acc = FairnessAccumulator(ENC, reps=200)
    acc.update(pred, y, g)
    expected = [d.estimate for v in acc.compute().views for d in v.disparities]
    assert out[0] == out[1] == expected
