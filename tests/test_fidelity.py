"""Simulator fidelity to Vidur (issue 16): the KV-read cost, the KV budget as a parameter, Vidur's
eviction rules, and the fidelity benchmark's bookkeeping. The full comparison with Vidur's
results is benchmarks/bench_fidelity.py (minutes); GLIA_EVO_FIDELITY=1 runs a two-trace check."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from sim import ClusterSpec, ReplicaSpec, RequestSpec, simulate
from sim import profiles
from sim import workload as wl

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench_fidelity",
                                                  ROOT / "benchmarks" / "bench_fidelity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the KV-read term ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["llama3-8b/a10", "llama3-8b/a100", "llama3-8b/h100"])
def test_kv_read_cost_is_a_physical_share_of_peak_bandwidth(name):
    prof = profiles.PROFILES[name]
    # reading one token's KV cache (128 KiB) at full peak bandwidth, in picoseconds
    at_peak_ps = profiles.KV_BYTES_PER_TOKEN / (profiles.PEAK_BANDWIDTH_GBPS[prof.gpu] * 1e9) * 1e12
    assert at_peak_ps > 30_000                      # tens of nanoseconds, not picoseconds
    assert at_peak_ps <= prof.d_ps <= at_peak_ps / 0.3   # 30-100 % of peak bandwidth


def test_a10_decode_slows_down_with_the_context_read():
    prof = profiles.PROFILES["llama3-8b/a10"]
    one = prof.iteration_ps(0, 1, 100) + prof.attention_extra_ps(0, 1, 100)
    assert 0.025 < one / 1e12 < 0.040               # batch-1 decode ~31 ms (Vidur's A10)
    # 64 requests with 2,000 tokens of context each: the KV read dominates
    busy = prof.iteration_ps(0, 64, 128_000) + prof.attention_extra_ps(0, 64, 128_000)
    assert busy > 2.5 * one
    prefill = prof.iteration_ps(8192, 0, 0) + prof.attention_extra_ps(8192 ** 2, 0, 0)
    assert 1.3 < prefill / 1e12 < 1.7               # an 8k prefill ~1.5 s


def test_a10_attention_is_timed_on_vidurs_grid():
    prof = profiles.PROFILES["llama3-8b/a10"]
    assert prof.kv_granularity == 64 and prof.prefill_overhead == 0.1
    # decode: each request also attends to the token it decodes, and the batch is timed at its
    # mean length (int) rounded up to 64 (Vidur's _get_batch_decode_attention_params)
    assert prof.decode_kv(1, 100) == 128                # 101 -> 128
    assert prof.decode_kv(3, 3 * 63) == 3 * 64          # mean 64 -> 64
    assert prof.decode_kv(3, 3 * 64) == 3 * 128         # mean 65 -> 128
    assert prof.decode_kv(2, 127 + 128) == 2 * 128      # int(mean 128.5) = 128
    # a GPU profile without a grid counts every token, the decoded one included
    assert profiles.PROFILES["llama3-8b/a100"].decode_kv(3, 300) == 303
    # prefill: x 1.1 when more than one request prefills in the iteration
    one = prof.attention_extra_ps(1000 ** 2, 0, 0, 1, 0)
    two = prof.attention_extra_ps(1000 ** 2, 0, 0, 2, 64)
    assert one == prof.e_ps * 1000 ** 2
    assert two == one + round((one + prof.d_ps * 64) * 0.1)


def test_a_decode_run_is_timed_as_its_iterations():
    from sim.replica import _Run
    g, n, mean, base, d_n = 64, 5, 60, 10**9, 7 * 10**5
    run = _Run(0, 150, n, base, d_n, [0] * 17, mean=mean, g=g)
    each = [base + d_n * (-(-(mean + i) // g) * g) for i in range(150)]
    assert all(run.time(m) == sum(each[:m]) for m in (0, 1, 4, 5, 68, 69, 150))
    assert run.done_by(sum(each[:69]) - 1) == 68 and run.done_by(sum(each[:69])) == 69


# --- the KV budget as a parameter -------------------------------------------------------------

def test_kv_blocks_override_reaches_the_replicas_and_their_views():
    seen = set()

    def route(queue, replicas, now, knobs):
        seen.update(r.num_blocks for r in replicas)
        return [(q.id, q.id % len(replicas)) for q in queue]

    spec = ClusterSpec.uniform(2).with_kv_blocks(300)
    assert all(r.num_blocks == 300 for r in spec.replicas)
    reqs = [RequestSpec(0.1 * i, 200, 50) for i in range(20)]
    res = simulate(reqs, spec, route)
    assert seen == {300} and res.metrics["completed"] == 20
    with pytest.raises(ValueError, match="holds only"):
        simulate([RequestSpec(0.0, 4000, 1000)], spec, route)   # 5000 tokens > 299 x 16
    with pytest.raises(ValueError):
        ReplicaSpec(num_blocks=0)


def test_instance_kv_blocks_sets_the_scenario_cluster():
    from glia_evo.problems import get_problem
    from glia_evo.problems.base import Instance
    sc = get_problem("routing").scenario("glia")
    spec = Instance(sc, 0, kv_blocks=2048).cluster()
    assert {r.num_blocks for r in spec.replicas} == {2048}
    assert Instance(sc, 0).cluster() == sc.cluster


def test_a_tighter_budget_means_more_restarts(baseline):
    route, knobs = baseline("llq")
    reqs = wl.window(wl.glia_workload(0), 300.0, 360.0)
    loose = simulate(reqs, ClusterSpec.uniform(2).with_kv_blocks(4096), route, knobs).metrics
    tight = simulate(reqs, ClusterSpec.uniform(2).with_kv_blocks(1024), route, knobs).metrics
    assert tight["restarts"] > loose["restarts"]
    assert tight["mean_e2e_s"] > loose["mean_e2e_s"]


# --- Vidur's eviction rules --------------------------------------------------------------------

def _restarts(reqs, num_blocks, tiny_profile, fast):
    name = tiny_profile(num_blocks)
    spec = ClusterSpec.uniform(1, name, watermark=0.0)
    res = simulate(reqs, spec, lambda q, r, now, k: [(x.id, 0) for x in q], fast=fast)
    return [rec["restarts"] for rec in res.requests]


@pytest.mark.parametrize("fast", [True, False])
def test_a_full_cache_evicts_even_when_no_block_is_needed(tiny_profile, fast):
    # two 79-token prompts fill 10 blocks exactly; neither needs a new block for its next
    # token, but vLLM (and Vidur) want one free block at each decoding request's turn
    reqs = [RequestSpec(0.0, 79, 2), RequestSpec(0.0, 79, 2)]
    assert _restarts(reqs, 10, tiny_profile, fast) == [0, 1]


@pytest.mark.parametrize("fast", [True, False])
def test_the_victim_is_the_last_in_batch_order(tiny_profile, fast):
    # three requests admitted in one iteration, in arrival order, fill 9 blocks: the third,
    # the latest admitted (last in Vidur's batch order), is the one evicted (and readmitted in
    # the same iteration, once the other two's next tokens have found their room)
    reqs = [RequestSpec(0.0, 47, 2), RequestSpec(0.0, 47, 2), RequestSpec(0.0, 47, 2)]
    assert _restarts(reqs, 9, tiny_profile, fast) == [0, 0, 1]
    # with a third token to make, the readmitted request is the victim again
    reqs = [RequestSpec(0.0, 47, 3), RequestSpec(0.0, 47, 3), RequestSpec(0.0, 47, 3)]
    assert _restarts(reqs, 9, tiny_profile, fast) == [0, 0, 2]


def test_batch_cap_is_vidurs():
    assert ReplicaSpec().max_batch == 128


# --- the fidelity benchmark ---------------------------------------------------------------------

def _reference_or_skip(bench):
    if not bench.REFERENCE_CSV.is_file():
        pytest.skip(f"no Vidur reference at {bench.REFERENCE_CSV}")
    return bench.load_reference()


def test_reference_is_read_from_the_csv():
    bench = _bench()
    ref = _reference_or_skip(bench)
    lines = bench.REFERENCE_CSV.read_text().strip().splitlines()
    assert len(ref) == len(lines) - 1
    budget, router, seed = lines[1].split(",")[:3]
    assert ref[(int(budget), router, int(seed))]["mean_e2e"] == float(lines[1].split(",")[4])
    assert set(bench.ROUTERS) == {k[1] for k in ref}


def test_compare_of_identical_results_is_perfect():
    bench = _bench()
    ref = _reference_or_skip(bench)
    budgets = sorted({k[0] for k in ref})
    routers = list(bench.ROUTERS)
    cmp = bench.compare(ref, ref, budgets, routers, list(range(10)))
    for c in cmp.values():
        assert c["ordering_match"] and c["max_abs_err"] == 0 and c["max_speedup_err"] == 0
        assert c["spearman_exact"] == pytest.approx(1.0)
        assert c["restart_factor"] == pytest.approx(1.0)
    # a slower llq shows up as llq's error and as every other router's speed-up error
    slower = {k: dict(v, mean_e2e=v["mean_e2e"] * (1.5 if k[1] == "llq" else 1.0))
              for k, v in ref.items()}
    c = bench.compare(ref, slower, budgets, routers, list(range(10)))[budgets[0]]
    row = {r["router"]: r for r in c["rows"]}
    assert row["llq"]["err"] == pytest.approx(0.5)
    assert row["glia_hra"]["speedup_err"] == pytest.approx(0.5)


def test_spearman():
    bench = _bench()
    assert bench.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert bench.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert bench.spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)


def test_funsearch_router_runs_and_holds_requests_under_pressure():
    bench = _bench()
    reqs = wl.window(wl.glia_workload(0), 300.0, 330.0)
    spec = ClusterSpec.uniform(2).with_kv_blocks(1024)
    res = simulate(reqs, spec, bench.funsearch_router())
    assert res.metrics["completed"] == len(reqs)
    # a fresh router per simulation: the same run twice gives the same result
    again = simulate(reqs, spec, bench.funsearch_router())
    assert again.metrics == res.metrics


@pytest.mark.skipif(os.environ.get("GLIA_EVO_FIDELITY") != "1",
                    reason="minutes of simulation; set GLIA_EVO_FIDELITY=1")
def test_exact_traces_agree_with_vidur():
    bench = _bench()
    ref = _reference_or_skip(bench)
    budgets = sorted({k[0] for k in ref})
    routers = ["llq", "glia_hra"]
    keys = [(b, r, s) for b in budgets for r in routers for s in (0, 1)]
    cmp = bench.compare(ref, bench.run_all(keys, 2), budgets, routers, [0, 1])
    for c in cmp.values():
        assert c["max_abs_err"] <= 0.15 and c["max_speedup_err"] <= 0.10
