"""Where models come from: in-memory modules, Hugging Face folders, or state dicts plus a factory.

A factory is ``pkg.module:function`` returning an ``nn.Module`` or ``(module, tokenizer)``; the state dict
(``.safetensors`` or ``.pt``) is loaded into it strictly. A tokenizer is anything with ``encode(text)``; its
digest is the SHA-256 of its files (Hugging Face folders) or its ``digest`` attribute.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from torchwitness.errors import InputError

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model",
                    "special_tokens_map.json", "added_tokens.json", "vocab.txt")


@dataclass
class Source:
    """A model with what the certificate says about where it came from."""

    model: nn.Module
    description: str
    tokenizer: Any = None
    tokenizer_digest: str | None = None


def tokenizer_digest(tokenizer: Any, folder: Path | None = None) -> str | None:
    if folder is not None:
        files = [folder / n for n in _TOKENIZER_FILES if (folder / n).is_file()]
        if files:
            h = hashlib.sha256()
            for f in files:
                h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
            return "sha256:" + h.hexdigest()
    digest = getattr(tokenizer, "digest", None)
    return digest if isinstance(digest, str) else None


def _load_weights(model: nn.Module, path: Path) -> None:
    """Load a state dict strictly; safetensors' loader restores tied tensors that ``save_model`` stored once."""
    try:
        if path.suffix == ".safetensors":
            try:
                from safetensors.torch import load_model
            except ImportError as e:
                raise InputError("reading .safetensors needs: pip install 'torchwitness[transformers]'") from e
            load_model(model, str(path), strict=True)
            return
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise InputError(f"{path} does not hold a state dict")
        model.load_state_dict(state, strict=True)
    except InputError:
        raise
    except (RuntimeError, ValueError) as e:  # torch raises these for a state dict of another model
        detail = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise InputError(f"{path} does not fit the factory's model: {detail[:300]}") from None
    except Exception as e:  # an unreadable, truncated or unsafe file (safetensors, the weights-only unpickler)
        raise InputError(f"{path}: cannot read these weights: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    """``Type: first line`` of an exception from a library, at most 300 characters."""
    text = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    return f"{type(e).__name__}: {text}"[:300]


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Loading prints a progress bar and config advice (a token id outside a tiny vocabulary, say) that is not
    the certification's business: its own checks name what matters. Errors still raise."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


# transformers imports these at import time whenever they are installed, for features a certify of a plain
# causal LM never reaches (torchao's quantizer, scipy's Hungarian matching for detection losses): ~0.5 s of the
# ~5 s a command-line certify takes.
_UNNEEDED_BY_PLAIN_LMS = ("torchao", "scipy")


@contextmanager
def lean_transformers_import(models: list[str | Path | None], keep: tuple[str, ...] = ()) -> Iterator[None]:
    """For a short-lived command only: while transformers is first imported to load Hugging Face folders, hide
    the optional packages above (``keep`` excepted) unless a folder's config asks for a quantizer. transformers
    then records them as unavailable for the rest of the process; they import normally afterwards. Anything
    but folders (a state dict whose factory is user code) is loaded with nothing hidden."""
    given = [Path(m) for m in models if m is not None]
    if "transformers" in sys.modules or not all(m.is_dir() for m in given) or any(
            "quantization_config" in _config_text(m) for m in given):
        yield
        return
    hidden = [n for n in _UNNEEDED_BY_PLAIN_LMS if n not in keep and n not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # find_spec and import both report it missing
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def _config_text(folder: str | Path) -> str:
    try:
        return (Path(folder) / "config.json").read_text(errors="replace")
    except OSError:
        return ""


def load_source(spec: str | Path | nn.Module | Source, *, factory: str | None = None) -> Source:
    """Resolve a model argument of ``certify``/``doctor`` into a :class:`Source`."""
    if isinstance(spec, Source):
        return spec
    if isinstance(spec, nn.Module):
        return Source(spec, f"in-memory {type(spec).__qualname__}")
    path = Path(spec)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"{path} is a folder without config.json: not a Hugging Face model folder")
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:
            raise InputError("Hugging Face folders need: pip install 'torchwitness[transformers]'") from e
        try:
            with _quiet_transformers():
                model = AutoModelForCausalLM.from_pretrained(path)
                tokenizer = AutoTokenizer.from_pretrained(path) if any(
                    (path / n).is_file() for n in _TOKENIZER_FILES) else None
        except Exception as e:  # a broken config, tokenizer or weights file, a quantizer not installed, ...
            raise InputError(f"{path}: cannot load this Hugging Face folder: {_first_line(e)}") from None
        return Source(model, f"hf:{path.name}", tokenizer, tokenizer_digest(tokenizer, path))
    if not path.is_file():
        raise InputError(f"no such model: {spec}")
    if path.suffix not in (".safetensors", ".pt", ".pth", ".bin"):
        raise InputError(f"{path}: expected a Hugging Face folder, .safetensors or .pt state dict")
    if factory is None:
        raise InputError(f"{path} is a state dict: pass --factory package.module:function to build the model")
    from torchwitness.integrations.factory import load_factory  # the same protocol as `audit`

    built = load_factory(factory)()
    model, tokenizer = built if isinstance(built, tuple) else (built, None)
    if not isinstance(model, nn.Module):
        raise InputError(f"factory {factory} returned {type(model).__name__}, not an nn.Module")
    _load_weights(model, path)
    return Source(model, f"{path.name} via {factory}", tokenizer, tokenizer_digest(tokenizer))
