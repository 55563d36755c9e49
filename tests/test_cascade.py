"""glia_evo.evaluation.cascade.evaluate_cascade: bad candidates stop after the cheap stage, good
ones go on."""
from __future__ import annotations

import pytest

from glia_evo.evaluation.cascade import evaluate_cascade
from glia_evo.evaluation import EvalResult
from glia_evo.evaluation.parallel import evaluate_many, make_pool
from glia_evo.problems import Scenario, get_problem
from sim import ClusterSpec, ReplicaSpec
from sim.policies import baseline_source
from sim.workload import glia_workload

ROUTING = get_problem("routing")
LLQ = baseline_source("routing", "llq")
ALL_TO_ZERO = "def route(queue, replicas, now, knobs):\n    return [(q.id, 0) for q in queue]\n"


def small_workload(seed: int):
    return glia_workload(seed, duration_s=20.0)


def exploding_workload(seed: int):
    raise ValueError("stage 2 was simulated")


CLUSTER = ClusterSpec(replicas=(ReplicaSpec("llama3-8b/a10"),) * 2)
SMALL = Scenario("small", "about 200 requests on 2 x A10", CLUSTER, small_workload,
                 seeds=(0, 1, 2))
TRAP = Scenario("trap", "any simulation of it raises", CLUSTER, exploding_workload, seeds=(0,))
STAGE1 = SMALL.instances([0])
STAGE2 = SMALL.instances([1, 2])


@pytest.fixture(scope="module")
def pool():
    with make_pool(2, timeout_s=3, memory_mb=512) as p:
        yield p


def test_bad_candidate_stops_at_stage_one(pool):
    # stage 2 is a trap: simulating any of it would raise, so reaching the end proves it never ran
    result = evaluate_cascade(ALL_TO_ZERO, ROUTING, stage1=STAGE1, stage2=TRAP.instances(),
                              pool=pool)
    assert result.status == "ok" and 0 < result.fitness < 0.8
    assert list(result.scenarios) == ["small#0"]
    info = result.diagnostics["cascade"]
    assert info["stage"] == 1 and info["passed"] is False
    assert info["stage1_fitness"] == result.fitness
    assert info["bar"] == 0.8 and info["threshold"] == 0.8 and info["baseline_fitness"] == 1.0
    assert "stage2_fitness" not in info


def test_the_trap_really_springs():
    with pytest.raises(ValueError, match="stage 2 was simulated"):
        evaluate_many([LLQ], ROUTING, TRAP.instances(), workers=1, timeout_s=30)


def test_good_candidate_goes_through_both_stages(pool):
    result = evaluate_cascade(LLQ, ROUTING, stage1=STAGE1, stage2=STAGE2, pool=pool)
    assert result.status == "ok"
    assert list(result.scenarios) == ["small#1", "small#2"]
    info = result.diagnostics["cascade"]
    assert info["stage"] == 2 and info["passed"] is True
    assert info["stage1_fitness"] == 1.0 and info["stage1_instances"] == ["small#0"]
    assert info["stage2_instances"] == ["small#1", "small#2"]
    [direct] = evaluate_many([LLQ], ROUTING, STAGE2, pool=pool)
    assert result.fitness == info["stage2_fitness"] == direct.fitness
    assert result.scenarios == direct.scenarios
    assert result.duration_s == pytest.approx(info["stage1_duration_s"] + info["stage2_duration_s"])


def test_the_bar_scales_with_the_baseline_fitness(pool):
    result = evaluate_cascade(LLQ, ROUTING, stage1=STAGE1, stage2=TRAP.instances(),
                              baseline_fitness=1.5, threshold=0.9, pool=pool)
    info = result.diagnostics["cascade"]
    assert info["stage"] == 1 and info["bar"] == pytest.approx(1.35)
    assert result.fitness == 1.0 and list(result.scenarios) == ["small#0"]
    passed = evaluate_cascade(LLQ, ROUTING, stage1=STAGE1, stage2=STAGE2,
                              baseline_fitness=1.2, threshold=0.8, pool=pool)
    assert passed.diagnostics["cascade"]["passed"] is True


@pytest.mark.parametrize("source, status", [
    ("def route(queue, replicas, now, knobs):\n    return [(\n", "error"),
    ("def route(queue, replicas, now, knobs):\n    while True:\n        pass\n", "timeout"),
    ("def route(queue, replicas, now, knobs):\n    return [(q.id, 7) for q in queue]\n",
     "invalid"),
], ids=["syntax-error", "infinite-loop", "unknown-replica"])
def test_a_failing_candidate_stops_at_stage_one(pool, source, status):
    result = evaluate_cascade(source, ROUTING, stage1=STAGE1, stage2=TRAP.instances(), pool=pool)
    assert result.status == status and result.fitness == 0.0
    info = result.diagnostics["cascade"]
    assert info["stage"] == 1 and info["stage1_status"] == status and not info["passed"]


def test_default_first_stage_is_the_quick_split():
    quick = [i.name for i in ROUTING.split("quick")]
    result = evaluate_cascade(ALL_TO_ZERO, ROUTING, workers=1, timeout_s=60)
    info = result.diagnostics["cascade"]
    assert info["stage"] == 1 and info["stage1_instances"] == quick
    assert list(result.scenarios) == quick


# admits a request only when nothing runs: the replica serves one request at a time, the queue
# builds up and `schedule` is called at every iteration with it: a valid but very slow program
SERIAL = """
def schedule(pending, active, replica, now, knobs):
    return [] if active else [pending[0].id]
"""


def test_a_first_stage_past_cascade_timeout_s_is_a_timeout_without_the_second():
    import time
    from glia_evo.evaluation.jobs import EvalJob, evaluate_job
    job = EvalJob(source=SERIAL, problem="scheduling", split="train", cascade=True,
                  threshold=0.0, cascade_timeout_s=1.0)
    t0 = time.perf_counter()
    result = EvalResult(**evaluate_job(job))
    assert time.perf_counter() - t0 < 20
    assert result.status == "timeout"
    assert "still simulating after 1 s, the limit for this stage" in result.error
    assert result.error.startswith("heavy_tail_short#101")
    assert result.diagnostics["cascade"]["passed"] is False     # stage 2 never ran
    fcfs = EvalJob(source=baseline_source("scheduling", "fcfs"), problem="scheduling",
                   split="quick", cascade=True, threshold=0.0, cascade_timeout_s=1.0)
    assert evaluate_job(fcfs)["status"] == "ok"                  # a normal program: far inside
