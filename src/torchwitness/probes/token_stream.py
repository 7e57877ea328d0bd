"""Token statistics computed while ``generate`` runs, so it never has to keep every step's logits.

Asking ``generate`` for ``output_logits`` / ``output_scores`` keeps all ``T`` step distributions ``[B, V]``
alive (with a 49k vocabulary, 12 MB for 64 tokens) and returns the whole cache, which alone costs ~8 % of a
64-token SmolLM2 call on CPU. :class:`StepCollector` instead reduces each step's logits to four ``[B]``
values on the logits' device as soon as the step's token is known, keeping only the previous step's
``[B, V]`` tensor: the token chosen at step ``t`` is the last column of ``input_ids`` at step ``t + 1``.

The arithmetic is :func:`~torchwitness.probes.token_stats.token_statistics` on one position at a time, so the
values are exactly those of the post-hoc computation. Nothing here reads a value back to the host.
"""

from __future__ import annotations

from typing import Any

import torch

from torchwitness.errors import InputError
from torchwitness.probes.hookref import detachable
from torchwitness.probes.token_stats import TOKEN_FIELDS, token_statistics


class StepCollector:
    """A logits processor that reduces each generation step to its token statistics.

    ``raw=True`` describes the model's own distribution: the logits are taken from the model's forward
    output by a hook (:meth:`attach`), before any processor touched them. ``raw=False`` describes the
    distribution generation sampled from: the scores this processor receives after every other one, sampling
    warpers included.
    """

    def __init__(self, raw: bool) -> None:
        self.raw = raw
        self._latest: torch.Tensor | None = None  # the raw logits of the current step (raw mode)
        self._pending: torch.Tensor | None = None  # the previous step's [B, V], awaiting its chosen token
        self._steps: list[dict[str, torch.Tensor]] = []
        self._hook: Any = None
        self._unpatch: Any = None

    def attach(self, model: Any, kwargs: dict[str, Any]) -> StepCollector:
        """Hook into ``model`` for one ``generate(**kwargs)`` call; :meth:`detach` undoes it."""
        if self.raw:
            # Position in the processor list does not matter: the logits come from the forward hook.
            kwargs["logits_processor"] = [*(kwargs.get("logits_processor") or []), self]
            self._hook = model.register_forward_hook(detachable(self._capture))
            return self
        build = getattr(model, "_get_logits_processor", None)
        if build is None:
            raise InputError("distribution='processed' needs a transformers model (one that builds its "
                             "logits processors in _get_logits_processor)")

        def last_of_all(*args: Any, **kw: Any) -> Any:
            # generate appends its sampling warpers after user processors: this runs after all of them.
            processors = build(*args, **kw)
            processors.append(self)
            return processors

        model._get_logits_processor = last_of_all
        self._unpatch = lambda: model.__dict__.pop("_get_logits_processor", None)
        return self

    def detach(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._unpatch is not None:
            self._unpatch()
            self._unpatch = None

    def _capture(self, module: Any, args: Any, output: Any) -> None:
        logits = output.logits if hasattr(output, "logits") else output[0]
        self._latest = logits[:, -1]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self._pending is not None:
            self._reduce(input_ids[:, -1])
        self._pending = self._latest if self.raw else scores
        self._latest = None
        return scores

    def _reduce(self, chosen: torch.Tensor) -> None:
        assert self._pending is not None
        with torch.no_grad():
            stats = token_statistics(self._pending.unsqueeze(1), chosen.unsqueeze(1).to(self._pending.device))
        self._steps.append(stats)
        self._pending = None

    def finish(self, sequences: torch.Tensor, new_tokens: int) -> dict[str, torch.Tensor]:
        """``[B, new_tokens]`` statistics of the last ``new_tokens`` columns of ``sequences``.

        Steps ``generate`` ran but then undid (deferred stop checks on MPS) are dropped.
        """
        del self._steps[new_tokens:]
        if len(self._steps) < new_tokens and self._pending is not None:
            self._reduce(sequences[:, -1])
        self._pending = None
        if not self._steps:
            empty = torch.zeros(sequences.shape[0], 0, dtype=torch.float64, device=sequences.device)
            return dict.fromkeys(TOKEN_FIELDS, empty)
        return {k: torch.cat([s[k] for s in self._steps], 1) for k in TOKEN_FIELDS}
