"""Edit names, parsed without importing torch (``doctor`` checks them before any model is read).

>>> Edit.parse("quant-int4-g32").describe()["granularity"], Edit.parse("lora:adapters/v2").name
('group-32', 'lora-v2')
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torchwitness.errors import InputError

_SPEC = re.compile(r"^(?:quant-int(?P<bits>[2-8])(?:-g(?P<group>\d+))?|prune-(?P<pct>\d{1,2})"
                   r"|torchao-int(?P<ao>[48])(?:-g(?P<aogroup>\d+))?|prune-l1-(?P<l1>\d{1,2}))$")
_HELP = ("use quant-int8, quant-int4, quant-intB-gG, prune-P, torchao-int8, torchao-int4[-gG], prune-l1-P or "
         "lora:ADAPTER_FOLDER")


@dataclass(frozen=True)
class Edit:
    """A parsed edit.

    Built in: ``quant-int8``, ``quant-int4-g32`` (RTN, group-wise), ``prune-50`` (magnitude, percent of each
    layer). Through other libraries (:mod:`.external`): ``torchao-int8``, ``torchao-int4[-gG]``,
    ``prune-l1-50`` (``torch.nn.utils.prune``), ``lora:ADAPTER`` (PEFT merge). Or any function editing the model
    in place (``Edit.parse(fn)``), described by its qualified name.
    """

    spec: str
    kind: str  # "quant", "prune", "torchao", "prune-l1", "lora" or "function"
    bits: int = 0
    group_size: int | None = None  # None = one scale per output channel
    sparsity: float = 0.0
    target: str | None = None  # the adapter folder of a lora edit
    function: Callable[[Any], Any] | None = field(default=None, compare=False)

    @classmethod
    def parse(cls, spec: str | Edit | Callable[[Any], Any]) -> Edit:
        if isinstance(spec, Edit):
            return spec
        if callable(spec):
            name = getattr(spec, "__qualname__", type(spec).__qualname__)
            return cls(f"function:{getattr(spec, '__module__', '?')}.{name}", "function", function=spec)
        if not isinstance(spec, str):
            raise InputError(f"an edit is a name or a function, not {type(spec).__name__}")
        if spec.startswith("lora:") and len(spec) > 5:
            return cls(spec, "lora", target=spec[5:])
        m = _SPEC.match(spec)
        if m is None:
            raise InputError(f"unknown edit {spec!r}: {_HELP}")
        if m["pct"] is not None or m["l1"] is not None:
            return cls(spec, "prune" if m["pct"] is not None else "prune-l1",
                       sparsity=int(m["pct"] or m["l1"]) / 100)
        group = m["group"] or m["aogroup"]
        if group is not None and int(group) < 1:
            raise InputError(f"edit {spec!r}: group size must be positive")
        bits = int(m["bits"] or m["ao"])
        return cls(spec, "quant" if m["bits"] else "torchao", bits=bits, group_size=int(group) if group else None)

    @property
    def name(self) -> str:
        """A file-name-safe label: the spec, the adapter folder's name, or the function's name."""
        if self.kind == "lora":
            return "lora-" + (self.target or "").rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
        if self.kind == "function":
            return self.spec.rsplit(".", 1)[-1].replace("<", "").replace(">", "") or "function"
        return self.spec

    def describe(self) -> dict:
        if self.kind == "prune":
            return {"spec": self.spec, "method": "magnitude-pruning", "sparsity": self.sparsity,
                    "scope": "per-layer unstructured"}
        if self.kind == "prune-l1":
            return {"spec": self.spec, "method": "torch.nn.utils.prune.l1_unstructured", "sparsity": self.sparsity,
                    "scope": "per-layer unstructured", "storage": "weight_orig and weight_mask (reparametrised)"}
        if self.kind == "torchao":
            import torchao

            return {"spec": self.spec, "method": "torchao weight-only", "bits": self.bits,
                    "granularity": (f"group-{self.group_size}" if self.group_size else
                                    "per-row" if self.bits == 8 else "group-32"),
                    "torchao": torchao.__version__}
        if self.kind == "lora":
            import peft

            return {"spec": self.spec, "method": "peft LoRA merge_and_unload", "adapter": self.target,
                    "peft": peft.__version__}
        if self.kind == "function":
            return {"spec": self.spec, "method": "in-process function"}
        return {"spec": self.spec, "method": "rtn-symmetric", "bits": self.bits,
                "granularity": f"group-{self.group_size}" if self.group_size else "per-channel",
                "storage": "dequantized float (simulated)"}
