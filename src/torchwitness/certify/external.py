"""Edits made in this process by other libraries, and the plain view of the model they leave behind.

- ``torchao-int8`` / ``torchao-int4[-gG]``: torchao weight-only quantization of every ``nn.Linear`` that is not
  an embedding (or tied to one). int8 is ``Int8WeightOnlyConfig`` (per row). int4 is
  ``IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(G))``: torchao 0.18's
  ``Int4WeightOnlyConfig`` has no CPU kernel (it needs CUDA or the ``mslk`` package), the Intx form runs anywhere.
  Weights become torchao tensor subclasses; digests cover their integer data, scales and zero points.
- ``lora:ADAPTER``: a saved PEFT LoRA adapter loaded onto the model and merged into its weights
  (``merge_and_unload``), in place.
- ``prune-l1-P``: ``torch.nn.utils.prune.l1_unstructured`` on every editable weight, left as torch leaves it
  (``weight_orig`` + ``weight_mask`` and a forward pre-hook), so certification sees the model exactly as served.

Each library is imported only when its edit is used; a missing one is an ``InputError`` naming the extra.
Diagnostics and invariants compare :func:`effective_tensors`: pruned weights as the hook computes them and
quantized ones dequantized, under the names the unedited model uses.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from torchwitness.errors import InputError


def require(module: str, extra: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise InputError(f"{what} needs: pip install 'torchwitness[{extra}]' ({e})") from None


def torchao_quantize(model: nn.Module, bits: int, group_size: int | None, editable: set[int]) -> tuple[list[str],
                                                                                                         str]:
    """Quantize the editable ``nn.Linear`` layers in place; return their names and the config used."""
    ao = require("torchao.quantization", "torchao", f"the torchao-int{bits} edit")
    if bits == 8:
        config = ao.Int8WeightOnlyConfig(group_size=group_size, set_inductor_config=False)
    else:
        from torchao.quantization.granularity import PerGroup

        config = ao.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size or 32))
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and id(m.weight) in editable]
    if not names:
        raise InputError(f"torchao-int{bits}: the model has no nn.Linear weight to quantize (transformers' GPT-2 "
                         "uses Conv1D, which torchao does not quantize)")
    chosen = set(names)
    ao.quantize_(model, config, filter_fn=lambda _m, fqn: fqn in chosen)
    return [f"{n}.weight" for n in names], repr(config)


def lora_merge(model: nn.Module, adapter: str) -> list[str]:
    """Load the PEFT adapter in ``adapter`` onto ``model`` and merge it, in place; return the merged weights."""
    peft = require("peft", "peft", "the lora edit")
    if not (Path(adapter) / "adapter_config.json").is_file():
        raise InputError(f"lora:{adapter}: not a PEFT adapter folder (no adapter_config.json)")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    merged = peft.PeftModel.from_pretrained(model, adapter).merge_and_unload()
    if merged is not model:  # peft edits the modules in place and hands the same model back
        raise InputError(f"lora:{adapter}: peft returned a new model instead of merging in place")
    after = dict(model.named_parameters())
    return [n for n, p in before.items() if n in after and not torch.equal(after[n].detach(), p)]


def prune_l1(model: nn.Module, sparsity: float, weights: list[tuple[str, nn.Module, torch.Tensor]]) -> list[str]:
    names = []
    for name, module, _p in weights:
        local = name.rsplit(".", 1)[-1]
        prune.l1_unstructured(module, local, amount=sparsity)
        names.append(name)
    return names


def plain(t: torch.Tensor) -> torch.Tensor:
    """A tensor subclass (torchao's quantized weights) dequantized; a plain tensor as it is."""
    t = t.detach()
    if type(t) is not torch.Tensor and hasattr(t, "__tensor_flatten__") and hasattr(t, "dequantize"):
        return t.dequantize()
    return t


def _pruned(module: nn.Module) -> list[str]:
    hooks = [h for h in module._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]
    return [h._tensor_name for h in hooks]


def effective_tensors(model: nn.Module, *, parameters_only: bool = False) -> dict[str, tuple[int, torch.Tensor]]:
    """``name -> (id of the stored tensor, tensor as the forward uses it)``, under the unedited names."""
    source = (model.named_parameters(remove_duplicate=False) if parameters_only
              else model.state_dict(keep_vars=True).items())
    out = {name: (id(t), t) for name, t in source}
    for mod_name, module in model.named_modules():
        for local in _pruned(module):
            name = f"{mod_name}.{local}" if mod_name else local
            orig = out.pop(f"{name}_orig", None)
            out.pop(f"{name}_mask", None)
            if orig is not None:
                out[name] = (orig[0], getattr(module, local))
    return {name: (key, plain(t)) for name, (key, t) in out.items()}


def flatten(t: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """The plain tensors a (possibly subclassed) tensor stores, with a header naming its class and metadata."""
    t = t.detach()
    if type(t) is torch.Tensor or not hasattr(t, "__tensor_flatten__"):
        return [("", t)]
    inner, meta = t.__tensor_flatten__()
    out = []
    for attr in inner:
        out += [(f"{type(t).__qualname__}{sorted(meta.items()) if isinstance(meta, dict) else meta!r}.{attr}{n}", x)
                for n, x in flatten(getattr(t, attr))]
    return out
