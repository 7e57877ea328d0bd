"""Static reproducibility rules: seeding, DataLoader worker seeding, cuDNN autotuning.

A run that cannot be re-run to the same numbers cannot back claims about its accuracy (EU AI Act Art. 15(1),
Annex IV 2(g): test logs that someone else can reproduce).
"""

from __future__ import annotations

from collections.abc import Iterator

from torchwitness.rules.catalogue import Phase, Severity, rule
from torchwitness.rules.findings import Finding
from torchwitness.rules.static.context import FileContext, Loop, constant

TRIGGERS = {  # a file containing none of these substrings cannot trigger the rule, and is not parsed for it
    "TW601": (".backward(",),
    "TW604": ("DataLoader",),
    "TW610": (".benchmark =", ".benchmark="),
}
_OBLIGATIONS = ("eu-ai-act:15(1)", "eu-ai-act:annex-iv:2(g)")
_SEED_ATTRS = {"manual_seed", "manual_seed_all", "seed_everything", "set_seed", "enable_full_determinism"}


def training_loops(ctx: FileContext) -> list[tuple[Loop, list]]:
    """Outermost-first loops holding a ``.backward()`` call in their own scope, with the calls inside each."""
    by_scope = ctx.calls_by_scope()
    out = []
    for loop in ctx.loops:
        inside = [c for c in by_scope.get(loop.scope, ()) if loop.contains(c.line)]
        if any(c.attr == "backward" for c in inside):
            out.append((loop, inside))
    return out


@rule("TW601", name="missing-seed", title="training loop in a file that never seeds torch",
      severity=Severity.WARN, phase=Phase.STATIC, category="reproducibility", obligations=_OBLIGATIONS,
      remediation="Call torch.manual_seed(seed) (or lightning.seed_everything / transformers.set_seed) before "
                  "building the model and data, and record the seed (tw.Run(seed=...)).")
def missing_seed(ctx: FileContext) -> Iterator[Finding]:
    """A file with a training loop (``.backward()`` inside a loop) and no seeding call anywhere in it.

    Example::

        model = Net(); opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in loader:
            loss_fn(model(x), y).backward(); opt.step()

    Fix: ``torch.manual_seed(0)`` at the start (seeding in another module of the same program is not visible to a
    per-file check: suppress with ``# torchwitness: ignore[TW601]`` on the loop line).
    """
    if any(c.attr in _SEED_ATTRS or c.name in ("random.seed", "numpy.random.seed") for c in ctx.calls):
        return
    loops = training_loops(ctx)
    if loops:
        loop = loops[0][0]
        yield ctx.finding("TW601", loop.node, "training loop, but nothing in this file seeds torch's RNG")


@rule("TW604", name="dataloader-worker-seed", title="DataLoader workers without a seeded generator",
      severity=Severity.WARN, phase=Phase.STATIC, category="reproducibility", obligations=_OBLIGATIONS,
      remediation="Pass generator=torch.Generator().manual_seed(seed) and a worker_init_fn that seeds numpy and "
                  "random from torch.initial_seed().")
def dataloader_worker_seed(ctx: FileContext) -> Iterator[Finding]:
    """``DataLoader(num_workers>0)`` with neither ``generator=`` nor ``worker_init_fn=``: shuffling follows the
    global RNG and each worker's numpy/random state is not seeded, so augmentation differs between runs.

    Example::

        DataLoader(ds, batch_size=32, shuffle=True, num_workers=4)

    Fix::

        g = torch.Generator().manual_seed(0)
        DataLoader(ds, shuffle=True, num_workers=4, generator=g, worker_init_fn=seed_worker)
    """
    for call in ctx.calls:
        if not (call.name and call.name.rsplit(".", 1)[-1] == "DataLoader") or call.has_star_kwargs:
            continue
        workers = call.kwarg("num_workers")
        if workers is None and len(call.node.args) >= 7:
            workers = call.node.args[6]  # DataLoader(dataset, batch_size, shuffle, sampler, batch_sampler, num_workers
        if workers is None or constant(workers) == 0:
            continue
        if call.kwarg("generator") is None and call.kwarg("worker_init_fn") is None:
            yield ctx.finding("TW604", call.node, "DataLoader with worker processes but neither generator= nor "
                              "worker_init_fn=: worker RNG streams are not reproducible")


@rule("TW610", name="cudnn-benchmark", title="cuDNN autotuning turned on",
      severity=Severity.INFO, phase=Phase.STATIC, category="reproducibility", obligations=_OBLIGATIONS,
      remediation="Leave torch.backends.cudnn.benchmark False (and set cudnn.deterministic=True) for runs that "
                  "must be reproducible.")
def cudnn_benchmark(ctx: FileContext) -> Iterator[Finding]:
    """``torch.backends.cudnn.benchmark = True`` picks convolution algorithms by timing, so two runs may pick
    different (numerically different) kernels.

    Example::

        torch.backends.cudnn.benchmark = True

    Fix: keep it off in runs whose numbers are evidence.
    """
    for a in ctx.assigns:
        if ctx.resolve(a.target) == "torch.backends.cudnn.benchmark" and constant(a.value) is True:
            yield ctx.finding("TW610", a.node, "cudnn.benchmark=True selects kernels by timing (nondeterministic)")
