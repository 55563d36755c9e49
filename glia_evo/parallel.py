"""Evaluate many (program, instance) pairs on all cores, one instance per job.

Results are merged per program in instance order, so a parallel evaluation equals a sequential
`evaluate` of the same program on the same instances.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

from .evaluation import EvalResult, evaluate, geometric_mean
from .problems import Instance, Problem, get_problem


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


def _job(args) -> list[EvalResult]:
    problem_name, sources, instance, knobs, seed = args
    problem = get_problem(problem_name)
    return [evaluate(src, problem, [instance], knobs=knobs, seed=seed) for src in sources]


def evaluate_many(sources: list[str], problem: Problem, instances: list[Instance], *,
                  knobs: dict | None = None, seed: int = 0, workers: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> list[EvalResult]:
    """Evaluate each source on every instance; returns one merged EvalResult per source.

    One job per instance runs all sources there, so the reference baseline of that instance is
    simulated once per job.
    """
    workers = max(1, min(workers or os.cpu_count() or 1, len(instances)))
    jobs = [(problem.name, sources, inst, knobs, seed) for inst in instances]
    per_instance: list[list[EvalResult]] = []
    if workers == 1:
        for i, job in enumerate(jobs):
            per_instance.append(_job(job))
            if progress:
                progress(i + 1, len(jobs))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for i, out in enumerate(pool.map(_job, jobs)):
                per_instance.append(out)
                if progress:
                    progress(i + 1, len(jobs))
    return [merge([row[k] for row in per_instance]) for k in range(len(sources))]
