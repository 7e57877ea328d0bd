"""The generation probe: token-level evidence of what a language model generated and how sure it was.

``GenerationProbe.generate`` wraps ``model.generate`` (greedy or sampled) and reduces each step's logits to
its statistics as they are produced (:mod:`torchwitness.probes.token_stream`): no second forward pass, and
``generate`` is not asked to keep every step's logits. ``GenerationProbe.score``
scores given continuations with one plain forward of any module returning logits. Either way each request
(one row of the batch) becomes one ``llm.generation`` record holding the statistics of
:mod:`torchwitness.probes.token_stats`, the stop reason, the latency and token counts; prompt and completion
enter only through a :class:`~torchwitness.controls.content.ContentPolicy` (commitments by default).

Which distribution the statistics describe is recorded in ``distribution``:

* ``"raw"`` (default): the model's own next-token distribution, ``softmax(logits)``, what a full forward
  pass over the final sequence gives. Comparable across decoding settings.
* ``"processed"``: the distribution generation actually sampled from, after logits processors (temperature,
  top-k, top-p, repetition penalty). Tokens a processor removed have probability 0 (``0 log 0 = 0``).

All statistics are computed on the model's device and reach the host in one transfer per call, after
``generate`` returns: no host-device synchronisation per generated token.

Example::

    probe = GenerationProbe(run, model_name="smollm2-135m", tokenizer=tok)
    out = probe.generate(model, **tok("Hello", return_tensors="pt"), max_new_tokens=32, do_sample=True)
    probe.last[0]["stats"]["perplexity"]
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

import msgspec
import torch

from torchwitness.controls.content import ContentPolicy, ledger_of
from torchwitness.errors import InputError
from torchwitness.ledger.schema import register_kind
from torchwitness.probes.agent import current_step, new_span_id, new_trace_id
from torchwitness.probes.token_stats import (
    SEQUENCE_FIELDS,
    TOKEN_FIELDS,
    sequence_statistics,
    token_statistics_chunked,
)
from torchwitness.probes.token_stream import StepCollector

Distribution = Literal["raw", "processed"]


class GenerationStats(msgspec.Struct):
    length: int
    logprob_sum: Any
    logprob_mean: Any
    perplexity: Any
    entropy_mean: Any
    entropy_max: Any
    margin_mean: Any
    margin_min: Any
    rank_mean: Any
    rank_max: Any
    top1_fraction: Any


class LlmGeneration(msgspec.Struct):
    """One request to a language model: token statistics, stop reason, latency, content commitments."""

    request: str
    mode: str  # "generate" or "score"
    model: str | None
    provider: str
    distribution: str
    input_tokens: int
    output_tokens: int
    stop_reason: str | None  # "stop" (end-of-sequence token), "length", "other"; None when scoring
    latency_s: float
    batch_size: int
    stats: GenerationStats
    trace_id: str
    span_id: str
    sampling: dict[str, Any] = {}
    tokens: dict[str, list[Any]] | None = None
    prompt: dict[str, str] | None = None
    completion: dict[str, str] | None = None
    prompt_redactions: dict[str, int] | None = None
    completion_redactions: dict[str, int] | None = None


register_kind("llm.generation", LlmGeneration)

_SAMPLING_KEYS = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "max_new_tokens", "seed")


class GenerationProbe:
    """Records an ``llm.generation`` record per request made through :meth:`generate` or :meth:`score`.

    ``provider`` is who serves the model (``gen_ai.provider.name``). ``keep_tokens=True`` adds the per-token
    arrays (logprob, entropy, margin, rank) to each record; token ids are never recorded (they are the text).
    ``last`` holds the records of the latest call, as plain dicts; ``overhead_s`` the seconds the probe itself
    spent after ``generate`` returned (statistics, host copy, commitments, queueing the records).
    """

    def __init__(self, run: Any, *, model_name: str | None = None, tokenizer: Any = None,
                 content: ContentPolicy | None = None, keep_tokens: bool = False,
                 distribution: Distribution = "raw", provider: str = "transformers") -> None:
        if distribution not in ("raw", "processed"):
            raise InputError(f"distribution must be 'raw' or 'processed', not {distribution!r}")
        self.run = run
        self.model_name = model_name
        self.provider = provider
        self.tokenizer = tokenizer
        self.content = content or ContentPolicy()
        self.keep_tokens = keep_tokens
        self.distribution = distribution
        self.last: list[dict[str, Any]] = []
        self.overhead_s = 0.0

    # ------------------------------------------------------------------ generate
    def generate(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                 prompt: str | list[str] | None = None, **kwargs: Any) -> Any:
        """Call ``model.generate`` and record each row's statistics; returns what ``generate`` would return.

        ``prompt`` (text) is what gets committed; without it the prompt is decoded from ``input_ids``.
        """
        if kwargs.get("num_beams", getattr(model.generation_config, "num_beams", 1)) not in (None, 1):
            raise InputError("the generation probe supports greedy and sampled decoding, not beam search")
        collector = StepCollector(raw=self.distribution == "raw")
        collector.attach(model, kwargs)
        start = time.perf_counter()
        try:
            out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        finally:
            collector.detach()
        done = time.perf_counter()
        latency = done - start
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        n_new = sequences.shape[1] - input_ids.shape[1]
        tokens = sequences[:, input_ids.shape[1]:]
        per_token = collector.finish(sequences, n_new)
        eos = _eos_ids(model, kwargs, tokens.device)
        is_eos = torch.isin(tokens, eos) if eos is not None else torch.zeros_like(tokens, dtype=torch.bool)
        # Scored positions run up to and including the first end-of-sequence token; later ones are padding.
        after_eos = (torch.cumsum(is_eos, dim=1) - is_eos.long()) > 0
        mask = ~after_eos
        ended = (is_eos & mask).any(1)
        max_new = kwargs.get("max_new_tokens", getattr(model.generation_config, "max_new_tokens", None))
        sampling = _sampling(model, kwargs)
        self._record(mode="generate", per_token=per_token, tokens=tokens, mask=mask, ended=ended,
                     prompt_ids=input_ids, prompt_mask=attention_mask, prompt=prompt, latency=latency,
                     max_new=max_new, sampling=sampling)
        self.overhead_s = time.perf_counter() - done
        return out

    # ------------------------------------------------------------------ score
    def score(self, model: Any, input_ids: torch.Tensor, *, prompt_length: int = 1,
              attention_mask: torch.Tensor | None = None, prompt: str | list[str] | None = None,
              completion: str | list[str] | None = None) -> torch.Tensor:
        """Score ``input_ids[:, prompt_length:]`` given what precedes it, with one forward pass; returns logits.

        ``model`` is any module mapping token ids ``[B, L]`` to logits ``[B, L, V]`` (a tensor, a tuple whose
        first item is the logits, or an object with ``.logits``). Positions where ``attention_mask`` is 0 are
        not scored.
        """
        if not 1 <= prompt_length < input_ids.shape[1]:
            raise InputError(f"prompt_length must be in [1, {input_ids.shape[1] - 1}], not {prompt_length}")
        start = time.perf_counter()
        with torch.no_grad():
            out = model(input_ids) if attention_mask is None else model(input_ids, attention_mask=attention_mask)
        latency = time.perf_counter() - start
        full = out.logits if hasattr(out, "logits") else (out[0] if isinstance(out, (tuple, list)) else out)
        logits = full[:, prompt_length - 1:-1]
        tokens = input_ids[:, prompt_length:]
        mask = torch.ones_like(tokens, dtype=torch.bool) if attention_mask is None else \
            attention_mask[:, prompt_length:].bool()
        prompt_mask = None if attention_mask is None else attention_mask[:, :prompt_length]
        with torch.no_grad():
            per_token = token_statistics_chunked(logits, tokens)
        self._record(mode="score", per_token=per_token, tokens=tokens, mask=mask, ended=None,
                     prompt_ids=input_ids[:, :prompt_length], prompt_mask=prompt_mask, prompt=prompt,
                     completion=completion, latency=latency, max_new=None, sampling={})
        return full

    # ------------------------------------------------------------------ shared
    def _record(self, *, mode: str, per_token: dict[str, torch.Tensor], tokens: torch.Tensor,
                mask: torch.Tensor, ended: torch.Tensor | None, prompt_ids: torch.Tensor,
                prompt_mask: torch.Tensor | None,
                prompt: str | list[str] | None, latency: float, max_new: int | None, sampling: dict[str, Any],
                completion: str | list[str] | None = None) -> None:
        b, t = tokens.shape
        with torch.no_grad():
            per_seq = sequence_statistics(per_token, mask)
        in_len = prompt_mask.sum(1) if prompt_mask is not None else torch.full((b,), prompt_ids.shape[1],
                                                                             device=prompt_ids.device)
        parts = [torch.stack([per_seq[k].double() for k in SEQUENCE_FIELDS], 1),
                 in_len.double().unsqueeze(1),
                 (ended if ended is not None else torch.zeros(b, dtype=torch.bool, device=tokens.device))
                 .double().unsqueeze(1)]
        decode = prompt is None or completion is None
        if decode:
            parts += [tokens.double(), prompt_ids.double(),
                      (prompt_mask if prompt_mask is not None else torch.ones_like(prompt_ids)).double()]
        if self.keep_tokens:
            parts += [torch.stack([per_token[k].double() for k in TOKEN_FIELDS], 1).flatten(1)]
        # The one device-to-host transfer of this call.
        host = torch.cat([p.to(tokens.device).flatten(1) for p in parts], 1).cpu().numpy()
        step = current_step()
        self.last = []
        for i in range(b):
            row = host[i]
            pos = len(SEQUENCE_FIELDS)
            agg = dict(zip(SEQUENCE_FIELDS, row[:pos].tolist(), strict=True))
            n_in, stopped = int(row[pos]), bool(row[pos + 1])
            pos += 2
            n_out = int(agg["length"])
            texts: dict[str, str | None] = {"prompt": _pick(prompt, i), "completion": _pick(completion, i)}
            if decode:
                out_ids = row[pos:pos + t].astype("int64")[:n_out].tolist()
                p_ids = row[pos + t:pos + t + prompt_ids.shape[1]].astype("int64")
                p_keep = row[pos + t + prompt_ids.shape[1]:pos + t + 2 * prompt_ids.shape[1]] > 0
                pos += t + 2 * prompt_ids.shape[1]
                if texts["prompt"] is None:
                    texts["prompt"] = self._text(p_ids[p_keep].tolist())
                if texts["completion"] is None:
                    texts["completion"] = self._text(out_ids)
            data: dict[str, Any] = {
                "request": uuid.uuid4().hex, "mode": mode, "model": self.model_name,
                "provider": self.provider, "distribution": self.distribution, "input_tokens": n_in,
                "output_tokens": n_out,
                "stop_reason": None if mode == "score" else
                ("stop" if stopped else "length" if max_new is not None and t >= max_new else "other"),
                "latency_s": round(latency, 6), "batch_size": b, "sampling": sampling,
                "stats": {"length": n_out, **{k: v for k, v in agg.items() if k != "length"}},
                "trace_id": step.trace_id if step is not None else new_trace_id(),
                "span_id": step.span_id if step is not None else new_span_id(),
            }
            if self.keep_tokens:
                arr = row[pos:pos + 4 * t].reshape(4, t)[:, :n_out]
                data["tokens"] = {k: arr[j].tolist() for j, k in enumerate(TOKEN_FIELDS)}
            data.update(self.content.commit(self.run, **texts))
            ledger_of(self.run).append("llm.generation", data)
            if step is not None:
                step.add_generation(data)
            self.last.append(data)

    def _text(self, ids: list[int]) -> str:
        if self.tokenizer is not None:
            return self.tokenizer.decode(ids, skip_special_tokens=True)
        return json.dumps(ids)


def _pick(value: str | list[str] | None, i: int) -> str | None:
    return value[i] if isinstance(value, list) else value


def _eos_ids(model: Any, kwargs: dict[str, Any], device: torch.device) -> torch.Tensor | None:
    # An explicit eos_token_id=None switches end-of-sequence stopping off in generate, so it must here too.
    if "eos_token_id" in kwargs:
        eos = kwargs["eos_token_id"]
    else:
        eos = (kwargs.get("generation_config") or model.generation_config).eos_token_id
    if eos is None:
        return None
    return torch.tensor([eos] if isinstance(eos, int) else list(eos), device=device)


def _sampling(model: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    cfg = kwargs.get("generation_config") or model.generation_config
    out = {}
    for k in _SAMPLING_KEYS:
        v = kwargs.get(k, getattr(cfg, k, None))
        if isinstance(v, (bool, int, float, str)):
            out[k] = v
    return out
