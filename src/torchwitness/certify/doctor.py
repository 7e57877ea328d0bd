"""``torchwitness doctor``: preflight of certification inputs and policy, with stable codes.

Every check yields one :class:`Check`; ``error`` means ``certify`` would fail or could not be trusted.

=======  =====================================================================
code     meaning
=======  =====================================================================
TWD001   the baseline cannot be loaded
TWD002   the subject cannot be loaded
TWD003   neither a subject nor an edit (or both) was given
TWD004   the edit is not a known edit
TWD010   the policy is unknown or invalid
TWD020   the data file is missing or unreadable
TWD021   text data but no tokenizer to encode it
TWD022   too little data for the policy's minimum windows or tokens
TWD023   fewer windows than the policy asks for (certify uses what exists)
TWD024   token ids beyond the model's vocabulary
TWD030   baseline and subject differ in names, shapes, dtypes, ties or counts
TWD031   non-finite weights
TWD032   baseline and subject weights are identical
TWD040   signing key: found, or will be created on first use
TWD050   an optional dependency is missing
TWD099   all checks passed
=======  =====================================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from torchwitness.errors import InputError

_WEIGHT_FILES = ("model.safetensors",)


@dataclass(frozen=True)
class Check:
    code: str
    level: str  # "ok", "info", "warning", "error"
    message: str


@dataclass(frozen=True)
class Stored:
    """One tensor as doctor sees it: numpy values (bfloat16 widened to float32), its own dtype and storage."""

    shape: tuple[int, ...]
    dtype: str  # torch's name: float32, bfloat16, int64...
    values: np.ndarray
    storage: int  # tied tensors share it

    @classmethod
    def of_torch(cls, t: Any) -> Stored:
        t = t.detach().cpu()
        values = t.float().numpy() if str(t.dtype) == "torch.bfloat16" else t.numpy()
        return cls(tuple(t.shape), str(t.dtype).removeprefix("torch."), values, t.data_ptr())

    @classmethod
    def of_numpy(cls, a: np.ndarray) -> Stored:
        return cls(tuple(a.shape), str(a.dtype), a, a.__array_interface__["data"][0])


@dataclass
class Inspected:
    """What doctor knows of a model: its tensors as stored (read, never run) and its tokenizer."""

    description: str
    tensors: dict[str, Stored]
    tokenizer: Any = None
    vocab: int | None = None


def _read_tensors(path: Path) -> dict[str, Stored]:
    """A state dict file's tensors; safetensors through numpy, so torch is imported only for ``.pt`` and bf16."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return {k: Stored.of_numpy(a) for k, a in load_file(str(path)).items()}
        except (TypeError, ValueError, SafetensorError):  # a dtype numpy lacks (bfloat16): read through torch
            from safetensors.torch import load_file as load_torch

            return {k: Stored.of_torch(t) for k, t in load_torch(str(path)).items()}
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise InputError(f"{path} does not hold a state dict")
    return {k: Stored.of_torch(t) for k, t in state.items()}


def _fast_folder(path: Path) -> Inspected | None:
    """A Hugging Face folder read without transformers: config, safetensors weights, ``tokenizer.json``."""
    weights = next((path / n for n in _WEIGHT_FILES if (path / n).is_file()), None)
    if weights is None or not (path / "config.json").is_file():
        return None  # sharded, .bin or GGUF: the full loader handles those
    tokenizer = None
    if (path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    elif any((path / n).is_file() for n in ("vocab.json", "tokenizer.model", "vocab.txt")):
        return None  # a slow tokenizer: only transformers reads it
    try:
        vocab = json.loads((path / "config.json").read_text()).get("vocab_size")
    except ValueError as e:
        raise InputError(f"{path / 'config.json'} is not JSON: {e}") from None
    return Inspected(f"hf:{path.name}", _read_tensors(weights), tokenizer, vocab if isinstance(vocab, int) else None)


def read_model(spec: Any, factory: str | None, *, build: bool) -> Inspected:
    """Read a model argument. Files are read as tensors; a factory is called only with ``build`` (to check that
    the weights fit it and for its tokenizer), so the subject never costs a second model construction."""
    path = None if not isinstance(spec, (str, Path)) else Path(spec)
    if path is not None and path.is_dir():
        fast = _fast_folder(path)
        if fast is not None:
            return fast
    elif path is not None and path.is_file() and not build:
        if path.suffix not in (".safetensors", ".pt", ".pth", ".bin"):
            raise InputError(f"{path}: expected a Hugging Face folder, .safetensors or .pt state dict")
        return Inspected(path.name, _read_tensors(path))
    from torch import nn

    from torchwitness.certify.sources import load_source

    src = load_source(spec, factory=factory)
    rows = next((m.num_embeddings for m in src.model.modules() if isinstance(m, nn.Embedding)), None)
    return Inspected(src.description, {k: Stored.of_torch(t) for k, t in src.model.state_dict().items()},
                     src.tokenizer, rows)


def _same(a: Stored, b: Stored) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.values, b.values)


def _compare(base: dict[str, Stored], subj: dict[str, Stored]) -> list[str]:
    """Names, shapes and dtypes. Files store tied weights once, under either name (safetensors keeps the first,
    ``save_pretrained`` the output head): a name one side lacks is fine when the baseline ties it to a tensor
    the subject holds, or when it pairs with an extra subject name holding the same values."""
    bad = []
    storage: dict[int, set[str]] = {}
    for n, t in base.items():
        storage.setdefault(t.storage, set()).add(n)
    missing = [n for n in base.keys() - subj.keys() if not storage[base[n].storage] & subj.keys()]
    extra = sorted(subj.keys() - base.keys())
    for n in list(missing):
        twin = next((e for e in extra if _same(base[n], subj[e])), None)
        if twin is not None:
            missing.remove(n)
            extra.remove(twin)
    if missing or extra:
        bad.append(f"tensor names differ (missing {sorted(missing)[:3]}, extra {extra[:3]})")
    for k in sorted(base.keys() & subj.keys()):
        if base[k].shape != subj[k].shape:
            bad.append(f"{k}: shape {list(subj[k].shape)} != baseline {list(base[k].shape)}")
        elif base[k].dtype != subj[k].dtype:
            bad.append(f"{k}: dtype {subj[k].dtype} != baseline {base[k].dtype}")
    return bad


def preflight(baseline: Any, subject: Any = None, *, edit: str | None = None, data: str | Path | None = None,
              policy: str | Path = "balanced", factory: str | None = None,
              key_dir: str | Path | None = None) -> list[Check]:
    """Run every check that does not need a forward pass; never raises for bad inputs, reports them.

    Nothing is evaluated: models are read (the baseline built only when a factory must be), the subject's
    tensors are compared with the baseline's as stored, and the data is tokenized once.
    """
    from torchwitness.certify.editspec import Edit
    from torchwitness.certify.policy import load_policy
    from torchwitness.certify.windows import load_stream

    out: list[Check] = []
    pol = None
    try:
        pol = load_policy(policy)
        out.append(Check("TWD010", "ok", f"policy {pol.name} ({pol.digest[:19]}...)"))
    except InputError as e:
        out.append(Check("TWD010", "error", str(e)))
    if (subject is None) == (edit is None):
        out.append(Check("TWD003", "error", "give exactly one of --subject or --edit"))
    if edit is not None:
        try:
            Edit.parse(edit)
        except InputError as e:
            out.append(Check("TWD004", "error", str(e)))
    models: dict[str, Inspected] = {}
    for code, role, spec in (("TWD001", "baseline", baseline), ("TWD002", "subject", subject)):
        if spec is None:
            continue
        try:
            models[role] = read_model(spec, factory, build=role == "baseline")
            out.append(Check(code, "ok", f"{role}: {models[role].description}"))
        except ImportError as e:
            out.append(Check("TWD050", "error", f"{role}: {e}"))
        except Exception as e:  # a corrupt weights file or tokenizer: whatever its library raises is one row
            text = " ".join(str(e).split())[:300]
            why = text if isinstance(e, InputError) else f"{type(e).__name__}: {text}"
            out.append(Check(code, "error", f"{role} {spec}: {why}"))
        missing = _quantizer_missing(spec)
        if missing:
            out.append(Check("TWD050", "error", f"{role} {spec}: {missing}"))
    for role, m in models.items():
        bad = [n for n, t in m.tensors.items() if t.values.dtype.kind == "f" and not np.isfinite(t.values).all()]
        if bad:
            out.append(Check("TWD031", "error", f"{role}: non-finite values in {', '.join(sorted(bad)[:3])}"))
    if len(models) == 2:
        base, subj = models["baseline"].tensors, models["subject"].tensors
        violations = _compare(base, subj)
        out += [Check("TWD030", "error", v) for v in violations]
        if not violations and all(_same(base[k], subj[k]) for k in base.keys() & subj.keys()):
            out.append(Check("TWD032", "info", "the subject's weights are identical to the baseline's"))
    if data is not None:
        out += _check_data(Path(data), models.get("baseline"), pol, load_stream)
    out.append(_check_key(key_dir))
    if not any(c.level in ("error", "warning") for c in out):
        out.append(Check("TWD099", "ok", "ready to certify"))
    return out


# transformers' quantization_config.quant_method -> the package its quantizer needs to load the folder
_QUANTIZERS = {"bitsandbytes": "bitsandbytes", "gptq": "gptqmodel", "awq": "awq", "torchao": "torchao",
               "hqq": "hqq", "quanto": "optimum.quanto", "aqlm": "aqlm", "eetq": "eetq", "fbgemm_fp8": "fbgemm_gpu"}


def _quantizer_missing(spec: Any) -> str | None:
    """What a quantized Hugging Face folder needs that is not installed (None when nothing is missing)."""
    import importlib.util

    config = Path(spec) / "config.json" if isinstance(spec, (str, Path)) else None
    if config is None or not config.is_file():
        return None
    try:
        quant = json.loads(config.read_text()).get("quantization_config")
    except (ValueError, OSError, AttributeError):
        return None
    if not isinstance(quant, dict):
        return None
    method = str(quant.get("quant_method", "?"))
    package = _QUANTIZERS.get(method)
    try:
        present = package is not None and importlib.util.find_spec(package.split(".")[0]) is not None
    except (ImportError, ValueError):
        present = False
    if present:
        return None
    return (f"quantized with {method!r}, whose loader needs {package!r}, which is not installed" if package
            else f"quantized with {method!r}, which this doctor cannot check: certify may fail to load it")


def _encoder(tokenizer: Any):
    """``text -> ids`` from a transformers tokenizer, a ``tokenizers.Tokenizer`` or anything with ``encode``."""
    encode = getattr(tokenizer, "encode", None)
    if encode is None:
        return None
    if type(tokenizer).__module__.startswith("tokenizers"):
        return lambda text: encode(text).ids
    return encode


def _check_data(path: Path, base: Inspected | None, pol: Any, load_stream) -> list[Check]:
    if not path.is_file():
        what = "is a folder, not a data file" if path.is_dir() else "does not exist"
        return [Check("TWD020", "error", f"data {path} {what}")]
    encode = _encoder(base.tokenizer) if base is not None else None
    if path.suffix != ".npy" and encode is None:
        return [Check("TWD021", "error", f"{path} is text but the baseline comes without a tokenizer; pass token "
                                         "ids as .npy or a factory returning (model, tokenizer)")]
    try:
        stream = load_stream(path, encode)
    except (InputError, OSError, ValueError) as e:
        return [Check("TWD020", "error", str(e))]
    out = [Check("TWD020", "ok", f"data: {len(stream)} tokens")]
    rows = base.vocab if base is not None else None
    if len(stream) and int(np.min(stream)) < 0:
        out.append(Check("TWD024", "error", f"token id {int(np.min(stream))} is negative"))
    if rows is not None and len(stream) and int(np.max(stream)) >= rows:
        out.append(Check("TWD024", "error", f"token id {int(np.max(stream))} >= the model's {rows} embeddings"))
    if pol is not None:
        available = len(stream) // (pol.window_length + 1)
        if available < pol.min_windows or available * pol.window_length < pol.min_tokens:
            out.append(Check("TWD022", "error", f"{available} windows of {pol.window_length} tokens: below the "
                                                f"policy minimum of {pol.min_windows} windows / {pol.min_tokens} "
                                                "tokens"))
        elif available < pol.windows:
            out.append(Check("TWD023", "warning", f"{available} windows available, the policy asks for "
                                                  f"{pol.windows}"))
    return out


def _check_key(key_dir: str | Path | None) -> Check:
    from torchwitness.ledger.keys import default_key_dir

    directory = Path(key_dir) if key_dir else default_key_dir()
    if (directory / "default.ed25519").is_file():
        return Check("TWD040", "ok", f"signing key in {directory}")
    return Check("TWD040", "info", f"no signing key yet in {directory}: certify creates one")
