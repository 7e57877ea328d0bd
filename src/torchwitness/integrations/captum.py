"""Per-decision explanations through Captum, recorded as ``explain.attribution`` records.

Integrated Gradients for tabular models, Layer Integrated Gradients over the embedding layer for token models.
The recorded convergence delta is Captum's completeness gap: ``sum(attributions) - (F(x) - F(baseline))`` for
the explained class, so a reader can judge how far to trust the attribution. Everything needed to reproduce
the explanation (method, steps, baseline, target, seed) is recorded beside it. Integrated Gradients is
deterministic, so nothing here touches the global random state (a serving process's other threads draw from
it); the seed is recorded for methods that sample.
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import torch

from torchwitness.errors import FailureWarnings, InputError
from torchwitness.ledger.schema import register_kind


class AttributionRecord(msgspec.Struct):
    """``explain.attribution``: the top features or tokens of one decision and the completeness delta."""

    decision_id: str
    method: str
    target: int
    n_steps: int
    baseline: str
    seed: int
    delta: float
    top: list[list[Any]]  # [[feature or token position, attribution], ...] by |attribution|
    total: float
    input_checked: bool | None = None  # the explained input was checked against its serving-time commitment


class SkippedRecord(msgspec.Struct):
    """``explain.skipped``: rows a policy selected for explanation that were not explained (the queue was full)."""

    count: int
    reason: str


register_kind("explain.attribution", AttributionRecord)
register_kind("explain.skipped", SkippedRecord)


def _captum() -> Any:
    try:
        import captum.attr
    except ImportError as e:
        raise ImportError("explanations need Captum: pip install 'torchwitness[explain]'") from e
    return captum.attr


@dataclass
class Explanation:
    method: str
    target: int
    attributions: torch.Tensor
    delta: float
    top: list[tuple[Any, float]]
    n_steps: int
    baseline: str
    seed: int

    def record(self, run: Any, decision_id: str) -> int | None:
        return run.record("explain.attribution", {
            "decision_id": decision_id, "method": self.method, "target": self.target, "n_steps": self.n_steps,
            "baseline": self.baseline, "seed": self.seed, "delta": self.delta,
            "top": [[k, v] for k, v in self.top], "total": float(self.attributions.sum())})


def _top(values: torch.Tensor, names: list[str] | None, k: int) -> list[tuple[Any, float]]:
    order = values.abs().argsort(descending=True)[:k].tolist()
    return [((names[i] if names else i), float(values[i])) for i in order]


def explain_tabular(model: torch.nn.Module, x: torch.Tensor, *, target: int | None = None,
                    baseline: torch.Tensor | None = None, n_steps: int = 64, top_k: int = 5,
                    feature_names: list[str] | None = None, seed: int = 0) -> Explanation:
    """Integrated Gradients for one row ``x`` (shape ``[features]``) of a model returning class logits."""
    attr = _captum()
    if x.dim() != 1:
        raise InputError(f"explain one row at a time: got a tensor of shape {tuple(x.shape)}")
    model.eval()
    inputs = x.detach().float().unsqueeze(0)
    base = torch.zeros_like(inputs) if baseline is None else baseline.detach().float().reshape(inputs.shape)
    if target is None:
        with torch.no_grad():
            target = int(model(inputs).argmax(-1))
    ig = attr.IntegratedGradients(model)
    values, delta = ig.attribute(inputs, base, target=target, n_steps=n_steps, return_convergence_delta=True)
    values = values[0].detach()
    return Explanation("integrated_gradients", target, values, float(delta.abs().max()),
                       _top(values, feature_names, top_k), n_steps, "zeros" if baseline is None else "given", seed)


def explain_tokens(model: torch.nn.Module, embedding: torch.nn.Module, token_ids: torch.Tensor, *,
                   target: int | None = None, baseline_id: int = 0, n_steps: int = 64, top_k: int = 5,
                   tokens: list[str] | None = None, seed: int = 0) -> Explanation:
    """Layer Integrated Gradients over ``embedding`` for one sequence of ``token_ids`` (a classifier)."""
    attr = _captum()
    if token_ids.dim() != 1:
        raise InputError("explain one token sequence at a time")
    model.eval()
    ids = token_ids.unsqueeze(0)
    base = torch.full_like(ids, baseline_id)
    if target is None:
        with torch.no_grad():
            target = int(model(ids).argmax(-1))
    lig = attr.LayerIntegratedGradients(model, embedding)
    values, delta = lig.attribute(ids, base, target=target, n_steps=n_steps, return_convergence_delta=True)
    per_token = values[0].sum(-1).detach()
    return Explanation("layer_integrated_gradients", target, per_token, float(delta.abs().max()),
                       _top(per_token, tokens, top_k), n_steps, f"token {baseline_id}", seed)


def input_embedding(model: torch.nn.Module) -> torch.nn.Module:
    """The layer a token model's attributions go through: ``get_input_embeddings()`` (Hugging Face), else the
    model's first ``nn.Embedding``."""
    get_embeddings = getattr(model, "get_input_embeddings", None)
    layer = get_embeddings() if callable(get_embeddings) else None
    if layer is None:
        layer = next((m for m in model.modules() if isinstance(m, torch.nn.Embedding)), None)
    if layer is None:
        raise InputError("the input is token ids, but the model has no embedding layer to attribute through")
    return layer


class _Logits(torch.nn.Module):
    """Captum needs a tensor out; a transformers classifier returns an output object that holds the logits."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.model(ids)
        return out if isinstance(out, torch.Tensor) else out.logits


def explain_input(model: torch.nn.Module, x: torch.Tensor, *, n_steps: int = 64, top_k: int = 5,
                  seed: int = 0, feature_names: Sequence[str] | None = None) -> Explanation:
    """One served row, explained the way its input calls for: token ids (an integer row) by Layer Integrated
    Gradients through the model's input embedding, features by Integrated Gradients."""
    if x.dtype.is_floating_point:
        return explain_tabular(model, x, n_steps=n_steps, top_k=top_k, seed=seed,
                               feature_names=list(feature_names) if feature_names else None)
    return explain_tokens(_Logits(model), input_embedding(model), x.long(), n_steps=n_steps, top_k=top_k, seed=seed)


_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
               "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks",
               "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")


def _computes_weights(hook: Any) -> bool:
    # Pre-hooks that compute a weight from parameters before each forward (pruning masks, the old weight and
    # spectral norms) are part of the model's arithmetic, not observers: the shadow keeps them.
    from torch.nn.utils.prune import BasePruningMethod
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    return isinstance(hook, (BasePruningMethod, SpectralNorm, WeightNorm))


def shadow(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model``'s module objects that shares its tensors and has none of its observing hooks: what
    runs on it (a mode change, attribution hooks, gradients) does not reach ``model``, and it costs no memory for
    weights. Observing hooks are what ``deepcopy`` cannot copy (they hold locks, connections) and what an
    explanation must not trigger; hooks that compute weights are kept."""
    memo: dict[int, Any] = {id(t): t for t in (*model.parameters(), *model.buffers())}
    for module in model.modules():
        for value in module.__dict__.values():  # weights a kept hook recomputes (non-leaf: not deep-copyable)
            if isinstance(value, torch.Tensor):
                memo[id(value)] = value
        for name in _HOOK_DICTS:
            hooks = module.__dict__.get(name)
            if hooks is not None:
                memo[id(hooks)] = type(hooks)((k, copy.deepcopy(h)) for k, h in hooks.items() if _computes_weights(h))
    return copy.deepcopy(model, memo)


class ExplanationWorker:
    """Explains decisions on a thread of its own and records each (``explain.attribution``), so a serving thread
    hands a row over and never waits for Captum. At most ``capacity`` rows wait; beyond that a row is skipped,
    counted in ``skipped`` and, at close, in an ``explain.skipped`` record.

    Rows are explained on a shadow of the served model, made at the first: its module objects are copies without
    hooks, its parameters and buffers the served ones (no memory, and in-place weight updates are followed).
    Explaining sets the shadow to eval mode and Layer Integrated Gradients hooks its embedding layer; neither
    reaches the served model, its mode, or hooks on it (``run.watch``'s, say). A model whose shadow cannot be
    made has its rows skipped with one warning; serving is untouched.
    """

    def __init__(self, model: torch.nn.Module, run: Any, *, n_steps: int = 64, top_k: int = 5,
                 feature_names: Sequence[str] | None = None, capacity: int = 64) -> None:
        _captum()  # a missing extra is said now, not on the worker thread
        self.model, self.run = model, run
        self._shadow: torch.nn.Module | InputError | None = None
        self.n_steps, self.top_k, self.feature_names = n_steps, top_k, feature_names
        self.skipped = 0
        self._queue: queue.Queue[tuple[str, torch.Tensor] | None] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._work, name="torchwitness-explain", daemon=True)
        self._thread.start()

    def submit(self, decision_id: str, row: torch.Tensor) -> bool:
        """Queue one served row for explanation; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait((decision_id, row))
        except queue.Full:
            self.skipped += 1
            return False
        return True

    def close(self) -> None:
        """Explain what is queued, then stop; record how many rows were skipped, if any."""
        self._queue.put(None)
        self._thread.join()
        if self.skipped:
            self.run.record("explain.skipped", {"count": self.skipped, "reason": "explanation queue full"})

    def _shadowed(self) -> torch.nn.Module:
        if self._shadow is None:
            try:
                self._shadow = shadow(self.model)
            except Exception as e:  # remembered: not tried again for every row
                self._shadow = InputError(f"rows are explained on a shadow of the model, which cannot be made "
                                          f"({type(e).__name__}: {e})")
        if isinstance(self._shadow, InputError):
            raise self._shadow
        return self._shadow

    def _work(self) -> None:
        failures = FailureWarnings()
        while (item := self._queue.get()) is not None:
            decision_id, row = item
            try:
                explanation = explain_input(self._shadowed(), row, n_steps=self.n_steps, top_k=self.top_k,
                                            feature_names=self.feature_names)
                explanation.record(self.run, decision_id)
            except Exception as e:  # one row that cannot be explained must not stop the others
                failures.warn(f"decision {decision_id} not explained", e, key="explain")
