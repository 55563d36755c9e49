"""The analytic fast path gives exactly what the step-by-step reference gives."""
from __future__ import annotations

import pytest

from sim import ClusterSpec, ReplicaSpec, RequestSpec, simulate
from sim import workload as wl

POLICIES = ["llq", "hra", "expert", "least_kv", "random", "power_of_two"]


def _glia_full():
    # ~320 requests of the Glia trace on a single A10: queues build up, some evictions
    return wl.window(wl.glia_workload(0), 300.0, 340.0), ClusterSpec.uniform(1)


def _glia_two():
    return wl.window(wl.glia_workload(1), 200.0, 230.0), ClusterSpec.uniform(2)


def _tiny_kv(tiny_profile):
    name = tiny_profile(160)  # 2560 tokens per replica
    reqs = [r for r in wl.window(wl.glia_workload(0), 0.0, 40.0)
            if r.prompt_tokens <= 1200 and r.prompt_tokens + r.output_tokens <= 2000][:150]
    return reqs, ClusterSpec.uniform(2, name)


def _heterogeneous():
    spec = ClusterSpec(replicas=(ReplicaSpec("llama3-8b/a10"), ReplicaSpec("llama3-8b/a100")))
    return wl.window(wl.glia_workload(0), 500.0, 540.0), spec


def _azure_conv():
    return wl.window(wl.packaged_trace("azure_llm_2023/conv.csv"), 600.0, 660.0), \
        ClusterSpec.uniform(1)


def _small_chunks():
    # chunked prefill: long prompts cut into 256-token chunks alongside decodes
    return (wl.window(wl.packaged_trace("azure_llm_2023/code.csv"), 900.0, 960.0),
            ClusterSpec.uniform(2, chunk_size=256))


SCENARIOS = {
    "glia_full_load": _glia_full,
    "glia_two_replicas": _glia_two,
    "tiny_kv": _tiny_kv,
    "a10_plus_a100": _heterogeneous,
    "azure_conv": _azure_conv,
    "chunked_prefill": _small_chunks,
}


def build(name, tiny_profile):
    make = SCENARIOS[name]
    return make(tiny_profile) if name == "tiny_kv" else make()


def run_both(workload, spec, baseline, policy):
    out = []
    for fast in (True, False):
        route, knobs = baseline(policy, 7)
        out.append(simulate(workload, spec, route, knobs, fast=fast))
    return out


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_fast_equals_reference(scenario, policy, tiny_profile, baseline):
    workload, spec = build(scenario, tiny_profile)
    assert 100 <= len(workload) <= 500
    fast, ref = run_both(workload, spec, baseline, policy)
    assert fast.metrics == ref.metrics
    assert fast.requests == ref.requests
    assert fast.diagnostics["per_replica"] == ref.diagnostics["per_replica"]
    assert fast.diagnostics["router_calls"] == ref.diagnostics["router_calls"]
    assert fast.metrics["completed"] == len(workload)


def test_scenarios_exercise_what_they_claim(tiny_profile, baseline):
    """Guard against the comparison above becoming vacuous."""
    route, knobs = baseline("llq")
    tiny = simulate(*_tiny_kv(tiny_profile), route, knobs)
    assert tiny.metrics["restarts"] > 50
    full = simulate(*_glia_full(), route, knobs)
    assert full.metrics["mean_e2e_s"] > 5.0 and full.metrics["restarts"] > 0
    het = simulate(*_heterogeneous(), route, knobs)
    assert {r["replica"] for r in het.requests} == {0, 1}
    assert [p["gpu"] for p in het.diagnostics["per_replica"]] == ["a10", "a100"]


@pytest.mark.parametrize("policy", ["least_kv", "hra", "expert"])
def test_views_agree_mid_run(policy, tiny_profile, baseline):
    """What the router sees (free blocks, processed tokens) is the same in both modes."""
    workload, spec = _tiny_kv(tiny_profile)
    seen = {}
    for fast in (True, False):
        inner, knobs = baseline(policy)
        log = seen[fast] = []

        def route(queue, replicas, now, knobs, inner=inner, log=log):
            log.append((now, tuple((r.free_blocks, r.num_pending, r.num_active,
                                    tuple((a.id, a.processed_tokens, a.restarts) for a in r.active),
                                    tuple((p.id, p.processed_tokens) for p in r.pending))
                                   for r in replicas)))
            return inner(queue, replicas, now, knobs)
        simulate(workload, spec, route, knobs, fast=fast)
    assert len(seen[True]) > 100
    assert seen[True] == seen[False]


def _boundary_times(prompt: int, outputs: range) -> list[float]:
    """Exact end times of iterations of a lone request: the finish time of a copy with k outputs."""
    out = []
    for k in outputs:
        res = simulate([RequestSpec(0.0, prompt, k)], ClusterSpec.uniform(1),
                       lambda q, r, now, kn: [(x.id, 0) for x in q], fast=False)
        out.append(res.requests[0]["finish_s"])
    return out


@pytest.mark.parametrize("k", [3, 5, 17, 30])
def test_arrival_exactly_at_an_iteration_boundary(k, baseline):
    """A request arriving at the very picosecond a decode iteration ends is treated the same way
    by both modes (the fast path is in a multi-step run at that moment)."""
    (t,) = _boundary_times(100, range(k, k + 1))
    workload = [RequestSpec(0.0, 100, 50), RequestSpec(t, 20, 10)]
    route, knobs = baseline("llq")
    fast = simulate(workload, ClusterSpec.uniform(1), route, knobs, fast=True)
    route, knobs = baseline("llq")
    ref = simulate(workload, ClusterSpec.uniform(1), route, knobs, fast=False)
    assert fast.requests[1]["arrival_s"] == t   # the arrival really lands on the boundary
    assert fast.requests == ref.requests
    assert fast.metrics == ref.metrics


def test_arrival_just_off_a_boundary(baseline):
    (t,) = _boundary_times(100, range(5, 6))
    for dt in (-1e-12, 1e-12, 1e-6, -1e-6):
        workload = [RequestSpec(0.0, 100, 50), RequestSpec(t + dt, 20, 10)]
        res = []
        for fast in (True, False):
            route, knobs = baseline("llq")
            res.append(simulate(workload, ClusterSpec.uniform(1), route, knobs, fast=fast))
        assert res[0].requests == res[1].requests, dt


@pytest.mark.parametrize("fast", [True, False])
def test_boundary_arrival_does_not_depend_on_unrelated_events(fast):
    """Whether a request arriving exactly at an iteration boundary joins the next iteration must
    not depend on when some unrelated request (here: on another replica) arrived before it."""
    (t,) = _boundary_times(100, range(5, 6))

    def route(queue, replicas, now, knobs):
        return [(q.id, 1 if q.id == 1 else 0) for q in queue]

    admitted = []
    for other in (0.0001, t - 1e-3):   # scheduled before / during the iteration that ends at t
        workload = [RequestSpec(0.0, 100, 50), RequestSpec(other, 1, 1), RequestSpec(t, 20, 10)]
        res = simulate(workload, ClusterSpec.uniform(2), route, fast=fast)
        assert res.requests[2]["arrival_s"] == t and res.requests[2]["replica"] == 0
        admitted.append(res.requests[2]["admitted_s"])
    assert admitted[0] == admitted[1]
