"""Which aten operators are nondeterministic on which device, after ``torch.use_deterministic_algorithms``'s own
documentation (torch 2.x): some become deterministic when the mode is on ("fixed"), others have no deterministic
implementation and raise, or only warn under ``warn_only=True`` ("throws"); cuBLAS matrix products on CUDA
without a fixed workspace (``CUBLAS_WORKSPACE_CONFIG``), per torch's reproducibility notes.

>>> reason("index_put", "cpu", ((None, None, None, True), {}), mode=False)
'index_put with accumulate=True on cpu'
>>> reason("index_put", "cpu", ((None, None, None, True), {}), mode=True) is None
True
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Args = tuple[tuple[Any, ...], dict[str, Any]]


def _arg(args: Args, index: int, name: str, default: Any) -> Any:
    pos, kw = args
    return kw.get(name, pos[index] if len(pos) > index else default)


def _accumulate(args: Args) -> bool:
    return bool(_arg(args, 3, "accumulate", False))


@dataclass(frozen=True)
class NondetOp:
    devices: frozenset[str]  # device types; empty = every device
    fixed_by_mode: bool  # True: use_deterministic_algorithms(True) makes it deterministic; False: it raises/warns
    when: Callable[[Args], bool] | None = None
    condition: str = ""


_CUDA = frozenset({"cuda"})
_CPU = frozenset({"cpu"})
_ANY: frozenset[str] = frozenset()


def _t(devices: frozenset[str], fixed: bool, *names: str, when: Callable[[Args], bool] | None = None,
       condition: str = "") -> list[tuple[str, NondetOp]]:
    return [(n, NondetOp(devices, fixed, when, condition)) for n in names]


_ENTRIES: list[tuple[str, NondetOp]] = [
    # made deterministic by the mode
    *_t(_CUDA, True, "convolution_backward", "cudnn_convolution", "cudnn_convolution_transpose"),
    *_t(_CUDA, True, "replication_pad1d_backward", "replication_pad2d_backward", "replication_pad3d_backward"),
    *_t(_CPU, True, "index_put", "index_put_", "_index_put_impl_", when=_accumulate, condition="with accumulate=True"),
    *_t(_CPU, True, "put_", "put", when=_accumulate, condition="with accumulate=True"),
    *_t(_ANY, True, "index_copy", "index_copy_"),
    *_t(_CUDA, True, "scatter_add", "scatter_add_", "index_add", "index_add_", "max_pool3d_with_indices_backward"),
    *_t(_CUDA, True, "scatter", "scatter_", condition="with a tensor src",
        when=lambda a: "src" in a[1] or (len(a[0]) > 3 and hasattr(a[0][3], "dtype"))),
    *_t(_CUDA, True, "scatter_reduce", "scatter_reduce_", when=lambda a: _arg(a, 4, "reduce", "") in ("sum", "mean"),
        condition="with reduce='sum' or 'mean'"),
    # no deterministic implementation (raise under the mode; run anyway under warn_only)
    *_t(_CUDA, False, "avg_pool3d_backward", "_adaptive_avg_pool2d_backward", "_adaptive_avg_pool3d_backward",
        "adaptive_max_pool2d_backward", "fractional_max_pool2d_backward", "fractional_max_pool3d_backward",
        "upsample_linear1d_backward", "upsample_bilinear2d_backward", "upsample_bicubic2d_backward",
        "upsample_trilinear3d_backward", "reflection_pad1d_backward", "reflection_pad2d_backward",
        "reflection_pad3d_backward", "nll_loss2d_forward", "_ctc_loss_backward", "_embedding_bag_backward",
        "_embedding_bag_dense_backward", "histc", "grid_sampler_2d_backward", "grid_sampler_3d_backward"),
    *_t(_CUDA, False, "median", when=lambda a: len(a[0]) > 1 or "dim" in a[1], condition="with indices"),
    *_t(_ANY, False, "max_unpool1d", "max_unpool2d", "max_unpool3d"),
    *_t(_CUDA, False, "bincount", when=lambda a: _arg(a, 1, "weights", None) is not None, condition="with weights"),
    *_t(_CUDA, False, "cumsum", when=lambda a: bool(a[0]) and getattr(a[0][0], "dtype", None) is not None
        and (a[0][0].dtype.is_floating_point or a[0][0].dtype.is_complex), condition="on floating-point input"),
    # cuBLAS (CUDA >= 10.2) needs a fixed workspace to be deterministic; the mode raises without one
    *_t(_CUDA, False, "mm", "addmm", "bmm", "baddbmm", "addbmm", "mv", "addmv", "_scaled_mm",
        when=lambda a: os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in (":4096:8", ":16:8"),
        condition="without CUBLAS_WORKSPACE_CONFIG=:4096:8 or :16:8"),
    # put_ with accumulate=False raises on every device, with accumulate=True on CUDA
    *_t(_ANY, False, "put_", "put", when=lambda a: not _accumulate(a), condition="with accumulate=False"),
    *_t(_CUDA, False, "put_", "put", when=_accumulate, condition="with accumulate=True"),
]
TABLE: dict[str, tuple[NondetOp, ...]] = {}
for _name, _entry in _ENTRIES:
    TABLE[_name] = (*TABLE.get(_name, ()), _entry)


def reason(op: str, device: str, args: Args, *, mode: bool, warn_only: bool = False) -> str | None:
    """Why ``op`` (an overload packet name such as ``index_put``) is nondeterministic here, or None.

    ``mode``/``warn_only``: the state of ``torch.use_deterministic_algorithms``. Under the mode, ops it fixes are
    deterministic and ops it cannot fix only run at all with ``warn_only``.
    """
    for entry in TABLE.get(op, ()):
        if entry.devices and device not in entry.devices:
            continue
        if mode and (entry.fixed_by_mode or not warn_only):
            continue
        if entry.when is not None and not entry.when(args):
            continue
        where = f" {entry.condition}" if entry.condition else ""
        return f"{op}{where} on {device}"
    return None


RANDOM_OPS = frozenset({
    "bernoulli", "bernoulli_", "native_dropout", "dropout", "rand", "rand_like", "randn", "randn_like", "randint",
    "randint_like", "randperm", "normal", "normal_", "uniform_", "multinomial", "exponential_", "geometric_",
    "log_normal_", "cauchy_", "random_", "rrelu_with_noise", "poisson", "_fused_dropout", "_standard_gamma",
})
