"""The simulator's policy hooks (sim/hooks.py): one class per decision kind with its own answer
checks; `simulate(policies=...)` gives the same run as the keyword pairs."""
import pytest

from sim import PolicyError, PolicyInvalid, simulate
from sim.cluster import ClusterSpec
from sim.hooks import HOOKS, Route, Scale, Schedule, hooks_of
from sim.policies import load_trusted
from sim.workload import RequestSpec


def _workload(n=40):
    return [RequestSpec(arrival_s=i * 0.05, prompt_tokens=200 + 37 * (i % 9),
                        output_tokens=20 + 11 * (i % 5)) for i in range(n)]


def _spec():
    return ClusterSpec.uniform(2)


def test_policies_mapping_equals_the_keyword_pairs():
    route, knobs = (lambda f, k: (f["route"], k))(*load_trusted("routing", "llq"))
    sched_fns, sched_knobs = load_trusted("scheduling", "shortest_prompt_first")
    a = simulate(_workload(), _spec(), route, knobs, schedule=sched_fns["schedule"],
                 schedule_knobs=sched_knobs)
    b = simulate(_workload(), _spec(), policies={"route": (route, knobs),
                                                 "schedule": Schedule(sched_fns["schedule"],
                                                                      sched_knobs)})
    assert a.metrics == b.metrics


def test_each_kind_checks_its_own_answers():
    assert set(HOOKS) == {"route", "schedule", "scale"}
    with pytest.raises(PolicyInvalid, match="route must return a list"):
        simulate(_workload(), _spec(), policies={"route": lambda q, r, now, k: None})
    with pytest.raises(PolicyInvalid, match="schedule returned request id 99999"):
        simulate(_workload(), _spec(), policies={
            "route": lambda q, r, now, k: [(q[0].id, 0)] if q else [],
            "schedule": lambda p, a, rep, now, k: [99999]})
    assert Scale(len).check(3, 1, 4) == 3
    with pytest.raises(PolicyInvalid, match="outside"):
        Scale(len).check(9, 1, 4)


def test_a_policy_that_raises_is_reported_with_its_kind():
    def broken(queue, replicas, now, knobs):
        raise KeyError("oops")
    with pytest.raises(PolicyError) as info:
        simulate(_workload(), _spec(), policies={"route": Route(broken)})
    assert "route" in str(info.value)


def test_unknown_or_doubled_hooks_are_refused():
    route = load_trusted("routing", "llq")[0]["route"]
    with pytest.raises(ValueError, match="unknown policy hook 'evict'"):
        hooks_of({"evict": route})
    with pytest.raises(ValueError, match="route given twice"):
        simulate(_workload(), _spec(), route, policies={"route": route})
    with pytest.raises(ValueError, match="needs a route policy"):
        simulate(_workload(), _spec(), policies={})
