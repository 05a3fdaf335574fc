"""Which phase of a training step an op belongs to, detected with no help from the user.

- backward: the op runs inside an autograd graph task (the engine itself says so);
- an explicit ``otel_flops.phase(name)`` block;
- optimizer: between the global optimizer step pre- and post-hooks;
- loss: inside a loss module (``nn.modules.loss._Loss``), or an ATen loss op, with grad enabled;
  with grad disabled (an evaluation's loss, as a Trainer's eval computes it) it is ``inference``,
  so the training phases (forward, loss, backward, optimizer) hold training's work alone;
- forward / inference: inside a model's forward, as its outermost module started with grad
  enabled / disabled (a block under ``no_grad`` inside a training forward, as reentrant
  activation checkpointing runs, is still forward);
- outside every module the step's stage decides: after a grad-enabled forward it is ``loss``
  (``F.cross_entropy(model(x), y)``), after a backward ``optimizer`` (gradient clipping,
  unscaling), and otherwise ``preprocessing`` (tensor work on the next batch).

It also knows which submodule an op runs in (the report's ``by_module``): the path under the
model, cut to ``module_depth`` names ("transformer.h.0" at depth 3); the model's own ops are
"(root)", work outside every model module "(none)". A backward op belongs to the module whose
forward created its autograd node: the nodes' sequence numbers (a per-thread counter that
autograd gives each node it creates) are mapped back to the module open when they were made,
and gradient accumulation into a parameter (``AccumulateGrad``) to the module that owns it.
"""

from __future__ import annotations

import bisect
import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.nn.modules.loss import _Loss

from ..containment import Containment, contained
from ..ledger import NO_MODULE, ROOT_MODULE, TORCH_PHASES, Ledger, RootNames
from ..precision import module_bits
from . import relays

PREPROCESSING, FORWARD, INFERENCE, LOSS, BACKWARD, OPTIMIZER = TORCH_PHASES

_current_graph_task_id = torch._C._current_graph_task_id
_sequence_nr = torch._C._autograd._get_sequence_nr  # the number the next autograd node gets on this thread
UNSEQUENCED = 2**63  # AccumulateGrad nodes carry UINT64_MAX, not a creation number
MAX_CHANGES = 1 << 16  # module-path changes kept for backward attribution


class PhaseTracker:
    """The current phase, model and quantized bits, fed by module and optimizer hook events.

    It installs nothing itself: the counting mode in use decides which hooks feed it and when.
    """

    def __init__(self, ledger: Ledger, names: RootNames | None = None, module_depth: int = 3) -> None:
        self.ledger = ledger  # where completed optimizer steps are counted
        self.containment = Containment(ledger)  # failures of the hooks below: the session's errors
        # Told when an explicit phase block opens (True) or closes (False): steady mode's boundaries.
        self.on_phase: Callable[[bool], None] = _nothing
        self._names = names if names is not None else RootNames()
        self.explicit: tuple[str, ...] = ()  # open phase() blocks, innermost last (a tuple: part of keys)
        self.model = "none"
        self.optimizer_depth = 0
        self._bits_cache: weakref.WeakKeyDictionary[Any, int | None] = weakref.WeakKeyDictionary()
        # Autograd nodes a quantized module's forward created, and its bits: their backward ops
        # are that module's work too. Held for one step (cleared at the next root forward).
        self.backward_bits: dict[Any, int] = {}
        self.module_depth = module_depth
        # Per root module: its submodules' and parameters' paths by id, cut to module_depth.
        self._paths: weakref.WeakKeyDictionary[Any, tuple[dict[int, str], dict[int, str]]] = (
            weakref.WeakKeyDictionary())
        self._root: Any = None
        self._root_paths: tuple[dict[int, str], dict[int, str]] = ({}, {})
        # Where the current module path changed, by autograd sequence number: a backward node's
        # module is the path in force when it was created (kept until a forward after a backward).
        self._change_at: list[int] = []
        self._change_to: list[tuple[str, str]] = []  # (model, module path)
        # Each parameter's (model, module path), over every root seen: its AccumulateGrad's owner.
        self._param_owners: dict[int, tuple[str, str]] = {}
        self.module = NO_MODULE  # the path of the innermost open module: the module of a forward op
        self.reset()

    def reset(self) -> None:
        """Forget open modules: used when the hooks that track them were off for a while."""
        self.stage = PREPROCESSING
        self.loss_depth = 0
        self.root_grad = True  # grad mode when the outermost open module started
        # One entry per open model-module forward: the quantized bits in force there, or None.
        self.module_bits: list[int | None] = []
        self.module_paths: list[str] = []  # and its module path (by_module)
        self._set_module(NO_MODULE)

    def current(self) -> str:
        if _current_graph_task_id() != -1:
            self.stage = OPTIMIZER
            return BACKWARD
        if self.explicit:
            return self.explicit[-1]
        if self.optimizer_depth:
            return OPTIMIZER
        if self.loss_depth:
            return loss_phase()
        if self.module_bits:
            return FORWARD if self.root_grad else INFERENCE
        return self.stage

    def backward_module(self, node: Any) -> tuple[str, str]:
        """The model and module path of the backward op now running for autograd ``node`` (None: the
        engine's own): those of the forward that made the node, so two models' backwards stay apart."""
        outside = (self.model, NO_MODULE)
        if node is None:
            return outside
        number = node._sequence_nr()
        if number >= UNSEQUENCED:  # AccumulateGrad: the module owning the parameter
            return self._param_owners.get(id(getattr(node, "variable", None)), outside)
        at = bisect.bisect_right(self._change_at, number)
        return self._change_to[at - 1] if at else outside

    def _set_module(self, path: str) -> None:
        self.module = path
        if not self._change_to or self._change_to[-1] != (self.model, path):
            self._change_at.append(_sequence_nr())
            self._change_to.append((self.model, path))

    def _path_of(self, module: torch.nn.Module) -> str:
        paths = self._root_paths[0]
        path = paths.get(id(module))
        if path is None and self._root is not None and module is not self._root:  # added since: look again
            self._root_paths = self._paths[self._root] = self._named_paths(self._root)
            paths = self._root_paths[0]
            path = paths.setdefault(id(module), "")  # "": not under the root, known (no rebuild next time)
        if not path:  # not under the root (a module held elsewhere): its caller's
            return self.module_paths[-1] if self.module_paths else ROOT_MODULE
        return path

    def _named_paths(self, root: torch.nn.Module) -> tuple[dict[int, str], dict[int, str]]:
        try:
            return _named_paths(root, self.module_depth)  # walks the user's module tree (a property may raise)
        except Exception:
            self.containment.failed("module paths", "by_module puts this model's work under (root)")
            return {}, {}

    @property
    def quantized_bits(self) -> int | None:
        return self.module_bits[-1] if self.module_bits else None

    @property
    def outside_modules(self) -> bool:
        return not self.module_bits and not self.loss_depth

    def _bits_of(self, module: torch.nn.Module) -> int | None:
        try:
            return self._bits_cache[module]
        except KeyError:
            bits = self._bits_cache[module] = self._probe_bits(module)
            return bits

    @contained("precision probe", "the module's ops take their dtype's bits")
    def _probe_bits(self, module: torch.nn.Module) -> int | None:
        return module_bits(module)  # reads attributes of the user's module (a property may raise)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """``otel_flops.phase(name)``: the ops in the block are ``name``'s."""
        outer = self.explicit
        self.explicit = (*outer, name)
        self.on_phase(True)
        try:
            yield
        finally:
            self.explicit = outer
            self.on_phase(False)

    @contained("module forward pre-hook", "the module's ops may get the wrong phase")
    def enter_module(self, module: torch.nn.Module, args: Any = None) -> None:
        if isinstance(module, _Loss):
            self.loss_depth += 1
            return
        if not self.module_bits:
            model = module._modules.get("_orig_mod", module)  # torch.compile's OptimizedModule: its model
            self.model = self._names.of(module, model)
            self.optimizer_depth = 0  # a step that raised never ran its post-hook
            self.backward_bits.clear()
            self.root_grad = torch.is_grad_enabled()
            self._enter_root(module)
        own = self._bits_of(module)
        self.module_bits.append(own if own is not None else self.quantized_bits)
        path = self._path_of(module)
        self.module_paths.append(path)
        self._set_module(path)

    def _enter_root(self, module: torch.nn.Module) -> None:
        """A model's forward starts: its paths, and a fresh sequence map unless a backward is still due."""
        self._root = module
        paths = self._paths.get(module)
        if paths is None:
            paths = self._paths[module] = self._named_paths(module)
        self._root_paths = paths
        self._param_owners.update((param, (self.model, path)) for param, path in paths[1].items())
        # No grad-enabled forward since the last backward: its nodes are done with. Forwards that
        # build graphs no backward runs over keep at most MAX_CHANGES (their oldest are dropped).
        if self.stage != LOSS or len(self._change_at) > MAX_CHANGES:
            keep = 0 if self.stage != LOSS else MAX_CHANGES // 2
            del self._change_at[:len(self._change_at) - keep], self._change_to[:len(self._change_to) - keep]
            if not keep:
                self.module = NO_MODULE

    @contained("module forward hook", "the module's ops may get the wrong phase")
    def exit_module(self, module: torch.nn.Module, args: Any = None, output: Any = None) -> None:
        if isinstance(module, _Loss):
            self.loss_depth = max(0, self.loss_depth - 1)
            return
        if self.module_bits:
            self.module_bits.pop()
            self.module_paths.pop()
            self._set_module(self.module_paths[-1] if self.module_paths else NO_MODULE)
        own = self._bits_of(module)
        if own is not None and torch.is_grad_enabled():
            self._mark_backward(args, output, own)
        if not self.module_bits:
            self.stage = LOSS if torch.is_grad_enabled() else PREPROCESSING

    def _mark_backward(self, args: Any, output: Any, bits: int) -> None:
        """Walk the graph from the module's outputs back to its inputs, marking every node."""
        inputs = {t.grad_fn for t in _tensors_in(args) if t.grad_fn is not None}
        frontier = [t.grad_fn for t in _tensors_in(output) if t.grad_fn is not None]
        while frontier:
            node = frontier.pop()
            if node in inputs or node in self.backward_bits:
                continue
            self.backward_bits[node] = bits
            frontier.extend(n for n, _ in node.next_functions if n is not None)

    @contained("optimizer step pre-hook", "the step's ops may get the wrong phase")
    def enter_optimizer(self, optimizer: Any = None, args: Any = None, kwargs: Any = None) -> None:
        self.optimizer_depth += 1

    @contained("optimizer step hook", "the step may be missing from the step count")
    def exit_optimizer(self, optimizer: Any = None, args: Any = None, kwargs: Any = None) -> None:
        self.optimizer_depth = max(0, self.optimizer_depth - 1)
        self.stage = PREPROCESSING
        self.ledger.add_step()


def loss_phase() -> str:
    """The phase of a loss: training's (``loss``) with grad enabled, else an evaluation's (``inference``)."""
    return LOSS if torch.is_grad_enabled() else INFERENCE


def _nothing(opening: bool) -> None:
    return None


def _named_paths(root: torch.nn.Module, depth: int) -> tuple[dict[int, str], dict[int, str]]:
    """Each submodule's and parameter's module path under ``root`` (by id), cut to ``depth`` names."""
    def cut(name: str) -> str:
        return ".".join(name.split(".")[:depth]) or ROOT_MODULE

    model = root._modules.get("_orig_mod", root)  # torch.compile's OptimizedModule: its model's names
    modules = {id(root): ROOT_MODULE, **{id(m): cut(name) for name, m in model.named_modules()}}
    params = {id(p): cut(name.rpartition(".")[0]) for name, p in model.named_parameters()}
    return modules, params


def _tensors_in(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors_in(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors_in(v)]
    return []


def module_hooks(pre: Any, post: Any) -> list[Any]:
    """Global forward pre- and post-hooks on every nn.Module (through relays: stable for
    torch.compile); returns their handles."""
    return [relays.MODULE_PRE.attach(pre), relays.MODULE_POST.attach(post)]


def optimizer_hooks(pre: Any, post: Any) -> list[Any]:
    """Global optimizer step pre- and post-hooks (through relays); returns their handles."""
    return [relays.OPTIMIZER_PRE.attach(pre), relays.OPTIMIZER_POST.attach(post)]


def remove(handles: list[Any]) -> None:
    for handle in handles:
        handle.remove()
    handles.clear()
