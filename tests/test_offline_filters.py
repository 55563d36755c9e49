"""The offline mutator's scheduling and autoscaling building blocks (operators/filters.py):
every block turns every shipped baseline into a valid program, and each does what it says."""
import ast
import random

import pytest

from glia_evo.evaluation import evaluate
from glia_evo.operators import filters
from glia_evo.operators.offline import Mutation, _prune_unused_knobs, for_problem
from glia_evo.problems import get_problem
from sandbox.compile import check_source
from sim.policies import baseline_source

BASELINES = {"scheduling": ("fcfs", "shortest_prompt_first", "aging"),
             "autoscaling": ("threshold", "target_utilisation", "fixed")}
OPERATORS = {"scheduling": filters.SCHEDULING_OPERATORS,
             "autoscaling": filters.AUTOSCALING_OPERATORS}


def apply(source: str, operator, seed: int = 1) -> tuple[str, str]:
    tree = ast.parse(source)
    what = operator(tree, random.Random(seed))
    _prune_unused_knobs(tree)
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n", what


def quick(problem_name: str, source: str, knobs: dict | None = None):
    problem = get_problem(problem_name)
    result = evaluate(source, problem, problem.split("quick"), knobs=knobs)
    assert result.status == "ok", (result.error, source)
    return next(iter(result.scenarios.values()))


@pytest.mark.parametrize("problem_name,op", [(p, op) for p in OPERATORS for op in OPERATORS[p]])
def test_every_block_makes_a_valid_program_of_every_baseline(problem_name, op):
    entry = get_problem(problem_name).entrypoints
    for base in BASELINES[problem_name]:
        child, what = apply(baseline_source(problem_name, base), OPERATORS[problem_name][op])
        spec = check_source(child, entry)
        assert any(name in what for name in spec), (what, spec)     # its knob is tunable
        quick(problem_name, child)
        with pytest.raises(Mutation):                                # one filter of each kind
            apply(child, OPERATORS[problem_name][op])


def test_for_problem_offers_the_problems_blocks():
    for name, ops in OPERATORS.items():
        assert set(ops) <= set(for_problem(get_problem(name)).operators)
    assert not set(filters.SCHEDULING_OPERATORS) & set(for_problem(get_problem("routing")).operators)


SPIKE = "def scale(cluster, now, knobs):\n" \
        "    return cluster.max_replicas if now < 60 else cluster.min_replicas\n"


def test_cooldown_holds_the_fleet_after_a_growth():
    child, _ = apply(SPIKE, filters.cooldown)
    plain, held = quick("autoscaling", SPIKE), quick("autoscaling", child, {"cool1": 300.0})
    assert held["gpu_seconds"] > 1.2 * plain["gpu_seconds"]        # shrank 240 s later


def test_admit_margin_leaves_memory_free_and_cuts_evictions():
    fcfs = baseline_source("scheduling", "fcfs")
    child, _ = apply(fcfs, filters.admit_margin)
    held = quick("scheduling", child, {"margin1": 0.2})
    assert held["restarts"] < quick("scheduling", fcfs)["restarts"]


def test_reorder_smallest_prefill_first_behaves_like_the_baseline(monkeypatch):
    monkeypatch.setattr(filters, "ORDER_KEYS", [k for k in filters.ORDER_KEYS
                                                if k[1] == "the smallest prefill first"])
    child, what = apply(baseline_source("scheduling", "fcfs"), filters.reorder)
    assert what == "admit in order of the smallest prefill first"   # no knob: no value
    spf = quick("scheduling", baseline_source("scheduling", "shortest_prompt_first"))
    fcfs = quick("scheduling", baseline_source("scheduling", "fcfs"))
    mine = quick("scheduling", child)
    assert mine["mean_e2e_s"] < fcfs["mean_e2e_s"]
    assert abs(mine["mean_e2e_s"] / spf["mean_e2e_s"] - 1) < 0.05
