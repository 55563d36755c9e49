"""Where evaluation jobs run: the registry of executors (the local sandbox pool, Dask).

Every executor has the `sandbox.WorkerPool` interface the engine uses: `submit(fn, *args)`
returns a `concurrent.futures.Future` that resolves to a `sandbox.JobOutcome`; `workers` is how
many jobs may run at once; `memory_mb` / `timeout_s` are the per-job limits; `shutdown()` stops
it. On every executor each job runs in its own limited process (see `sandbox.pool`), and every
registered executor must pass `tests/test_conformance.py::test_executor_conformance`.

`EXECUTORS` is the one list of names: the configuration's check, the CLI's `--executor` choices
and its help read it. Adding an executor is one `register(ExecutorKind(...))` call here (or in a
module imported before the configuration is read).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ExecutorKind:
    name: str
    help: str                                  # one phrase, for `--executor`'s help
    make: Callable                             # (EvaluationConfig, read_paths) -> executor
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


def make_executor(e, read_paths=()):
    """The executor an `EvaluationConfig` asks for (`executor`, `workers`, `scheduler`, limits);
    `read_paths`: what jobs must be able to read besides glia-evo (`Problem.read_paths`)."""
    return get(getattr(e, "executor", "local")).make(e, tuple(read_paths))


def _local(e, read_paths):
    from sandbox.pool import WorkerPool
    return WorkerPool(e.workers, timeout_s=e.timeout_s, memory_mb=e.memory_mb,
                      cpu_s=e.timeout_s, read_paths=read_paths)


def _dask_local(e, read_paths):
    from .dask_executor import DaskExecutor
    return DaskExecutor.local(e.workers, timeout_s=e.timeout_s, memory_mb=e.memory_mb)


def _dask(e, read_paths):
    from .dask_executor import DaskExecutor
    return DaskExecutor.connect(e.scheduler, timeout_s=e.timeout_s, memory_mb=e.memory_mb)


register(ExecutorKind("local", "this machine's sandbox pool (default)", _local))
register(ExecutorKind("dask-local", "a Dask LocalCluster", _dask_local))
register(ExecutorKind("dask", "a Dask cluster (--scheduler)", _dask, local=False,
                      needs_scheduler=True))

EXECUTORS = tuple(_KINDS)
