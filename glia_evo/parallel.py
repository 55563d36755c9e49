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

Error messages start with the instance name, as `evaluate`'s do.

The reference baseline of each instance is simulated once, in its own job, and handed to the
candidates' jobs; the parent keeps it for later calls. A reference that raises (e.g. a workload
that cannot run on the chosen cluster) is an input error: `evaluate_many` raises ValueError.
What a candidate's job sends back is checked (`glia_evo.wire`), and its fitness is recomputed
here from its metrics and the reference's: a job cannot forge its own score.

Results are merged per program in instance order, so a parallel evaluation equals a sequential
`evaluate` of the same program on the same instances (`duration_s` aside).
"""
from __future__ import annotations

import collections
import os
import re
from collections.abc import Collection
from typing import Callable

from sandbox import JobOutcome, WorkerPool

from . import evaluation as _evaluation
from .evaluation import EvalResult, evaluate, geometric_mean
from .hygiene import clean
from .problems import Instance, Problem
from .wire import WireError, result_from_wire

DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MEMORY_MB = 2048
TIMEOUT_ENV = "GLIA_EVO_EVAL_TIMEOUT_S"   # default wall-clock limit per job, seconds
MEMORY_ENV = "GLIA_EVO_EVAL_MEMORY_MB"    # default address-space limit per job, MiB
CPU_ENV = "GLIA_EVO_EVAL_CPU_S"           # default CPU-time limit per job (else: the wall limit)

_REFERENCE_CACHE_SIZE = 256
_references: collections.OrderedDict = collections.OrderedDict()


def merge(results: list[EvalResult]) -> EvalResult:
    """Combine per-instance results of one program: the first failure wins, else geomean."""
    merged = EvalResult(status="ok")
    for r in results:
        merged.scenarios.update(r.scenarios)
        merged.diagnostics.update(r.diagnostics)
        merged.reference.update(r.reference)
        merged.duration_s += r.duration_s
        if r.status != "ok" and merged.status == "ok":
            merged.status, merged.error, merged.line = r.status, r.error, r.line
    if merged.status == "ok":
        merged.fitness = geometric_mean([r.fitness for r in results])
    return merged


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


# --- jobs (they run in the pool's forked processes) ------------------------------------------------
def _reference_job(problem: Problem, instance: Instance):
    """('ok', metrics) or ('raised', is_value_error, "message") for the reference baseline."""
    try:
        return ("ok", _evaluation.reference_metrics(problem, instance))
    except Exception as exc:
        return ("raised", isinstance(exc, ValueError), f"{type(exc).__name__}: {exc}",
                str(exc))


def _candidate_job(problem: Problem, source: str, instance: Instance, knobs: dict | None,
                   seed: int, reference: dict | None) -> dict:
    known = {instance.name: reference[problem.metric]} if reference is not None else None
    return evaluate(source, problem, [instance], knobs=knobs, seed=seed,
                    reference=known).to_dict()


# --- outcomes -> EvalResult ------------------------------------------------------------------------
_MEMORY_ERROR = re.compile(r"^(?:line \d+(?: in [\w<>.]+)?: )?MemoryError\b")


def _memory_text(pool: WorkerPool) -> str:
    if pool.memory_mb is None:
        return "ran out of memory"
    return f"exceeded the memory limit of {pool.memory_mb:g} MiB"


def outcome_to_result(outcome: JobOutcome, instance: Instance | str, pool: WorkerPool, *,
                      metric: str | None = None, reference: dict | None = None,
                      completed: dict | None = None,
                      expected: dict[str, Collection[str]] | None = None) -> EvalResult:
    """The EvalResult of one job (an instance, or a split's name for a multi-instance job),
    whatever happened to its process. What the job sent is checked by
    `glia_evo.wire.result_from_wire` (with `metric` and the trusted `reference` values the
    fitness is recomputed; `completed` and `expected` are checked); a result that fails a check
    is `crashed`."""
    name = instance if isinstance(instance, str) else instance.name
    if outcome.status == "ok":
        try:
            result = result_from_wire(outcome.value, metric=metric, reference=reference,
                                      completed=completed, expected=expected)
        except WireError as exc:
            return EvalResult(status="crashed", duration_s=outcome.duration_s,
                              error=f"{name}: the job sent an invalid result: {exc}")
        if result.status == "error" and result.error:
            detail = result.error.removeprefix(f"{name}: ")
            if _MEMORY_ERROR.match(detail):   # the candidate hit the address-space limit
                result.status = "crashed"
                result.error = f"{name}: {_memory_text(pool)} ({detail})"
        return result
    status = {"timeout": "timeout", "memory": "crashed", "crashed": "crashed"}.get(
        outcome.status, "error")
    error = _memory_text(pool) if outcome.status == "memory" else clean(outcome.error)
    return EvalResult(status=status, error=f"{name}: {error}", duration_s=outcome.duration_s)


# --- the reference cache ---------------------------------------------------------------------------
def _cached_reference(problem: Problem, instance: Instance) -> dict | None:
    key = (problem.key, instance)
    metrics = _references.get(key)
    if metrics is not None:
        _references.move_to_end(key)
    return metrics


def _reference_checked(problem: Problem, instance: Instance, metrics) -> dict:
    """The reference job's metrics, as plain finite numbers (the channel carries JSON)."""
    value = metrics.get(problem.metric) if isinstance(metrics, dict) else None
    if type(value) not in (int, float) or not value > 0 or value == float("inf"):
        raise RuntimeError(f"the reference baseline {problem.reference!r} gave no usable "
                           f"{problem.metric} on {instance.name}")
    return metrics


def _remember_reference(problem: Problem, instance: Instance, metrics: dict) -> None:
    _references[(problem.key, instance)] = metrics
    while len(_references) > _REFERENCE_CACHE_SIZE:
        _references.popitem(last=False)


# --- the entry point -------------------------------------------------------------------------------
def evaluate_many(sources: list[str], problem: Problem, instances: list[Instance], *,
                  knobs: dict | None = None, seed: int = 0, workers: int | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  timeout_s: float | None = None, memory_mb: float | None = None,
                  cpu_s: float | None = None, pool: WorkerPool | None = None) -> list[EvalResult]:
    """Evaluate each source on every instance; returns one merged EvalResult per source.

    Each (source, instance) pair runs in its own contained process (see the module docstring);
    `workers` processes at a time (default: all cores). Limits per job: `timeout_s` wall clock,
    `memory_mb` of address space, `cpu_s` of CPU time (defaults: `resolve_limits`). Pass a
    `pool` (e.g. from `make_pool`) to use its workers and limits instead.
    `progress(done, total)` is called as simulations finish (reference baselines included).
    """
    sources, instances = list(sources), list(instances)
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
    missing = []
    for inst in instances:
        if _cached_reference(problem, inst) is None and inst not in missing:
            missing.append(inst)
    total = len(missing) + len(sources) * len(instances)
    done = 0

    def tick():
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    for inst, future in [(i, pool.submit(_reference_job, problem, i)) for i in missing]:
        outcome = future.result()
        if outcome.status in ("crashed", "timeout"):     # killed from outside: once more
            outcome = pool.submit(_reference_job, problem, inst).result()
        tick()
        if outcome.status != "ok":    # never let a candidate's job compute its own reference
            raise RuntimeError(f"the reference baseline {problem.reference!r} could not be "
                               f"simulated on {inst.name} ({outcome.status}): {outcome.error}")
        kind, *rest = outcome.value
        if kind == "ok":
            _remember_reference(problem, inst, _reference_checked(problem, inst, rest[0]))
            continue
        is_value_error, text, message = rest
        if is_value_error:
            raise ValueError(message)
        raise RuntimeError(f"the reference baseline {problem.reference!r} failed on "
                           f"{inst.name}: {text}")

    futures = [[pool.submit(_candidate_job, problem, src, inst, knobs, seed,
                            _cached_reference(problem, inst)) for src in sources]
               for inst in instances]
    per_instance: list[list[EvalResult]] = []
    for inst, row in zip(instances, futures):
        results = []
        for future in row:
            ref = _cached_reference(problem, inst)
            results.append(outcome_to_result(
                future.result(), inst, pool, metric=problem.metric,
                reference={inst.name: ref[problem.metric]},
                completed={inst.name: ref["completed"]} if "completed" in ref else None,
                expected={"ok": (inst.name,)}))
            tick()
        per_instance.append(results)
    return [merge([row[k] for row in per_instance]) for k in range(len(sources))]
