"""The autoscaling problem: replicas start cold, drain when removed and are billed from start to
stop; no request runs on a replica that is not ready and none is lost when replicas go away;
invalid answers are refused with the documented reasons; results are deterministic and the fast
path equals the step-by-step reference."""
from __future__ import annotations

import json
import math

import pytest

from glia_evo.evaluation import evaluate
from glia_evo.problems import Instance, Scenario, get_problem
from glia_evo.problems.autoscaling import PENALTY, penalized
from sim import ClusterSpec, PolicyInvalid, ReplicaSpec, simulate
from sim import workload as wl
from sim.cluster import AutoscaleSpec
from sim.policies import baseline_names, load_trusted
from cli_helpers import run_glia as cli

PROBLEM = get_problem("autoscaling")
BASELINES = ["fixed", "threshold", "target_utilisation"]


def llq():
    return load_trusted("routing", "llq")[0]["route"]


def spec(initial=2, max_replicas=4, cold_start_s=20.0, interval_s=5.0, profile="llama3-8b/a10",
         min_replicas=1):
    return ClusterSpec(replicas=(ReplicaSpec(profile),) * initial,
                       autoscale=AutoscaleSpec(min_replicas, max_replicas, interval_s,
                                               cold_start_s, 30.0))


def conv_load(rate=5.0, duration_s=120.0, seed=1):
    """Poisson arrivals with lengths from the Azure conversation trace (memory-hungry)."""
    return wl.trace_lengths(wl.poisson_arrivals(rate, duration_s, seed), seed)


def plan(*steps):
    """A scripted autoscaler: steps = (time, replicas), ...; the last step at or before now."""
    def scale(cluster, now, knobs):
        n = steps[0][1]
        for t, k in steps:
            if now >= t:
                n = k
        return n
    return scale


def check_lifecycle(result, cold_start_s):
    """Every request ran on a replica that was ready when it was dispatched, was dispatched
    before that replica started draining, and finished before the replica stopped."""
    reps = {r["id"]: r for r in result.diagnostics["per_replica"]}
    end = max(r["finish_s"] for r in result.requests)
    for req in result.requests:
        rep = reps[req["replica"]]
        assert rep["ready_s"] is not None, (req, rep)
        assert rep["ready_s"] <= req["dispatched_s"] <= req["admitted_s"], (req, rep)
        if rep["draining_s"] is not None:
            assert req["dispatched_s"] <= rep["draining_s"], (req, rep)
        if rep["stopped_s"] is not None:
            assert req["finish_s"] <= rep["stopped_s"], (req, rep)
    for rep in reps.values():
        if rep["started_s"] > 0 and rep["ready_s"] is not None:
            assert rep["ready_s"] == pytest.approx(rep["started_s"] + cold_start_s, abs=1e-9)
        if rep["ready_s"] is None:   # cancelled while starting, or still starting at the end
            assert rep["requests"] == 0 and rep["iterations"] == 0
            stop = rep["stopped_s"] if rep["stopped_s"] is not None else end
            assert stop < rep["started_s"] + cold_start_s
    billed = sum(r["billed_s"] for r in reps.values())
    assert result.metrics["gpu_seconds"] == pytest.approx(billed, rel=1e-12)
    assert result.metrics["completed"] == len(result.requests)
    assert all(r["finish_s"] >= r["first_token_s"] >= r["admitted_s"] for r in result.requests)


# --- lifecycle -------------------------------------------------------------------------------

@pytest.mark.parametrize("fast", [True, False])
def test_cold_start_and_draining_are_honoured(fast):
    reqs = conv_load(rate=5.0, duration_s=150.0)
    scale = plan((0, 2), (20, 4), (30, 1), (50, 3), (100, 2), (125, 4), (160, 1))
    res = simulate(reqs, spec(), llq(), scale=scale, fast=fast)
    check_lifecycle(res, 20.0)
    reps = res.diagnostics["per_replica"]
    # t=30 cancelled the two replicas started at t=20 (still cold) and drained one ready one
    assert [r["ready_s"] for r in reps[2:4]] == [None, None]
    assert [r["stopped_s"] for r in reps[2:4]] == [30.0, 30.0]
    assert sum(1 for r in reps if r["draining_s"] is not None) >= 3
    assert res.metrics["cold_starts"] == 2 + 2 + 2
    # the most replicas alive at once (a draining one counts until it stops: under load it can
    # still be finishing its work when the plan starts new ones)
    alive = max(sum(1 for q in reps if q["started_s"] <= r["started_s"]
                    and (q["stopped_s"] is None or q["stopped_s"] > r["started_s"]))
                for r in reps)
    assert res.metrics["peak_replicas"] == alive >= 4


def test_no_request_lost_when_replicas_are_removed_under_load(tiny_profile):
    """A flapping autoscaler on small replicas that evict: every request completes, and requests
    still pending on a replica when it starts draining are served there."""
    reqs = [r for r in conv_load(rate=6.0, duration_s=90.0, seed=4)
            if r.prompt_tokens + r.output_tokens <= 2000]
    flap = plan(*[(t, 4 if (t // 10) % 2 else 1) for t in range(0, 400, 10)])
    res = simulate(reqs, spec(initial=1, cold_start_s=5.0, profile=tiny_profile(160)), llq(),
                   scale=flap)
    check_lifecycle(res, 5.0)
    assert res.metrics["completed"] == len(reqs)
    assert res.metrics["restarts"] > 0
    reps = {r["id"]: r for r in res.diagnostics["per_replica"]}
    held_when_drained = [q for q in res.requests
                         if reps[q["replica"]]["draining_s"] is not None
                         and q["admitted_s"] > reps[q["replica"]]["draining_s"]]
    assert held_when_drained, "no replica was drained while holding pending requests"


def test_a_router_sending_to_a_starting_replica_is_invalid():
    def to_newest(queue, replicas, now, knobs):
        newest = max(r.id for r in replicas)
        return [(q.id, newest) for q in queue]
    reqs = conv_load(rate=2.0, duration_s=60.0)
    with pytest.raises(PolicyInvalid, match="which is starting"):
        simulate(reqs, spec(), to_newest, scale=plan((0, 2), (10, 3)))


def test_fleet_asked_for_at_time_zero_is_warm_and_billed_from_zero():
    reqs = conv_load(rate=3.0, duration_s=60.0)
    fixed = load_trusted("autoscaling", "fixed")[0]["scale"]
    res = simulate(reqs, spec(initial=1, max_replicas=3), llq(), scale=fixed)
    end = max(r["finish_s"] for r in res.requests)
    assert res.metrics["cold_starts"] == 0 and res.metrics["peak_replicas"] == 3
    assert [r["ready_s"] for r in res.diagnostics["per_replica"]] == [0.0, 0.0, 0.0]
    assert res.metrics["gpu_seconds"] == pytest.approx(3 * end)
    assert res.metrics["mean_replicas"] == pytest.approx(3.0)
    assert {r["replica"] for r in res.requests} == {0, 1, 2}


def test_removal_cancels_starting_replicas_first_then_drains_the_least_loaded():
    reqs = conv_load(rate=4.0, duration_s=40.0)
    # t=0: 3 warm; t=5: +2 cold (ids 3, 4); t=10: down to 2 -> cancel 4 and 3, drain one of 0-2
    res = simulate(reqs, spec(initial=3, max_replicas=5), llq(),
                   scale=plan((0, 3), (5, 5), (10, 2)))
    reps = res.diagnostics["per_replica"]
    assert [r["stopped_s"] for r in reps[3:]] == [10.0, 10.0]
    drained = [r for r in reps[:3] if r["draining_s"] == 10.0]
    assert len(drained) == 1
    # the drained one held the fewest requests at t=10
    def held(rid, t):
        return sum(1 for q in res.requests if q["replica"] == rid and q["dispatched_s"] <= t
                   < q["finish_s"])
    assert held(drained[0]["id"], 10.0) == min(held(i, 10.0) for i in range(3))
    check_lifecycle(res, 20.0)


def test_cost_counts_cold_start_and_draining():
    reqs = conv_load(rate=2.0, duration_s=60.0)
    res = simulate(reqs, spec(initial=1, cold_start_s=20.0), llq(),
                   scale=plan((0, 1), (10, 2), (60, 1)))
    end = max(r["finish_s"] for r in res.requests)
    reps = res.diagnostics["per_replica"]
    assert reps[1]["started_s"] == 10.0 and reps[1]["ready_s"] == 30.0
    drained = next(r for r in reps if r["draining_s"] == 60.0)
    assert drained["stopped_s"] >= 60.0            # it finished what it held first
    expected = sum((r["stopped_s"] if r["stopped_s"] is not None else end) - r["started_s"]
                   for r in reps)
    assert res.metrics["gpu_seconds"] == pytest.approx(expected)
    assert res.metrics["gpu_seconds"] > end + 20.0        # the second replica's cold start


def test_cluster_view_is_consistent():
    seen = []
    inner = load_trusted("autoscaling", "threshold")
    reqs = conv_load(rate=6.0, duration_s=120.0)

    def watch(cluster, now, knobs):
        c = cluster
        assert c.num_replicas == c.num_ready + c.num_starting
        assert len(c.replicas) == c.num_ready + c.num_starting + c.num_draining
        assert {r.state for r in c.replicas} <= {"draining", "ready", "starting"}
        assert 0.0 <= c.kv_use <= c.max_kv_use <= 1.0
        assert c.num_waiting == c.queue_len + c.num_pending
        assert c.recent_completed <= c.completed <= c.arrivals
        assert c.p50_ttft_s <= c.p90_ttft_s <= c.p99_ttft_s
        assert 0.0 <= c.recent_slo_attainment <= 1.0
        assert c.min_replicas == 1 and c.max_replicas == 4 and c.cold_start_s == 20.0
        if seen:
            assert c.gpu_seconds >= seen[-1][1]
        seen.append((now, c.gpu_seconds, c.arrival_rate, c.num_waiting, c.oldest_wait_s))
        return inner[0]["scale"](cluster, now, knobs)
    simulate(reqs, spec(), llq(), scale=watch, scale_knobs=inner[1])
    assert seen[0][:3] == (0.0, 0.0, 0.0)
    assert [t for t, *_ in seen[:3]] == [0.0, 5.0, 10.0]
    rates = [r for t, _, r, _, _ in seen if 40 <= t <= 110]
    assert 4.0 < sum(rates) / len(rates) < 8.0       # ~6 req/s over the last 30 s
    assert any(w > 0 for *_, w in seen)


# --- invalid answers ---------------------------------------------------------------------------

def _instances(reqs=None, cluster=None):
    reqs = reqs if reqs is not None else conv_load(rate=2.0, duration_s=30.0)
    scenario = Scenario("tiny", "a test workload", cluster or spec(),
                        lambda seed: list(reqs), seeds=(0,))
    return scenario.instances()


INVALID = {
    "float_integral": ("2.0", "got the float 2.0 (convert it, e.g. int(x) or math.ceil(x))"),
    "float": ("2.5", "got float 2.5"),
    "none": ("None", "got NoneType None (a missing return statement?)"),
    "bool": ("True", "got bool True"),
    "string": ("'3'", "got str '3'"),
    "too_many": ("99", "scale asked for 99 replica(s), outside [min_replicas, max_replicas] = "
                       "[1, 4]"),
    "zero": ("0", "scale asked for 0 replica(s), outside"),
    "later": ("5 if now > 12 else 2", "scale asked for 5 replica(s)"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_answers_give_the_documented_reason(case):
    answer, reason = INVALID[case]
    source = f"def scale(cluster, now, knobs):\n    return {answer}\n"
    result = evaluate(source, PROBLEM, _instances())
    assert result.status == "invalid", result
    assert result.fitness == 0.0
    assert result.error.startswith("tiny#0: scale")
    assert reason in result.error, result.error


def test_a_scaler_that_raises_reports_its_own_line():
    source = ("def scale(cluster, now, knobs):\n"
              "    spare = cluster.max_replicas - cluster.max_replicas\n"
              "    return cluster.num_replicas // spare\n")
    result = evaluate(source, PROBLEM, _instances())
    assert result.status == "error" and result.line == 3
    assert "ZeroDivisionError" in result.error


# --- fitness ------------------------------------------------------------------------------------

def test_penalised_cost_is_gpu_seconds_times_the_slo_penalty():
    s = spec()
    ok = penalized({"gpu_seconds": 100.0, "slo_attainment": 0.97}, s)
    assert ok == {"slo_shortfall": 0.0, "penalized_gpu_seconds": 100.0}
    short = penalized({"gpu_seconds": 100.0, "slo_attainment": 0.90}, s)
    assert short["slo_shortfall"] == pytest.approx(0.05)
    assert short["penalized_gpu_seconds"] == pytest.approx(100.0 * math.exp(PENALTY * 0.05))


def test_an_underprovisioned_policy_loses_to_the_reference_despite_lower_cost():
    reqs = conv_load(rate=6.0, duration_s=180.0)
    starve = "def scale(cluster, now, knobs):\n    return cluster.min_replicas\n"
    result = evaluate(starve, PROBLEM, _instances(reqs, spec(initial=3)))
    m = result.scenarios["tiny#0"]
    assert result.status == "ok"
    assert m["slo_attainment"] < 0.9 and m["penalized_gpu_seconds"] > 10 * m["gpu_seconds"]
    assert result.fitness < 0.1


# --- fast path == reference, determinism --------------------------------------------------------

FAST_CASES = {
    "conv_a10": lambda: (conv_load(rate=6.0, duration_s=150.0), spec()),
    "code_a100": lambda: (wl.window(wl.packaged_trace("azure_llm_2023/code.csv"), 840.0, 1020.0),
                          spec(profile="llama3-8b/a100", cold_start_s=10.0)),
}


@pytest.mark.parametrize("policy", BASELINES + ["flap"])
@pytest.mark.parametrize("case", list(FAST_CASES))
def test_fast_path_equals_reference(case, policy):
    reqs, cluster = FAST_CASES[case]()
    assert 100 <= len(reqs) <= 1500
    runs = []
    for fast in (True, False):
        if policy == "flap":
            fn, knobs = plan(*[(t, 1 + (t // 5) % 4) for t in range(0, 600, 5)]), {}
        else:
            fns, knobs = load_trusted("autoscaling", policy)
            fn = fns["scale"]
        views = []

        def logged(cluster, now, kn, fn=fn, views=views):
            views.append((now, cluster.num_ready, cluster.num_starting, cluster.num_draining,
                          cluster.num_waiting, cluster.kv_use, cluster.p99_ttft_s,
                          cluster.gpu_seconds, cluster.oldest_wait_s,
                          tuple((r.id, r.free_blocks, r.num_active) for r in cluster.replicas)))
            return fn(cluster, now, kn)
        runs.append((simulate(reqs, cluster, llq(), scale=logged, scale_knobs=knobs, fast=fast),
                     views))
    (fast, fast_views), (ref, ref_views) = runs
    assert fast.metrics == ref.metrics
    assert fast.requests == ref.requests
    assert fast.diagnostics["per_replica"] == ref.diagnostics["per_replica"]
    assert fast_views == ref_views
    check_lifecycle(fast, cluster.autoscale.cold_start_s)


# (what every problem must do -- splits, baselines, determinism across processes and hash seeds,
# the `simulate` / `baselines --json` schemas -- is checked by tests/conformance.py; here only
# what is particular to autoscaling)

def test_baselines_differ_and_scale_on_a_trace_scenario():
    from glia_evo.evaluation.parallel import evaluate_many
    instances = PROBLEM.split("quick") + [PROBLEM.scenario("azure_code").instances([1])[0]]
    results = dict(zip(BASELINES, evaluate_many([PROBLEM.baseline_source(n) for n in BASELINES],
                                                PROBLEM, instances, workers=2)))
    assert results["threshold"].fitness == 1.0
    assert len({json.dumps(r.scenarios, sort_keys=True) for r in results.values()}) == 3
    assert any(d["scale_events"] for d in results["threshold"].diagnostics.values())
    fixed = results["fixed"].scenarios["step_short#101"]
    scaled = results["threshold"].scenarios["step_short#101"]
    assert {"gpu_seconds", "slo_attainment", "penalized_gpu_seconds", "mean_replicas",
            "cold_starts", "mean_e2e_s", "p99_ttft_s"} <= set(fixed)
    assert fixed["gpu_seconds"] > scaled["gpu_seconds"] and fixed["cold_starts"] == 0


def test_problem_describes_its_entry_point_and_fleet_limits():
    assert PROBLEM.entrypoints == ("scale",) and PROBLEM.reference == "threshold"
    assert PROBLEM.metric == "penalized_gpu_seconds"
    assert baseline_names("autoscaling") == BASELINES
    for split in ("train", "validation", "test", "quick"):
        for inst in PROBLEM.split(split):
            c = inst.cluster()
            assert c.autoscale.min_replicas <= len(c.replicas) <= c.autoscale.max_replicas
    assert "scale(cluster, now, knobs)" in PROBLEM.description


def test_replicas_option_sets_the_most_the_autoscaler_may_use():
    scenario = PROBLEM.scenario("diurnal")
    c = Instance(scenario, 0, replicas=2).cluster()
    assert c.autoscale.max_replicas == 2 and len(c.replicas) == 2
    assert c.autoscale.min_replicas == 1
    c = Instance(scenario, 0, replicas=12).cluster()
    assert c.autoscale.max_replicas == 12 and len(c.replicas) == len(scenario.cluster.replicas)


def test_cli_invalid_answer_is_one_line(tmp_path):
    path = tmp_path / "half.py"
    path.write_text("def scale(cluster, now, knobs):\n    return cluster.num_replicas / 2\n")
    proc = cli("simulate", "--problem", "autoscaling", "--policy", str(path), "--scenario",
               "step_short", "--seed", "101", "--workers", "1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "invalid" in lines[0] and "int number of replicas" in lines[0]
