"""What an audited step's hooks capture: each module's output, the gradient arriving at the model's output, an
embedding table's ids and a loss module's call.

:class:`Capture` is a part of :class:`~torchwitness.probes.watch.Watch` (its state lives there), kept apart so
that the watch module holds the sampling and step boundaries, and this one what a hooked module tells.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import torch

from torchwitness.probes import stats
from torchwitness.probes.hookref import ForwardTap, elsewhere
from torchwitness.probes.inrange import token_probe
from torchwitness.probes.lossspy import grad_call_running, loss_options
from torchwitness.probes.quiet import MAX_PENDING_LOSSES, guarded
from torchwitness.probes.view import ModuleInfo, TensorInfo
from torchwitness.probes.window import Forward, Window, first_tensor, primary_of, tensors_of

_DROPOUT = torch.nn.modules.dropout._DropoutNd
_TRACKING = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm)


def mode_sensitive(model: torch.nn.Module) -> bool:
    """``model`` computes differently in train and eval mode: it holds a dropout that drops (p > 0) or a norm
    that tracks running statistics (a model whose only dropouts have p=0 is the same network in both)."""
    return any(m.p > 0 if isinstance(m, _DROPOUT) else isinstance(m, _TRACKING) and m.track_running_stats
               for m in model.modules())

# Element-wise layers that cannot turn finite inputs into NaN/Inf: when their input is a probed output, their own
# output needs no non-finite check of its own (only statistical steps summarise it, for its units).
PASSIVE = (torch.nn.ReLU, torch.nn.LeakyReLU, torch.nn.ReLU6, torch.nn.GELU, torch.nn.SiLU, torch.nn.Tanh,
            torch.nn.Sigmoid, torch.nn.Hardtanh, torch.nn.Identity)
# Modules whose 3-D output is (B, C, L), and element-wise ones that keep the layout of their input.
_CHANNELS_FIRST_1D = (torch.nn.Conv1d, torch.nn.ConvTranspose1d, torch.nn.BatchNorm1d, torch.nn.InstanceNorm1d,
                      torch.nn.MaxPool1d, torch.nn.AvgPool1d, torch.nn.AdaptiveMaxPool1d, torch.nn.AdaptiveAvgPool1d,
                      torch.nn.Dropout1d)
_LAYOUT_KEEPING = (*PASSIVE, torch.nn.Dropout, torch.nn.AlphaDropout, torch.nn.ELU, torch.nn.SELU, torch.nn.Softplus,
                   torch.nn.Mish, torch.nn.PReLU)


class Facts(NamedTuple):
    """What the module hook needs to know of a module that does not change while it is hooked."""

    name: str
    kind: str
    container: bool  # has children
    passive: bool  # cannot turn finite inputs into NaN/Inf
    channels_first: bool  # its 3-D output is (B, C, L)
    keeps_layout: bool  # element-wise: its output has its input's layout

    @classmethod
    def of(cls, m: torch.nn.Module, name: str) -> Facts:
        return cls(name=name, kind=type(m).__name__, container=next(m.children(), None) is not None,
                   passive=isinstance(m, PASSIVE), channels_first=isinstance(m, _CHANNELS_FIRST_1D),
                   keeps_layout=isinstance(m, _LAYOUT_KEEPING))


class Capture:
    """The hooks of an audited step (module outputs, the output gradient, embedding ids, the loss module) and what
    the training code tells the watch itself (begin_forward, end_forward, observe)."""

    # State owned by the watch (set in Watch.__init__), declared here for the methods below.
    _window: Window | None
    optimizer: torch.optim.Optimizer | None
    _names: dict[int, str]
    _losses: list[tuple[int, torch.Tensor]]
    _groups: Callable[[Window], Any]
    _trainable: Callable[[Window], Any]
    _collect_grads: Callable[..., Any]
    _note_loss_call: Callable[[Any, Any], None]
    model: torch.nn.Module
    step: int
    _external_forward: bool
    _root_pre: Callable[..., Any]
    _root_post: Callable[..., Any]
    _spy_start: Callable[[], None]
    _inner: torch.nn.Module
    _parts: list[ForwardTap] | None
    _by_parts: bool
    _last_part: torch.nn.Module | None
    _tree_changed: bool
    mode_sensitive: bool
    _plan: Any
    _armed: list[Any]
    _lean: Any
    _internal_error: Callable[[str, Exception], None]

    @guarded
    def _on_output_grad(self, w: Window, fwd: Forward, grad: torch.Tensor) -> None:
        fwd.trained = True
        if w.stale_checked or grad_call_running():  # autograd.grad(loss, params) leaves .grad as it was
            return
        w.stale_checked = True
        # Backward of the step's first backpropagated forward is starting: any gradient already present was
        # left over from before the previous optimizer step (zero_grad forgotten), not accumulated on purpose.
        # A forgotten zero_grad persists, so it is looked for with the statistical probes. Tensors no optimizer
        # clears are TW301's business.
        held = self._groups(w) if self.optimizer else None
        stale = [p.grad for p in self._trainable(w) if p.grad is not None and not p.grad.is_sparse
                 and (held is None or id(p) in held)] if w.statistics else []
        if stale:
            w.pack.add("stale", torch.linalg.vector_norm(torch.stack(torch._foreach_norm(stale))))
        if self.optimizer is None:
            torch.autograd.Variable._execution_engine.queue_callback(partial(self._collect_grads, w))

    @guarded
    def _module_hook(self, facts: Facts, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        w = self._window
        if w is None or not w.forwards or elsewhere():
            return
        if not torch.is_grad_enabled():  # inside a training forward: a torch.no_grad() block cuts the graph
            if w.statistics and any(p.requires_grad for p in module.parameters(recurse=False)):
                w.extra.setdefault("no_grad_modules", set()).add(facts.name)
            return
        name = facts.name
        if w.statistics and isinstance(module, torch.nn.MultiheadAttention) and not kwargs.get("is_causal") and \
                kwargs.get("attn_mask", args[5] if len(args) > 5 else None) is None:  # (TW209: an LM that sees ahead)
            w.extra["unmasked_attention"] = name
        w.calls[name] = calls = w.calls.get(name, 0) + 1
        info = w.modules.get(name)
        if info is not None:
            info.max_calls = max(info.max_calls, calls)
            return
        x = args[0] if args and isinstance(args[0], torch.Tensor) and args[0].layout == torch.strided else None
        # A detached copy of a module's output (TW110, not a discarded one): its memory, or, after a module with
        # a trainable output ran, a float input without autograd history that the model was not given (x.mean().
        # detach()) at a layer with weights of its own.
        # The latter may also be computed from the model's inputs, its layers' outputs then unused (TW413): a
        # later step's forward looks for the cut itself (probes/cutspy.py).
        if x is not None and w.statistics and not x.requires_grad and x.numel():
            if x.data_ptr() in w.extra.get("grad_ptrs", ()):
                w.extra["detached_use"] = True
            elif "grad_ptrs" in w.extra and x.is_floating_point() and all(x.data_ptr() != t.data_ptr for t in
                                                                          w.inputs) \
                    and any(p.requires_grad for p in module.parameters(recurse=False)):
                w.extra["detached_maybe"] = True
        if w.statistics and x is not None and "first_in" not in w.extra and x.is_floating_point() and x.ndim \
                and next(module.parameters(recurse=False), None) is not None:
            # What the first layer with weights was given, when the model computed it from its inputs (TW203: a
            # model that rescales raw pixels itself).
            w.extra["first_in"] = TensorInfo.of(name, x)
            if x.numel() and all(x.data_ptr() != t.data_ptr for t in w.inputs):
                w.pack.add("in/first", stats.value_stats(x, bounds=True))
        info = ModuleInfo(name=name, kind=facts.kind, module=module, training=module.training,
                          grad_enabled=True, input_dtype=x.dtype if x is not None else None,
                          producer=w.outputs.get(id(x)) if x is not None else None)
        w.modules[name] = info
        out = first_tensor(output)
        if out is None or not out.is_floating_point() or not out.numel() or out.layout != torch.strided:
            return
        info.out = TensorInfo.of("output", out)
        if facts.container and id(out) in w.outputs:
            return  # a container returning its last child's output: already summarised
        w.outputs[id(out)] = name
        if w.statistics and out.requires_grad:
            w.extra.setdefault("grad_ptrs", set()).add(out.data_ptr())
        # Skipped outputs are held all the same: an id in w.outputs must not be recycled by another tensor. The
        # root's is the model's output, not a layer's activation (its hook runs first, see Watch._arm).
        if module is not self.model and (w.statistics or info.producer is None or not facts.passive):
            w.acts.append((name, out))
        else:
            w.passed.append(out)
        if out.ndim == 3:
            producer = w.modules.get(info.producer) if info.producer is not None else None
            info.channels_first = facts.channels_first or (
                facts.keeps_layout and producer is not None and producer.channels_first)
        if out.ndim >= 2 and out.shape[0] > 1:
            info.batch, info.n_units = out.shape[0], out.shape[stats.unit_axis(out.ndim, info.channels_first)]

    @guarded
    def _embedding_pre(self, module: torch.nn.Embedding | torch.nn.EmbeddingBag, args: tuple) -> None:
        w = self._window
        if w is None or not args or not isinstance(args[0], torch.Tensor) or not args[0].numel() or elsewhere():
            return
        name = self._names.get(id(module), "embedding")
        if f"ids/{name}" not in w.extra:
            w.extra[f"ids/{name}"] = module.num_embeddings
            w.pack.add(f"ids/{name}", torch.stack(torch.aminmax(args[0].detach())))
            if w.statistics:  # the first table's ids: targets equal to them position by position copy the input
                w.extra.setdefault("embed_ids", (args[0], name, module.num_embeddings))
            if w.statistics and module.num_embeddings >= 16:  # how the ids spread over the table (TW212)
                w.extra[f"tok/{name}"] = (module.num_embeddings, module.padding_idx, args[0].ndim)
                w.pack.add(f"tok/{name}", token_probe(args[0], module.num_embeddings))

    def _outside_pre(self, module: torch.nn.Module, args: tuple) -> None:
        # Every module call in the process while an audit is armed: a model outside the watch (a distillation
        # teacher, an EMA or target copy) run under no_grad with its dropout on (TW402). Not @guarded: one frame.
        if not isinstance(module, _DROPOUT) or not module.training or module.p <= 0 or torch.is_grad_enabled() \
                or id(module) in self._names:
            return
        self.history.notes.setdefault("TW402:outside_seen", (type(module).__name__, module.p, self.step))

    @guarded
    def _loss_hook(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        if not torch.is_grad_enabled():
            return
        if isinstance(output, torch.Tensor) and output.numel() == 1 and len(self._losses) < MAX_PENDING_LOSSES:
            self._losses.append((self.step, output.detach()))
        w = self._window
        if w is None:
            self._note_loss_call(args[0] if args else None, args[1] if len(args) > 1 else None)
        elif w.loss is None:
            w.add_loss(type(module).__name__, args[0] if args else None, args[1] if len(args) > 1 else None, output,
                       module=module, options=loss_options(lambda a: getattr(module, a, None)))

    def _module_added(self, parent: torch.nn.Module, name: str, child: Any) -> None:
        # A layer added or replaced after watch() (a new head, an adapter): the hook plans are made anew.
        if id(parent) in self._names:
            self._tree_changed = True

    def _replan(self) -> None:
        self._tree_changed = False
        self._names = {id(m): (n or "model") for n, m in self._inner.named_modules()}
        self.mode_sensitive = mode_sensitive(self._inner)
        self._plan = None
        for h in self._armed:
            h.remove()
        self._armed.clear()
        if self._lean is not None:
            self._lean.forget_plan()

    # ---- what the training code tells the watch itself ---------------------------------------------------------
    def begin_forward(self, *args: Any, **kwargs: Any) -> None:
        """Open a training forward whose root ``model.forward`` is not called (Lightning's ``training_step`` calls
        submodules); ``args``/``kwargs`` are the batch inputs. Root forwards inside it are not counted again. On
        an audited step the loss functions called until the loss (functional ones, or any loss module) are noted,
        as between forward and step in a plain loop."""
        self._external_forward = False  # a previous one never closed (a skipped step): start afresh
        self._root_pre(self.model, args, kwargs)
        self._external_forward = torch.is_grad_enabled()
        if self._external_forward and self._window is not None:
            self._spy_start()  # an audited step: note the loss functions whatever calls them (module or functional)

    def _enter_by_parts(self) -> None:
        """A step ended with the optimizer's step but no training forward of the watched model: the loop calls its
        parts (``model.encoder(x)``, a Lightning-style ``self.net(x)``). From now on the first of its direct
        children called with gradients on in a step opens that step's forward, as :meth:`begin_forward` would,
        and the step's backward closes it (:meth:`_close_by_parts`)."""
        self._parts = [ForwardTap(child, self._part_called) for child in self._inner.children()]

    def _part_called(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        if elsewhere():
            return
        self._last_part = module
        if self._external_forward or not torch.is_grad_enabled():
            return
        try:
            self._by_parts = True  # (for _root_pre, which begin_forward calls: this is not the model's own forward)
            self.begin_forward(*args, **kwargs)
            self._by_parts = self._external_forward
        except Exception as e:
            self._by_parts = False
            self._internal_error("_part_called", e)

    def _leave_parts(self) -> None:
        """The model itself was called again: its parts are reached through it."""
        for tap in self._parts or ():
            tap.remove()
        self._parts = None

    def _close_by_parts(self, output: Any) -> None:
        """The step's backward starts from ``output`` (the loss), or its optimizer step comes (``None``)."""
        self._by_parts = False
        w = self._window
        if w is not None and self._last_part is not None:
            # The part called last stands for the model's output: the last output made inside it (a container
            # hands on its last child's).
            part = producer = self._names.get(id(self._last_part), "model")
            for name in w.outputs.values():
                if name == part or name.startswith(part + "."):
                    producer = name
            w.extra.setdefault("root_producer", producer)
        self.end_forward(output)

    def end_forward(self, output: Any) -> None:
        """Close the forward opened by :meth:`begin_forward`; ``output`` (e.g. the loss) is what backward starts
        from."""
        if self._external_forward:
            self._external_forward = False
            self._root_post(self.model, (), {}, output)

    def observe(self, *, inputs: Any = None, targets: torch.Tensor | None = None,
                loss: torch.Tensor | None = None) -> None:
        """Tell the watch about this step's batch, targets or loss when hooks cannot see them."""
        if isinstance(loss, torch.Tensor) and loss.numel() == 1 and len(self._losses) < MAX_PENDING_LOSSES \
                and not (self._losses and self._losses[-1][0] == self.step):
            self._losses.append((self.step, loss.detach()))
        w = self._window
        if w is None:
            return
        if inputs is not None and not w.inputs:
            found, _ = tensors_of(inputs if isinstance(inputs, tuple) else (inputs,), None)
            w.extra["primary"] = primary_of(found)
            w.add_inputs(found)
        if isinstance(targets, torch.Tensor):
            w.add_targets(targets, None)
