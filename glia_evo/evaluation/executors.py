"""Where evaluation jobs run: the `Executor` protocol and the registry of executors (the local
sandbox pool, Dask).

Every executor has the interface of `sandbox.WorkerPool` the engine uses (`Executor`):
`submit(fn, *args)` returns a `concurrent.futures.Future` that resolves to a `sandbox.JobOutcome`;
`workers` is how many jobs may run at once; `memory_mb` / `timeout_s` are the per-job limits;
`shutdown()` stops it. On every executor each job runs in its own limited process (see
`sandbox.pool`), and every registered executor must pass
`tests/test_conformance.py::test_executor_conformance`.

`EXECUTORS` is the one list of names: the configuration's check, the CLI's `--executor` choices
and its help read it. Adding an executor is one `register(ExecutorKind(...))` call here (or in a
module imported before the configuration is read).
"""
from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable


@runtime_checkable
class Executor(Protocol):
    """What the engine, `evaluate_many` and the tuner use of an executor."""

    @property
    def workers(self) -> int: ...              # jobs that may run at once (may change: Dask)

    @property
    def timeout_s(self) -> float | None: ...   # per job: wall clock, seconds

    @property
    def memory_mb(self) -> float | None: ...   # per job: address space, MiB

    def submit(self, fn: Callable, *args, **kwargs) -> concurrent.futures.Future: ...
    # the future resolves to a sandbox.JobOutcome, whatever happened to the job's process

    def shutdown(self, wait: bool = True, *, kill: bool = True) -> None: ...


@dataclass(frozen=True)
class ExecutorKind:
    name: str
    help: str                                  # one phrase, for `--executor`'s help
    make: Callable[..., Executor]              # (EvaluationConfig, read_paths) -> executor
    local: bool = True                         # its workers are processes on this machine
    needs_scheduler: bool = False              # `evaluation.scheduler` must be set


_KINDS: dict[str, ExecutorKind] = {}


def register(kind: ExecutorKind) -> ExecutorKind:
    _KINDS[kind.name] = kind
    return kind


def kinds() -> dict[str, ExecutorKind]:
    return dict(_KINDS)


def get(name: str) -> ExecutorKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise ValueError(f"unknown executor {name!r}; choose one of "
                         f"{', '.join(_KINDS)}") from None


def make_executor(e, read_paths=()) -> Executor:
    """The executor an `EvaluationConfig` asks for (`executor`, `workers`, `scheduler`, limits);
    `read_paths`: what jobs must be able to read besides glia-evo (`Problem.read_paths`)."""
    return get(getattr(e, "executor", "local")).make(e, tuple(read_paths))


def _local(e, read_paths):
    from sandbox.pool import WorkerPool
    return WorkerPool(e.workers, timeout_s=e.timeout_s, memory_mb=e.memory_mb,
                      cpu_s=e.timeout_s, read_paths=read_paths)


def _dask_local(e, read_paths):
    from .dask import DaskExecutor
    return DaskExecutor.local(e.workers, timeout_s=e.timeout_s, memory_mb=e.memory_mb)


def _dask(e, read_paths):
    from .dask import DaskExecutor
    return DaskExecutor.connect(e.scheduler, timeout_s=e.timeout_s, memory_mb=e.memory_mb)


register(ExecutorKind("local", "this machine's sandbox pool (default)", _local))
register(ExecutorKind("dask-local", "a Dask LocalCluster", _dask_local))
register(ExecutorKind("dask", "a Dask cluster (--scheduler)", _dask, local=False,
                      needs_scheduler=True))

EXECUTORS = tuple(_KINDS)
