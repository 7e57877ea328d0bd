"""Overhead of ``run.watch`` on a training step: step-time ratios audited/bare, and host syncs per step.

One process, interleaved repeats (bare, every step, default sampling, torch-audit, bare, ...), so drift in the
machine's speed hits all modes alike. The watch is added as a bare loop would add it, ``run.watch(model, opt,
every_n_steps=1)`` (no loss module given). "every step": median ratio of blocks that start after the watch's
first 64 steps (where it audits the first 8 in full and takes the statistical probes every 8th step, once per
run): the steady state of a long run; "first 64" is the ratio over those first 64 steps. "default":
``run.watch(model, opt)`` (the first 5 steps, every 8th until 64, then every 100th), the ratio of the mean step
time over a whole block of ``--default-steps`` steps timed from the watch's creation, audited steps and the first
audits included. "paired": the same, measured in lockstep with an unwatched copy of the model (see
``paired_default``: steadier on a shared machine); "paired 64+": the same after the watch's first 64 steps (the
steady state of a long run).
"torch-audit": torch-audit's ``autopatch(model, optimizer=opt, every_n_steps=1)`` where that package is
importable (``pip install --no-deps torch-audit==0.3.0``), timed like "every step". Host syncs are counted by
wrapping ``Tensor.item``, ``.tolist``, ``__bool__`` and ``.cpu`` during a separate instrumented run
(instrumentation slows the calls, so it is never timed). ``--open`` times ``Run`` open plus ``watch``.

    python benchmarks/overhead.py --models ta_mlp --open     # torch-audit's benchmark MLP, ~1 minute
    python benchmarks/overhead.py --repeats 15 --steps 400 --models mlp,cnn_bn --clock cpu
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import ctypes.util
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

import torchwitness as tw
from torchwitness.probes.watch import CLOSE_WATCH


class _Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, 4, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.n1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ff(self.n2(x))


class _Transformer(nn.Module):
    def __init__(self, vocab: int = 256, d: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.Sequential(*(_Block(d) for _ in range(layers)))
        self.head = nn.Linear(d, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(ids)))


def _ta_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """torch-audit's own benchmark model: 64-256-256-10, batch 64 (trained with SGD and momentum)."""
    return (nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)),
            torch.randn(64, 64), torch.randint(0, 10, (64,)))


def _mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    return (nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)),
            torch.randn(128, 256), torch.randint(0, 10, (128,)))


def _deep_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    layers: list[nn.Module] = []
    for _ in range(24):
        layers += [nn.Linear(128, 128), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(128, 10)), torch.randn(64, 128), torch.randint(0, 10, (64,))


def _cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, padding=1, stride=2, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    return model, torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))


def _transformer() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    return _Transformer(), torch.randint(0, 256, (16, 32)), torch.randint(0, 256, (16 * 32,))


MODELS: dict[str, Callable[[], tuple[nn.Module, torch.Tensor, torch.Tensor]]] = {
    "ta_mlp": _ta_mlp, "mlp": _mlp, "deep_mlp": _deep_mlp, "cnn_bn": _cnn, "transformer": _transformer}


def _optimizer(name: str, model: nn.Module) -> torch.optim.Optimizer:
    if name == "ta_mlp":
        return torch.optim.SGD(model.parameters(), 0.01, momentum=0.9)
    return torch.optim.AdamW(model.parameters(), 1e-4)


def _torch_audit() -> Any:
    try:
        import torch_audit
    except ImportError:
        return None
    return torch_audit


def _step(model: nn.Module, opt: torch.optim.Optimizer, crit: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad()
    out = model(x)
    crit(out.reshape(-1, out.shape[-1]), y).backward()
    opt.step()


@contextlib.contextmanager
def _watching(run: tw.Run, model: nn.Module, opt: torch.optim.Optimizer, mode: str) -> Iterator[None]:
    if mode == "bare":
        yield
    elif mode == "torch-audit":
        auditor = _torch_audit().autopatch(model, optimizer=opt, every_n_steps=1, run_static=False, run_init=False)
        try:
            yield
        finally:
            auditor.unpatch()
    else:
        watch = run.watch(model, opt, every_n_steps=1) if mode == "every step" else run.watch(model, opt)
        try:
            yield
        finally:
            watch.close()
            run.flush()  # the next timed block must not share the CPU with the ledger writer finishing this one


def time_modes(name: str, repeats: int, steps: int, default_steps: int, run: tw.Run,
               clock: Callable[[], float]) -> dict[str, float]:
    """Per mode, the median over repeats of the step-time ratio to the bare block of the same repeat (modes are
    interleaved, so each ratio compares blocks run seconds apart); ``bare`` is the median bare step time."""
    torch.manual_seed(0)
    model, x, y = MODELS[name]()
    opt = _optimizer(name, model)
    crit = nn.CrossEntropyLoss()
    for _ in range(10):  # warm-up: allocator, optimizer state
        _step(model, opt, crit, x, y)
    modes = ["bare", "every step", "default"] + (["torch-audit"] if _torch_audit() is not None else [])
    times: dict[str, list[float]] = {m: [] for m in modes}
    first: list[float] = []
    bare_long: list[float] = []
    for r in range(repeats):
        # Rotate the order each repeat so no mode always follows the same one (caches, allocator, frequency).
        for mode in modes[r % len(modes):] + modes[:r % len(modes)]:
            n = default_steps if mode == "default" else steps
            with _watching(run, model, opt, mode):
                if mode not in ("default", "bare"):  # a long run's steady state: the first audits are untimed
                    t0 = clock()
                    for _ in range(CLOSE_WATCH):
                        _step(model, opt, crit, x, y)
                    if mode == "every step":
                        first.append((clock() - t0) / CLOSE_WATCH)
                t0 = clock()
                for _ in range(n):
                    _step(model, opt, crit, x, y)
                times[mode].append((clock() - t0) / n)
            if mode == "bare":  # a bare block as long as the default one, for its mean
                t0 = clock()
                for _ in range(default_steps):
                    _step(model, opt, crit, x, y)
                bare_long.append((clock() - t0) / default_steps)
    out = {m: statistics.median(a / b for a, b in zip(v, times["bare"], strict=True)) for m, v in times.items()}
    out["default"] = statistics.median(a / b for a, b in zip(times["default"], bare_long, strict=True))
    out["first"] = statistics.median(a / b for a, b in zip(first, times["bare"], strict=True))
    out["bare"] = statistics.median(times["bare"])
    return out


def paired_default(name: str, repeats: int, steps: int, run: tw.Run, clock: Callable[[], float],
                   skip: int = 0) -> float:
    """Default sampling measured in lockstep: two copies of the model step alternately (which one goes first
    alternates too), one watched; the median over repeats of the ratio of their summed step times over ``steps``
    steps, after ``skip`` untimed ones. A burst of load from elsewhere hits both copies alike, where the block
    ratios of :func:`time_modes` move by several percent. The bare copy's backward passes through the watch's
    ``Tensor.backward`` tap (a no-op for it), so the ratio understates the cost by that call (~1 us)."""
    torch.manual_seed(0)
    watched, x, y = MODELS[name]()
    bare = copy.deepcopy(watched)
    opts = _optimizer(name, watched), _optimizer(name, bare)
    crit = nn.CrossEntropyLoss()
    for _ in range(10):
        _step(watched, opts[0], crit, x, y)
        _step(bare, opts[1], crit, x, y)
    ratios = []
    for _ in range(repeats):
        spent = [0.0, 0.0]
        with _watching(run, watched, opts[0], "default"):
            for _ in range(skip):
                _step(watched, opts[0], crit, x, y)
                _step(bare, opts[1], crit, x, y)
            for i in range(steps):
                for j in ((0, 1) if i % 2 else (1, 0)):
                    t0 = clock()
                    _step((watched, bare)[j], opts[j], crit, x, y)
                    spent[j] += clock() - t0
        ratios.append(spent[0] / spent[1])
    return statistics.median(ratios)


def time_open(model_name: str, n: int = 7) -> tuple[float, float]:
    """(first, median of the next ``n``) wall time of ``Run(folder)`` plus ``run.watch(model, opt)``, in ms."""
    model, _, _ = MODELS[model_name]()
    opt = _optimizer(model_name, model)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n + 1):
            t0 = time.perf_counter()
            run = tw.Run(f"{tmp}/open-{i}")
            run.watch(model, opt)
            out.append((time.perf_counter() - t0) * 1e3)
            run.close()
    return out[0], statistics.median(out[1:])


_SYNC_METHODS = ("item", "tolist", "__bool__", "cpu")


def count_syncs(name: str, steps: int, every: int, run: tw.Run) -> tuple[int, int]:
    """Host syncs added by the watch: (total on non-audited steps, most in one audited step).

    The loop itself may sync (torch's single-tensor Adam calls ``.item()`` on its step counters), so the
    count of the same loop without a watch, taken step by step, is subtracted.
    """
    torch.manual_seed(0)
    model, x, y = MODELS[name]()
    opt = _optimizer(name, model)
    crit = nn.CrossEntropyLoss()
    calls = [0]
    originals = {m: getattr(torch.Tensor, m) for m in _SYNC_METHODS}

    def counting(method: Callable) -> Callable:
        def wrapper(self: torch.Tensor, *a: object, **k: object) -> object:
            calls[0] += 1
            return method(self, *a, **k)
        return wrapper

    def per_step(n: int) -> list[int]:
        out = []
        for _ in range(n):
            before = calls[0]
            _step(model, opt, crit, x, y)
            out.append(calls[0] - before)
        return out

    for _ in range(3):
        _step(model, opt, crit, x, y)
    try:
        for m, f in originals.items():
            setattr(torch.Tensor, m, counting(f))
        baseline = max(per_step(5))
        watch = run.watch(model, opt, every_n_steps=every, first_steps=0)
        try:
            counts = per_step(steps)
        finally:
            watch.close()
    finally:
        for m, f in originals.items():
            setattr(torch.Tensor, m, f)
    quiet = sum(c - baseline for i, c in enumerate(counts) if i % every)
    audited = max(c - baseline for i, c in enumerate(counts) if i % every == 0)
    return quiet, audited


def steady_malloc() -> bool:
    """Stop glibc from returning freed heap to the system, so neither mode pays page faults the other does not.

    With glibc's defaults, whether a step's large temporaries land on fresh pages depends on the allocation
    history, and the bare loop was seen paying ~300 page faults per step that the watched loop (holding a few
    references longer) did not: a bias in the watch's favour. Returns False where this is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(mallopt(opt, value) == 1 for opt, value in (
        (m_mmap_threshold, 32 << 20), (m_trim_threshold, 1 << 30), (m_top_pad, 64 << 20)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=200, help="steps per timed every-step block")
    ap.add_argument("--default-steps", type=int, default=1000,
                    help="steps per default-sampling block, timed from the watch's creation")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="cpu",
                    help="wall: perf_counter; cpu: this thread's CPU time (steadier on a machine shared with others)")
    ap.add_argument("--models", default="ta_mlp")
    ap.add_argument("--open", action="store_true", help="also time Run open + watch")
    ap.add_argument("--default-malloc", action="store_true",
                    help="keep glibc's heap trimming (see steady_malloc; it flatters the watch)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    steady = not args.default_malloc and steady_malloc()
    ta = _torch_audit()
    with tempfile.TemporaryDirectory() as tmp, tw.Run(f"{tmp}/run", checkpoint_seconds=3600) as run:
        clock = time.perf_counter if args.clock == "wall" else time.thread_time
        print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, {args.repeats} interleaved repeats, "
              f"{args.clock} clock, heap trimming {'off' if steady else 'on'}, torch-audit "
              f"{getattr(ta, '__version__', 'installed') if ta else 'not installed'}")
        print(f"{'model':<12} {'bare ms':>8} {'every step':>11} {'first 64':>9} {'default (mean)':>15} "
              f"{'paired':>7} {'paired 64+':>10} {'torch-audit':>12} {'syncs off-audit':>16} "
              f"{'syncs/audited step':>19}")
        for name in args.models.split(","):
            t = time_modes(name, args.repeats, args.steps, args.default_steps, run, clock)
            paired = paired_default(name, max(3, args.repeats // 2), args.default_steps, run, clock)
            steady = paired_default(name, max(3, args.repeats // 2), args.default_steps, run, clock, skip=CLOSE_WATCH)
            quiet, worst = count_syncs(name, 300, 100, run)
            _, worst1 = count_syncs(name, 20, 1, run)
            audit = f"{t['torch-audit']:11.2f}x" if "torch-audit" in t else f"{'-':>12}"
            print(f"{name:<12} {t['bare'] * 1e3:8.3f} {t['every step']:10.2f}x {t['first']:8.2f}x "
                  f"{t['default']:14.3f}x {paired:6.3f}x {steady:9.3f}x {audit} {quiet:16d} "
                  f"{max(worst, worst1):19d}")
        if args.open:
            first, median = time_open(args.models.split(",")[0])
            print(f"Run open + watch: {median:.1f} ms median ({first:.1f} ms the first time in this process)")


if __name__ == "__main__":
    main()
