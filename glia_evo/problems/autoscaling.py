"""The autoscaling problem: how many replicas to run as the load changes (DESIGN §3).

Routing is fixed to `llq`. Fitness trades GPU cost against the SLO: per scenario, the
penalised cost is GPU-seconds x exp(PENALTY x shortfall), where shortfall = max(0, target - SLO
attainment); fitness = the reference's penalised cost / yours.
"""
from __future__ import annotations

import math
from functools import partial

from sim import ClusterSpec, ReplicaSpec
from sim.cluster import AutoscaleSpec
from sim.workload import diurnal_workload, step_workload

from ..analyst import changes
from .base import Problem, Scenario
from .routing import A10, A100, _azure

PENALTY = 30.0     # each point of SLO attainment below target multiplies the cost by e^0.3


def penalized(metrics: dict, spec: ClusterSpec) -> dict:
    shortfall = max(0.0, spec.slo_target - metrics["slo_attainment"])
    return {"slo_shortfall": shortfall,
            "penalized_gpu_seconds": metrics["gpu_seconds"] * math.exp(PENALTY * shortfall)}


def _cluster(replica: ReplicaSpec, initial: int, max_replicas: int, cold_start_s: float
             ) -> ClusterSpec:
    return ClusterSpec(replicas=(replica,) * initial, slo_ttft_s=2.0, slo_tpot_s=0.2,
                       slo_target=0.95,
                       autoscale=AutoscaleSpec(min_replicas=1, max_replicas=max_replicas,
                                               interval_s=10.0, cold_start_s=cold_start_s,
                                               window_s=60.0))


STEPS = ((0.0, 3.0), (300.0, 6.0), (600.0, 4.0), (840.0, 9.0), (1020.0, 3.0))
STEPS_SHORT = ((0.0, 3.0), (120.0, 6.0), (240.0, 3.0))

SCENARIOS = {
    "azure_conv": Scenario(
        "azure_conv", "Azure conversation trace, 20-minute slices (seed = slice), its own rate "
        "(3-8 req/s, rising and falling over the hour); A10 replicas, 3 at the start, 1-6, "
        "cold start 60 s.",
        _cluster(A10, 3, 6, 60.0), partial(_azure, "conv", 1.0), seeds=(0, 1, 2)),
    "azure_code": Scenario(
        "azure_code", "Azure code-completion trace, 20-minute slices (seed = slice): bursts of "
        "up to 50 long-prompt requests a second between quiet minutes; A100 replicas, 2 at the "
        "start, 1-6, cold start 60 s.",
        _cluster(A100, 2, 6, 60.0), partial(_azure, "code", 1.0), seeds=(0, 1, 2)),
    "diurnal": Scenario(
        "diurnal", "A day compressed into 30 minutes: Poisson arrivals from 1 req/s (04:00) to "
        "14 req/s (16:00), lengths resampled from the Azure conversation trace; A10 replicas, "
        "3 at the start, 1-8, cold start 60 s.",
        _cluster(A10, 3, 8, 60.0), partial(diurnal_workload, day_s=1800.0, low=1.0, high=14.0),
        seeds=(0, 1, 2, 3, 4)),
    "step": Scenario(
        "step", "Sudden steps: 3 req/s, then 6 at 300 s, 4 at 600 s, 9 at 840 s, 3 at 1020 s "
        "(20 minutes), Azure conversation lengths; A10 replicas, 2 at the start, 1-6, cold "
        "start 30 s.",
        _cluster(A10, 2, 6, 30.0), partial(step_workload, steps=STEPS, duration_s=1200.0),
        seeds=(0, 1, 2, 3, 4)),
    "step_short": Scenario(
        "step_short", "A cheap first stage: 3 req/s, 6 at 120 s, 3 at 240 s (6 minutes); A10 "
        "replicas, 3 at the start, 1-5, cold start 30 s.",
        _cluster(A10, 3, 5, 30.0), partial(step_workload, steps=STEPS_SHORT, duration_s=360.0),
        seeds=(101, 102)),
}

DESCRIPTION = f"""\
Decide how many GPU replicas an LLM-serving cluster runs as its load changes. Routing is fixed
(`llq`: each request goes at once to the ready replica with the fewest pending + active requests;
requests never move between replicas). `scale(cluster, now, knobs)` is called at t = 0 and every
`cluster.interval_s` seconds and returns the number of replicas wanted (starting + ready), an int
in [cluster.min_replicas, cluster.max_replicas]; anything else (a float, None, a number out of
range) is invalid. Replicas go starting -> ready -> draining -> stopped. A new replica serves only
after cold_start_s (the fleet asked for at t = 0 is provisioned warm, before traffic). To shrink,
the simulator first cancels replicas still starting (newest first), then drains the ready ones
holding the fewest requests: a draining replica takes no new requests, finishes everything it
holds, then stops; no request is lost. A replica is billed from the moment it starts until it
stops (cold start and draining included): that is `gpu_seconds`. SLO: a request meets it when
its time to first token <= slo_ttft_s and its time per output token <= slo_tpot_s; the scenario
wants slo_target of all requests to meet it. Fitness per scenario: the reference's (`threshold`)
penalised cost / yours, where penalised cost = gpu_seconds x exp({PENALTY:g} x shortfall) and
shortfall = max(0, slo_target - SLO attainment) (one point of attainment below target costs
x{math.exp(PENALTY / 100):.2f}); geometric mean over scenarios (higher is better). Module-level
state persists between calls within one simulation.
Cluster view: num_replicas (starting + ready), num_ready, num_starting, num_draining,
min_replicas, max_replicas, interval_s, cold_start_s, window_s, queue_len, num_pending,
num_active, num_waiting (queued + pending), oldest_wait_s (longest current wait of a request not
yet admitted), kv_use and max_kv_use (over ready replicas), arrival_rate (req/s over the last
window_s), arrivals and completed (so far), recent_completed, p50/p90/p99_ttft_s,
p50/p90/p99_e2e_s, mean_tpot_s and recent_slo_attainment (over requests completed in the last
window_s), slo_ttft_s, slo_tpot_s, slo_target, gpu_seconds (cost so far), replicas (replica
views of every replica not stopped, with `state`).
"""

SHORT_LIVED_S = 180.0     # a replica stopped this soon after it started paid its cold start for little


def _target(instance: str) -> float:
    """The SLO target of an instance (`scenario#seed`) of this problem."""
    scenario = SCENARIOS.get(instance.split("#")[0])
    return scenario.cluster.slo_target if scenario is not None else 0.95


def advice(scenarios: dict, diagnostics: dict, parent: dict | None) -> list[str]:
    """Autoscaling evidence: SLO shortfalls (too little, too late), headroom and cost when the
    SLO holds, replicas stopped soon after they started (flapping)."""
    out = []
    short = {n: m for n, m in scenarios.items() if m.get("slo_shortfall", 0) > 0}
    if short:
        listed = ", ".join(f"{n} {m['slo_attainment']:.3f} (target "
                           f"{_target(n):.3g})"
                           for n, m in short.items())
        out.append(f"SLO attainment below target on {listed}: capacity arrives too late or too "
                   f"little; a new replica serves only after its cold start, so grow on a rising "
                   f"arrival_rate, queue or oldest_wait_s before latency degrades.")
    elif scenarios:
        margin = min(m.get("slo_attainment", 1.0) - _target(n) for n, m in scenarios.items())
        more = [f"{n} {c:+.0%}" for n, c in changes(scenarios, parent, "gpu_seconds").items()
                if c > 0.02]
        text = f"The SLO target holds on every scenario (smallest margin {margin:+.3f})"
        if more:
            text += ("; GPU cost rose on " + ", ".join(more) + ": keep less headroom or shrink "
                     "sooner when recent_slo_attainment is well above target.")
        elif margin > 0.02:
            text += "; the lever left is cost: trim idle headroom."
        else:
            text += ("; close to the target, savings must come from timing: grow just ahead of "
                     "demand, shrink right after it.")
        out.append(text)
    flaps = sum(1 for d in diagnostics.values() for r in d.get("per_replica", [])
                if r.get("stopped_s") is not None and r.get("started_s", 0) > 0 and
                r["stopped_s"] - r["started_s"] < SHORT_LIVED_S)
    if flaps:
        out.append(f"{flaps} replicas were stopped less than {SHORT_LIVED_S:.0f} s after they "
                   f"started (cold start paid for little service): add hysteresis or a "
                   f"cool-down before shrinking.")
    return out


def _blocks():
    from ..operators.filters import AUTOSCALING_OPERATORS, AUTOSCALING_WEIGHTS
    return AUTOSCALING_OPERATORS, AUTOSCALING_WEIGHTS


AUTOSCALING = Problem(
    name="autoscaling",
    entrypoints=("scale",),
    reference="threshold",
    metric="penalized_gpu_seconds",
    scenarios=SCENARIOS,
    splits={
        "train": (("azure_conv", 0), ("azure_code", 0), ("diurnal", 0), ("step", 0)),
        "validation": (("azure_conv", 1), ("azure_code", 1), ("diurnal", 1), ("step", 1)),
        "test": (("azure_conv", 2), ("azure_code", 2), ("diurnal", 2), ("diurnal", 3),
                 ("diurnal", 4), ("step", 2), ("step", 3), ("step", 4)),
        "quick": (("step_short", 101),),
    },
    default_scenario="diurnal",
    description=DESCRIPTION,
    fixed=(("route", "routing", "llq"),),
    derive=penalized,
    valid_answer="return an int between cluster.min_replicas and cluster.max_replicas",
    advice=advice,
    default_seeds=("threshold", "target_utilisation", "fixed"),
    columns=(("penalized_gpu_seconds", "penalised cost", "{:,.0f}"),
             ("gpu_seconds", "GPU s", "{:,.0f}"), ("mean_replicas", "mean replicas", "{:.2f}"),
             ("peak_replicas", "peak", "{:.1f}"), ("cold_starts", "cold starts", "{:.1f}"),
             ("slo_attainment", "SLO", "{:.1%}"), ("p99_ttft_s", "p99 TTFT s", "{:.2f}"),
             ("mean_e2e_s", "mean e2e s", "{:.2f}")),
    metric_keys=(("penalized_gpu_seconds", "penalised GPU-s {:.4g}"),
                 ("gpu_seconds", "GPU-s {:.4g}"), ("slo_attainment", "SLO {:.1%}"),
                 ("mean_replicas", "mean replicas {:.3g}"), ("cold_starts", "cold starts {:g}")),
    blocks=_blocks,
)
