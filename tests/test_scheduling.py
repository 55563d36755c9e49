"""The scheduling problem: a scheduler orders admissions inside each replica; the simulator keeps
the memory, token and batch limits whatever it answers; starvation shows in the metrics; invalid
answers are refused with the documented reasons; results are deterministic and the fast path
equals the step-by-step reference."""
from __future__ import annotations

import json
import random
from functools import partial

import pytest

from glia_evo.evaluation import evaluate
from glia_evo.problems import Scenario, get_problem
from sim import ClusterSpec, RequestSpec, simulate
from sim import profiles as sim_profiles
from sim import workload as wl
from sim.policies import baseline_names, load_trusted
from sim.profiles import GpuProfile
from cli_helpers import run_glia as cli

PROBLEM = get_problem("scheduling")
BASELINES = ["fcfs", "shortest_prompt_first", "aging"]


def llq():
    return load_trusted("routing", "llq")[0]["route"]


def scheduler(name: str):
    fns, knobs = load_trusted("scheduling", name)
    return fns["schedule"], knobs


def heavy_small(seed: int = 3, rate: float = 12.0, duration_s: float = 60.0):
    return wl.heavy_tail_workload(seed, rate=rate, duration_s=duration_s)


def tiny_mixed(n: int = 120, seed: int = 5, max_tokens: int = 1800, span_s: float = 20.0):
    """Mixed lengths that overcommit a small KV cache: evictions, restarts, budget cuts."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = rng.randint(1, max_tokens * 2 // 3)
        out.append(RequestSpec(rng.uniform(0, span_s), prompt, rng.randint(1, max_tokens - prompt)))
    return sorted(out, key=lambda r: r.arrival_s)


# --- the reference order ---------------------------------------------------------------------

def test_fcfs_baseline_is_the_simulators_builtin_order(tiny_profile):
    spec = ClusterSpec.uniform(2, tiny_profile(160), chunk_size=512)
    reqs = tiny_mixed()
    builtin = simulate(reqs, spec, llq())
    fcfs, knobs = scheduler("fcfs")
    with_fcfs = simulate(reqs, spec, llq(), schedule=fcfs, schedule_knobs=knobs)
    assert builtin.metrics["restarts"] > 10          # evicted requests go back to the front
    assert with_fcfs.metrics == builtin.metrics
    assert with_fcfs.requests == builtin.requests


def test_order_changes_who_goes_first():
    reqs = heavy_small()
    spec = ClusterSpec.uniform(1)
    results = {}
    for name in BASELINES:
        fn, knobs = scheduler(name)
        results[name] = simulate(reqs, spec, llq(), schedule=fn, schedule_knobs=knobs).metrics
    assert results["shortest_prompt_first"]["mean_e2e_s"] < 0.8 * results["fcfs"]["mean_e2e_s"]
    assert results["aging"]["mean_e2e_s"] < results["fcfs"]["mean_e2e_s"]


# --- limits hold whatever the policy answers -----------------------------------------------------

class _CheckedProfile(GpuProfile):
    """A GPU profile that checks every iteration's token budget and batch as it is timed."""

    def iteration_ps(self, prefill_tokens, decode_requests, kv_tokens):
        LIMITS["iterations"] += 1
        assert prefill_tokens + decode_requests <= LIMITS["chunk"], (prefill_tokens,
                                                                     decode_requests)
        assert decode_requests <= LIMITS["batch"]
        return super().iteration_ps(prefill_tokens, decode_requests, kv_tokens)


LIMITS = {"chunk": 256, "batch": 6, "iterations": 0}


def _greedy_largest(pending, active, replica, now, knobs):
    return [q.id for q in sorted(pending, key=lambda q: -q.prompt_tokens)]


def _random_subset(rng, pending, active, replica, now, knobs):
    ids = [q.id for q in pending]
    rng.shuffle(ids)
    keep = ids if not active else ids[:rng.randint(0, len(ids))]
    return keep


def _everything_twice_checked(pending, active, replica, now, knobs):
    # the views the policy sees respect the limits too
    assert 0 <= replica.free_blocks <= replica.num_blocks
    assert len(active) == replica.num_active <= replica.max_batch
    assert len(pending) == replica.num_pending >= 1
    assert all(a.processed_tokens >= 0 for a in active)
    return [q.id for q in reversed(pending)]


@pytest.mark.parametrize("policy", ["largest_first", "random_subset", "reverse_checked"])
def test_a_scheduler_cannot_break_memory_token_or_batch_limits(policy, monkeypatch):
    prof = _CheckedProfile("test", "checked", a_ps=30_000_000_000, b_ps=180_000_000,
                           c_ps=68_000_000, d_ps=218, num_blocks=160)
    monkeypatch.setitem(sim_profiles.PROFILES, "test/checked", prof)
    monkeypatch.setitem(LIMITS, "iterations", 0)
    spec = ClusterSpec(replicas=(sim_profiles_replica("test/checked"),) * 2)
    fn = {"largest_first": _greedy_largest,
          "random_subset": partial(_random_subset, random.Random(1)),
          "reverse_checked": _everything_twice_checked}[policy]
    reqs = tiny_mixed(n=100, max_tokens=1500)
    from sim.cluster import Cluster
    from sim.hooks import hooks_of
    import simpy
    env = simpy.Environment()
    cluster = Cluster(env, spec, hooks_of({"route": llq(), "schedule": fn}), fast=False)
    cluster.total = len(reqs)
    env.process(cluster.arrivals(reqs))
    checked = 0
    t = 0
    while not cluster.all_done.triggered:
        t += 7_919_000_000      # ~7.9 ms, not a multiple of anything in the model
        env.run(until=t)
        for rep in cluster.replicas:
            assert 0 <= rep.used_blocks <= rep.profile.num_blocks
            assert rep.used_blocks == sum(r.blocks for r in rep.active)
            assert len(rep.active) <= rep.max_batch
            # a request is admitted only with its whole prompt's blocks reserved
            for r in rep.active:
                assert r.blocks >= -(-max(r.target, r.processed) // 16)
            checked += 1
    assert checked > 100 and LIMITS["iterations"] > 200
    assert cluster.completed == len(reqs)
    assert sum(r.restarts for r in cluster.requests) > 0     # memory really was short


def sim_profiles_replica(profile: str):
    from sim import ReplicaSpec
    return ReplicaSpec(profile, chunk_size=LIMITS["chunk"], max_batch=LIMITS["batch"])


def test_admission_stops_at_the_first_request_that_does_not_fit(tiny_profile):
    """Order is the policy's; skipping ahead is not the simulator's: a big request first holds
    the small ones behind it until it fits."""
    spec = ClusterSpec.uniform(1, tiny_profile(100))          # 1600 tokens
    reqs = [RequestSpec(0.0, 1200, 200), RequestSpec(0.01, 1000, 5), RequestSpec(0.02, 50, 5)]

    def big_first(pending, active, replica, now, knobs):
        return [q.id for q in sorted(pending, key=lambda q: -q.prompt_tokens)]
    res = simulate(reqs, spec, llq(), schedule=big_first, fast=False).requests
    # request 1 (1000 tokens) cannot fit beside request 0; request 2 would, but waits behind it
    assert res[2]["admitted_s"] >= res[0]["finish_s"]
    assert res[1]["admitted_s"] >= res[0]["finish_s"]


# --- starvation ------------------------------------------------------------------------------

def _starvation_workload():
    """One long prompt arrives among a steady stream of short ones that keeps a small replica's
    memory busy for a minute: shortest-first leaves the long one waiting until the stream ends."""
    reqs = [RequestSpec(0.06 * i, 120, 30) for i in range(1000)]
    reqs.append(RequestSpec(1.0, 1400, 20))
    return sorted(reqs, key=lambda r: r.arrival_s)


def test_starvation_is_visible_in_metrics_and_diagnostics(tiny_profile):
    spec = ClusterSpec.uniform(1, tiny_profile(200), starvation_s=30.0)
    reqs = _starvation_workload()
    long_id = next(i for i, r in enumerate(reqs) if r.prompt_tokens == 1400)
    out = {}
    for name in ("fcfs", "shortest_prompt_first", "aging"):
        fn, knobs = scheduler(name)
        out[name] = simulate(reqs, spec, llq(), schedule=fn, schedule_knobs=knobs)
    sjf, fcfs, aging = out["shortest_prompt_first"], out["fcfs"], out["aging"]
    assert sjf.metrics["starved"] == 1 and sjf.metrics["max_wait_s"] > 55
    wait = sjf.requests[long_id]["admitted_s"] - sjf.requests[long_id]["arrival_s"]
    assert sjf.metrics["max_wait_s"] == pytest.approx(wait)
    assert sjf.diagnostics["starvation"]["oldest_wait"]["id"] == long_id
    assert sjf.diagnostics["starvation"]["starved"] == sjf.metrics["starved"]
    assert fcfs.metrics["starved"] == 0 and fcfs.metrics["max_wait_s"] < 20
    # aging bounds the wait (1400 tokens at 50 tokens/s: about 28 s)
    assert aging.metrics["starved"] == 0 and aging.metrics["max_wait_s"] < 30
    for res in out.values():
        assert res.metrics["completed"] == len(reqs)
        assert res.metrics["p99_wait_s"] <= res.metrics["max_wait_s"]


# --- invalid answers ---------------------------------------------------------------------------

def _instance(reqs, spec=None):
    scenario = Scenario("tiny", "a test workload", spec or ClusterSpec.uniform(1),
                        lambda seed: list(reqs), seeds=(0,))
    return scenario.instances()


INVALID = {
    "none": ("    return None\n", "got NoneType (a missing return statement?)"),
    "views": ("    return pending\n", "(return req.id, not the request)"),
    "unknown": ("    return [10**9]\n", "request id 1000000000 which is not pending on replica 0"),
    "duplicate": ("    return [pending[0].id, pending[0].id]\n", "twice in one answer"),
    "not_a_list": ("    return 'fcfs'\n", "must return a list of request ids"),
    "float_id": ("    return [float(q.id) for q in pending]\n", "request ids (ints)"),
    "holds_all": ("    return []\n", "admitted none of the"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_answers_give_the_documented_reason(case):
    body, reason = INVALID[case]
    source = "def schedule(pending, active, replica, now, knobs):\n" + body
    reqs = [RequestSpec(0.1 * i, 100 + i, 20) for i in range(30)]
    result = evaluate(source, PROBLEM, _instance(reqs))
    assert result.status == "invalid", result
    assert result.fitness == 0.0
    assert result.error.startswith("tiny#0: schedule")
    assert reason in result.error, result.error


def test_holding_requests_while_others_run_is_allowed():
    """Leaving ids out is fine as long as something runs: admit one at a time."""
    source = ("def schedule(pending, active, replica, now, knobs):\n"
              "    return [] if len(active) >= 2 else [pending[0].id]\n")
    reqs = [RequestSpec(0.05 * i, 200, 30) for i in range(40)]
    result = evaluate(source, PROBLEM, _instance(reqs))
    assert result.status == "ok", result.error
    m = result.scenarios["tiny#0"]
    assert m["completed"] == 40 and 0 < result.fitness < 1


def test_a_scheduler_that_raises_reports_its_own_line():
    source = ("def schedule(pending, active, replica, now, knobs):\n"
              "    first = pending[0]\n"
              "    return [first.id // 0]\n")
    result = evaluate(source, PROBLEM, _instance([RequestSpec(0.0, 10, 5)]))
    assert result.status == "error" and result.line == 3
    assert "ZeroDivisionError" in result.error


# --- fast path == reference, determinism --------------------------------------------------------

def _hold_some(pending, active, replica, now, knobs):
    ids = sorted(pending, key=lambda q: (q.prompt_tokens, q.id))
    return [q.id for q in ids][: max(1, 8 - len(active))]


FAST_CASES = {
    "heavy_tail": lambda tp: (heavy_small(), ClusterSpec.uniform(1)),
    "tiny_kv": lambda tp: (tiny_mixed(), ClusterSpec.uniform(2, tp(160), chunk_size=512)),
    "azure_code": lambda tp: (wl.scale_rate(wl.window(
        wl.packaged_trace("azure_llm_2023/code.csv"), 540.0, 600.0), 1.5),
        ClusterSpec.uniform(2)),
}


@pytest.mark.parametrize("policy", BASELINES + ["hold_some"])
@pytest.mark.parametrize("case", list(FAST_CASES))
def test_fast_path_equals_reference(case, policy, tiny_profile):
    reqs, spec = FAST_CASES[case](tiny_profile)
    assert 100 <= len(reqs) <= 800
    runs = []
    for fast in (True, False):
        fn, knobs = (_hold_some, {}) if policy == "hold_some" else scheduler(policy)
        calls = []

        def logged(pending, active, replica, now, kn, fn=fn, calls=calls):
            calls.append((now, replica.id, tuple(q.id for q in pending),
                          tuple((a.id, a.processed_tokens) for a in active), replica.free_blocks))
            return fn(pending, active, replica, now, kn)
        runs.append((simulate(reqs, spec, llq(), schedule=logged, schedule_knobs=knobs,
                              fast=fast), calls))
    (fast, fast_calls), (ref, ref_calls) = runs
    assert fast.metrics == ref.metrics
    assert fast.requests == ref.requests
    assert fast_calls == ref_calls          # consulted at the same iterations, seeing the same
    assert len(fast_calls) > 50


# (what every problem must do -- splits, baselines, determinism across processes and hash seeds,
# the `simulate` / `baselines --json` schemas -- is checked by tests/conformance.py; here only
# what is particular to scheduling)

def test_baselines_differ_and_shortest_prompt_first_beats_fcfs():
    from glia_evo.evaluation.parallel import evaluate_many
    instances = PROBLEM.split("quick") + [PROBLEM.scenario("azure_code").instances([1])[0]]
    results = dict(zip(BASELINES, evaluate_many([PROBLEM.baseline_source(n) for n in BASELINES],
                                                PROBLEM, instances, workers=2)))
    assert results["fcfs"].fitness == 1.0
    assert results["shortest_prompt_first"].fitness > 1.0
    assert len({json.dumps(r.scenarios, sort_keys=True) for r in results.values()}) == 3
    m = results["shortest_prompt_first"].scenarios["heavy_tail_short#101"]
    assert {"mean_e2e_s", "p99_e2e_s", "max_wait_s", "starved", "slo_attainment"} <= set(m)
    assert m["max_wait_s"] > results["fcfs"].scenarios["heavy_tail_short#101"]["max_wait_s"]


def test_problem_describes_its_entry_point_and_scenarios():
    assert PROBLEM.entrypoints == ("schedule",) and PROBLEM.reference == "fcfs"
    assert baseline_names("scheduling") == BASELINES
    names = {i.name for s in ("train", "validation", "test") for i in PROBLEM.split(s)}
    assert {"glia#0", "heavy_tail#0", "azure_code#0", "azure_conv#0"} <= names
    assert "schedule(pending, active, replica, now, knobs)" in PROBLEM.description


def test_cli_invalid_scheduler_is_one_line(tmp_path):
    path = tmp_path / "dup.py"
    path.write_text("def schedule(pending, active, replica, now, knobs):\n"
                    "    return [q.id for q in pending] * 2\n")
    # no --problem: a file defining `schedule` is a scheduling policy
    proc = cli("simulate", "--policy", str(path), "--scenario", "heavy_tail_short", "--seed",
               "101", "--workers", "1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "invalid" in lines[0] and "twice in one answer" in lines[0]
    assert cli("simulate", "--problem", "scheduling", "--policy", "llq").returncode == 2
