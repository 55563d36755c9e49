"""Optuna tuning on the worker pool: a mis-tuned program gets better, reproducibly."""
from glia_evo.evaluation import evaluate
from glia_evo.problems import get_problem
from glia_evo.tuning import Tuner, tune_program, with_knob_values
from sandbox.compile import check_source
from sandbox.pool import WorkerPool
from sim.policies import baseline_source


def test_tuning_improves_a_mis_tuned_hra_and_the_tuned_program_reproduces(tmp_path):
    hra = baseline_source("routing", "hra")
    bad = with_knob_values(hra, {"headroom": 2.0, "min_free": 0.2})
    spec = check_source(bad, ["route"])
    assert spec["headroom"][0] == 2.0 and spec["min_free"][0] == 0.2
    with WorkerPool(2, timeout_s=300, memory_mb=2048, cpu_s=300) as pool:
        out = tune_program(bad, spec, "routing", "quick", pool, trials=10,
                           journal=tmp_path / "optuna.journal", seed=0)
    assert out["trials"] == 10
    assert out["fitness"] > out["start_fitness"] * 1.05, out
    tuned = check_source(out["source"], ["route"])
    assert {k: v[0] for k, v in tuned.items()} == out["knobs"]
    problem = get_problem("routing")
    again = evaluate(out["source"], problem, problem.split("quick"))
    assert again.fitness == out["fitness"]        # the tuned child is exactly the best trial


def test_study_resumes_from_its_journal(tmp_path):
    spec = {"a": (0.5, 0.0, 1.0), "n": (3, 1, 8)}
    journal = tmp_path / "optuna.journal"
    first = Tuner("s", spec, journal, seed=1, trials=6)
    for _ in range(3):
        number, values = first.ask()
        assert 0 <= values["a"] <= 1 and 1 <= values["n"] <= 8 and isinstance(values["n"], int)
        first.tell(number, values["a"] + values["n"] / 8)
    dangling, _ = first.ask()                     # asked, never told: a killed run
    again = Tuner("s", spec, journal, seed=1, trials=6)
    assert again.finished() == 4 and again.remaining() == 2
    assert again.study.trials[dangling].state.name == "FAIL"
    assert again.best()[1] == max(t.value for t in again.study.trials if t.value is not None)
