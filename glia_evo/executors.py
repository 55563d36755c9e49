"""Where evaluation jobs run: the local sandbox pool, or a Dask cluster.

Every executor has the `sandbox.WorkerPool` interface the engine uses: `submit(fn, *args)`
returns a `concurrent.futures.Future` that resolves to a `sandbox.JobOutcome`; `workers` is how
many jobs may run at once; `memory_mb` / `timeout_s` are the per-job limits; `shutdown()` stops
it. On every executor each job runs in its own limited process (see `sandbox.pool`).
"""
from __future__ import annotations

EXECUTORS = ("local", "dask-local", "dask")


def make_executor(e, read_paths=()):
    """The executor an `EvaluationConfig` asks for (`executor`, `workers`, `scheduler`, limits);
    `read_paths`: what jobs must be able to read besides glia-evo (`Problem.read_paths`)."""
    kind = getattr(e, "executor", "local")
    if kind == "local":
        from sandbox.pool import WorkerPool
        return WorkerPool(e.workers, timeout_s=e.timeout_s, memory_mb=e.memory_mb,
                          cpu_s=e.timeout_s, read_paths=read_paths)
    from .dask_executor import DaskExecutor
    if kind == "dask-local":
        return DaskExecutor.local(e.workers, timeout_s=e.timeout_s, memory_mb=e.memory_mb)
    if kind == "dask":
        return DaskExecutor.connect(e.scheduler, timeout_s=e.timeout_s, memory_mb=e.memory_mb)
    raise ValueError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")
