"""Hook functions with identities that never change, so torch.compile sees the same hooks every session.

Dynamo traces the hooks of the modules and optimizers it compiles, and guards on what it meets:
the keys of torch's global hook dicts and the hook objects themselves. A fresh handle or a bound
method of a new session object each time would fail those guards at every session (or every
steady-mode recording), recompiling each graph until Dynamo's recompile limit leaves it eager.
So every hook otel-flops installs is one of the ``Relay`` objects below: created once per
process, registered under one fixed id, returning at once while Dynamo traces it (so compiled
graphs carry nothing of ours), and calling the current session's targets otherwise. A compiled
frame then has at most one more variant than it has bare: with our hooks present.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from typing import Any

import torch
from torch.jit import _recursive as _jit_recursive
from torch.optim import optimizer as _optimizer
from torch.utils.hooks import RemovableHandle

_modules = torch.nn.modules.module
_is_compiling = torch.compiler.is_compiling


class Relay:
    """One hook object; ``attach`` adds a target, ``arm`` puts the relay in its hook dict."""

    def __init__(self, name: str, hooks: MutableMapping[int, Any] | None = None,
                 always_called: MutableMapping[int, bool] | None = None, auto_arm: bool = True,
                 hook_id: int | None = None) -> None:
        self.__name__ = name
        self.targets: list[Callable[..., Any]] = []
        self._hooks = hooks
        self._always_called = always_called
        self._auto_arm = auto_arm
        self.id = RemovableHandle(OrderedDict()).id if hook_id is None else hook_id  # reserved from torch's counter

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        if _is_compiling():
            return
        for target in self.targets:
            target(*args, **kwargs)

    def attach(self, target: Callable[..., Any]) -> _Attached:
        self.targets.append(target)
        if self._auto_arm:
            self.arm()
        return _Attached(self, target)

    def arm(self) -> None:
        if self._hooks is not None:
            self._hooks[self.id] = self
            if self._always_called is not None:
                self._always_called[self.id] = True
            for relay in _LAST:  # the root relays run after every other global hook, as a module's own hooks would
                if relay.id in self._hooks:
                    self._hooks.move_to_end(relay.id)  # type: ignore[attr-defined]

    def disarm(self) -> None:
        if self._hooks is not None:
            self._hooks.pop(self.id, None)
            if self._always_called is not None:
                self._always_called.pop(self.id, None)


class RootRelay(Relay):
    """Steady mode's hook on its root modules: reaches its targets only for the modules in ``roots`` (ids).

    Registered on each root itself (a global hook would send every module call through
    ``nn.Module``'s slower hooked path), except on roots whose fast path any hook of their own
    turns off (``HOOK_SENSITIVE``). While a session runs, ``strip_from_copies`` keeps the relays out
    of what pickles, copies and ``torch.jit.script`` see, so those give the model as bare; a relay
    pickled or copied on its own is the process's singleton (``var`` names it in this module).
    """

    def __init__(self, name: str, var: str, hooks: MutableMapping[int, Any] | None = None,
                 always_called: MutableMapping[int, bool] | None = None, hook_id: int | None = None) -> None:
        super().__init__(name, hooks, always_called, auto_arm=False, hook_id=hook_id)
        self.roots: set[int] = set()
        self._var = var

    def __call__(self, module: Any, *args: Any) -> None:
        if _is_compiling() or id(module) not in self.roots:
            return
        for target in self.targets:
            target(module, *args)

    def __reduce__(self) -> str:
        return self._var


class _Attached:
    """A target's handle: ``remove()`` detaches it (and disarms its relay when it was the last)."""

    def __init__(self, relay: Relay, target: Callable[..., Any]) -> None:
        self.relay, self.target = relay, target

    def remove(self) -> None:
        targets = self.relay.targets
        if self.target in targets:
            targets.remove(self.target)
        if not targets and self.relay._auto_arm:
            self.relay.disarm()


# Global module and optimizer hooks, and steady mode's new-model watch (armed by hand).
MODULE_PRE = Relay("otel_flops_module_pre", _modules._global_forward_pre_hooks)
MODULE_POST = Relay("otel_flops_module_post", _modules._global_forward_hooks,
                    _modules._global_forward_hooks_always_called)
OPTIMIZER_PRE = Relay("otel_flops_optimizer_pre", _optimizer._global_optimizer_pre_hooks)
OPTIMIZER_POST = Relay("otel_flops_optimizer_post", _optimizer._global_optimizer_post_hooks)
WATCH = Relay("otel_flops_watch", _modules._global_forward_pre_hooks, auto_arm=False)
# Steady mode's hooks on its root modules, registered on each root (by ``register_forward_*_hook``).
ROOT_PRE = RootRelay("otel_flops_root_pre", "ROOT_PRE")
ROOT_POST = RootRelay("otel_flops_root_post", "ROOT_POST")
# The same for roots in ``HOOK_SENSITIVE`` as global hooks, armed while such a root is hooked. Such
# a root gets its keyword arguments through a flag under GLOBAL_ROOT_PRE's id in its
# ``_forward_pre_hooks_with_kwargs``: a negative id, which no torch handle has, so it is inert anywhere.
GLOBAL_ROOT_PRE = RootRelay("otel_flops_global_root_pre", "GLOBAL_ROOT_PRE", _modules._global_forward_pre_hooks,
                            hook_id=-0x6F74656C)
GLOBAL_ROOT_POST = RootRelay("otel_flops_global_root_post", "GLOBAL_ROOT_POST", _modules._global_forward_hooks,
                             _modules._global_forward_hooks_always_called)
_LAST = (GLOBAL_ROOT_PRE, GLOBAL_ROOT_POST)
# Modules whose fast paths turn off when a hook is attached to them (it would change which kernels run).
HOOK_SENSITIVE: tuple[type, ...] = (torch.nn.TransformerEncoderLayer,)
_HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks", "_forward_hooks_with_kwargs",
               "_forward_hooks_always_called")


def _without_relays(hooks: dict[str, Any]) -> dict[str, Any]:
    """The hook dicts among ``hooks`` (a module's ``__dict__``) that hold ours, without them."""
    ours = {key for name in ("_forward_pre_hooks", "_forward_hooks")
            for key, hook in hooks.get(name, {}).items() if isinstance(hook, RootRelay)}
    ours.add(GLOBAL_ROOT_PRE.id)
    return {name: type(hooks[name])((k, v) for k, v in hooks[name].items() if k not in ours)
            for name in _HOOK_DICTS if name in hooks and not ours.isdisjoint(hooks[name])}


def _getstate(self: torch.nn.Module) -> dict:
    """``nn.Module.__getstate__`` while a session runs: pickles and copies carry no relay of ours."""
    state = _MODULE_GETSTATE(self)
    state.update(_without_relays(state))
    return state


def _create_script_module(nn_module: Any, *args: Any, **kwargs: Any) -> Any:
    """``torch.jit.script``'s entry while a session runs: it compiles a module's hooks, so it sees
    dicts without ours (the originals, untouched, are put back afterwards)."""
    saved: list[tuple[torch.nn.Module, str, Any]] = []
    for module in nn_module.modules():
        stripped = _without_relays(module.__dict__)
        saved += [(module, name, module.__dict__[name]) for name in stripped]
        module.__dict__.update(stripped)
    try:
        return _CREATE_SCRIPT_MODULE(nn_module, *args, **kwargs)
    finally:
        for module, name, hooks in saved:
            module.__dict__[name] = hooks


_MODULE_GETSTATE = torch.nn.Module.__getstate__
_CREATE_SCRIPT_MODULE = _jit_recursive.create_script_module
_guards = [0]  # sessions that want the two wrappers installed


def strip_from_copies(on: bool) -> None:
    """Install (``on``) or release the wrappers above; they stay while any steady session runs."""
    _guards[0] += 1 if on else -1
    installed = _guards[0] > 0
    torch.nn.Module.__getstate__ = _getstate if installed else _MODULE_GETSTATE  # type: ignore[method-assign]
    _jit_recursive.create_script_module = _create_script_module if installed else _CREATE_SCRIPT_MODULE
