"""Tuning's first trials search near the program's own knobs (glia_evo.tuning.local_move), so
they pass the cascade and can pay: moves within range, integers kept integers, a move that
gains repeated twice as far, the same trials for the same seed and after a reopened journal."""
import pytest

from glia_evo.tuning import H0, LOCAL, Tuner, with_knob_values

SPEC = {"w": (0.5, 0.0, 2.0), "top": (2.0, 0.0, 2.0), "zero": (0.0, 0.0, 10.0),
        "n": (3, 1, 8), "fixed": (1.0, 1.0, 1.0)}
OWN = {k: v[0] for k, v in SPEC.items()}


def test_the_first_trials_are_moves_near_the_own_knobs_within_range(tmp_path):
    tuner = Tuner("c000001", SPEC, tmp_path / "j", seed=0, trials=9, own_fitness=1.0)
    seen = []
    for _ in range(8):
        number, values = tuner.ask()
        assert set(values) == set(SPEC) and values["fixed"] == 1.0
        for k, (_, low, high) in SPEC.items():
            assert low <= values[k] <= high, (k, values)
        assert type(values["n"]) is int
        assert tuner.study.trials[number].user_attrs[LOCAL]["center"] == 0
        seen.append(values)
        tuner.tell(number, 0.9)                   # every move worse: the step narrows
    assert OWN not in seen and len({tuple(sorted(v.items())) for v in seen}) == len(seen)
    for values in seen:                           # no farther than the first step
        assert abs(values["w"] - 0.5) <= H0 * 0.5 + 1e-9
        assert abs(values["top"] - 2.0) <= H0 * 2.0 + 1e-9
        assert values["zero"] <= H0 * 10 / 4 + 1e-9       # a knob at 0: a quarter of its range
        assert abs(values["n"] - 3) == 1                    # integers move by at least 1
    first, mirror = seen[:2]                      # a pair of opposite moves
    assert first["w"] - 0.5 == -(mirror["w"] - 0.5) != 0
    assert first["n"] - 3 == -(mirror["n"] - 3)
    assert {first["top"], mirror["top"]} == {2.0, 2.0 * (1 - H0)}   # clipped at its bound
    assert abs(seen[2]["w"] - 0.5) == pytest.approx(H0 / 2 * 0.5)   # both worse: half the step


def test_a_move_that_gains_is_repeated_twice_as_far(tmp_path):
    tuner = Tuner("c000001", SPEC, tmp_path / "j", seed=0, trials=9, own_fitness=1.0)
    number, first = tuner.ask()
    tuner.tell(number, 1.2)                       # the first move gains: the new incumbent
    number, again = tuner.ask()
    plan = tuner.study.trials[number].user_attrs[LOCAL]
    assert plan["kind"] == "pattern" and plan["center"] == 1 and plan["h"] == 2 * H0
    assert again["w"] == pytest.approx(first["w"] * (1 + 2 * H0 * (1 if first["w"] > 0.5 else -1)))


def _values(tuner, asks, fitness):
    out = []
    for _ in range(asks):
        number, values = tuner.ask()
        tuner.tell(number, fitness(values))
        out.append(values)
    return out


def test_the_same_seed_asks_the_same_trials_and_a_reopened_study_continues_alike(tmp_path):
    def fitness(v):                               # a smooth bowl around w=1.1, n=5, zero=1
        return 3 - (v["w"] - 1.1) ** 2 - 0.01 * (v["n"] - 5) ** 2 - 0.01 * (v["zero"] - 1) ** 2
    own = fitness(OWN)
    straight = _values(Tuner("s", SPEC, tmp_path / "a", seed=3, trials=12, own_fitness=own),
                       10, fitness)
    assert straight == _values(Tuner("s", SPEC, tmp_path / "b", seed=3, trials=12,
                                     own_fitness=own), 10, fitness)
    assert max(map(fitness, straight)) > own      # the local search went uphill
    first = Tuner("s", SPEC, tmp_path / "c", seed=3, trials=12, own_fitness=own)
    head = _values(first, 4, fitness)
    ask = first.study.ask                         # a kill after the move is enqueued, before
    first.study.ask = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)   # it is asked
    try:
        first.ask()
    except KeyboardInterrupt:
        pass
    first.study.ask = ask
    reopened = Tuner("s", SPEC, tmp_path / "c", seed=3, trials=12, rerun_running=True)
    assert head + _values(reopened, 6, fitness) == straight


def test_a_short_study_improves_a_mis_tuned_hra_without_trials_cut_by_the_cascade(tmp_path):
    from glia_evo.evaluation import EvalResult, evaluate
    from glia_evo.evaluation.jobs import evaluate_job
    from glia_evo.problems import get_problem
    from population import Candidate
    from sim.policies import baseline_source
    from test_tuning import _runs
    cfg, store, runs = _runs(tmp_path, evaluation={"split": "quick"}, tuning={"trials": 4})
    problem = get_problem("routing")
    bad = with_knob_values(baseline_source("routing", "hra"), {"headroom": 2.0, "min_free": 0.2})
    own = evaluate(bad, problem, problem.split("quick")).fitness
    cand = Candidate(source=bad, island=0, operator="mutate", status="ok", fitness=own,
                     extra={"stage1_fitness": own})
    store.add(cand)
    runs.islands.insert(cand)
    assert runs.consider(cand) is cand
    cascade = {"cascade": True, "cascade_split": "quick", "threshold": 0.9,
               "cascade_timeout_s": 20.0}
    child = None
    while runs.study is not None:
        trial, job, cached = runs.next_job("routing", "quick", (), cascade=cascade)
        assert cached is None and job.cascade
        result = EvalResult(**evaluate_job(job))
        stage = result.diagnostics["cascade"]
        assert stage["stage"] == 2 and stage["passed"], (trial.knobs, stage)   # not cut
        child = runs.told(trial, result, cut=False)
    stats = runs.stats()
    assert stats["trials"] == 3 and stats["stopped_early"] == 0 and stats["improved"] == 1
    assert child is not None and child.fitness > own * 1.05, (own, child)
    assert child.operator == "tune" and child.extra["tuned_from"] == cand.id
    store.close()
