"""One candidate on instances, in this process: source + knobs + problem + instances -> EvalResult.

The candidate is compiled by `sandbox` and the compiled policy is handed to `sim`; `glia-evo
simulate --policy FILE.py` goes through this same function, so users see what the search sees.
Each instance gets a freshly compiled policy with its own seeded `rng`, so results do not depend on
the order instances run in.

Entry points by problem: routing -> `route`; scheduling -> `schedule`, with routing fixed to the
shipped `llq`; autoscaling -> `scale`, with routing fixed to `llq` (`Problem.fixed`). Fixed
policies are shipped baselines, imported directly; only the candidate runs in the sandbox.
A problem with its own `evaluate` (not an LLM-serving policy) is handed the candidate's
sandboxed functions instead of the simulator (`run_own_evaluate`).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

from sandbox import PolicyCompileError, compile_policy, policy_traceback
from sim import PolicyError, PolicyInvalid, simulate
from sim.policies import load_trusted

from ..problems import Instance, Problem
from .result import EvalResult, geometric_mean


class PastDeadline(Exception):
    """Raised at a policy call once an evaluation has run past its deadline: a policy that
    slows the simulation down (e.g. holding every request back) is stopped at its next call."""


def _with_deadline(entrypoints: dict, deadline: float) -> dict:
    def guarded(fn):
        def call(*args, **kwargs):
            if time.perf_counter() > deadline:
                raise PastDeadline()
            return fn(*args, **kwargs)
        return call
    return {name: guarded(fn) for name, fn in entrypoints.items()}


class KnobError(ValueError):
    """Knob values that do not match the program's KNOBS."""


def resolve_knobs(spec: dict, overrides: dict | None) -> dict:
    values = {name: v[0] for name, v in spec.items()}
    for name, value in (overrides or {}).items():
        if name not in spec:
            raise KnobError(f"unknown knob {name!r} (the program declares: "
                            f"{', '.join(spec) or 'none'})")
        _, low, high = spec[name]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
            raise KnobError(f"knob {name!r} = {value!r} is outside its range [{low}, {high}]")
        values[name] = value
    return values


def policy_seed(seed: int, instance: Instance) -> int:
    return seed * 1_000_003 + instance.seed


def run_instance(source: str, problem: Problem, instance: Instance, knobs: dict | None,
                 seed: int, fast: bool = True, deadline: float | None = None):
    """Compile and simulate one instance; returns the SimResult (exceptions propagate).

    The problem's derived metrics (e.g. autoscaling's penalised cost) are added to the metrics.
    `deadline` (a `time.perf_counter()` value): the policy's next call after it raises
    PastDeadline (wrapped in the simulator's PolicyError).
    """
    policy = compile_policy(source, problem.entrypoints, seed=policy_seed(seed, instance))
    values = resolve_knobs(policy.knob_spec, knobs)
    entrypoints = policy.entrypoints if deadline is None else \
        _with_deadline(policy.entrypoints, deadline)
    if not problem.simulated:
        return run_own_evaluate(problem, instance, entrypoints, values)
    return simulate_policies(problem, instance, entrypoints, values, fast)


class ProblemFailure(Exception):
    """A problem's own evaluate() failed, or returned metrics glia-evo cannot use."""


@dataclass
class Outcome:
    """What a problem's own evaluate() gave for one instance (the shape of sim's SimResult)."""
    metrics: dict
    diagnostics: dict = field(default_factory=dict)


def _as_policy_errors(entrypoints: dict) -> dict:
    """The candidate's functions, with anything they raise wrapped in PolicyError (as the
    simulator does), so it is blamed on the candidate and not on the problem's evaluate()."""
    def wrapped(name, fn):
        def call(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except PolicyInvalid:
                raise
            except Exception as exc:
                raise PolicyError(name, exc) from None
        return call
    return {name: wrapped(name, fn) for name, fn in entrypoints.items()}


def run_own_evaluate(problem: Problem, instance: Instance, entrypoints: dict,
                     knobs: dict) -> Outcome:
    """Run a problem's own evaluate(policy, instance, knobs) and check what it returns: a dict of
    finite numbers holding the problem's metric (or (metrics, diagnostics), diagnostics JSON)."""
    try:
        answer = problem.evaluate(_as_policy_errors(entrypoints), instance, dict(knobs))
    except (PolicyError, PolicyInvalid):
        raise
    except Exception as exc:
        raise ProblemFailure(f"the problem's evaluate() failed: {type(exc).__name__}: "
                             f"{exc}") from None
    metrics, diagnostics = answer if isinstance(answer, tuple) and len(answer) == 2 \
        else (answer, {})
    if not isinstance(metrics, dict):
        raise ProblemFailure(f"the problem's evaluate() returned a {type(metrics).__name__}, "
                             f"not a dict of metrics")
    clean = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or isinstance(value, bool) or \
                not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ProblemFailure(f"the problem's evaluate() returned metric {key!r} = "
                                 f"{value!r}; metrics are finite numbers")
        clean[key] = float(value)
    if problem.metric not in clean:
        raise ProblemFailure(f"the problem's evaluate() returned no {problem.metric!r} "
                             f"(it returned: {', '.join(clean) or 'nothing'})")
    try:
        diagnostics = json.loads(json.dumps(diagnostics or {}, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ProblemFailure(f"the problem's evaluate() returned diagnostics that are not "
                             f"plain JSON data: {exc}") from None
    return Outcome(clean, diagnostics if isinstance(diagnostics, dict) else {})


def simulate_policies(problem: Problem, instance: Instance, entrypoints: dict, knobs: dict,
                      fast: bool = True, seed: int = 0):
    """Simulate `instance` with the candidate's entry points (and their knob values) plus the
    problem's fixed policies; returns the SimResult with the problem's derived metrics."""
    policies = {}                   # the simulator's hooks (sim.hooks): entry -> (fn, knobs)
    for entry, fixed_problem, name in problem.fixed:
        fns, fixed_knobs = load_trusted(fixed_problem, name, seed)
        policies[entry] = (fns[entry], fixed_knobs)
    for entry in problem.entrypoints:
        policies[entry] = (entrypoints[entry], knobs)
    spec = instance.cluster()
    result = simulate(instance.workload(), spec, policies=policies, fast=fast)
    if problem.derive is not None:
        result.metrics.update(problem.derive(result.metrics, spec))
    return result


def evaluate(source: str, problem: Problem, instances: list[Instance], *,
             knobs: dict | None = None, seed: int = 0, fast: bool = True,
             reference: dict | None = None, deadline_s: float | None = None) -> EvalResult:
    """Evaluate a candidate on instances; never raises for anything the candidate does.

    `reference` (instance name -> the reference's metric) skips simulating the reference
    baseline again, e.g. in a worker process that does not share this process's cache.
    `deadline_s`: wall-clock seconds for all the instances, after which the result is `timeout`
    (checked at the policy's calls; the sandbox's hard limit stays in force besides).
    """
    started = time.perf_counter()
    deadline = started + deadline_s if deadline_s else None
    result = EvalResult(status="ok")
    ratios = []
    try:
        for instance in instances:
            sim = run_instance(source, problem, instance, knobs, seed, fast, deadline)
            ref = (reference or {}).get(instance.name)
            if ref is None:
                from .reference import reference_metrics
                ref = reference_metrics(problem, instance, fast)[problem.metric]
            value = sim.metrics[problem.metric]
            result.scenarios[instance.name] = sim.metrics
            result.diagnostics[instance.name] = sim.diagnostics
            result.reference[instance.name] = ref
            ratios.append(ref / value if value > 0 else 0.0)
    except PolicyCompileError as exc:
        result.status, result.error, result.line = "error", str(exc), exc.line
    except ProblemFailure as exc:
        result.status, result.error = "error", f"{instance.name}: {exc}"
    except KnobError as exc:
        result.status, result.error = "invalid", str(exc)
    except PolicyInvalid as exc:
        result.status, result.error = "invalid", f"{instance.name}: {exc}"
    except PolicyError as exc:
        if isinstance(exc.original, PastDeadline):
            result.status = "timeout"
            result.error = (f"{instance.name}: still simulating after {deadline_s:g} s, the "
                            f"limit for this stage: the policy makes the simulation very slow "
                            f"(e.g. it holds requests back while a queue builds up)")
            result.duration_s = time.perf_counter() - started
            return result
        message, line = policy_traceback(exc.original)
        result.status, result.error, result.line = "error", f"{instance.name}: {message}", line
    if result.status == "ok":
        result.fitness = geometric_mean(ratios)
    result.duration_s = time.perf_counter() - started
    return result
