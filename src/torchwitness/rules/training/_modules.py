"""Reading a module's tensors without running anything of the model's."""

from __future__ import annotations

import torch
from torch.nn.utils import parametrize


def stored_weight(module: torch.nn.Module) -> torch.Tensor | None:
    """``module.weight`` as stored: for a parametrized weight (``parametrizations.spectral_norm``, orthogonal),
    the original tensor, since reading ``module.weight`` runs the parametrization, and spectral_norm advances its
    power iteration at each read in training mode (the watch would change training); None for a weight split in
    several originals (weight_norm's ``original0``/``original1``) or no weight."""
    if parametrize.is_parametrized(module, "weight"):
        return getattr(module.parametrizations["weight"], "original", None)
    weight = getattr(module, "weight", None)
    return weight if isinstance(weight, torch.Tensor) else None
