"""The rule-based Analyst: a short reasoning summary of why a candidate did what it did.

It reads the EvalResult (status, per-scenario metrics, diagnostics) and compares it with the
parent, the way a person would: what happened, the evidence, the likely cause, what to try next.
The summary is stored with the candidate and shown to whoever mutates it next. The LLM Analyst
replaces it when an LLM is configured; this one remains the fallback.
"""
from __future__ import annotations

MAX_WORDS = 150


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def summarize(result, parent_fitness: float | None, parent_metrics: dict | None,
              rationale: str = "", metric: str = "mean_e2e_s") -> str:
    """A summary of at most ~150 words from an EvalResult-like object."""
    status = result.status
    if status == "rejected":
        stage = result.diagnostics.get("cascade", {}) if isinstance(result.diagnostics, dict) else {}
        text = (f"Rejected by the quick first stage: fitness {_fmt(stage.get('stage1_fitness', 0))} "
                f"was below the bar of {_fmt(stage.get('bar', 0))}. The change ({rationale}) made "
                f"the short burst scenario worse; try a smaller step in the same direction or the "
                f"opposite one.")
        return _clip(text)
    if status != "ok":
        cause = {
            "error": "the program raised an exception or does not compile",
            "invalid": "the policy answered something the simulator cannot carry out",
            "timeout": "the evaluation ran out of wall-clock time (an endless or very slow loop)",
            "crashed": "the evaluation process died (memory limit or a hard crash)",
        }.get(status, status)
        text = (f"Failed ({status}): {result.error or 'no detail'}. Likely cause: {cause}. "
                f"Change that was tried: {rationale or 'unknown'}. Fix the reported line or undo "
                f"the change; keep every request dispatched to a valid replica id.")
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
        for name, m in result.scenarios.items():
            old = parent_metrics.get(name, {}).get(metric)
            if old:
                change = m[metric] / old - 1
                (worse if change > 0.02 else better if change < -0.02 else []).append(
                    f"{name} {change:+.0%}")
        label = "Latency" if metric.endswith("e2e_s") else metric
        if better:
            parts.append(f"{label} better on " + ", ".join(better) + ".")
        if worse:
            parts.append("Worse on " + ", ".join(worse) + ".")
    diag = result.diagnostics or {}
    restarts = sum(m.get("restarts", 0) for m in result.scenarios.values())
    completed = sum(m.get("completed", 0) for m in result.scenarios.values()) or 1
    if restarts / completed > 0.1:
        parts.append(f"Evidence: {restarts} evictions+restarts for {completed} requests — the KV "
                     f"cache is overcommitted; admit or dispatch less work while memory is "
                     f"short, or reserve headroom for growing outputs.")
    imbalance = [d.get("load_imbalance_cv_mean", 0) for d in diag.values() if isinstance(d, dict)]
    if imbalance and max(imbalance) > 0.5:
        parts.append(f"Load imbalance across replicas is high (CV up to {_fmt(max(imbalance))}); "
                     f"balance by pending+active or by free blocks.")
    causes = [r["why"] for d in diag.values() if isinstance(d, dict)
              for r in d.get("slowest_requests", [])[:1]]
    if causes:
        parts.append(f"Slowest requests: {causes[0]}.")
    if len(parts) == 1:
        parts.append("No single bottleneck stands out; try a structural change (ordering of the "
                     "queue, admission control, or a different load measure).")
    return _clip(" ".join(parts))


def _clip(text: str) -> str:
    words = text.split()
    return text if len(words) <= MAX_WORDS else " ".join(words[:MAX_WORDS]) + " …"
