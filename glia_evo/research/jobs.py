"""The experiment jobs: they run in the sandbox pool's forked processes, like evaluations.

`simulate_job` compiles a candidate (in the sandbox, as `evaluation.run.run_instance` does)
and simulates one instance, optionally with its trace cut to a window; it sends back the metrics,
a small part of the diagnostics and the per-request records as columns of numbers (at most
MAX_RECORDS requests), all plain JSON. `workload_job` describes an instance's workload (no
candidate code runs). What a job sends is hostile input for the parent: `tools.check_run` reads it.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace

MAX_RECORDS = 20_000
COLUMNS = ("id", "arrival_s", "prompt_tokens", "output_tokens", "replica", "dispatched_s",
           "admitted_s", "first_token_s", "finish_s", "restarts")


class _Window:
    """A scenario's workload cut to the requests arriving in [start_s, end_s), re-based to 0."""

    def __init__(self, workload, start_s: float, end_s: float):
        self.workload, self.start_s, self.end_s = workload, start_s, end_s

    def __call__(self, seed):
        from sim.workload import window
        return window(self.workload(seed), self.start_s, self.end_s)


def windowed(instance, window):
    """`instance` with its trace cut to `window` ((start_s, end_s) or None)."""
    if not window:
        return instance
    start, end = window
    scenario = replace(instance.scenario, workload=_Window(instance.scenario.workload, start, end))
    return replace(instance, scenario=scenario)


def _round(x, digits=4):
    return round(float(x), digits)


def _small_diagnostics(diag: dict) -> dict:
    out = {}
    for key in ("router_calls", "load_imbalance_cv_mean", "load_imbalance_cv_max",
                "max_queue_len"):
        if isinstance(diag.get(key), (int, float)):
            out[key] = diag[key]
    per = diag.get("per_replica")
    if isinstance(per, list):
        out["per_replica"] = [{k: r.get(k) for k in ("id", "gpu", "requests", "evictions",
                                                     "iterations")} for r in per[:64]]
    starv = diag.get("starvation")
    if isinstance(starv, dict):
        out["starvation"] = starv
    tl = diag.get("timeline")
    if isinstance(tl, list):
        out["timeline"] = [{"t_s": p.get("t_s"), "queue": p.get("queue"), "load": p.get("load"),
                            "kv_use": p.get("kv_use")} for p in tl[:100]]
    return out


def simulate_job(problem, instance, source: str, knobs, seed: int, window, deadline_s) -> dict:
    """{status, error, metrics, diagnostics, replicas, columns, requests, truncated, seconds}."""
    from sandbox import PolicyCompileError, policy_traceback
    from sim import PolicyError, PolicyInvalid

    from ..evaluation.run import KnobError, PastDeadline, ProblemFailure, run_instance

    started = time.perf_counter()
    inst = windowed(instance, window)
    out = {"status": "ok", "error": None, "metrics": {}, "diagnostics": {}, "replicas": [],
           "columns": {}, "requests": 0, "truncated": False}
    deadline = started + deadline_s if deadline_s else None
    try:
        res = run_instance(source, problem, inst, knobs, seed, True, deadline)
    except PolicyCompileError as exc:
        out["status"], out["error"] = "error", str(exc)
    except ProblemFailure as exc:
        out["status"], out["error"] = "error", str(exc)
    except KnobError as exc:
        out["status"], out["error"] = "invalid", str(exc)
    except PolicyInvalid as exc:
        out["status"], out["error"] = "invalid", str(exc)
    except PolicyError as exc:
        if isinstance(exc.original, PastDeadline):
            out["status"], out["error"] = "timeout", f"still simulating after {deadline_s:g} s"
        else:
            message, _ = policy_traceback(exc.original)
            out["status"], out["error"] = "error", message
    except ValueError as exc:      # e.g. an empty window, a request too large for a replica
        out["status"], out["error"] = "input", f"{type(exc).__name__}: {exc}"
    if out["status"] != "ok":
        out["seconds"] = time.perf_counter() - started
        return out
    out["metrics"] = {k: float(v) for k, v in res.metrics.items()
                      if isinstance(v, (int, float)) and math.isfinite(v)}
    out["diagnostics"] = _small_diagnostics(res.diagnostics or {})
    records = getattr(res, "requests", None) or []
    out["requests"] = len(records) or int(out["metrics"].get("completed", 0))
    if records:
        out["truncated"] = len(records) > MAX_RECORDS
        records = records[:MAX_RECORDS]
        out["columns"] = {c: [(_round(r[c]) if isinstance(r[c], float) else r[c])
                              for r in records] for c in COLUMNS}
    spec = inst.cluster()
    if spec is not None:
        try:
            out["replicas"] = [{"id": i, "gpu": r.gpu_profile().gpu,
                                "num_blocks": int(r.gpu_profile().num_blocks)}
                               for i, r in enumerate(spec.replicas)]
        except Exception:   # noqa: BLE001 - informational only
            out["replicas"] = []
    out["seconds"] = time.perf_counter() - started
    return out


def _dist(values) -> dict:
    import numpy as np
    a = np.asarray(values, dtype=float)
    if not len(a):
        return {}
    return {"mean": _round(a.mean(), 2), "p50": _round(np.percentile(a, 50), 2),
            "p90": _round(np.percentile(a, 90), 2), "p99": _round(np.percentile(a, 99), 2),
            "max": _round(a.max(), 2)}


def workload_job(problem, instance, window) -> dict:
    """Prompt / output length distributions and arrival burstiness of an instance's workload."""
    import numpy as np

    inst = windowed(instance, window)
    if not problem.simulated:
        return {"status": "unsupported",
                "error": "this problem is not an LLM-serving simulation: no request workload"}
    try:
        reqs = sorted(inst.workload(), key=lambda r: r.arrival_s)
    except ValueError as exc:
        return {"status": "input", "error": f"{type(exc).__name__}: {exc}"}
    if not reqs:
        return {"status": "input", "error": "the workload (window) holds no requests"}
    t = np.array([r.arrival_s for r in reqs], dtype=float)
    span = max(float(t[-1] - t[0]), 1e-9)
    gaps = np.diff(t)
    cv = float(gaps.std() / gaps.mean()) if len(gaps) and gaps.mean() > 0 else 0.0
    width = max(span / 20, 1.0)
    counts, edges = np.histogram(t, bins=max(1, min(20, int(math.ceil(span / width)))))
    per_s = counts / np.maximum(np.diff(edges), 1e-9)
    spec = inst.cluster()
    return {"status": "ok", "requests": len(reqs), "duration_s": _round(span, 2),
            "rate_rps": _round(len(reqs) / span, 3),
            "prompt_tokens": _dist([r.prompt_tokens for r in reqs]),
            "output_tokens": _dist([r.output_tokens for r in reqs]),
            "interarrival_cv": _round(cv, 3),
            "peak_to_mean_rate": _round(float(per_s.max() / (len(reqs) / span)), 3),
            "rate_per_bin_rps": [_round(x, 2) for x in per_s],
            "bin_s": _round(float(edges[1] - edges[0]), 2),
            "replicas": len(spec.replicas) if spec is not None else None}
