"""Static rules on loading untrusted files: ``torch.load`` without ``weights_only`` and pickle-family loaders.

Unpickling runs arbitrary code chosen by whoever wrote the file (EU AI Act Art. 15(5): model poisoning and
confidentiality attacks). ``torchwitness scan-model`` checks a file; these rules check the code that loads one.
"""

from __future__ import annotations

from collections.abc import Iterator

from torchwitness.rules.catalogue import Phase, Severity, rule
from torchwitness.rules.findings import Finding
from torchwitness.rules.static.context import NOT_CONSTANT, FileContext, constant

TRIGGERS = {  # a file containing none of these substrings cannot trigger the rule, and is not parsed for it
    "TW602": ("load(", "load (", "load_state_dict_from_url"),
    "TW603": ("load(", "loads(", "load (", "Unpickler", "read_pickle", "shelve", "allow_pickle"),
}
_OBLIGATIONS = ("eu-ai-act:15(5)",)
_TORCH_LOADERS = ("torch.load", "torch.hub.load_state_dict_from_url")
_PICKLE_LOADERS = {f"{mod}.{fn}" for mod in ("pickle", "_pickle", "cPickle", "dill", "cloudpickle")
                   for fn in ("load", "loads", "Unpickler")} | {"joblib.load", "pandas.read_pickle",
                                                               "pd.read_pickle", "shelve.open"}


@rule("TW602", name="torch-load-unsafe", title="torch.load without weights_only=True",
      severity=Severity.WARN, phase=Phase.STATIC, category="security", obligations=_OBLIGATIONS,
      remediation="Pass weights_only=True (or load safetensors); with weights_only=False the file can run code.",
      references=("https://pytorch.org/docs/stable/generated/torch.load.html",))
def torch_load_unsafe(ctx: FileContext) -> Iterator[Finding]:
    """``torch.load`` unpickles: a checkpoint can execute arbitrary code unless ``weights_only=True``.

    Example::

        state = torch.load(path)                      # warn: relies on the default (True only since torch 2.6)
        state = torch.load(path, weights_only=False)  # error: explicitly allows code execution

    Fix: ``torch.load(path, weights_only=True)``, or store weights as safetensors.
    """
    for call in ctx.calls_named(*_TORCH_LOADERS):
        flag = call.kwarg("weights_only")
        value = constant(flag)
        if value is True:
            continue
        if flag is None:
            if call.has_star_kwargs:
                continue
            yield ctx.finding("TW602", call.node, f"{call.raw}() without weights_only=True: safe only under "
                              "torch>=2.6 defaults; older torch unpickles arbitrary objects")
        elif value is False:
            yield ctx.finding("TW602", call.node, f"{call.raw}(weights_only=False) lets the file execute code",
                              severity=Severity.ERROR)
        elif value is NOT_CONSTANT:
            yield ctx.finding("TW602", call.node, f"{call.raw}() with a computed weights_only; make it True",
                              severity=Severity.INFO)


@rule("TW603", name="pickle-load", title="pickle-family load of a file",
      severity=Severity.WARN, phase=Phase.STATIC, category="security", obligations=_OBLIGATIONS,
      remediation="Load data with a format that cannot run code (safetensors, JSON, numpy without allow_pickle), "
                  "or scan the file first with 'torchwitness scan-model'.")
def pickle_load(ctx: FileContext) -> Iterator[Finding]:
    """``pickle``/``joblib``/``dill``/``cloudpickle`` loads, ``pandas.read_pickle`` and ``numpy.load`` with
    ``allow_pickle=True`` execute whatever the file says.

    Example::

        model = joblib.load("model.joblib")
        arr = np.load("x.npy", allow_pickle=True)

    Fix: prefer safetensors / JSON / plain ``np.load``; when a pickle is unavoidable, check its origin and scan it.
    """
    for call in ctx.calls:
        if call.name in _PICKLE_LOADERS:
            yield ctx.finding("TW603", call.node, f"{call.raw}() unpickles: the input can execute code")
        elif call.name in ("numpy.load", "np.load") and constant(call.kwarg("allow_pickle")) is True:
            yield ctx.finding("TW603", call.node, f"{call.raw}(allow_pickle=True) unpickles object arrays")
