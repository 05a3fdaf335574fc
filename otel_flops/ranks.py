"""Which rank this process is, from what the process is rather than how it was started.

A rank is known from its launcher's variables (a registry of variable families: torchrun and
the launchers built on it, OpenMPI, MPICH/Intel MPI, SLURM), and in any case from
``torch.distributed`` once the process is in a group: ``mp.spawn`` workers and the first
process of a Lightning job have no variables when they start, and get their rank when they join.
A rank is a dict ``{"rank", "local_rank", "world_size"}`` (``rank`` absent while only the local
rank is known: a Lightning child on a node other than the first, before it joins its group).
Where no local rank is given (``mp.spawn``), the global rank stands in for it: one node.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("otel_flops")

Rank = dict[str, int]


class RankError(ValueError):
    """A launcher variable holds something other than a whole number >= 0 (or -1); the message is one line."""


@dataclass(frozen=True)
class Family:
    """The variables one kind of launcher sets for each process it starts."""

    launchers: str  # who sets them, for the docs and error lines
    rank: str
    local_rank: str
    world_size: str


# In order of precedence: torchrun's variables win over SLURM's when torchrun runs under srun.
FAMILIES = (
    Family("torchrun, accelerate, deepspeed, Lightning", "RANK", "LOCAL_RANK", "WORLD_SIZE"),
    Family("OpenMPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE"),
    Family("MPICH, Intel MPI (PMI)", "PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE"),
    Family("SLURM", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS"),
)


NOT_DISTRIBUTED = ("", "-1")  # what scripts and launchers set for "no rank" (LOCAL_RANK=-1 in HF's examples)


def _number(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() in NOT_DISTRIBUTED:
        return None
    if not raw.strip().isdigit():
        raise RankError(f"{name}={raw!r} is not a whole number >= 0 (or -1 for none); fix the launcher's "
                        "variable or unset it")
    return int(raw)


def from_env(env: Mapping[str, str]) -> Rank | None:
    """The rank the launcher's variables give, or None when no family's variables are set.

    Raises RankError for a variable that is not a whole number. A rank at or past the world size is
    dropped, after one line on stderr: counting goes on with the variables that agree."""
    for family in FAMILIES:
        world = _number(env, family.world_size)
        rank, local = _number(env, family.rank), _number(env, family.local_rank)
        if world is None or (rank is None and local is None):
            continue
        if rank is None and _number(env, "NODE_RANK") in (None, 0):
            rank = local  # Lightning's children: LOCAL_RANK and WORLD_SIZE, no RANK, on the first node
        rank, local = _consistent(family, world, rank, local)
        if rank is None and local is None:
            continue
        found = {"local_rank": local if local is not None else rank, "world_size": world}
        return found if rank is None else {"rank": rank, **found}
    return None


def _consistent(family: Family, world: int, rank: int | None, local: int | None) -> tuple[int | None, int | None]:
    """``rank`` and ``local`` with each one at or past ``world`` dropped (None), and one line on stderr
    naming the variables that disagree."""
    bad = [(name, value) for name, value in ((family.rank, rank), (family.local_rank, local))
           if value is not None and value >= world]
    if bad:
        from .settings import tell  # one line per process, as for a bad setting

        given = " and ".join(f"{name}={value}" for name, value in bad)
        tell(f"otel-flops: {given} is not below {family.world_size}={world}; ignored (fix the launcher's "
             "variables); counting goes on with the rest")
    return (None if rank is not None and rank >= world else rank,
            None if local is not None and local >= world else local)


def _group() -> tuple[int, int] | None:
    """(rank, world size) in torch.distributed's default group, once this process has joined one."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is None or not dist.is_available() or not dist.is_initialized():
            return None
        return dist.get_rank(), dist.get_world_size()
    except (RuntimeError, ValueError):
        return None


_joined: Rank | None = None  # the rank last seen in a group: kept after the group is destroyed


def current(started: Rank | None = None) -> Rank | None:
    """This process's rank now: its group's once it has joined one (with the local rank the
    variables give, else the global rank; remembered after the group is destroyed), else
    ``started`` (what the variables gave at start)."""
    global _joined
    group = _group()
    if group is None:
        return _joined or started
    try:
        given = started or from_env(os.environ)
    except RankError:
        given = None
    rank, world = group
    _joined = {"rank": rank, "local_rank": given["local_rank"] if given else rank, "world_size": world}
    return _joined


def key(rank: Rank | None) -> str:
    """The rank as text, to tell one rank's processes from another's (``""`` for no rank)."""
    return ",".join(f"{k}={v}" for k, v in sorted((rank or {}).items()))


def follow(on_join: Callable[[], None] | None = None) -> None:
    """Remember the rank each time ``init_process_group`` returns in this process, then call
    ``on_join()`` (a failure in it is logged, never raised). Install before torch.distributed is
    imported: its modules copy the function when they load."""

    def joined() -> None:
        current()
        if on_join is not None:
            on_join()

    _wrap_when_imported("torch.distributed.distributed_c10d", "init_process_group", joined, after=True)


def before_spawn(callback: Callable[[], None]) -> None:
    """Call ``callback()`` before ``torch.multiprocessing`` starts processes (``mp.spawn``,
    Lightning's ``ddp_spawn``); install before torch is imported."""
    _wrap_when_imported("torch.multiprocessing.spawn", "start_processes", callback, after=False)


def _wrap_when_imported(module_name: str, name: str, callback: Callable[[], None], *, after: bool) -> None:
    import wrapt

    def call(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        if not after:
            _contained(callback)
        result = wrapped(*args, **kwargs)
        if after:
            _contained(callback)
        return result

    wrapt.register_post_import_hook(lambda module: wrapt.wrap_function_wrapper(module, name, call), module_name)


def _contained(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        log.exception("otel-flops: could not follow the process's new rank; the program goes on")
