"""The reference baseline's metrics: the one place they are simulated, checked and cached.

Every fitness is reference / candidate per instance, so the reference baseline (`Problem.reference`,
fitness 1.0) is simulated once per instance and kept; no candidate's job ever computes its own
reference (a job cannot be trusted with the bar it is measured against). The layers, from the
bottom:

- `reference_metrics`: simulate it in this process, cached per process (a forked job inherits the
  cache of the process it was forked from, e.g. a fork server warmed by `jobs.warm`);
- the jobs that run it in a sandbox process of its own, running no candidate: `reference_job`
  (every instance of some splits, for a search or a study) and `instance_job` (one instance, for
  `evaluate_many`), submitted through `run_job`, which runs a job killed from outside again;
- what came back, checked (`checked_values`, `checked_metrics`: positive finite metrics, whole
  request counts; trusted code, but its answer crossed the job channel);
- the trusted copies the parent keeps: `known` / `remember` (per process, for `evaluate_many` and
  the held-out report, which also fills it from `baseline_cache`), and `for_run`, a search's copy
  saved in its run state so a resumed run does not simulate it again.
"""
from __future__ import annotations

import collections
import functools
from typing import Callable

from ..problems import Instance, Problem, get_problem
from .run import run_instance

ATTEMPTS = 3                  # runs of a reference job killed from outside (SIGKILL, timeout)
CACHE_SIZE = 256              # instances kept per process


class ReferenceFailure(RuntimeError):
    """The reference baseline could not be simulated, or sent an unusable answer: one line."""


# --- simulated in this process ---------------------------------------------------------------------
def reference_metrics(problem: Problem, instance: Instance, fast: bool = True) -> dict:
    """The reference baseline's metrics on an instance (fitness 1.0), computed once per process."""
    return _simulated(problem.key, instance, fast)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _simulated(problem_key: str, instance: Instance, fast: bool) -> dict:
    problem = get_problem(problem_key)
    source = problem.baseline_source(problem.reference)
    return run_instance(source, problem, instance, None, seed=0, fast=fast).metrics


# --- the jobs (they run in a pool's sandbox processes) ---------------------------------------------
def reference_job(problem_name: str, splits: tuple[str, ...]) -> dict:
    """The reference baseline on every instance of `splits` (run once per search, in a job of
    its own that runs no candidate): {"values": instance -> the problem's metric,
    "completed": instance -> requests completed, i.e. the trace's length}. The engine computes
    every candidate's fitness from these values and checks its metrics against the counts."""
    problem = get_problem(problem_name)
    values, completed = {}, {}
    for split in splits:
        for inst in problem.split(split):
            metrics = reference_metrics(problem, inst)
            values[inst.name] = metrics[problem.metric]
            if "completed" in metrics:
                completed[inst.name] = metrics["completed"]
    return {"values": values, "completed": completed}


def instance_job(problem: Problem, instance: Instance):
    """('ok', metrics) or ('raised', is_value_error, "Type: message", "message") for the
    reference baseline on one instance."""
    try:
        return ("ok", reference_metrics(problem, instance))
    except Exception as exc:
        return ("raised", isinstance(exc, ValueError), f"{type(exc).__name__}: {exc}",
                str(exc))


def run_job(pool, fn, *args, attempts: int = ATTEMPTS,
            on_killed: Callable[[int, str | None], None] | None = None):
    """Submit a reference job and wait for its outcome; one killed from outside (crashed or timed
    out: it runs trusted code only) is run again, up to `attempts` runs in all.
    `on_killed(attempt, error)` is told of each killed run."""
    for attempt in range(attempts):
        outcome = pool.submit(fn, *args).result()
        if outcome.status not in ("crashed", "timeout"):
            break
        if on_killed is not None:
            on_killed(attempt + 1, outcome.error)
    return outcome


# --- what came back, checked -----------------------------------------------------------------------
def checked_values(value, name: str) -> tuple[dict, dict]:
    """`reference_job`'s {"values", "completed"}, checked: positive finite metrics, whole
    request counts."""
    try:
        values, completed = value["values"], value.get("completed") or {}
        ok = (all(type(v) in (int, float) and 0 < v < float("inf") for v in values.values())
              and all(type(c) is int and c >= 0 for c in completed.values()))
    except (TypeError, KeyError, AttributeError):
        ok = False
    if not ok:
        raise ReferenceFailure(f"the reference baseline {name} sent an unusable result")
    return values, completed


def checked_metrics(problem: Problem, instance: Instance, metrics) -> dict:
    """One instance's reference metrics, as plain finite numbers (the channel carries JSON)."""
    value = metrics.get(problem.metric) if isinstance(metrics, dict) else None
    if type(value) not in (int, float) or not value > 0 or value == float("inf"):
        raise RuntimeError(f"the reference baseline {problem.reference!r} gave no usable "
                           f"{problem.metric} on {instance.name}")
    return metrics


def run_reference(pool, problem: Problem, splits: tuple[str, ...], *,
                  on_killed: Callable[[int, str | None], None] | None = None
                  ) -> tuple[dict, dict]:
    """(values, completed) of `reference_job` on `pool`, checked; ReferenceFailure if it fails."""
    outcome = run_job(pool, reference_job, problem.key, tuple(splits), on_killed=on_killed)
    if outcome.status != "ok":
        raise ReferenceFailure(f"the reference baseline {problem.reference} failed "
                               f"({outcome.status}): {outcome.error}")
    return checked_values(outcome.value, problem.reference)


# --- the parent's trusted copies -------------------------------------------------------------------
_known: collections.OrderedDict = collections.OrderedDict()    # (problem key, instance) -> metrics


def known(problem: Problem, instance: Instance) -> dict | None:
    """The reference's metrics on `instance` if this process has them (from a job, or the
    baseline cache), else None."""
    key = (problem.key, instance)
    metrics = _known.get(key)
    if metrics is not None:
        _known.move_to_end(key)
    return metrics


def remember(problem: Problem, instance: Instance, metrics) -> dict:
    """Keep the reference's metrics on `instance` (checked first, see `checked_metrics`)."""
    _known[(problem.key, instance)] = checked_metrics(problem, instance, metrics)
    while len(_known) > CACHE_SIZE:
        _known.popitem(last=False)
    return metrics


def ensure_known(pool, problem: Problem, instances: list[Instance],
                 tick: Callable[[], None] = lambda: None) -> None:
    """Simulate the reference on each of `instances` this process does not know yet, one
    `instance_job` each on `pool`, and remember the results; `tick()` after each. A reference
    that raises ValueError (e.g. a workload that cannot run on the chosen cluster) is an input
    error: ValueError; any other failure: RuntimeError."""
    for inst, future in [(i, pool.submit(instance_job, problem, i)) for i in missing(problem,
                                                                                      instances)]:
        outcome = future.result()
        if outcome.status in ("crashed", "timeout"):     # killed from outside: once more
            outcome = run_job(pool, instance_job, problem, inst, attempts=1)
        tick()
        if outcome.status != "ok":    # never let a candidate's job compute its own reference
            raise RuntimeError(f"the reference baseline {problem.reference!r} could not be "
                               f"simulated on {inst.name} ({outcome.status}): {outcome.error}")
        kind, *rest = outcome.value
        if kind == "ok":
            remember(problem, inst, rest[0])
            continue
        is_value_error, text, message = rest
        if is_value_error:
            raise ValueError(message)
        raise RuntimeError(f"the reference baseline {problem.reference!r} failed on "
                           f"{inst.name}: {text}")


def missing(problem: Problem, instances: list[Instance]) -> list[Instance]:
    """`instances` whose reference this process does not know, each once, in order."""
    out = []
    for inst in instances:
        if known(problem, inst) is None and inst not in out:
            out.append(inst)
    return out


def for_run(pool, problem: Problem, splits: tuple[str, ...], store, key: str, *,
            on_killed: Callable[[int, str | None], None] | None = None) -> tuple[dict, dict]:
    """A search's reference (values, completed) on `splits`: the copy saved in its run state
    (`store`'s meta `key`) when it covers the same splits, else `run_reference`, then saved."""
    saved = store.get_meta(key)
    if saved and saved.get("splits") == list(splits):
        return saved["values"], saved.get("completed") or {}
    values, completed = run_reference(pool, problem, splits, on_killed=on_killed)
    store.set_meta(key, {"splits": list(splits), "values": values, "completed": completed})
    return values, completed
