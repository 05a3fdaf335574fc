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
    """A global hook that reaches its targets only for the root modules in ``roots`` (ids).

    A per-module hook would live in the model's own ``_forward_hooks``: deep copies, pickles,
    ``torch.save(model)`` and ``AveragedModel`` would carry it (with the session's lock behind
    it), and ``torch.jit.script`` would try to compile it. A global hook leaves the model as bare.
    """

    def __init__(self, name: str, hooks: MutableMapping[int, Any],
                 always_called: MutableMapping[int, bool] | None = None, hook_id: int | None = None) -> None:
        super().__init__(name, hooks, always_called, hook_id=hook_id)
        self.roots: set[int] = set()

    def __call__(self, module: Any, *args: Any) -> None:
        if _is_compiling() or id(module) not in self.roots:
            return
        for target in self.targets:
            target(module, *args)


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
# Steady mode's hooks on its root modules. A root gets its keyword arguments through a flag under
# ROOT_PRE's id in its ``_forward_pre_hooks_with_kwargs``: a negative id, which no torch handle
# has, so the flag is inert in a copy of the model, in this process or another.
ROOT_PRE = RootRelay("otel_flops_root_pre", _modules._global_forward_pre_hooks, hook_id=-0x6F74656C)
ROOT_POST = RootRelay("otel_flops_root_post", _modules._global_forward_hooks,
                      _modules._global_forward_hooks_always_called)
_LAST = (ROOT_PRE, ROOT_POST)
