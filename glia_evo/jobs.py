"""The evaluation job the engine sends to a sandbox worker, and how its outcome is read back.

`evaluate_job` runs inside a worker process (under the pool's time, CPU and memory limits): an
optional quick first stage, then the configured split. A candidate whose first stage falls below
`threshold` x the bar (its parent's first-stage fitness, or the reference's 1.0) is `rejected`
without running the expensive stage.
"""
from __future__ import annotations

from dataclasses import dataclass

from .evaluation import EvalResult, evaluate
from .problems import get_problem


@dataclass(frozen=True)
class EvalJob:
    source: str
    problem: str
    split: str = "train"
    seed: int = 0
    knobs: tuple = ()               # (name, value) overrides
    cascade: bool = False
    cascade_split: str = "quick"
    threshold: float = 0.8
    bar_fitness: float = 1.0
    reference: tuple = ()           # (instance name, reference metric) computed once per run


def reference_job(problem_name: str, splits: tuple[str, ...]) -> dict:
    """The reference baseline's metric on every instance of `splits` (run once per search)."""
    from .evaluation import reference_metrics
    problem = get_problem(problem_name)
    return {inst.name: reference_metrics(problem, inst)[problem.metric]
            for split in splits for inst in problem.split(split)}


def evaluate_job(job: EvalJob) -> EvalResult:
    problem = get_problem(job.problem)
    knobs = dict(job.knobs) or None
    reference = dict(job.reference)
    if job.cascade:
        first = evaluate(job.source, problem, problem.split(job.cascade_split), knobs=knobs,
                         seed=job.seed, reference=reference)
        bar = job.threshold * job.bar_fitness
        info = {"stage": 1, "stage1_fitness": first.fitness, "bar": bar,
                "threshold": job.threshold}
        if first.status != "ok" or first.fitness < bar:
            if first.status == "ok":
                first.status = "rejected"
                first.error = (f"first stage fitness {first.fitness:.3f} below the bar "
                               f"{bar:.3f} ({job.threshold} x {job.bar_fitness:.3f})")
            first.diagnostics["cascade"] = info
            return first
    result = evaluate(job.source, problem, problem.split(job.split), knobs=knobs, seed=job.seed,
                      reference=reference)
    if job.cascade:
        result.diagnostics["cascade"] = {**info, "stage": 2}
        result.duration_s += first.duration_s
    return result


def result_from_outcome(outcome, evaluation_cfg) -> EvalResult:
    """Map a sandbox JobOutcome to an EvalResult (the pool's view of what happened)."""
    status = outcome.status
    if status == "ok":
        return outcome.value
    if status == "timeout":
        return EvalResult(status="timeout", error=f"evaluation exceeded the time limit of "
                                                  f"{evaluation_cfg.timeout_s:g} s",
                          duration_s=outcome.duration_s)
    if status == "memory":
        return EvalResult(status="crashed", error=f"evaluation exceeded the memory limit of "
                                                  f"{evaluation_cfg.memory_mb} MiB",
                          duration_s=outcome.duration_s)
    if status == "crashed":
        return EvalResult(status="crashed", error=outcome.error or "the worker process died",
                          duration_s=outcome.duration_s)
    return EvalResult(status="error", error=outcome.error or "evaluation failed",
                      duration_s=outcome.duration_s)
