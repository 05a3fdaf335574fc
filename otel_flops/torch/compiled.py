"""torch.compile: count compiled graphs from the graphs themselves, and leave their code compiled.

A dispatch mode over a compiled frame would make Dynamo skip that frame for good, so the counting
mode declares ``ignore_compile_internals`` and Dynamo compiles under it. At run time the mode
would then see only what Inductor does not fuse (its extern ``mm``/``addmm`` calls), so it is
paused inside every compiled graph, and the graph's work is credited instead from a count of
the graph made once per input signature:

- Dynamo hands each graph to its backend through ``OutputGraph.call_user_compiler``; from the
  import of otel_flops on, that call is wrapped, and the compiled function it returns is wrapped
  in ``CompiledGraph`` (the artifact itself is untouched: CUDA graphs and Triton kernels run as
  they were built).
- The first time a graph runs with the counting mode on, its FX graph (Dynamo's, made of the
  same torch calls the eager code made) is run once on fake tensors of the real inputs' shapes
  under a counting mode of its own: forward, then (when the graph's backward runs) ``autograd.grad``
  of the outputs that got a gradient. So the counts are eager's, op by op, forward and backward
  apart, at no cost to the device. Symbolic shapes and scalars get one count per concrete
  signature; a graph that cannot be measured is named in the report's ``incomplete``.
- Each run then credits the forward counts, with the phase, model and explicit phase in force
  at the call; the backward counts are credited when the graph's backward node has run. A
  graph's work goes to the module open at its call as a whole (the report's ``by_module``: the
  compiled module, or the module that called a compiled function), not to the submodules the
  FX nodes' ``nn_module_stack`` names.

In steady mode a graph's credit lands in the segment being recorded, so replays carry it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import operator
import re
import sys
import threading
import types
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
import wrapt
from torch.nn.modules.loss import _Loss

from ..containment import first_line
from ..ledger import CountKey, Ledger, Totals
from ..precision import marker_bits
from .dispatch import CountingMode, counting_mode
from .losses import loss_functions
from .phases import BACKWARD, OPTIMIZER, PhaseTracker, loss_phase

log = logging.getLogger("otel_flops")

OUTSIDE = "outside-modules"  # a replayed op outside every module: its phase is the caller's
BACKWARD_NODE = "CompiledFunctionBackward"
_Counts = dict[CountKey, Totals]


class _PhaseInterpreter(torch.fx.Interpreter):
    """Runs a Dynamo graph node by node as eager ran it, telling the tracker which module each
    node came from."""

    def __init__(self, gm: torch.fx.GraphModule, tracker: PhaseTracker) -> None:
        super().__init__(gm)
        self.tracker = tracker
        self.unpacked = _unpackings(gm.graph)
        self.losses = loss_functions()
        self.unbound: dict[torch.fx.Node, tuple[torch.Tensor, ...]] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        stack = n.meta.get("nn_module_stack") or {}
        classes = [entry[1] for entry in stack.values()]
        tracker = self.tracker
        tracker.loss_depth = int(n.target in self.losses or any(isinstance(c, type) and issubclass(c, _Loss)
                                                                for c in classes))
        # A quantized module's class marker holds inside a compiled graph too (its attributes,
        # read from the module object in eager, are not in the graph).
        bits = None
        for c in classes:
            bits = (marker_bits(c.__name__) if isinstance(c, type) else None) or bits
        tracker.module_bits = [bits] if stack else []
        out = self._unpack(n) if n in self.unpacked else super().run_node(n)
        if bits is not None and torch.is_grad_enabled():
            inputs = [self.env[a] for a in n.all_input_nodes if a in self.env]
            tracker._mark_backward(inputs, out, bits)
        return out

    def _unpack(self, n: torch.fx.Node) -> torch.Tensor:
        """``a, b, c = t`` iterates ``t``: eager runs one ``unbind`` (whose backward is a
        ``stack``); Dynamo writes one ``t[i]`` per name (whose backwards are summed)."""
        source, index = n.args
        if source not in self.unbound:
            self.unbound[source] = torch.unbind(self.env[source])
        return self.unbound[source][index]


def _unpackings(graph: torch.fx.Graph) -> set[torch.fx.Node]:
    """The ``t[i]`` nodes that stand for iterating a tensor: every index of its first dimension,
    taken on one source line (the ``UNPACK_SEQUENCE`` of ``a, b, c = t``)."""
    groups: dict[tuple, list[torch.fx.Node]] = {}
    for n in graph.find_nodes(op="call_function", target=operator.getitem):
        source, index = n.args
        if isinstance(index, int) and isinstance(source, torch.fx.Node):
            groups.setdefault((source, n.meta.get("stack_trace")), []).append(n)
    out: set[torch.fx.Node] = set()
    for (source, _), nodes in groups.items():
        value = source.meta.get("example_value")
        if isinstance(value, torch.Tensor) and value.dim() and sorted(n.args[1] for n in nodes) == list(
            range(int(value.shape[0]))
        ):
            out.update(nodes)
    return out


class Backward:
    """A measured graph's backward, counted per set of outputs that get a gradient: an output the
    program takes none through (a returned KV cache, logits whose loss the graph took) adds no
    accumulation of its gradient in eager, so none is counted. Its fake autograd graph is kept."""

    def __init__(self, fake_mode: Any, counting: CountingMode, outputs: list, inputs: list) -> None:
        self.fake_mode, self.counting, self.outputs, self.inputs = fake_mode, counting, outputs, inputs
        self.counts: dict[tuple[bool, ...], _Counts] = {}
        self.lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.outputs and self.inputs)

    def __call__(self, received: tuple[bool, ...]) -> _Counts:
        """The counts when the outputs flagged in ``received`` get a gradient (all, if it does not fit)."""
        if len(received) != len(self.outputs) or not any(received):
            received = (True,) * len(self.outputs)
        with self.lock:
            if received not in self.counts:
                chosen = [o for o, got in zip(self.outputs, received, strict=True) if got]
                backward = Ledger()
                with self.fake_mode, self.counting:
                    self.counting.sink = Ledger()  # the grad outputs' allocation is not the graph's work
                    grads = [torch.ones_like(o) for o in chosen]
                    self.counting.sink = backward
                    torch.autograd.grad(chosen, self.inputs, grads, allow_unused=True, retain_graph=True)
                self.counts[received] = dict(backward.items())
            return self.counts[received]


def measure(gm: torch.fx.GraphModule, args: list[Any],
            scalars: frozenset[int] = frozenset()) -> tuple[_Counts, Backward]:
    """Forward counts of ``gm`` on inputs shaped like ``args``, under the grad mode and autocast
    state in force, and its ``Backward``. Ops with no module of their own get the phase ``OUTSIDE``.
    ``scalars``: the positions of ``_scalar_inputs(gm)``, taken before Dynamo drops their marks."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)  # graphs may hold real constants
    convert = fake_mode.fake_tensor_converter.from_real_tensor
    # A Python scalar Dynamo passes as a 0-d tensor (an unspecialized float: ``math.pi``, a module's
    # float attribute) is read back with ``.item()``: as a fake constant it gives the call's value.
    fakes = [(convert(fake_mode, a, make_constant=True) if i in scalars else fake_mode.from_tensor(a))
             if isinstance(a, torch.Tensor) else a for i, a in enumerate(args)]
    forward = Ledger()
    tracker = PhaseTracker(forward)
    tracker.stage = OUTSIDE
    tracker.root_grad = torch.is_grad_enabled()  # graphs are compiled per grad mode
    counting = CountingMode(forward, tracker)
    with fake_mode, counting:
        out = _PhaseInterpreter(gm, tracker).run(*fakes)
        tracker.reset()
        tracker.stage = OUTSIDE
        outputs = [o for o in _flat_tensors(out) if o.requires_grad]
        inputs = [f for f in fakes if isinstance(f, torch.Tensor) and f.requires_grad]
    return dict(forward.items()), Backward(fake_mode, counting, outputs, inputs)


class _Measuring(threading.Thread):
    """The thread a graph is measured on (threads.py leaves it alone)."""

    otel_flops_internal = True


def measure_apart(gm: torch.fx.GraphModule, args: list[Any], scalars: frozenset[int]) -> tuple[_Counts, Backward]:
    """``measure`` on a thread of its own, under this thread's grad, inference and autocast
    state: the replay's autograd nodes must not count among this thread's (steady mode checks
    that a replayed forward builds as many as its record), and no session mode is on that stack."""
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    autocast = [(device, torch.get_autocast_dtype(device)) for device in ("cpu", "cuda")
                if torch.is_autocast_enabled(device)]
    result: dict[str, Any] = {}

    def work() -> None:
        with contextlib.ExitStack() as state:
            state.enter_context(torch.set_grad_enabled(grad))
            if inference:
                state.enter_context(torch.inference_mode())
            for device, dtype in autocast:
                state.enter_context(torch.autocast(device, dtype=dtype))
            try:
                result["counts"] = measure(gm, args, scalars)
            except Exception as exc:
                result["error"] = exc

    thread = _Measuring(target=work, name="otel-flops-measure")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["counts"]


def _scalar_inputs(gm: torch.fx.GraphModule) -> list[int]:
    """Positions of the inputs that stand for a Python scalar Dynamo passes as a 0-d tensor."""
    return [i for i, node in enumerate(gm.graph.find_nodes(op="placeholder"))
            if getattr(node.meta.get("grapharg"), "pass_arg_as_tensor", False)]


def _flat_tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flat_tensors(v)]
    return []


class CompiledGraph:
    """A backend's compiled function, called exactly as before, with its work credited."""

    def __init__(self, gm: torch.fx.GraphModule, compiled: Any) -> None:
        self.gm = gm
        self.compiled = compiled
        # Inputs whose shapes or values are symbolic (dynamic=True, mark_dynamic, Dynamo's automatic
        # dynamic shapes, unspecialized scalars): only they make one run's work differ from another's.
        self.scalars = frozenset(_scalar_inputs(gm))  # Dynamo drops their marks once compiled
        self.dynamic = [i for i, node in enumerate(gm.graph.find_nodes(op="placeholder"))
                        if i in self.scalars or _symbolic(node.meta.get("example_value"))]
        self.counts: dict[tuple, tuple[_Counts, Backward]] = {}
        self.failed: dict[tuple, str] = {}  # signatures whose measurement failed, and why

    def signature(self, args: tuple) -> tuple:
        """The call's concrete sizes and scalars, and its grad mode: one count per signature."""
        return tuple(
            args[i].item() if i in self.scalars else tuple(args[i].shape) if isinstance(args[i], torch.Tensor)
            else args[i] for i in self.dynamic
        ) + (torch.is_grad_enabled(), torch.is_inference_mode_enabled())

    def run(self, *args: Any) -> Any:
        """Dynamo's generated code calls this in place of the compiled function."""
        mode = counting_mode()
        if mode is None:
            return self.compiled(*args)
        mode.paused += 1
        try:
            counts = self._counts(mode, args)
            out = self.compiled(*args)
        finally:
            mode.paused -= 1
        if counts is not None:
            try:
                self._credit(mode, counts, out)
            except Exception:
                mode.contain("torch.compile graph")
        return out

    def _counts(self, mode: CountingMode, args: tuple) -> tuple[_Counts, Backward] | None:
        key = None
        try:
            key = self.signature(args)
            if key in self.failed:  # measured once and failed: not measured again at each call
                _unmeasured[self.failed[key]] += 1
                return None
            counts = self.counts.get(key)
            if counts is None:
                counts = self.counts[key] = measure_apart(self.gm, list(args), self.scalars)
            return counts
        except Exception as error:
            mode.contain("torch.compile graph")
            reason = f"{type(error).__name__}: {first_line(error)}"
            if key is not None:
                self.failed[key] = reason
            _unmeasured[reason] += 1
            return None

    def _credit(self, mode: CountingMode, counts: tuple[_Counts, Backward], out: Any) -> None:
        forward, backward = counts
        tracker = mode.tracker
        sink = mode.sink
        for key, totals in forward.items():
            sink.add_totals(key._replace(phase=_caller_phase(key, tracker), model=tracker.model,
                                         module=tracker.module), totals)
        if backward:
            node = _backward_node(out)
            if node is None:
                _unmeasured["its backward node was not found, so its backward was not counted"] += 1
                return
            received = [False] * len(backward.outputs)
            for i, tensor in enumerate(t for t in _flat_tensors(out) if t.requires_grad):
                tensor.register_hook(functools.partial(_receive, received, i))
            node.register_prehook(functools.partial(_pause, mode))
            node.register_hook(functools.partial(_credit_backward, mode, backward, received, tracker.model,
                                                 tracker.module))


def _caller_phase(key: CountKey, tracker: PhaseTracker) -> str:
    """The phase eager would have given this op, from the replay's phase and the caller's state."""
    if key.family == "loss":
        return loss_phase()
    if tracker.explicit:
        return tracker.explicit[-1]
    if tracker.optimizer_depth:
        return OPTIMIZER
    return tracker.current() if key.phase == OUTSIDE else key.phase


def _backward_node(out: Any) -> Any:
    for tensor in _flat_tensors(out):
        node = tensor.grad_fn
        for candidate in (node, *(n for n, _ in getattr(node, "next_functions", ()))):
            if candidate is not None and candidate.name() == BACKWARD_NODE:
                return candidate
    return None


def _pause(mode: CountingMode, grad_outputs: Any) -> None:
    mode.paused += 1


def _receive(received: list[bool], i: int, grad: torch.Tensor | None) -> None:
    """An output's gradient hook (called with None for an output that got no gradient)."""
    if grad is not None and i < len(received):
        received[i] = True


def _credit_backward(mode: CountingMode, backward: Backward, received: list[bool], model: str, module: str,
                     grad_inputs: Any, grad_outputs: Any) -> None:
    try:
        counts = backward(tuple(received))  # measured here, still paused, at the first such backward
    except Exception as error:
        mode.contain("torch.compile graph backward")
        _unmeasured[f"backward: {type(error).__name__}: {first_line(error)}"] += 1
        counts = {}
    finally:
        mode.paused -= 1
    for key, totals in counts.items():
        mode.sink.add_totals(key._replace(phase=BACKWARD, model=model, module=module), totals)


def _symbolic(value: Any) -> bool:
    if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        return True
    return isinstance(value, torch.Tensor) and any(isinstance(d, torch.SymInt) for d in value.shape)


def _wrap_compiler(call_user_compiler: Any) -> Any:
    @functools.wraps(call_user_compiler)
    def counted_compiler(self: Any, gm: torch.fx.GraphModule, example_inputs: Any) -> Any:
        compiled = call_user_compiler(self, gm, example_inputs)
        try:
            graph = CompiledGraph(gm, compiled)
        except Exception as error:
            log.warning("otel-flops: cannot follow a torch.compile graph (%s: %s); its work is not counted",
                        type(error).__name__, first_line(error))
            log.debug("otel-flops: cannot follow a torch.compile graph", exc_info=True)
            _not_followed[f"{type(error).__name__}: {first_line(error)}"] += 1
            return compiled
        return graph.run

    counted_compiler.otel_flops = True  # type: ignore[attr-defined]
    return counted_compiler


# Graphs Dynamo had compiled before we followed it: their fused work is invisible to the mode.
_unfollowed: list[int] = []


def follow_dynamo(output_graph: types.ModuleType) -> None:
    """Wrap Dynamo's backend call, for the life of the process (a post-import hook on
    ``torch._dynamo.output_graph``, registered when otel_flops is imported): every graph compiled
    from then on is counted whenever a session runs, however long before it was compiled; with
    no session its wrapper costs one call and one check of the dispatch stack."""
    original = getattr(output_graph.OutputGraph, "call_user_compiler", None)
    if original is None or getattr(original, "otel_flops", False) or _unfollowed:
        return
    from torch._dynamo.callback import callback_handler
    from torch._dynamo.utils import counters

    _unfollowed.append(counters["stats"]["unique_graphs"])
    output_graph.OutputGraph.call_user_compiler = _wrap_compiler(original)
    _count_compiling_nodes(callback_handler)
    clear = callback_handler.clear

    def clear_and_keep_ours() -> None:  # torch._dynamo.reset() clears every callback
        clear()
        _count_compiling_nodes(callback_handler)

    callback_handler.clear = clear_and_keep_ours


# Autograd nodes that compiling created on each thread (Dynamo and AOTAutograd trace with fake
# tensors that need gradients): not the program's own work, so steady mode leaves them out.
_compiling = threading.local()
_sequence_nr = torch._C._autograd._get_sequence_nr


def _compile_start(args: Any) -> None:
    _compiling.start = _sequence_nr()


def _compile_end(args: Any) -> None:
    _compiling.nodes = getattr(_compiling, "nodes", 0) + _sequence_nr() - getattr(_compiling, "start", _sequence_nr())


def _count_compiling_nodes(callback_handler: Any) -> None:
    callback_handler.register_start_callback(_compile_start)
    callback_handler.register_end_callback(_compile_end)


def autograd_nodes() -> int:
    """The autograd nodes this thread has created so far, less those that compiling created."""
    return _sequence_nr() - getattr(_compiling, "nodes", 0)


# Calls of compiled graphs this session could not count, by reason (``install`` starts it afresh),
# and graphs this process could not follow, by reason.
_unmeasured: Counter[str] = Counter()
_not_followed: Counter[str] = Counter()


def incomplete() -> list[str]:
    """Why compiled work may be missing from the count, one line per reason."""
    lines = [f"{n} call(s) of torch.compile graphs were not counted ({reason}); the graphs ran normally "
             "(run the model uncompiled to count it, and report the reason)" for reason, n in _unmeasured.items()]
    lines += [f"{n} torch.compile graph(s) could not be followed ({reason}): their fused work is not counted "
              "(run the model uncompiled to count it, and report the reason)" for reason, n in _not_followed.items()]
    n = _unfollowed[0] if _unfollowed else 0
    if not n:
        return lines
    return lines + [f"{n} torch.compile graph(s) were compiled before otel_flops was imported: when they run, "
                    "only the ops they do not fuse are counted (import otel_flops before the first compiled call)"]


# torch warns that global module hooks also fire on the OptimizedModule wrapper; ours know it.
HOOK_WARNING = "Using `torch.compile(module)` when there are global hooks"


# Dynamo's per-frame and per-process recompile limits, doubled while a session runs: a frame may
# get one variant with the session's hooks for each of its own (Dynamo guards on the number of
# global module hooks), so the user's program keeps the number of variants it had bare.
LIMITS = ("recompile_limit", "accumulated_recompile_limit")
_raised: list[Any] = []  # the Dynamo config whose limits this session doubled


def _raise_limits(config: types.ModuleType) -> None:
    if not _raised and _session_active[0]:
        for name in LIMITS:
            setattr(config, name, getattr(config, name) * 2)
        _raised.append(config)


def _lower_limits() -> None:
    for config in _raised:
        for name in LIMITS:
            setattr(config, name, max(1, getattr(config, name) // 2))
    _raised.clear()


_session_active = [False]
_config_hook: list[bool] = []  # the post-import hook on Dynamo's config, registered once


def install() -> list[Callable[[], None]]:
    """For one session: silence torch's warning about our global hooks, and double Dynamo's
    recompile limits (now, or when Dynamo loads); returns the undo."""
    warnings.filterwarnings("ignore", message=re.escape(HOOK_WARNING))
    ignored = warnings.filters[0]
    _session_active[0] = True
    _unmeasured.clear()
    config = sys.modules.get("torch._dynamo.config")
    if config is not None:
        _raise_limits(config)
    elif not _config_hook:
        wrapt.register_post_import_hook(_raise_limits, "torch._dynamo.config")
        _config_hook.append(True)

    def undo() -> None:
        _session_active[0] = False
        _lower_limits()
        with contextlib.suppress(ValueError):
            warnings.filters.remove(ignored)

    return [undo]
