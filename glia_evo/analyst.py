"""The rule-based Analyst: a short reasoning summary of why a candidate did what it did.

It reads the EvalResult (status, per-scenario metrics, diagnostics) and compares it with the
parent, the way a person would: what happened, the evidence, the likely cause, what to try next.
The summary is stored with the candidate and shown to whoever mutates it next. The LLM Analyst
replaces it when an LLM is configured; this one remains the fallback.
"""
from __future__ import annotations

MAX_WORDS = 150
DEFAULT_VALID = "return what the entry point's description asks for"


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def summarize(result, parent_fitness: float | None, parent_metrics: dict | None,
              rationale: str = "", problem=None) -> str:
    """A summary of at most ~150 words from an EvalResult-like object.

    `problem` (a `Problem`) supplies the metric compared with the parent, what a valid answer
    is, and its own evidence rules (`Problem.advice`); without one the generic rules apply."""
    metric = problem.metric if problem is not None else "mean_e2e_s"
    status = result.status
    if status == "rejected":
        stage = result.diagnostics.get("cascade", {}) if isinstance(result.diagnostics, dict) else {}
        text = (f"Rejected by the quick first stage: fitness {_fmt(stage.get('stage1_fitness', 0))} "
                f"was below the bar of {_fmt(stage.get('bar', 0))}. The change ({rationale}) made "
                f"the short first-stage scenario worse; try a smaller step in the same direction "
                f"or the opposite one.")
        return _clip(text)
    if status != "ok":
        cause = {
            "error": "the program raised an exception or does not compile",
            "invalid": "the policy answered something the simulator cannot carry out",
            "timeout": "the evaluation ran out of wall-clock time (an endless or very slow loop)",
            "crashed": "the evaluation process died (memory limit or a hard crash)",
        }.get(status, status)
        valid = (problem.valid_answer if problem is not None else "") or DEFAULT_VALID
        text = (f"Failed ({status}): {result.error or 'no detail'}. Likely cause: {cause}. "
                f"Change that was tried: {rationale or 'unknown'}. Fix the reported line or undo "
                f"the change; {valid}.")
        return _clip(text)

    parts = []
    if parent_fitness:
        delta = result.fitness / parent_fitness - 1
        verdict = "improved on" if delta > 0.005 else ("matched" if delta > -0.005 else "fell behind")
        parts.append(f"Fitness {_fmt(result.fitness)} {verdict} its parent ({_fmt(parent_fitness)}, "
                     f"{delta:+.1%}) after: {rationale or 'seed program'}.")
    else:
        parts.append(f"Fitness {_fmt(result.fitness)} ({rationale or 'seed program'}).")
    if parent_metrics:
        worse, better = [], []
        for name, change in changes(result.scenarios, parent_metrics, metric).items():
            (worse if change > 0.02 else better if change < -0.02 else []).append(
                f"{name} {change:+.0%}")
        label = "Latency" if metric.endswith("e2e_s") else metric
        if better:
            parts.append(f"{label} better on " + ", ".join(better) + ".")
        if worse:
            parts.append(f"{label} worse on " + ", ".join(worse) + ".")
    diag = {k: d for k, d in (result.diagnostics or {}).items() if isinstance(d, dict)}
    advice = problem.advice if problem is not None and problem.advice else generic_advice
    parts.extend(advice(result.scenarios, diag, parent_metrics))
    if len(parts) == 1:
        parts.append("No single bottleneck stands out; try a structural change (ordering of the "
                     "queue, admission control, or a different load measure).")
    return _clip(" ".join(parts))


# --- evidence rules shared by the problems' `advice` ------------------------------------------
def changes(scenarios: dict, parent: dict | None, metric: str) -> dict[str, float]:
    """Relative change of `metric` against the parent, per scenario both have (+ = higher)."""
    out = {}
    for name, m in scenarios.items():
        old = (parent or {}).get(name, {}).get(metric)
        if old and metric in m:
            out[name] = m[metric] / old - 1
    return out


def kv_pressure(scenarios: dict, remedy: str) -> list[str]:
    """Evictions + restarts above 10 % of the completed requests: KV memory is overcommitted."""
    restarts = sum(m.get("restarts", 0) for m in scenarios.values())
    completed = sum(m.get("completed", 0) for m in scenarios.values()) or 1
    if restarts / completed <= 0.1:
        return []
    return [f"Evidence: {restarts} evictions+restarts for {completed} requests — the KV cache is "
            f"overcommitted; {remedy}."]


def slowest_request(diagnostics: dict) -> list[str]:
    causes = [r["why"] for d in diagnostics.values() for r in d.get("slowest_requests", [])[:1]]
    return [f"Slowest requests: {causes[0]}."] if causes else []


def generic_advice(scenarios: dict, diagnostics: dict, parent: dict | None) -> list[str]:
    """For a problem without rules of its own: memory pressure and the slowest request."""
    return (kv_pressure(scenarios, "do less at once while memory is short") +
            slowest_request(diagnostics))


def _clip(text: str) -> str:
    words = text.split()
    return text if len(words) <= MAX_WORDS else " ".join(words[:MAX_WORDS]) + " …"
