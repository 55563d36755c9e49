"""Evaluation cascade: a cheap first stage screens out bad candidates before the expensive one.

Stage 1 (default: the problem's `quick` split) runs first. A candidate that fails there (any
status but ok) or whose stage-1 fitness is below `threshold x baseline_fitness` (the parent's or
the reference's stage-1 fitness) stops: its stage-1 result is returned and stage 2 is never
simulated. Otherwise stage 2 (default: the `train` split) runs and its result is returned. Either
way `result.diagnostics["cascade"]` says what happened:

    {"stage": 1 or 2,            # the stage whose result this is
     "passed": bool,             # stage 1 cleared the bar (so stage 2 ran)
     "threshold": 0.8, "baseline_fitness": 1.0, "bar": 0.8,   # bar = threshold x baseline
     "stage1_status": "ok", "stage1_fitness": x, "stage1_instances": [...],
     "stage1_duration_s": s,
     # when stage 2 ran:
     "stage2_status": ..., "stage2_fitness": y, "stage2_instances": [...], "stage2_duration_s": s}

A stopped candidate keeps its stage-1 status and fitness (check "passed" before comparing it with
fully evaluated ones); `duration_s` of a passed candidate covers both stages. Both stages run
through `evaluate_many`, i.e. each (candidate, instance) in its own contained process.
"""
from __future__ import annotations

from sandbox import WorkerPool

from ..problems import Instance, Problem
from .parallel import evaluate_many, make_pool
from .result import EvalResult


def evaluate_cascade(source: str, problem: Problem, *,
                     stage1: list[Instance] | None = None, stage2: list[Instance] | None = None,
                     threshold: float = 0.8, baseline_fitness: float = 1.0,
                     knobs: dict | None = None, seed: int = 0,
                     pool: WorkerPool | None = None, workers: int | None = None,
                     timeout_s: float | None = None, memory_mb: float | None = None,
                     cpu_s: float | None = None) -> EvalResult:
    """Evaluate `source` on `stage1`, and on `stage2` only if stage 1 clears the bar.

    `pool` (or else a pool made from `workers`, `timeout_s`, `memory_mb`, `cpu_s`, see
    `parallel.make_pool`) runs both stages.
    """
    stage1 = list(problem.split("quick") if stage1 is None else stage1)
    stage2 = list(problem.split("train") if stage2 is None else stage2)
    if not 0 <= threshold:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    own = pool is None
    if own:
        pool = make_pool(workers, timeout_s=timeout_s, memory_mb=memory_mb, cpu_s=cpu_s,
                         read_paths=problem.read_paths())
    try:
        [first] = evaluate_many([source], problem, stage1, knobs=knobs, seed=seed, pool=pool)
        info = screen(first, stage1, threshold, baseline_fitness)
        if not info["passed"]:
            return first
        [second] = evaluate_many([source], problem, stage2, knobs=knobs, seed=seed, pool=pool)
    finally:
        if own:
            pool.shutdown(wait=True, kill=True)
    return combine(second, info, stage2)


def screen(first: EvalResult, stage1: list[Instance], threshold: float,
           baseline_fitness: float) -> dict:
    """Judge a stage-1 result; records the verdict in its diagnostics and returns it."""
    bar = threshold * baseline_fitness
    info = {"stage": 1, "passed": first.status == "ok" and first.fitness >= bar,
            "threshold": threshold, "baseline_fitness": baseline_fitness, "bar": bar,
            "stage1_status": first.status, "stage1_fitness": first.fitness,
            "stage1_instances": [i.name for i in stage1], "stage1_duration_s": first.duration_s}
    first.diagnostics["cascade"] = info
    return info


def combine(second: EvalResult, info: dict, stage2: list[Instance]) -> EvalResult:
    """The stage-2 result, with both stages recorded and both durations counted."""
    info = dict(info, stage=2, stage2_status=second.status, stage2_fitness=second.fitness,
                stage2_instances=[i.name for i in stage2], stage2_duration_s=second.duration_s)
    second.diagnostics["cascade"] = info
    second.duration_s += info["stage1_duration_s"]
    return second
