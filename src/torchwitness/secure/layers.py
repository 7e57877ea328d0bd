"""Which models can run under encryption: ``nn.Sequential`` of ``Linear`` and ``ReLU`` (plus pass-throughs)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from torchwitness.errors import InputError

# layers that are the identity at inference time
_PASS = (nn.Identity, nn.Dropout, nn.Flatten)


@dataclass(frozen=True)
class SecurePlan:
    """The model as the owner runs it: per ``Linear`` its weights, and whether the client applies ReLU after it."""

    weights: tuple[np.ndarray, ...]   # [in, out] float64, ready for row-vector products
    biases: tuple[np.ndarray, ...]    # [out]
    relu_after: tuple[bool, ...]

    @property
    def features(self) -> int:
        return int(self.weights[0].shape[0])

    @property
    def classes(self) -> int:
        return int(self.weights[-1].shape[1])


def plan(model: nn.Module) -> SecurePlan:
    """Read an ``nn.Sequential`` MLP; refuse, naming it, the first layer that cannot run on ciphertexts."""
    if not isinstance(model, nn.Sequential):
        raise InputError(f"secure inference runs an nn.Sequential of Linear and ReLU layers, "
                         f"not {type(model).__name__}")
    weights: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    relu: list[bool] = []
    for i, layer in enumerate(model):
        if isinstance(layer, nn.Linear):
            w = layer.weight.detach().cpu().double().numpy().T.copy()
            b = (layer.bias.detach().cpu().double().numpy().copy() if layer.bias is not None
                 else np.zeros(w.shape[1]))
            if weights and weights[-1].shape[1] != w.shape[0]:
                raise InputError(f"layer {i} (Linear) takes {w.shape[0]} features but the layer before gives "
                                 f"{weights[-1].shape[1]}")
            weights.append(w)
            biases.append(b)
            relu.append(False)
        elif isinstance(layer, nn.ReLU):
            if not weights:
                raise InputError(f"layer {i} (ReLU) comes before any Linear layer; secure inference starts with Linear")
            relu[-1] = True
        elif not isinstance(layer, _PASS):
            raise InputError(f"layer {i} ({type(layer).__name__}) cannot run under encryption: secure inference "
                             f"supports Linear and ReLU (Identity, Dropout and Flatten pass through)")
    if not weights:
        raise InputError("the model has no Linear layer to run")
    return SecurePlan(tuple(weights), tuple(biases), tuple(relu))
