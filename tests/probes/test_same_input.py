"""SameInput (TW214 and the sentinels' skip of an unchanged input) tells the very same tensor from a new batch
that the allocator placed where the freed previous one was."""

from __future__ import annotations

import torch

from torchwitness.probes.inrange import SameInput


def test_a_new_batch_in_the_freed_batch_memory_is_not_the_same_input():
    seen = SameInput()
    ptrs, same = set(), []
    for step in range(40):
        x = torch.randn(32, 16)  # the previous x is freed first: its block is often handed out again
        ptrs.add(x.data_ptr())
        same.append(seen.see(step, x))
        del x
    assert len(ptrs) < 40  # the allocator did reuse memory, so pointer, version and shape alone would match
    assert not any(same)


def test_the_same_tensor_or_the_same_slice_of_a_kept_tensor_is_the_same_input():
    data = torch.randn(512, 16)
    held, seen = data[:64], SameInput()
    assert [seen.see(s, held) for s in range(5)] == [False, True, True, True, True]
    sliced = SameInput()
    assert [sliced.see(s, data[:64]) for s in range(5)] == [False, True, True, True, True]  # a new view each step
    assert sliced.storage_rows == 512 and sliced.rows == 64
    data[0, 0] = 1.0  # changed in place: a new input
    assert not sliced.see(5, data[:64])


def test_a_column_major_table_is_not_a_slice_of_more_rows():
    """pandas' ``to_numpy()`` of a float table is column-major (row stride 1): its storage holds its rows, no more;
    a slice of it does hold more."""
    table = torch.randn(16, 200).t()  # (200, 16), strides (1, 200), as torch.tensor(df.to_numpy()) can give
    whole = SameInput()
    for s in range(5):
        whole.see(s, table)
    assert whole.rows == 200 and whole.storage_rows == 200
    part = SameInput()
    for s in range(5):
        part.see(s, table[:50])
    assert part.rows == 50 and part.storage_rows == 200
