"""What a job process sends back, read as hostile input: checked field by field, never believed.

A job runs a candidate; if the candidate escaped the language layer it controls everything the
job returns (the sandbox's channel already guarantees it is plain, bounded JSON). So the engine
takes nothing on trust that it can check:

- the shape: the fields of an `EvalResult`, of the right types, a known status, finite numbers,
  bounded counts and lengths; every string cleaned (`glia_evo.hygiene.clean`);
- the instances: an ok result must cover exactly the instances it was asked for (a job that
  drops its worst instance must not score on the others);
- the metrics: the invariants the simulator guarantees (`metric_violation`);
- the fitness: recomputed here from the candidate's metrics and the reference metrics the
  engine obtained from its own trusted job; the job's `fitness` and `reference` are ignored.

A result that fails any check becomes `crashed` with a one-line reason (`outcome_to_result`, which
also turns what happened to the job's process, a timeout, the memory limit, a signal, into the
result's status).
"""
from __future__ import annotations

import math
import re
from collections.abc import Collection

from sandbox import JobOutcome, WorkerPool

from ..hygiene import clean, clean_tree
from ..problems import Instance
from .result import STATUSES, EvalResult, geometric_mean

MAX_INSTANCES = 2000
MAX_METRICS = 200
MAX_NAME = 200
MAX_DIAGNOSTIC_ITEMS = 200_000
_TOLERANCE = 1e-9
_ORDERED = (("p50_e2e_s", "p90_e2e_s", "p99_e2e_s"), ("p50_ttft_s", "p90_ttft_s", "p99_ttft_s"),
            ("mean_ttft_s", "mean_e2e_s"), ("mean_wait_s", "max_wait_s"))
_FRACTIONS = ("slo_attainment",)


class WireError(ValueError):
    """A job's result that is malformed or breaks an invariant."""


def _number(value, what: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise WireError(f"{what} is not a finite number")
    return value


def _name(value, what: str) -> str:
    if type(value) is not str or not value or len(value) > MAX_NAME:
        raise WireError(f"{what} is not a name of at most {MAX_NAME} characters")
    return value


def _count(tree, budget: list) -> None:
    """Refuse diagnostics with more than MAX_DIAGNOSTIC_ITEMS values in all (iteratively)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        budget[0] -= 1
        if budget[0] < 0:
            raise WireError(f"the diagnostics hold more than {MAX_DIAGNOSTIC_ITEMS} values")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def metric_violation(metrics: dict, completed: int | None = None) -> str | None:
    """Which simulator invariant `metrics` break, or None.

    Every metric is a finite number >= 0, fractions lie in [0, 1], percentiles are ordered (and
    a mean TTFT never exceeds the mean end-to-end latency), and every request of the trace
    completes (`completed`: the trace's length, from the reference's run of the same instance).
    Rules apply to the metrics present, so a problem with other metrics is checked on the rest."""
    for key, value in metrics.items():
        if value < 0:
            return f"metric {key} is negative ({value:g})"
    for key in _FRACTIONS:
        if key in metrics and metrics[key] > 1 + _TOLERANCE:
            return f"metric {key} is above 1 ({metrics[key]:g})"
    for chain in _ORDERED:
        present = [metrics[k] for k in chain if k in metrics]
        for low, high in zip(present, present[1:]):
            if low > high * (1 + _TOLERANCE) + _TOLERANCE:
                return f"metrics {' <= '.join(chain)} are out of order"
    if completed is not None and "completed" in metrics and metrics["completed"] != completed:
        return (f"{metrics['completed']:g} requests completed, but the trace has {completed}")
    return None


def result_from_wire(value, *, metric: str | None = None, reference: dict | None = None,
                     completed: dict | None = None,
                     expected: dict[str, Collection[str]] | None = None) -> EvalResult:
    """The EvalResult a job sent (`EvalResult.to_dict()` on the other side), checked.

    metric, reference: the problem's metric and the trusted reference value per instance; when
        given, the fitness of an ok / rejected result is recomputed from them.
    completed: requests per instance (the trace lengths), for `metric_violation`.
    expected: status -> the instances a result of that status must cover (e.g. "ok": the
        split, "rejected": the cascade's first stage); a status not in it: any instances the
        reference covers.
    Raises WireError (the caller makes the result `crashed`)."""
    if type(value) is not dict:
        raise WireError(f"the result is a {type(value).__name__}, not an object")
    status = value.get("status")
    if status not in STATUSES:
        raise WireError(f"unknown status {clean(status, 40)!r}")
    scenarios = value.get("scenarios", {})
    if type(scenarios) is not dict or len(scenarios) > MAX_INSTANCES:
        raise WireError(f"scenarios must be an object of at most {MAX_INSTANCES} instances")
    checked = {}
    for name, metrics in scenarios.items():
        _name(name, "an instance name")
        if type(metrics) is not dict or len(metrics) > MAX_METRICS:
            raise WireError(f"the metrics of {clean(name, 80)} are not an object of at most "
                            f"{MAX_METRICS} numbers")
        checked[name] = {_name(k, "a metric name"): _number(v, f"metric {clean(k, 80)}")
                         for k, v in metrics.items()}
    diagnostics = value.get("diagnostics", {})
    if type(diagnostics) is not dict:
        raise WireError("diagnostics must be an object")
    _count(diagnostics, [MAX_DIAGNOSTIC_ITEMS])
    error = value.get("error")
    if error is not None and type(error) is not str:
        raise WireError("error must be a string")
    line = value.get("line")
    if line is not None and (type(line) is not int or not 0 < line < 10**7):
        raise WireError("line must be a positive integer")
    duration = _number(value.get("duration_s", 0.0), "duration_s")
    fitness = _number(value.get("fitness", 0.0), "fitness")

    result = EvalResult(status=status, scenarios=checked, diagnostics=clean_tree(diagnostics),
                        error=clean(error) if error is not None else None, line=line,
                        duration_s=max(0.0, duration), fitness=fitness)
    for name, metrics in checked.items():
        broken = metric_violation(metrics, (completed or {}).get(name))
        if broken:
            raise WireError(f"{name}: {broken}")
    if reference is None or metric is None:
        return result
    result.reference = {n: reference[n] for n in checked if n in reference}
    if status not in ("ok", "rejected"):
        result.fitness = 0.0
        return result
    names = set(checked)
    if expected and status in expected and names != set(expected[status]):
        raise WireError(f"an {status} result must cover the instances it was given, "
                        f"it covers {len(names)}")
    missing = names - set(reference)
    if missing or not names:
        raise WireError("the result covers instances without a reference"
                        if missing else "an ok result without metrics")
    ratios = []
    for name in checked:          # the job's instance order, as `evaluate` sums them
        if metric not in checked[name]:
            raise WireError(f"{name}: the metric {metric} is missing")
        value = checked[name][metric]
        ratios.append(reference[name] / value if value > 0 else 0.0)
    result.fitness = geometric_mean(ratios)
    return result


# --- a job's outcome -> EvalResult -----------------------------------------------------------------
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
    `result_from_wire` (with `metric` and the trusted `reference` values the
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
