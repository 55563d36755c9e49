"""What an evaluation ends as: `EvalResult` and its `STATUSES` (the one list of them), and how
per-instance results combine into a fitness (the geometric mean of reference / candidate)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from population import STATUSES as _CANDIDATE_STATUSES

# what an evaluation can end as (a candidate is also "pending" before it has one); "rejected":
# the cascade's first stage fell below the bar (`glia_evo.evaluation.jobs`)
STATUSES = tuple(s for s in _CANDIDATE_STATUSES if s != "pending")


@dataclass
class EvalResult:
    status: str                       # one of STATUSES
    fitness: float = 0.0
    scenarios: dict = field(default_factory=dict)     # instance name -> metrics
    diagnostics: dict = field(default_factory=dict)   # instance name -> diagnostics
    reference: dict = field(default_factory=dict)     # instance name -> reference metric value
    error: str | None = None          # one line, about the candidate's own code
    line: int | None = None
    duration_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def geometric_mean(values: list[float]) -> float:
    if not values or min(values) <= 0:
        return 0.0
    return math.exp(sum(math.log(v) for v in values) / len(values))


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


def compact_diagnostics(diag: dict | None) -> dict:
    """What is worth storing per candidate: the summary numbers and slowest requests."""
    out = {}
    for name, d in (diag or {}).items():
        if isinstance(d, dict) and "router_calls" in d:
            out[name] = {k: d[k] for k in ("load_imbalance_cv_mean", "max_queue_len",
                                           "slowest_requests", "starvation", "scale_calls")
                         if k in d}
            if isinstance(d.get("scale_events"), list):      # autoscaling: the first decisions
                out[name]["scale_events"] = d["scale_events"][:20]
        else:
            out[name] = d
    return out
