"""Evaluate many (program, instance) pairs, each in its own contained process.

Every (program, instance) pair is one job of a `sandbox.WorkerPool`: a forked process with a
wall-clock timeout, an address-space limit and a CPU-time limit, whose output goes to /dev/null.
A program that loops, exhausts memory or kills its process gets a result saying so, and cannot
disturb the other programs of the batch. Pool outcomes become `EvalResult` statuses:

    pool outcome                       EvalResult
    ok (evaluate returned)             the EvalResult itself (ok / error / invalid), except that a
                                       MemoryError in the candidate becomes crashed, as below
    timeout (wall clock or CPU time)   timeout   "timed out: exceeded the ... limit of N s"
    memory                             crashed   "exceeded the memory limit of N MiB"
    crashed (signal, exit code)        crashed   "the job process was killed by SIGSEGV ..."
    error (the job raised)             error     "<Type>: <message>"

Error messages start with the instance name, as `evaluate`'s do (`wire.outcome_to_result`).

The reference baseline of each instance is simulated once, in its own job, and handed to the
candidates' jobs; the parent keeps it for later calls (`reference.ensure_known`). A reference
that raises (e.g. a workload that cannot run on the chosen cluster) is an input error:
`evaluate_many` raises ValueError. What a candidate's job sends back is checked (`wire`), and its
fitness is recomputed here from its metrics and the reference's: a job cannot forge its own
score.

Results are merged per program in instance order, so a parallel evaluation equals a sequential
`evaluate` of the same program on the same instances (`duration_s` aside).
"""
from __future__ import annotations

import os
from typing import Callable

from sandbox import WorkerPool

from ..problems import Instance, Problem
from . import reference
from .result import EvalResult, merge
from .run import evaluate
from .wire import outcome_to_result

DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MEMORY_MB = 2048
TIMEOUT_ENV = "GLIA_EVO_EVAL_TIMEOUT_S"   # default wall-clock limit per job, seconds
MEMORY_ENV = "GLIA_EVO_EVAL_MEMORY_MB"    # default address-space limit per job, MiB
CPU_ENV = "GLIA_EVO_EVAL_CPU_S"           # default CPU-time limit per job (else: the wall limit)


def _env_number(name: str, default: float | None) -> float | None:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise ValueError(f"{name} must be a positive number of "
                         f"{'MiB' if name == MEMORY_ENV else 'seconds'}, got {text!r}")
    return value


def resolve_limits(timeout_s: float | None = None, memory_mb: float | None = None,
                   cpu_s: float | None = None) -> tuple[float, float, float]:
    """(wall-clock s, MiB, CPU s) per job: the arguments, else the environment
    (GLIA_EVO_EVAL_TIMEOUT_S, GLIA_EVO_EVAL_MEMORY_MB, GLIA_EVO_EVAL_CPU_S), else 600 s,
    2048 MiB, and a CPU limit equal to the wall-clock limit."""
    timeout_s = timeout_s if timeout_s is not None else _env_number(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
    memory_mb = memory_mb if memory_mb is not None else _env_number(MEMORY_ENV, DEFAULT_MEMORY_MB)
    cpu_s = cpu_s if cpu_s is not None else _env_number(CPU_ENV, timeout_s)
    return timeout_s, memory_mb, cpu_s


def make_pool(workers: int | None = None, *, timeout_s: float | None = None,
              memory_mb: float | None = None, cpu_s: float | None = None,
              read_paths=()) -> WorkerPool:
    """A WorkerPool with the evaluation limits (see `resolve_limits`); `workers` defaults to
    all cores; `read_paths` as `Problem.read_paths`. Pass it to `evaluate_many(pool=...)` to
    reuse it across calls."""
    timeout_s, memory_mb, cpu_s = resolve_limits(timeout_s, memory_mb, cpu_s)
    return WorkerPool(max(1, workers or os.cpu_count() or 1), timeout_s=timeout_s,
                      memory_mb=memory_mb, cpu_s=cpu_s, read_paths=read_paths)


# --- the job (it runs in the pool's forked processes) ---------------------------------------------
def _candidate_job(problem: Problem, source: str, instance: Instance, knobs: dict | None,
                   seed: int, ref: dict | None) -> dict:
    known = {instance.name: ref[problem.metric]} if ref is not None else None
    return evaluate(source, problem, [instance], knobs=knobs, seed=seed,
                    reference=known).to_dict()


# --- the entry point -------------------------------------------------------------------------------
def evaluate_many(sources: list[str], problem: Problem, instances: list[Instance], *,
                  knobs: dict | list[dict | None] | None = None, seed: int = 0,
                  workers: int | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  timeout_s: float | None = None, memory_mb: float | None = None,
                  cpu_s: float | None = None, pool: WorkerPool | None = None) -> list[EvalResult]:
    """Evaluate each source on every instance; returns one merged EvalResult per source.

    Each (source, instance) pair runs in its own contained process (see the module docstring);
    `workers` processes at a time (default: all cores). Limits per job: `timeout_s` wall clock,
    `memory_mb` of address space, `cpu_s` of CPU time (defaults: `resolve_limits`). Pass a
    `pool` (e.g. from `make_pool`) to use its workers and limits instead.
    `progress(done, total)` is called as simulations finish (reference baselines included).
    `knobs`: one dict for every source, or a list with one per source (programs with different
    knob values then share one pool and its warm start).
    """
    sources, instances = list(sources), list(instances)
    if isinstance(knobs, list) and len(knobs) != len(sources):
        raise ValueError(f"{len(knobs)} knob sets for {len(sources)} sources")
    if not sources or not instances:
        return [merge([]) for _ in sources]
    own = pool is None
    if own:
        jobs = len(sources) * len(instances)
        pool = make_pool(min(workers or os.cpu_count() or 1, jobs),
                         timeout_s=timeout_s, memory_mb=memory_mb, cpu_s=cpu_s,
                         read_paths=problem.read_paths())
    try:
        return _evaluate(pool, sources, problem, instances, knobs, seed, progress)
    finally:
        if own:
            pool.shutdown(wait=True, kill=True)   # a no-op unless interrupted


def _evaluate(pool: WorkerPool, sources, problem, instances, knobs, seed, progress):
    total = len(reference.missing(problem, instances)) + len(sources) * len(instances)
    done = 0

    def tick():
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    reference.ensure_known(pool, problem, instances, tick)

    per_source = knobs if isinstance(knobs, list) else [knobs] * len(sources)
    futures = [[pool.submit(_candidate_job, problem, src, inst, k, seed,
                            reference.known(problem, inst)) for src, k in zip(sources, per_source)]
               for inst in instances]
    per_instance: list[list[EvalResult]] = []
    for inst, row in zip(instances, futures):
        results = []
        for future in row:
            ref = reference.known(problem, inst)
            results.append(outcome_to_result(
                future.result(), inst, pool, metric=problem.metric,
                reference={inst.name: ref[problem.metric]},
                completed={inst.name: ref["completed"]} if "completed" in ref else None,
                expected={"ok": (inst.name,)}))
            tick()
        per_instance.append(results)
    return [merge([row[k] for row in per_instance]) for k in range(len(sources))]
