"""The evaluation job the engine sends to a sandbox worker (one candidate, all its stages).

`evaluate_job` runs inside a worker process (under the pool's time, CPU and memory limits): an
optional quick first stage, then the configured split. A candidate whose first stage falls below
`threshold` x the bar (its parent's first-stage fitness, or the reference's 1.0) is `rejected`
without running the expensive stage; one whose first stage runs past `cascade_timeout_s` is a
`timeout` (a policy that slows the quick stage 10x would slow the expensive one as much).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..problems import get_problem
from .cascade import combine, screen
from .reference import reference_metrics
from .result import EvalResult
from .run import evaluate


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
    cascade_timeout_s: float = 0.0  # the first stage's wall-clock limit; 0 = none of its own


def warm(problem_name: str, splits: tuple[str, ...]) -> None:
    """Preload a fork server (`sandbox.WorkerPool.warm`) with what every job of a search needs:
    the modules an evaluation imports, the problem's scenarios and every instance's workload of
    `splits` (parsed traces are cached per process), its clusters, and one simulation of the
    reference baseline on the smallest instance (lazily initialised code paths). Trusted code
    only: it runs in the server, before any candidate's job is forked from it."""
    from sandbox import compile_policy
    problem = get_problem(problem_name)
    smallest, size = None, None
    for split in splits:
        for inst in problem.split(split):
            n = len(inst.workload())
            inst.cluster()
            if size is None or n < size:
                smallest, size = inst, n
    source = problem_baseline_source(problem, problem.reference)
    compile_policy(source, problem.entrypoints, seed=0)
    if smallest is not None:
        reference_metrics(problem, smallest)


def problem_baseline_source(problem, name: str) -> str:
    method = getattr(problem, "baseline_source", None)
    if callable(method):
        return method(name)
    from sim.policies import baseline_source
    return baseline_source(problem.name, name)


def evaluate_job(job: EvalJob) -> dict:
    """One candidate in one sandbox process: the cascade's two stages run here in sequence
    (`cascade.screen` judges them), so the engine needs one job per candidate. Returns the
    EvalResult as plain data (the channel carries JSON); the engine reads it with
    `wire.outcome_to_result`, which recomputes the fitness from its own reference."""
    return _evaluate_job(job).to_dict()


def _evaluate_job(job: EvalJob) -> EvalResult:
    problem = get_problem(job.problem)
    knobs = dict(job.knobs) or None
    reference = dict(job.reference)
    if job.cascade:
        stage1 = problem.split(job.cascade_split)
        first = evaluate(job.source, problem, stage1, knobs=knobs, seed=job.seed,
                         reference=reference, deadline_s=job.cascade_timeout_s or None)
        info = screen(first, stage1, job.threshold, job.bar_fitness)
        if not info["passed"]:
            if first.status == "ok":
                first.status = "rejected"
                first.error = (f"first stage fitness {first.fitness:.3f} below the bar "
                               f"{info['bar']:.3f} ({job.threshold} x {job.bar_fitness:.3f})")
            return first
    stage2 = problem.split(job.split)
    result = evaluate(job.source, problem, stage2, knobs=knobs, seed=job.seed,
                      reference=reference)
    return combine(result, info, stage2) if job.cascade else result
