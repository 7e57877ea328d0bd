"""What the framework callbacks share: logged values to numbers, data loaders to data set sizes."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from torchwitness.integrations._recording import data_rows, numbers


def test_numbers_keeps_numbers_and_nan_and_drops_the_rest() -> None:
    got = numbers({"a": torch.tensor(1.5), "b": np.float32(2), "c": torch.ones(3), "d": "x", "e": True,
                   "f": float("nan"), "g": 3})
    assert set(got) == {"a", "b", "f", "g"} and got["a"] == 1.5 and got["g"] == 3.0 and math.isnan(got["f"])


class Stream(torch.utils.data.IterableDataset):
    def __iter__(self) -> Iterator[int]:
        yield from range(3)


def test_data_rows_of_one_a_list_or_a_dict_of_loaders() -> None:
    ds = torch.utils.data.TensorDataset(torch.zeros(10, 2))
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    iterable = torch.utils.data.DataLoader(Stream(), batch_size=None)
    assert data_rows(loader) == [("TensorDataset", 10)]
    assert data_rows([loader, loader]) == [("TensorDataset", 10)] * 2
    assert data_rows({"a": loader, "b": iterable}) == [("TensorDataset", 10)]  # no length, nothing stated
    assert data_rows(None) == []
