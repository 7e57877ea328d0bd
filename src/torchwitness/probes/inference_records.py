"""The ``inference`` and ``serve.start`` record kinds, reading a window's columns back, checking a retained input
against its commitment, and what a served request must look like."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping
from typing import Any

import msgspec
import numpy as np
import torch

from torchwitness.errors import InputError
from torchwitness.ledger.encoding import Packed, decode_array
from torchwitness.ledger.schema import register_kind
from torchwitness.probes.retained import RetainedInputs, decision_id, parse_decision_id


class InferenceRecord(msgspec.Struct):
    """``inference``: a window of served requests (each a call to the recorder, holding one or more rows).

    Per-request and per-row columns are packed ``$array`` values (read them with
    :func:`~torchwitness.ledger.encoding.decode_array`): a window holds up to thousands of requests, and a JSON
    number list costs the serving process a Python object per element.
    """

    model: str  # sha256 of the weights served
    stream: str  # the recorder's decision stream (see ServeStartRecord)
    first_decision: int  # row j of request i is decision "<run id>-<stream>-<first_decision + sum(rows[:i]) + j>"
    decisions: int  # rows in the window (sum of rows): decisions first_decision .. first_decision + decisions - 1
    rows: Any  # rows per request (uint32 $array)
    latency_us: Any  # forward latency per request, rounded to whole microseconds (uint32 $array)
    fingerprint: str  # "request": inputs holds one commitment per committed request; "row": one per row of
    # those; "none": inputs are not committed
    committed: Any  # the requests (indices into rows) whose inputs are committed, in order (uint32 $array)
    inputs: list[str]  # keyed commitments (hmac-sha256-128), never the values
    outputs: Any  # null when outputs are not recorded, else per row, requests in order: "predictions", the top
    # class (a uint8/int16/int32 $array, the narrowest that holds the model's classes), and "confidence", its
    # probability x 10,000, rounded (an int16 $array)
    retained: bool


class ServeStartRecord(msgspec.Struct):
    """``serve.start``: a recorder began serving; how it records (the evidence of the logging policy itself).

    Its decisions are numbered from 0 in their own stream, named by this record's sequence number (prefixed with
    the rank in a sharded run), so two recorders, two sessions of one run folder or two ranks never hand out the
    same decision id.
    """

    model: str
    sample_every: int
    window: int
    window_seconds: float
    fingerprint: str
    outputs: bool
    retain_inputs: bool
    policy: Any  # the review policy's settings, or null
    retain_seconds: float | None = None  # how long retained inputs are kept; null: until erased


register_kind("inference", InferenceRecord)
register_kind("serve.start", ServeStartRecord)


def window_columns(data: dict[str, Any]) -> dict[str, Any]:
    """An ``inference`` record's per-request and per-row columns as numpy arrays, for readers.

    Adds ``first_decisions``, each request's first decision number; ``predictions`` and ``confidence`` (as a
    probability) are None when outputs were not recorded.

    Example::

        for record in iter_records("runs/serve", kinds={"inference"}):
            cols = window_columns(record["data"])
            slow = cols["first_decisions"][cols["latency_us"] > 1_000]  # requests slower than a millisecond
    """
    rows = decode_array(data["rows"]).astype(np.int64)
    outputs = data["outputs"]
    return {"first_decisions": data["first_decision"] + np.concatenate(([0], np.cumsum(rows)[:-1])).astype(np.int64),
            "rows": rows, "latency_us": decode_array(data["latency_us"]),
            "committed": decode_array(data["committed"]).astype(np.int64),
            "predictions": None if outputs is None else decode_array(outputs["predictions"]),
            "confidence": None if outputs is None else decode_array(outputs["confidence"]) / 10_000}


def _class_dtype(classes: int) -> torch.dtype:
    # The window's predictions are most of a record's bytes, and every byte is base64-encoded and hashed by the
    # writer thread while the serving thread waits for the GIL.
    return torch.uint8 if classes <= 256 else torch.int16 if classes <= 32768 else torch.int32


def _top_class(parts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's top class (in the narrowest integer dtype) and its probability, over a window's outputs."""
    with torch.inference_mode():
        probs = torch.cat(parts) if len(parts) > 1 else parts[0]
        confidence, prediction = probs.max(dim=-1)
        return prediction.to(_class_dtype(probs.shape[-1])), confidence


def _outputs_value(prediction: torch.Tensor, confidence: torch.Tensor) -> dict[str, Packed]:
    with torch.inference_mode():
        return {"predictions": Packed(prediction), "confidence": Packed((confidence * 10_000).round().to(torch.int16))}


def model_digest(model: torch.nn.Module) -> str:
    """``sha256`` over parameter and buffer names, dtypes, shapes and bytes, in state-dict order."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()


def verified_input(store: RetainedInputs, record: dict[str, Any], decision: str,
                   fingerprint: Callable[[bytes], str], erased: Collection[str] = ()) -> tuple[np.ndarray, bool]:
    """The retained row of ``decision`` and whether it was checked against the commitment made when it was
    served (``record``: the ``inference`` record that holds the decision; ``fingerprint``: the run's keyed
    fingerprint, ``Ledger.personal.fingerprint``).

    The side store is private and mutable; the ledger is not. A row whose request was committed is checked: the
    request's retained rows, in order, must hash to the recorded commitment (or the row to its own, with
    ``fingerprint="row"``). A mismatch raises :class:`~torchwitness.errors.InputError` naming the record: the
    retained input was changed after serving, and explaining it would explain another input. Rows of requests
    that were not committed come back unchecked (``False``), as do those whose request lost another row to a
    recorded erasure since (``erased``: the decisions ``inputs.erasure`` records name; a request's commitment
    covers all its rows); a row missing without one is a change to the side store, refused like an edit.
    """
    data = record["data"]
    _, stream, number = parse_decision_id(decision)
    cols = window_columns(data)
    request = int(np.searchsorted(cols["first_decisions"], number, side="right")) - 1
    row = store.get(decision)
    committed = cols["committed"].tolist()
    if data["fingerprint"] == "none" or request not in committed:
        return row, False
    k = committed.index(request)
    first, rows = int(cols["first_decisions"][request]), int(cols["rows"][request])
    if data["fingerprint"] == "row":
        offset = int(sum(cols["rows"][i] for i in committed[:k]))
        expected, served = data["inputs"][offset + number - first], row.tobytes()
    else:
        expected = data["inputs"][k]
        siblings = [decision_id(record["run"], stream, first + j) for j in range(rows)]
        try:
            served = b"".join(store.get(d).tobytes() for d in siblings)
        except InputError:
            missing = [d for d in siblings if d != decision and not store.holds(d)]
            if set(missing) <= set(erased):  # erased on request since: the request's commitment cannot be checked
                return row, False
            raise InputError(f"the retained inputs of decision {decision!r}'s request are incomplete: "
                             f"{missing[0]} is gone without an erasure record (inference record seq "
                             f"{record['seq']}): the side store was changed after serving") from None
    if fingerprint(served) != expected:
        raise InputError(f"the retained input of decision {decision!r} does not match the commitment made when it "
                         f"was served (inference record seq {record['seq']}): it was changed after serving")
    return row, True


def shape_error(probs: torch.Tensor) -> str:
    """Why a model output is not one request's ``[rows, classes]``, and what to serve instead."""
    shape = tuple(probs.shape)
    if probs.dim() < 2:
        return (f"the model gave an output of shape {shape} for one request; a request is a batch of rows, "
                f"each a decision, and its output [rows, classes]: serve one input as a batch of one "
                f"(x.unsqueeze(0))")
    return (f"the model gave an output of shape {shape}; a request's output is [rows, classes], one decision "
            f"per row: reduce per-position outputs to one row per decision in forward=")


def request_bytes(inputs: Any, by_row: bool) -> torch.Tensor:
    """A structured request (a mapping of named tensors, as a tokenizer returns, or a sequence of tensors) as
    one byte tensor to commit: each tensor's bytes in key order (sorted names) or sequence order."""
    if by_row:  # fingerprint="row" or retained inputs
        raise InputError(f"fingerprint='row' and retain_inputs=True need each request as one tensor of rows, "
                         f"not a {type(inputs).__name__}; use fingerprint='request' (one commitment per request)")
    if isinstance(inputs, Mapping):
        tensors = [inputs[k] for k in sorted(inputs)]
    elif isinstance(inputs, (list, tuple)):
        tensors = list(inputs)
    else:
        tensors = []
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise InputError(f"a request must be a tensor, or a mapping or sequence of tensors, not "
                         f"{type(inputs).__name__}")
    with torch.inference_mode():
        return torch.cat([t.detach().reshape(-1).view(torch.uint8) for t in tensors])
