"""Built-in weight edits (round-to-nearest quantization, magnitude pruning) and exact rollback.

Quantization here is *simulated*: weights are rounded onto the integer grid and written back as floats
(dequantized), so the edited model runs unchanged and its outputs are exactly those of an integer kernel with
the same scales. Which weights are edited: every parameter of two or more dimensions except embeddings
(``nn.Embedding`` and anything tied to one), the usual choice of RTN quantizers.

>>> import torch
>>> m = torch.nn.Linear(8, 4)
>>> before = weights_digest(m)
>>> with EditSession(m) as session:
...     _ = apply_edit(m, "quant-int4-g4")
...     weights_digest(m) != before
...     _ = session.rollback()
True
>>> weights_digest(m) == before
True
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from torchwitness.certify import external
from torchwitness.certify.editspec import Edit
from torchwitness.errors import InputError

__all__ = ["Edit", "EditSession", "apply_edit", "editable_weights", "prune_magnitude_", "quantize_rtn_",
           "weights_digest"]

def _output_major(module: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """A view of ``weight`` with output channels on dim 0 (transformers' ``Conv1D`` stores ``[in, out]``)."""
    if type(module).__name__ == "Conv1D" and weight.dim() == 2:
        return weight.t()
    return weight


def editable_weights(model: nn.Module) -> Iterator[tuple[str, nn.Module, torch.Tensor]]:
    """``(name, owning module, parameter)`` of every weight an edit touches, each shared tensor once."""
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            if p.dim() < 2 or id(p) in seen or id(p) in embedded:
                continue
            seen.add(id(p))
            yield (f"{mod_name}.{p_name}" if mod_name else p_name), module, p


def quantize_rtn_(w: torch.Tensor, bits: int, group_size: int | None = None) -> torch.Tensor:
    """Symmetric round-to-nearest onto ``bits``-bit integers, in place; rows are output channels.

    One scale per row (``group_size=None``) or per ``group_size`` consecutive inputs of a row. A zero
    group keeps scale 1 so it stays exactly zero.
    """
    qmax = 2 ** (bits - 1) - 1
    rows = w.reshape(w.shape[0], -1)
    cols = rows.shape[1]
    g = cols if group_size is None else group_size
    pad = (-cols) % g
    work = torch.nn.functional.pad(rows.float(), (0, pad)).reshape(rows.shape[0], -1, g)
    scale = work.abs().amax(dim=-1, keepdim=True) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(work / scale), -qmax, qmax) * scale
    w.copy_(q.reshape(rows.shape[0], -1)[:, :cols].reshape(w.shape).to(w.dtype))
    return w


def prune_magnitude_(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero the ``sparsity`` fraction of entries with the smallest magnitude, in place (ties by position)."""
    k = round(sparsity * w.numel())
    if k > 0:
        flat = w.view(-1)
        idx = torch.argsort(flat.abs(), stable=True)[:k]
        flat[idx] = 0
    return w


@torch.no_grad()
def apply_edit(model: nn.Module, edit: str | Edit | Callable[[nn.Module], Any]) -> list[str]:
    """Apply an edit to ``model`` in place; return the names of the edited weights (when known)."""
    edit = Edit.parse(edit)
    weights = list(editable_weights(model))
    if edit.kind == "function":
        returned = edit.function(model)
        if isinstance(returned, nn.Module) and returned is not model:
            raise InputError(f"edit {edit.spec} returned a new model: an edit function must change the model "
                             "in place")
        return []
    if edit.kind == "lora":
        return external.lora_merge(model, edit.target or "")
    if not weights:
        raise InputError(f"edit {edit.spec}: the model has no weight matrix to edit")
    if edit.kind == "torchao":
        return external.torchao_quantize(model, edit.bits, edit.group_size, {id(p) for _, _, p in weights})[0]
    if edit.kind == "prune-l1":
        return external.prune_l1(model, edit.sparsity, weights)
    for _name, module, p in weights:
        if edit.kind == "quant":
            quantize_rtn_(_output_major(module, p.data), edit.bits, edit.group_size)
        else:
            prune_magnitude_(p.data, edit.sparsity)
    return [name for name, _, _ in weights]


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.state_dict(keep_vars=True))


def weights_digest(model: nn.Module | dict[str, torch.Tensor]) -> str:
    """``sha256:`` over every named parameter and buffer: name, dtype, shape and raw bytes, in name order.

    Tensor subclasses (torchao's quantized weights) contribute the plain tensors they store, each named by the
    subclass and its metadata, so the digest identifies the quantized form, not a dequantized copy.
    """
    tensors = _tensors(model) if isinstance(model, nn.Module) else model
    h = hashlib.sha256()
    for name in sorted(tensors):
        for part, t in external.flatten(tensors[name]):
            h.update(f"{name}{part}\0{str(t.dtype).removeprefix('torch.')}\0{list(t.shape)}\0".encode())
            h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()


def _copy_containers(state: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.copy(v) if isinstance(v, (dict, set, list)) else v for k, v in state.items()}


class EditSession:
    """Keeps what it takes to undo any in-place edit of a model, bit for bit.

    That is every module's class and attributes (its parameter, buffer, submodule and hook tables, copied one
    level deep) plus a clone of every parameter and buffer. So edits that replace parameters (torchao), swap
    submodules (PEFT), add reparametrisations and hooks (``torch.nn.utils.prune``) or write into weights (the
    built-in quantizers) are all undone, and the caller's references to the original parameters stay valid.

    Use as a context manager; call :meth:`rollback` to restore (the digest is checked afterwards) or
    :meth:`commit` to keep the edit. Leaving the block without either rolls back, so failures never leak a
    half-edited model.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._modules = [(m, type(m), _copy_containers(vars(m))) for m in model.modules()]
        self._saved = {k: v.detach().clone() for k, v in _tensors(model).items()}
        self.digest = weights_digest(self._saved)
        self._open = True

    def __enter__(self) -> EditSession:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._open:
            self.rollback()

    @torch.no_grad()
    def rollback(self) -> str:
        """Restore the modules and tensors in place (tied parameters stay tied); return the verified digest."""
        for module, cls, state in self._modules:
            module.__class__ = cls
            vars(module).clear()
            vars(module).update(_copy_containers(state))
        current = _tensors(self.model)
        if current.keys() != self._saved.keys():
            raise InputError("the model's parameter names changed during the edit; cannot roll back")
        for k, v in current.items():
            v.data.copy_(self._saved[k])
        self._open = False
        restored = weights_digest(self.model)
        if restored != self.digest:  # cannot happen with copy_ unless the model was replaced underneath us
            raise InputError(f"rollback did not restore the weights: {restored} != {self.digest}")
        return restored

    def commit(self) -> None:
        self._open = False
        self._saved.clear()
        self._modules.clear()
