"""Routing baselines on hand-built states, and how `simulate` treats a misbehaving router."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

import sim
from sim import ClusterSpec, RequestSpec, simulate
from sim.policies import baseline_names, baseline_source

BS = 16


def req(rid, prompt=100, processed=0, arrival=None, restarts=0):
    """A stand-in for sim.views.RequestView."""
    return SimpleNamespace(id=rid, arrival_time=float(rid if arrival is None else arrival),
                           prompt_tokens=prompt, processed_tokens=processed, generated_tokens=0,
                           restarts=restarts, replica=None)


_filler = iter(range(10**6, 10**7))


def rep(rid, *, pending=0, active=0, num_blocks=1000, free_blocks=None, state="ready"):
    """A stand-in for sim.views.ReplicaView; pending/active are counts or lists of requests."""
    if isinstance(pending, int):
        pending = [req(next(_filler), prompt=16) for _ in range(pending)]
    if isinstance(active, int):
        active = [req(next(_filler), prompt=16, processed=16) for _ in range(active)]
    if free_blocks is None:
        free_blocks = num_blocks
    return SimpleNamespace(id=rid, gpu="a10", state=state, num_blocks=num_blocks, block_size=BS,
                           chunk_size=8192, max_batch=256, num_pending=len(pending),
                           num_active=len(active), free_blocks=free_blocks,
                           used_blocks=num_blocks - free_blocks, pending=list(pending),
                           active=list(active))


def burst(n, start=0, prompt=100):
    return [req(start + i, prompt=prompt) for i in range(n)]


def as_dict(answer):
    ids = [r for r, _ in answer]
    assert len(ids) == len(set(ids)), "a request dispatched twice"
    return dict(answer)


def test_every_baseline_is_shipped_and_loads(baseline):
    names = baseline_names("routing")
    assert names[:8] == ["random", "round_robin", "lor", "llq", "least_kv", "power_of_two", "hra",
                         "expert"]
    for name in names:
        route, knobs = baseline(name)
        assert callable(route) and isinstance(knobs, dict)
        assert "def route(queue, replicas, now, knobs)" in baseline_source("routing", name)
        assert route([], [rep(0), rep(1)], 0.0, knobs) == []   # an empty queue: nothing to do
    with pytest.raises(KeyError):
        baseline("no_such_policy")


# --- llq / lor / round robin ---------------------------------------------------------------------

def test_llq_picks_fewest_pending_plus_active(baseline):
    route, knobs = baseline("llq")
    reps = [rep(0, pending=2, active=3), rep(1, pending=0, active=4), rep(2, pending=3, active=0)]
    assert route([req(7)], reps, 0.0, knobs) == [(7, 2)]
    reps = [rep(0, pending=0, active=5), rep(1, pending=1, active=1), rep(2, pending=0, active=3)]
    assert route([req(7)], reps, 0.0, knobs) == [(7, 1)]


def test_llq_spreads_a_burst(baseline):
    route, knobs = baseline("llq")
    reps = [rep(i, active=1) for i in range(4)]
    out = as_dict(route(burst(8), reps, 0.0, knobs))
    assert sorted(out) == list(range(8))
    assert sorted(list(out.values()).count(i) for i in range(4)) == [2, 2, 2, 2]
    # uneven start: every decision goes to a currently least loaded replica
    loads = {0: 5, 1: 0, 2: 2, 3: 1}
    reps = [rep(i, pending=loads[i] // 2, active=loads[i] - loads[i] // 2) for i in range(4)]
    for rid, target in route(burst(9), reps, 0.0, knobs):
        assert loads[target] == min(loads.values())
        loads[target] += 1
    # 17 requests in all: the three light replicas are levelled up to 4 and 0 stays at 5
    assert sorted(loads.values()) == [4, 4, 4, 5]


def test_llq_and_lor_skip_replicas_that_are_not_ready(baseline):
    for name in ("llq", "lor", "least_kv", "round_robin", "random", "power_of_two", "hra",
                 "expert"):
        route, knobs = baseline(name)
        reps = [rep(0, state="draining"), rep(1, active=50, pending=10, free_blocks=100),
                rep(2, state="starting")]
        out = route(burst(5, prompt=16), reps, 0.0, knobs)
        assert out and all(target == 1 for _, target in out), name


def test_lor_counts_pending_only(baseline):
    route, knobs = baseline("lor")
    reps = [rep(0, pending=1, active=0), rep(1, pending=0, active=40)]
    assert route([req(3)], reps, 0.0, knobs) == [(3, 1)]
    llq, llq_knobs = baseline("llq")
    assert llq([req(3)], reps, 0.0, llq_knobs) == [(3, 0)]   # llq would choose the other one
    out = as_dict(route(burst(4), [rep(0, pending=2), rep(1, active=9)], 0.0, knobs))
    assert list(out.values()).count(1) == 3 and list(out.values()).count(0) == 1


def test_round_robin_by_id_mod_n(baseline):
    route, knobs = baseline("round_robin")
    reps = [rep(0), rep(1, active=100), rep(2)]
    queue = [req(i) for i in (5, 0, 1, 2, 3, 4, 10)]
    assert route(queue, reps, 0.0, knobs) == [(i, i % 3) for i in (5, 0, 1, 2, 3, 4, 10)]


# --- randomised baselines -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["random", "power_of_two"])
def test_random_baselines_are_seeded_and_valid(baseline, name):
    reps = [rep(i, active=i) for i in range(5)]

    def run(seed):
        route, knobs = baseline(name, seed)
        return [route(burst(10, start=10 * k), reps, float(k), knobs) for k in range(10)]

    a, b, c = run(1), run(1), run(2)
    assert a == b
    assert a != c
    chosen = [t for answer in a for _, t in answer]
    assert set(chosen) <= {0, 1, 2, 3, 4}
    assert [r for answer in a for r, _ in answer] == list(range(100))
    if name == "random":
        assert set(chosen) == {0, 1, 2, 3, 4}


def test_power_of_two_never_picks_the_worse_of_its_pair(baseline):
    route, knobs = baseline("power_of_two", 3)
    reps = [rep(0, active=100)] + [rep(i) for i in (1, 2, 3)]
    for _ in range(20):
        out = route(burst(10), reps, 0.0, knobs)
        assert all(t != 0 for _, t in out)   # replica 0 loses every pair it is drawn in
    one = route(burst(3), [rep(4), rep(5, state="draining")], 0.0, knobs)
    assert [t for _, t in one] == [4, 4, 4]


# --- least_kv ---------------------------------------------------------------------------------------

def test_least_kv_counts_pending_prompts_as_used(baseline):
    route, knobs = baseline("least_kv")
    promised = [req(90, prompt=80 * BS), req(91, prompt=5)]          # 80 + 1 blocks
    reps = [rep(0, free_blocks=100, pending=promised), rep(1, free_blocks=50)]
    assert route([req(1, prompt=16)], reps, 0.0, knobs) == [(1, 1)]
    reps = [rep(0, free_blocks=100, pending=[req(90, prompt=40 * BS)]), rep(1, free_blocks=50)]
    assert route([req(1, prompt=16)], reps, 0.0, knobs) == [(1, 0)]


def test_least_kv_updates_after_each_choice(baseline):
    route, knobs = baseline("least_kv")
    reps = [rep(0, free_blocks=100), rep(1, free_blocks=95)]
    queue = [req(i, prompt=10 * BS) for i in range(4)]   # 10 blocks each
    assert route(queue, reps, 0.0, knobs) == [(0, 0), (1, 1), (2, 0), (3, 1)]
    # a tie goes to the lower id
    assert route([req(0)], [rep(3, free_blocks=7), rep(2, free_blocks=7)], 0.0, knobs) == [(0, 2)]


# --- hra ---------------------------------------------------------------------------------------------

def hra_need(prompt, headroom=0.6):
    return math.ceil(prompt * (1 + headroom) / BS)


def test_hra_sorts_by_prompt_then_arrival(baseline):
    route, knobs = baseline("hra")
    queue = [req(0, prompt=500), req(1, prompt=20), req(2, prompt=300), req(3, prompt=20,
                                                                              arrival=-1.0)]
    out = route(queue, [rep(0), rep(1)], 0.0, knobs)
    assert [r for r, _ in out] == [3, 1, 2, 0]


def test_hra_holds_what_fits_nowhere_and_everything_behind_it(baseline):
    route, knobs = baseline("hra")
    # 100 blocks, 20 free: a 160-token prompt needs ceil(160*1.6/16) = 16 blocks, leaving 4 >= 3
    reps = [rep(0, num_blocks=100, free_blocks=20), rep(1, num_blocks=100, free_blocks=10)]
    assert route([req(0, prompt=160)], reps, 0.0, knobs) == [(0, 0)]
    # 176 tokens -> 18 blocks: 2 left < 3 % of 100; fits nowhere
    assert route([req(0, prompt=176)], reps, 0.0, knobs) == []
    # small requests go first; the big one stops the loop, and later (bigger) ones wait too
    queue = [req(0, prompt=176), req(1, prompt=16), req(2, prompt=16), req(3, prompt=5000)]
    out = route(queue, reps, 0.0, knobs)
    assert [r for r, _ in out] == [1, 2]


def test_hra_reserves_headroom_for_pending_requests(baseline):
    route, knobs = baseline("hra")
    # replica 0 has more free blocks but its pending prompt reserves ceil(320*1.6/16) = 32
    reps = [rep(0, num_blocks=100, free_blocks=60, pending=[req(50, prompt=320)]),
            rep(1, num_blocks=100, free_blocks=40)]
    assert route([req(0, prompt=16)], reps, 0.0, knobs) == [(0, 1)]
    # 280 tokens need 28 blocks: they fit 60 free blocks, but not the 28 left after reserving
    assert hra_need(280) == 28
    assert route([req(0, prompt=280)], [rep(0, num_blocks=100, free_blocks=60)], 0.0,
                 knobs) == [(0, 0)]
    assert route([req(0, prompt=280)], [reps[0]], 0.0, knobs) == []
    assert route([req(0, prompt=240)], [reps[0]], 0.0, knobs) == [(0, 0)]   # 24: 4 left


def test_hra_reserves_what_a_restarted_request_prefills_again(baseline):
    route, knobs = baseline("hra")
    # an evicted request waiting to restart prefills its prompt and the 160 tokens it had
    # generated: ceil(320 * 1.6 / 16) = 32 blocks, not 16 (Vidur's num_prefill_tokens after
    # Request.restart(), what the paper's Fig. 12 reads)
    restarted = req(50, prompt=160, restarts=1)
    restarted.generated_tokens = 160
    reps = [rep(0, num_blocks=100, free_blocks=60, pending=[restarted])]
    assert route([req(0, prompt=240)], reps, 0.0, knobs) == [(0, 0)]    # 60 - 32 - 24 = 4
    assert route([req(0, prompt=256)], reps, 0.0, knobs) == []          # 60 - 32 - 26 = 2
    # several pending requests: one ceil over their sum, as in Fig. 12 (2 x 155 tokens x 1.6
    # = 496 tokens = 31 blocks; one ceil each would reserve 32)
    two = [rep(0, num_blocks=100, free_blocks=60, pending=[req(51, prompt=155),
                                                            req(52, prompt=155)])]
    assert route([req(0, prompt=256)], two, 0.0, knobs) == [(0, 0)]     # 60 - 31 - 26 = 3


def test_hra_lowest_projected_use_then_shorter_queue(baseline):
    route, knobs = baseline("hra")
    reps = [rep(0, num_blocks=100, free_blocks=50), rep(1, num_blocks=200, free_blocks=120)]
    assert route([req(0, prompt=16)], reps, 0.0, knobs) == [(0, 1)]   # 40 % vs 50 % used
    reps = [rep(0, num_blocks=100, free_blocks=50, active=3),
            rep(1, num_blocks=100, free_blocks=50, active=1),
            rep(2, num_blocks=100, free_blocks=50, active=2)]
    assert route([req(0, prompt=16)], reps, 0.0, knobs) == [(0, 1)]
    # successive choices account for what was just sent
    reps = [rep(0, num_blocks=100, free_blocks=100), rep(1, num_blocks=100, free_blocks=100)]
    out = route([req(i, prompt=10 * BS) for i in range(4)], reps, 0.0, knobs)
    assert [t for _, t in out] == [0, 1, 0, 1]


def test_hra_knobs(baseline):
    route, knobs = baseline("hra")
    assert knobs == {"headroom": 0.6, "min_free": 0.03}
    reps = [rep(0, num_blocks=100, free_blocks=20)]
    q = [req(0, prompt=160)]        # 16 blocks with headroom 0.6, 10 without
    assert route(q, reps, 0.0, knobs) == [(0, 0)]
    assert route(q, reps, 0.0, {**knobs, "min_free": 0.05}) == []        # 4 left < 5
    assert route(q, reps, 0.0, {**knobs, "headroom": 1.0}) == []         # needs 20, 0 left
    big = [req(0, prompt=256)]      # 26 blocks with headroom 0.6, 16 with none
    assert route(big, reps, 0.0, knobs) == []
    assert route(big, reps, 0.0, {**knobs, "headroom": 0.0}) == [(0, 0)]
    assert route(big, reps, 0.0, {"headroom": 0.0, "min_free": 0.05}) == []   # 4 left < 5


# --- expert ------------------------------------------------------------------------------------------

def test_expert_shortest_first_and_cap(baseline):
    route, knobs = baseline("expert")
    assert knobs == {"cap": 0.94}
    held = [req(90, prompt=50 * BS, processed=60 * BS), req(91, prompt=20 * BS)]   # 60 + 20
    reps = [rep(0, num_blocks=100, active=held[:1], pending=held[1:])]
    # committed 80; a 14-block request reaches 94 = cap; a 15-block one would not fit
    assert route([req(0, prompt=14 * BS)], reps, 0.0, knobs) == [(0, 0)]
    assert route([req(0, prompt=14 * BS + 1)], reps, 0.0, knobs) == []
    assert route([req(0, prompt=15 * BS)], reps, 0.0, {"cap": 0.95}) == [(0, 0)]
    queue = [req(0, prompt=10 * BS), req(1, prompt=3 * BS), req(2, prompt=2 * BS),
             req(3, prompt=1 * BS)]
    # shortest first: 1 + 2 + 3 blocks fit (86), then 10 more would exceed 94: stop
    assert route(queue, reps, 0.0, knobs) == [(3, 0), (2, 0), (1, 0)]


def test_expert_least_committed_first(baseline):
    route, knobs = baseline("expert")
    reps = [rep(0, num_blocks=100, active=[req(90, prompt=30 * BS, processed=40 * BS)]),
            rep(1, num_blocks=200, active=[req(91, prompt=70 * BS)])]
    # 40 % vs 35 % committed
    assert route([req(0, prompt=BS)], reps, 0.0, knobs) == [(0, 1)]
    out = route([req(i, prompt=10 * BS) for i in range(3)], reps, 0.0, knobs)
    # 40/100 vs 70/200 -> 1 (80/200) -> 0 (40 vs 40 %: lower id) -> 1 (50/100 vs 40 %)
    assert [t for _, t in out] == [1, 0, 1]


# --- simulate against a misbehaving router --------------------------------------------------------

WL = [RequestSpec(0.1 * i, 40 + i, 10 + i) for i in range(12)]


def run_with(route, n=2, fast=True):
    return simulate(WL, ClusterSpec.uniform(n), route, fast=fast)


@pytest.mark.parametrize("fast", [True, False])
def test_unknown_replica_id(fast):
    def route(queue, replicas, now, knobs):
        return [(q.id, 17 if q.id == 3 else 0) for q in queue]
    with pytest.raises(sim.PolicyInvalid, match=r"\b17\b"):
        run_with(route, fast=fast)


@pytest.mark.parametrize("bad", [-1, 2, 1.0, True, "0", None])
def test_bad_replica_ids(bad):
    def route(queue, replicas, now, knobs):
        return [(q.id, bad) for q in queue]
    with pytest.raises(sim.PolicyInvalid, match="replica"):
        run_with(route)


def test_unknown_request_id():
    def route(queue, replicas, now, knobs):
        return [(q.id, 0) for q in queue] + ([(12345, 1)] if queue[0].id == 5 else [])
    with pytest.raises(sim.PolicyInvalid, match=r"\b12345\b"):
        run_with(route)


def test_request_already_dispatched_is_unknown():
    sent = []

    def route(queue, replicas, now, knobs):
        out = [(q.id, 0) for q in queue]
        if sent:
            out.append((sent[0], 1))
        sent.extend(q.id for q in queue)
        return out
    with pytest.raises(sim.PolicyInvalid, match=r"request id 0\b"):
        run_with(route)


def test_same_request_twice():
    def route(queue, replicas, now, knobs):
        return [(q.id, 0) for q in queue] + [(queue[-1].id, 1)]
    with pytest.raises(sim.PolicyInvalid, match=r"request id 0 .*twice"):
        run_with(route)


@pytest.mark.parametrize("answer", [
    lambda q: {q[0].id: 0},
    lambda q: "0,0",
    lambda q: 7,
    lambda q: {(q[0].id, 0)},
    lambda q: ((r.id, 0) for r in q),
    lambda q: [q[0].id],
    lambda q: [(q[0].id, 0, 1)],
    lambda q: [[q[0].id]],
    lambda q: 0,
    lambda q: "",
    lambda q: {},
])
def test_non_list_answers(answer):
    def route(queue, replicas, now, knobs):
        return answer(queue)
    with pytest.raises(sim.PolicyInvalid):
        run_with(route)


def test_pairs_as_lists_and_tuples_are_accepted():
    def route(queue, replicas, now, knobs):
        return tuple([q.id, q.id % 2] for q in queue)
    assert run_with(route).metrics["completed"] == len(WL)


@pytest.mark.parametrize("fast", [True, False])
def test_policy_that_raises(fast):
    def route(queue, replicas, now, knobs):
        if now > 0.35:
            raise ZeroDivisionError("boom")
        return [(q.id, 0) for q in queue]
    with pytest.raises(sim.PolicyError) as info:
        run_with(route, fast=fast)
    assert isinstance(info.value.original, ZeroDivisionError)
    assert info.value.entrypoint == "route"
    assert "ZeroDivisionError" in str(info.value) and "boom" in str(info.value)


@pytest.mark.parametrize("answer", [[], ()])
def test_policy_that_never_dispatches_stalls(answer):
    def route(queue, replicas, now, knobs):
        return answer
    with pytest.raises(sim.PolicyInvalid, match="queue"):
        run_with(route)


def test_policy_returning_none_is_invalid_with_a_hint():
    def route(queue, replicas, now, knobs):
        return None
    with pytest.raises(sim.PolicyInvalid, match="missing return"):
        run_with(route)


def test_policy_that_holds_one_request_forever_stalls():
    def route(queue, replicas, now, knobs):
        return [(q.id, 0) for q in queue if q.id != 4]
    with pytest.raises(sim.PolicyInvalid, match=r"1 request"):
        run_with(route)


def test_policy_that_holds_then_releases_completes():
    """Holding requests is legal as long as the router releases them on a later call."""
    def route(queue, replicas, now, knobs):
        if now < 0.55:
            return [(q.id, 0) for q in queue if q.id % 2 == 0]
        return [(q.id, 1) for q in queue]
    res = run_with(route)
    assert res.metrics["completed"] == len(WL)
    recs = res.requests
    assert all(r["replica"] == (0 if r["id"] % 2 == 0 and r["arrival_s"] < 0.55 else 1)
               for r in recs)
    held = [r for r in recs if r["id"] % 2 == 1 and r["arrival_s"] < 0.55]
    assert held and all(r["dispatched_s"] >= 0.55 for r in held)
