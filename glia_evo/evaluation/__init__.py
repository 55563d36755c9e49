"""Evaluation: a candidate program in, a checked `EvalResult` out.

    result.py          EvalResult, STATUSES (the one list of them), the geometric mean, merging
    run.py             one candidate on instances in this process (`evaluate`): compile in the
                       sandbox, simulate (or the problem's own evaluate()), fitness vs reference
    reference.py       the reference baseline's metrics: the one place they are simulated,
                       checked and cached (per process, and a run's saved copy)
    jobs.py            the job the engine sends to a worker: one candidate, its cascade's stages
    cascade.py         the cascade's verdict (screen, combine) and `evaluate_cascade`
    parallel.py        `evaluate_many`: many (program, instance) pairs, each in a contained process
    wire.py            what a job sends back, read as hostile input (`outcome_to_result`)
    executors.py       where jobs run: the `Executor` protocol and the registry of executors
    dask.py            the Dask executor
    evaluator.py       the engine's side: the run's reference, jobs in flight, the re-run check
    baseline_cache.py  baseline results cached across runs

The names below are importable from `glia_evo.evaluation` itself; each submodule is imported on
first use (so `glia_evo.config`, which reads the executors' registry, does not load the simulator).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "result": ("EvalResult", "STATUSES", "compact_diagnostics", "geometric_mean", "merge"),
    "run": ("KnobError", "Outcome", "PastDeadline", "ProblemFailure", "evaluate", "policy_seed",
            "resolve_knobs", "run_instance", "run_own_evaluate", "simulate_policies"),
    "reference": ("reference_metrics",),
    "jobs": ("EvalJob", "evaluate_job"),
    "cascade": ("evaluate_cascade",),
    "parallel": ("evaluate_many", "make_pool", "resolve_limits"),
    "wire": ("outcome_to_result",),
    "executors": ("EXECUTORS", "Executor", "make_executor"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
