"""The paged KV-cache model: block accounting, growth while decoding, eviction and restart."""
from __future__ import annotations

import random

import pytest

from sim import ClusterSpec, RequestSpec, ReplicaSpec, simulate

BS = 16


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def random_workload(n: int, seed: int, max_tokens: int, span_s: float = 4.0) -> list[RequestSpec]:
    """n requests with mixed lengths (prompt + output <= max_tokens), arrivals in [0, span_s)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = rng.randint(1, max_tokens // 2)
        output = rng.randint(1, max_tokens - prompt)
        out.append(RequestSpec(rng.uniform(0, span_s), prompt, output))
    return sorted(out, key=lambda r: r.arrival_s)


def to_replica(mapping):
    """A router sending request id i to replica mapping(i)."""
    def route(queue, replicas, now, knobs):
        return [(q.id, mapping(q.id)) for q in queue]
    return route


# --- blocks held by a request -------------------------------------------------------------------

def test_blocks_held_match_tokens_in_cache(bare_cluster, baseline):
    """Between events every active request holds ceil(tokens/16) blocks, pending ones none.

    `tokens` is the prompt being prefilled (reserved whole at admission) or, once decoding, the
    tokens in the cache; the iteration in flight may already hold the block of its next token.
    """
    wl = random_workload(40, seed=1, max_tokens=900, span_s=2.0)
    route, knobs = baseline("llq")
    env, cluster = bare_cluster(wl, ClusterSpec.uniform(2), route, knobs, fast=False)
    checked = 0
    t = 0.0
    while not cluster.all_done.triggered:
        t += 0.0173  # not a multiple of anything in the timing model
        env.run(until=round(t * 10**12))
        for rep in cluster.replicas:
            assert rep.used_blocks == sum(r.blocks for r in rep.active)
            assert 0 <= rep.used_blocks <= rep.profile.num_blocks
            for r in rep.pending:
                assert r.blocks == 0
            for r in rep.active:
                assert r.target == r.prompt  # a big A10 cache: nothing is evicted here
                lo = ceil_div(max(r.target, r.processed), BS)
                hi = ceil_div(max(r.target, r.processed + 1), BS)
                assert lo <= r.blocks <= hi, (r.id, r.prompt, r.processed, r.blocks)
                checked += 1
        assert t < 120, "simulation did not finish"
    assert checked > 200
    assert all(r.generated == r.output and r.finish is not None for r in cluster.requests)
    assert all(rep.used_blocks == 0 for rep in cluster.replicas)


@pytest.mark.parametrize("fast", [True, False])
def test_decode_grows_one_block_per_block_boundary(fast):
    """A lone request's blocks, seen by the router, grow 1 at a time from ceil(P/16) to
    ceil((P+O-1)/16), exactly when the tokens in its cache cross a multiple of 16."""
    prompt, output = 40, 60
    seen = []  # (processed_tokens as viewed, blocks used on replica 0)

    def route(queue, replicas, now, knobs):
        rep = replicas[0]
        if rep.num_active:
            (view,) = rep.active
            assert view.id == 0
            seen.append((view.processed_tokens, rep.num_blocks - rep.free_blocks))
        return [(q.id, 0 if q.id == 0 else 1) for q in queue]

    # request 0 runs alone on replica 0; tiny probe requests on replica 1 make the router look
    probes = [RequestSpec(0.0021 + 0.0037 * k, 1, 1) for k in range(900)]
    wl = [RequestSpec(0.0, prompt, output)] + probes
    res = simulate(wl, ClusterSpec.uniform(2), route, fast=fast)
    assert res.requests[0]["replica"] == 0 and res.requests[0]["finish_s"] < probes[-1].arrival_s

    assert len(seen) > 300
    used = [u for _, u in seen]
    for v, u in seen:
        if v < prompt:       # prefilling: the whole prompt is reserved
            assert u == ceil_div(prompt, BS)
        else:                # decoding: the cache holds v tokens, the step in flight adds one
            assert u in (ceil_div(v, BS), ceil_div(v + 1, BS)), (v, u)
            if v % BS:
                assert u == ceil_div(v, BS), (v, u)
    assert all(0 <= b - a <= 1 for a, b in zip(used, used[1:]))
    assert set(used) == set(range(ceil_div(prompt, BS), ceil_div(prompt + output - 1, BS) + 1))
    processed = [v for v, _ in seen]
    assert processed == sorted(processed) and processed[-1] >= prompt + output - 3


# --- memory never overflows --------------------------------------------------------------------

@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("policy", ["llq", "least_kv", "round_robin"])
def test_free_blocks_never_negative(tiny_profile, baseline, policy, fast):
    name = tiny_profile(48)  # 768 tokens of KV per replica: constant evictions
    inner, knobs = baseline(policy)
    calls = []

    def route(queue, replicas, now, knobs):
        for r in replicas:
            calls.append((r.free_blocks, r.num_blocks))
            for a in r.active:
                assert a.processed_tokens <= a.prompt_tokens + 768
        return inner(queue, replicas, now, knobs)

    wl = random_workload(80, seed=7, max_tokens=700)
    res = simulate(wl, ClusterSpec.uniform(2, name), route, knobs, fast=fast)
    assert res.metrics["completed"] == len(wl)
    assert res.metrics["restarts"] > 0
    assert len(calls) > 100
    assert all(0 <= free <= total for free, total in calls)
    assert min(free for free, _ in calls) < 48 // 2  # the cache really was under pressure


# --- eviction and restart ----------------------------------------------------------------------

@pytest.mark.parametrize("fast", [False, True])
def test_eviction_takes_most_recently_admitted_and_restart_reprefills(tiny_profile, bare_cluster,
                                                                       baseline, fast):
    name = tiny_profile(40)  # 640 tokens
    wl = random_workload(50, seed=3, max_tokens=600, span_s=3.0)
    route, knobs = baseline("llq")
    env, cluster = bare_cluster(wl, ClusterSpec.uniform(2, name), route, knobs, fast=fast)
    evictions = 0
    readmissions = 0
    waiting_restart = {}   # id -> generated tokens when evicted
    reprefilling = {}      # id -> generated tokens when evicted, for re-admitted requests
    reprefills = 0
    steps = 0
    while not cluster.all_done.triggered:
        before = {rep.id: list(rep.active) for rep in cluster.replicas}
        restarts = {r.id: r.restarts for r in cluster.requests}
        finished = {r.id for r in cluster.requests if r.finish is not None}
        env.step()
        steps += 1
        assert steps < 200_000
        for rep in cluster.replicas:
            assert 0 <= rep.used_blocks <= rep.profile.num_blocks
            assert rep.used_blocks == sum(r.blocks for r in rep.active)
            prev = before[rep.id]
            victims = [r for r in prev if r.restarts > restarts[r.id]]
            done_now = {r.id for r in prev if r.finish is not None and r.id not in finished}
            survivors = [r for r in prev if r not in victims and r.id not in done_now]
            if victims:
                evictions += len(victims)
                # the victims were the most recently admitted of what was running
                assert max((s.admit_seq for s in survivors), default=-1) < \
                    min(v.admit_seq for v in victims)
            for v in victims:
                assert v.restarts == restarts[v.id] + 1
                assert v.target == v.prompt + v.generated   # restart re-prefills all of it
                assert v.processed == 0
                assert v.finish is None
                if v in rep.pending:
                    assert v.blocks == 0
                waiting_restart[v.id] = v.generated
            for r in rep.active:
                if r.id in waiting_restart and r not in victims:
                    g = waiting_restart.pop(r.id)
                    readmissions += 1
                    assert r.target == r.prompt + g
                    assert r.blocks == ceil_div(r.target, BS)
                    assert r.replica == rep.id
                    reprefilling[r.id] = g
            for r in rep.active:
                if r.id in reprefilling and r.processed > 0:
                    # the first iteration after re-admission prefilled all prompt + generated
                    # tokens (chunk size 8192) and emitted exactly one new token
                    g = reprefilling.pop(r.id)
                    assert r.processed == r.target == r.prompt + g
                    assert r.generated == g + 1
                    reprefills += 1
    assert evictions > 0 and readmissions > 0 and reprefills > 0
    assert sum(r.restarts for r in cluster.requests) == evictions
    assert sum(rep.evictions for rep in cluster.replicas) == evictions
    assert cluster.completed == len(wl)
    for r in cluster.requests:
        assert r.finish is not None and r.generated == r.output
        assert r.arrival <= r.first_token <= r.finish


@pytest.mark.parametrize("fast", [True, False])
def test_evicted_request_restarts_and_still_completes(tiny_profile, fast):
    """Three long requests on one small replica: the last admitted is evicted, nobody is lost."""
    name = tiny_profile(32)  # 512 tokens; each request alone needs up to 263 tokens
    wl = [RequestSpec(0.0, 64, 200), RequestSpec(0.001, 64, 200), RequestSpec(0.002, 64, 200)]
    res = simulate(wl, ClusterSpec.uniform(1, name), to_replica(lambda i: 0), fast=fast)
    recs = res.requests
    assert res.metrics["completed"] == 3
    assert res.metrics["restarts"] == sum(r["restarts"] for r in recs) > 0
    assert recs[0]["restarts"] == 0          # the oldest is never the one evicted
    assert recs[2]["restarts"] >= 1          # the newest is
    assert res.diagnostics["per_replica"][0]["evictions"] == res.metrics["restarts"]
    for r in recs:
        assert r["arrival_s"] <= r["admitted_s"] <= r["first_token_s"] <= r["finish_s"]
    # the evicted request restarts after the survivor frees memory, so it finishes last
    assert recs[2]["finish_s"] == max(r["finish_s"] for r in recs)


def test_many_evictions_lose_no_request(tiny_profile, baseline):
    name = tiny_profile(40)
    wl = random_workload(150, seed=11, max_tokens=620, span_s=6.0)
    route, knobs = baseline("round_robin")
    spec = ClusterSpec(replicas=(ReplicaSpec(name), ReplicaSpec(name), ReplicaSpec(name)))
    res = simulate(wl, spec, route, knobs)
    assert res.metrics["completed"] == len(wl) == len(res.requests)
    assert sorted(r["id"] for r in res.requests) == list(range(len(wl)))
    assert res.metrics["restarts"] > 10
    assert res.metrics["restarts"] == sum(r["restarts"] for r in res.requests)
    for rec, spec_ in zip(res.requests, wl):
        assert rec["prompt_tokens"] == spec_.prompt_tokens
        assert rec["output_tokens"] == spec_.output_tokens
        assert rec["finish_s"] >= rec["first_token_s"] >= rec["arrival_s"]


# --- a request that can never fit ----------------------------------------------------------------

def test_request_larger_than_kv_cache_is_rejected_naming_it(tiny_profile, baseline):
    name = tiny_profile(32)  # 512 tokens
    route, knobs = baseline("llq")
    wl = [RequestSpec(0.0, 100, 100), RequestSpec(0.1, 200, 200), RequestSpec(0.2, 300, 300),
          RequestSpec(0.3, 10, 10)]
    with pytest.raises(ValueError, match=r"request 2\b") as info:
        simulate(wl, ClusterSpec.uniform(2, name), route, knobs)
    assert "600" in str(info.value)
    # exactly the capacity is fine: all blocks but one (a decoding request must find a free
    # block at its turn, Vidur's rule), 31 x 16 tokens
    ok = [RequestSpec(0.0, 248, 248)]
    assert simulate(ok, ClusterSpec.uniform(1, name), route, knobs).metrics["completed"] == 1


def test_request_too_large_for_one_replica_of_a_heterogeneous_cluster(tiny_profile, baseline):
    name = tiny_profile(32)
    route, knobs = baseline("llq")
    spec = ClusterSpec(replicas=(ReplicaSpec("llama3-8b/a10"), ReplicaSpec(name)))
    wl = [RequestSpec(0.0, 50, 50), RequestSpec(0.5, 1000, 10)]
    with pytest.raises(ValueError, match=r"request 1\b"):
        simulate(wl, spec, route, knobs)
