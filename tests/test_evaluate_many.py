"""evaluate_many with one knob set per program: the validation choice scores programs whose
knobs differ in one pool, and each program must get exactly its own knobs."""
import pytest

from glia_evo.evaluation.parallel import evaluate_many
from glia_evo.problems import get_problem
from sim.policies import baseline_source

ROUTING = get_problem("routing")
HRA = baseline_source("routing", "hra")


def test_each_program_is_scored_with_its_own_knobs():
    quick = ROUTING.split("quick")
    loose, tight = {"headroom": 2.0, "min_free": 0.2}, {"headroom": 1.05, "min_free": 0.02}
    together = evaluate_many([HRA, HRA, HRA], ROUTING, quick, knobs=[loose, None, tight],
                             workers=2)
    alone = [evaluate_many([HRA], ROUTING, quick, knobs=k, workers=1)[0]
             for k in (loose, None, tight)]
    assert [r.status for r in together] == ["ok"] * 3
    assert [r.fitness for r in together] == [r.fitness for r in alone]
    assert len({r.fitness for r in together}) == 3       # the knobs reached the programs


def test_a_knob_list_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="2 knob sets for 1 sources"):
        evaluate_many([HRA], ROUTING, ROUTING.split("quick"), knobs=[None, None])
