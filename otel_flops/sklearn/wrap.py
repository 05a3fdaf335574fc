"""Estimator methods wrapped in place on their classes, so unmodified code is counted.

Every subclass of ``BaseEstimator`` gets a wrapper for each public method in ``METHODS`` it
has (its own or a mixin's), stored in the class's own ``__dict__``; the originals are put back
by the undo. Instances are never touched, so pickling, ``clone`` and ``get_params`` are
unchanged. Classes defined later (a module imported after start-up, a user's own estimator)
are patched as they are created; if scikit-learn is not imported yet, patching waits for it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.abc
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ..containment import Containment
from ..ledger import CountKey
from ..precision import dtype_bits
from . import formulas, frames, measured

METHODS = ("fit", "partial_fit", "predict", "predict_proba", "predict_log_proba", "decision_function",
           "transform", "fit_transform", "inverse_transform", "score")
FALLBACK_BITS = 64
FAMILY = "formula"  # the op_family of a count from a formula; "measured" from ATen ops (measured.py)

_MARK = "__otel_flops_original__"
_lock = threading.RLock()
_refs = 0
_patched: list[tuple[type, str, Any]] = []  # (class, name, what its __dict__ held, or _ABSENT)
_ABSENT = object()
_containment = Containment()  # failures of our own wrapper code: the call's ledger's errors
_restore_hooks: list[Callable[[], None]] = []


def describe(X: Any) -> tuple[formulas.Data, str | None]:
    """Rows, columns, stored values and dtype name of an array, sparse matrix, tensor, DataFrame
    or nested list."""
    if isinstance(X, (list, tuple)):
        X = np.asarray(X)
    shape = getattr(X, "shape", None) or ()
    n = int(shape[0]) if len(shape) else 0
    f = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    nnz = getattr(X, "nnz", None)
    sparse = isinstance(nnz, (int, np.integer))
    dtype = getattr(X, "dtype", None)
    dtypes = getattr(X, "dtypes", None)
    if dtype is None and dtypes is not None:
        try:
            dtype = np.result_type(*list(dtypes))
        except TypeError:
            dtype = None
    data = formulas.Data(n, f, int(nnz) if sparse else n * f, sparse, X)
    return data, (str(dtype) if dtype is not None else None)


def _finish(frame: frames.Frame, args: tuple, kwargs: dict, result: Any) -> None:
    """Turn a finished call into count events (never raises into the user's program)."""
    model = type(frame.est).__name__
    op = f"{model}.{frame.method}"
    try:
        if frame.measured is not None:
            frame.measured.emit(frame.sink, frame.phase, op, model)
            return
        if frame.formula is None:
            if not frame.nested:
                frame.sink.add_uncounted(op)
            return
        data, dtype = describe(_input(args, kwargs))
        data = dataclasses.replace(data, out=result)
        flops = int(round(frame.formula(frame.est, data)))
        bits = dtype_bits(dtype, FALLBACK_BITS) if dtype else FALLBACK_BITS
        key = CountKey("sklearn", frame.phase, op, FAMILY, dtype or "unknown", bits, "cpu", model)
        frame.sink.add(key, flops, flops * bits)
    except Exception:
        _containment.failed(op, "it runs uncounted", frame.sink)


def _input(args: tuple, kwargs: dict) -> Any:
    if args:
        return args[0]
    for name in ("X", "raw_documents", "y"):
        if name in kwargs:
            return kwargs[name]
    return None


def _wrap(fn: Callable[..., Any], method: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        frame = _open(self, method, _input(args, kwargs))
        if frame is None:
            return fn(self, *args, **kwargs)
        try:
            result = fn(self, *args, **kwargs)  # the user's call: its exceptions are its own
        finally:
            _close(frame)
        _finish(frame, args, kwargs, result)
        return result

    setattr(counted, _MARK, fn)
    return counted


def _open(est: Any, method: str, X: Any) -> frames.Frame | None:
    """The frame a counted call runs in, pushed on this thread's stack; None when the call is
    not counted, or when our own bookkeeping fails (then the call runs uncounted). On torch
    input the call's ATen ops are measured instead of its formula applied (``measured``)."""
    try:
        sink = frames.sink_for(est)
        if sink is None:
            return None
        parent = frames.top()
        formula = formulas.lookup(type(est), method)
        phase = parent.phase if parent is not None and parent.est is est else method
        frame = frames.Frame(est, method, phase, sink, formula, measured=measured.begin(X, phase))
        if parent is not None:
            parent.nested = True
        frames.stack().append(frame)
        return frame
    except Exception:
        _containment.failed(f"scikit-learn wrapper of {method}", "the call runs uncounted")
        return None


def _close(frame: frames.Frame) -> None:
    stack = frames.stack()
    if stack and stack[-1] is frame:
        stack.pop()
    if frame.measured is not None:
        try:
            frame.measured.stop()
        except Exception:
            _containment.failed(f"{type(frame.est).__name__}.{frame.method}", "its ATen ops may count twice")


def _wrapped_attr(raw: Any, method: str) -> Any:
    """A wrapper for a plain function or an ``available_if`` descriptor; None for anything else."""
    if callable(raw) and getattr(raw, _MARK, None) is None and type(raw).__name__ == "function":
        return _wrap(raw, method)
    fn = getattr(raw, "fn", None)
    if type(raw).__name__ == "_AvailableIfDescriptor" and fn is not None and getattr(fn, _MARK, None) is None:
        desc = copy.copy(raw)
        desc.fn = _wrap(fn, method)
        return desc
    return None


def _static(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return _ABSENT


def _unwrapped(raw: Any) -> Any:
    """The original behind a wrapper inherited from an already patched base class."""
    if getattr(raw, _MARK, None) is not None:
        return getattr(raw, _MARK)
    fn = getattr(raw, "fn", None)
    if fn is not None and getattr(fn, _MARK, None) is not None:
        desc = copy.copy(raw)
        desc.fn = getattr(fn, _MARK)
        return desc
    return raw


def patch_class(cls: type) -> None:
    with _lock:
        for name in METHODS:
            raw = _static(cls, name)
            if raw is _ABSENT:
                continue
            own = cls.__dict__.get(name, _ABSENT)
            if own is not _ABSENT and (getattr(own, _MARK, None) is not None
                                       or getattr(getattr(own, "fn", None), _MARK, None) is not None):
                continue
            wrapped = _wrapped_attr(_unwrapped(raw), name)
            if wrapped is None:
                continue
            _patched.append((cls, name, own))
            setattr(cls, name, wrapped)


def _subclasses(root: type) -> list[type]:
    seen: list[type] = []
    todo = [root]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.append(sub)
                todo.append(sub)
    return seen


def _patch_all(base_module: Any) -> None:
    """Patch every estimator class that exists, and every one defined from now on."""
    from . import parallel

    base = base_module.BaseEstimator
    for cls in _subclasses(base):
        patch_class(cls)
    original = base.__dict__.get("__init_subclass__", _ABSENT)

    def init_subclass(cls: type, **kwargs: Any) -> None:
        super(base, cls).__init_subclass__(**kwargs)
        patch_class(cls)

    base.__init_subclass__ = classmethod(init_subclass)
    _restore_hooks.append(lambda: _restore(base, "__init_subclass__", original))
    _restore_hooks.append(parallel.patch())


def _restore(cls: type, name: str, own: Any) -> None:
    if own is _ABSENT:
        if name in cls.__dict__:
            delattr(cls, name)
    else:
        setattr(cls, name, own)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Patches when ``sklearn.base`` is first imported, so start-up never imports scikit-learn."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "sklearn.base":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> Any:  # get_source, is_package, ... of the real loader
        return getattr(self._loader, name)

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        with _lock:
            if _refs and _finder in sys.meta_path:
                sys.meta_path.remove(_finder)
                _patch_all(module)


_finder = _AfterImport()


def acquire() -> Callable[[], None]:
    """Patch the classes (once, however many users); the returned function releases this use."""
    global _refs
    with _lock:
        _refs += 1
        if _refs == 1:
            base = sys.modules.get("sklearn.base")
            if base is not None and hasattr(base, "BaseEstimator"):
                _patch_all(base)
            else:
                sys.meta_path.insert(0, _finder)
    released = False

    def release() -> None:
        nonlocal released
        global _refs
        with _lock:
            if released:
                return
            released = True
            _refs -= 1
            if _refs == 0:
                _unpatch_all()

    return release


def _unpatch_all() -> None:
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
    while _patched:
        cls, name, own = _patched.pop()
        _restore(cls, name, own)
    while _restore_hooks:
        _restore_hooks.pop()()
