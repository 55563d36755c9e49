"""Issue 17's offline building blocks and the rule crossover: each applies to the problem's
shipped baselines, gives a program the sandbox accepts, and that program runs."""
import ast
import random

import pytest

from glia_evo.operators.filters import admit_projected, cooldown, predictive, shrink_guard
from glia_evo.operators.offline import OfflineMutator, rule_crossover, _wrappers
from glia_evo.operators.routing_blocks import headroom_admit
from glia_evo.evaluation.parallel import evaluate_many
from glia_evo.problems import get_problem
from population import Candidate
from sandbox.compile import check_source


def _apply(problem, base, op, seed=0, other=None) -> str:
    tree = ast.parse(problem.baseline_source(base))
    op(tree, random.Random(seed), other)
    source = ast.unparse(ast.fix_missing_locations(tree)) + "\n"
    check_source(source, problem.entrypoints)
    return source


@pytest.mark.parametrize("name,op", [("routing", headroom_admit), ("scheduling", admit_projected),
                                     ("autoscaling", predictive), ("autoscaling", shrink_guard)])
def test_block_applies_to_every_baseline_and_runs(name, op):
    problem = get_problem(name)
    sources = [_apply(problem, b, op, seed=i) for i, b in enumerate(problem.baseline_names())]
    # each block adds tunable knobs, and twice is refused (one rule of a kind per program)
    for s in sources:
        assert "KNOBS" in s
        with pytest.raises(Exception):
            op(ast.parse(s), random.Random(0))
    results = evaluate_many(sources[:2], problem, problem.split("quick"), workers=2)
    assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]


def test_headroom_admission_lifts_round_robin_on_the_quick_split():
    problem = get_problem("routing")
    plain = problem.baseline_source("round_robin")
    block = _apply(problem, "round_robin", headroom_admit)
    a, b = evaluate_many([plain, block], problem, problem.split("quick"), workers=2)
    assert b.fitness > 1.2 * a.fitness, (a.fitness, b.fitness)


def test_rule_crossover_carries_a_whole_rule_with_its_knobs_and_state():
    problem = get_problem("autoscaling")
    donor = ast.parse(_apply(problem, "threshold", cooldown))
    assert [r for _, r, _ in _wrappers(donor)] == ["cooldown1"]
    tree = ast.parse(problem.baseline_source("fixed"))
    why = rule_crossover(tree, random.Random(0), donor)
    source = ast.unparse(ast.fix_missing_locations(tree)) + "\n"
    check_source(source, problem.entrypoints)
    assert "added" in why and "cooldown1_STATE" in source and "'cool1'" in source
    assert "return cooldown1(" in source
    # the same rule with other knob values replaces this program's version of it
    again = ast.parse(source)
    with pytest.raises(Exception):
        rule_crossover(again, random.Random(0), ast.parse(source))    # nothing new to carry
    [res] = evaluate_many([source], problem, problem.split("quick"), workers=1)
    assert res.status == "ok", res.error


def test_the_mutator_proposes_rule_crossovers_deterministically():
    problem = get_problem("routing")
    mutator = OfflineMutator(problem.entrypoints, {}, {"rule_crossover": 1000})
    parent = Candidate(id="c1", source=problem.baseline_source("round_robin"))
    donor = Candidate(id="c2", source=_apply(problem, "llq", headroom_admit))
    a = mutator.propose(parent, [donor], {"seed": 5})
    b = mutator.propose(parent, [donor], {"seed": 5})
    assert a is not None and a.operator == "rule_crossover" and a.source == b.source
    assert "headroom1(" in a.source
