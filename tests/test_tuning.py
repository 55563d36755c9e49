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


# --- tuning that pays for itself (trials through the cascade, no set twice, early stop) ----------
# `hold` > 0.5: admit a request only when nothing runs, a valid knob set that makes every
# simulation crawl (the scheduler is called at every iteration with a long queue)
SLOW_KNOB = """
KNOBS = {"hold": (0.0, 0.0, 1.0)}


def schedule(pending, active, replica, now, knobs):
    if knobs["hold"] > 0.5:
        return [] if active else [pending[0].id]
    return [r.id for r in pending]
"""


def _runs(tmp_path, **cfg_changes):
    from glia_evo.config import RunConfig
    from glia_evo.tuning_runs import TuningRuns
    from population import Islands, Store
    cfg = RunConfig()
    for section, values in cfg_changes.items():
        for k, v in values.items():
            setattr(getattr(cfg, section), k, v)
    store = Store(tmp_path / "state.sqlite")
    islands = Islands(store, 1, 4, 0)
    entry = lambda src: ["schedule"] if "def schedule" in src else ["route"]   # noqa: E731
    return cfg, store, TuningRuns(cfg, store, islands, tmp_path,
                                  lambda src: check_source(src, entry(src)))


def test_a_knob_set_that_slows_the_simulation_is_cut_by_the_cascade_timeout(tmp_path):
    import time
    from glia_evo.evaluation import EvalResult
    from glia_evo.jobs import evaluate_job
    from population import Candidate
    cfg, store, runs = _runs(tmp_path)
    cand = Candidate(source=SLOW_KNOB, island=0, operator="mutate", status="ok", fitness=1.0,
                     extra={"stage1_fitness": 1.0})
    store.add(cand)
    runs.islands.insert(cand)
    assert runs.consider(cand) is cand
    runs.study.tuner.study.enqueue_trial({"hold": 0.9})     # the crawling knob set, first
    trial, job, cached = runs.next_job("scheduling", "train", (), cascade={
        "cascade": True, "cascade_split": "quick", "threshold": 0.8, "cascade_timeout_s": 1.0})
    assert trial.knobs == {"hold": 0.9} and cached is None and job.cascade
    t0 = time.perf_counter()
    result = EvalResult(**evaluate_job(job))
    assert time.perf_counter() - t0 < 30                  # not the 300 s evaluation timeout
    assert result.status == "timeout" and "limit for this stage" in result.error
    assert result.diagnostics["cascade"]["stage"] == 1
    runs.told(trial, result, cut=True)
    stats = runs.stats()
    assert stats["cut_by_cascade"] == 1 and stats["trials"] == 1
    # the same knob set for the same code is never evaluated again
    runs.study.tuner.study.enqueue_trial({"hold": 0.9})
    again, _, cached = runs.next_job("scheduling", "train", ())
    assert again.knobs == {"hold": 0.9} and cached["status"] == "timeout"
    store.close()


def test_own_knobs_are_not_evaluated_again_and_a_study_without_gain_stops_early(tmp_path):
    from glia_evo.evaluation import EvalResult
    from glia_evo.tuning_runs import PROBE_TRIALS
    from population import Candidate
    cfg, store, runs = _runs(tmp_path, tuning={"trials": 8})
    hra = baseline_source("routing", "hra")
    cand = Candidate(source=hra, island=0, operator="mutate", status="ok", fitness=1.5)
    store.add(cand)
    runs.islands.insert(cand)
    assert runs.consider(cand) is cand
    tuner = runs.study.tuner
    assert tuner.finished() == 1 and tuner.remaining() == 7      # trial 0 known, not run
    seen = []
    child = None
    for _ in range(PROBE_TRIALS):
        trial, job, _ = runs.next_job("routing", "train", ())
        seen.append(trial.knobs)
        child = runs.told(trial, EvalResult(status="ok", fitness=1.4, scenarios={"x#0": {}}))
    assert child is None and runs.study is None                   # stopped, nothing gained
    stats = runs.stats()
    assert stats["stopped_early"] == 1 and stats["trials"] == PROBE_TRIALS
    assert stats["own_known"] == 1 and stats["improved"] == 0
    assert runs.share() < 0.3                                     # tuning did not pay: less
    store.close()


def test_studies_draw_different_first_knob_sets_and_start_from_earlier_winners(tmp_path):
    spec = {"a": (0.5, 0.0, 1.0), "b": (0.2, 0.0, 1.0)}
    first = Tuner("c000001", spec, tmp_path / "j", seed=0, trials=4, own_fitness=1.0)
    second = Tuner("c000002", spec, tmp_path / "j", seed=0, trials=4, own_fitness=1.0,
                   warm=[{"a": 0.9, "b": 0.1}])
    assert first.finished() == 1 and first.remaining() == 3       # trial 0 recorded, not run
    assert second.ask()[1] == {"a": 0.9, "b": 0.1}               # an earlier winner, first
    assert first.ask()[1] != second.ask()[1]                      # their own random starts


def test_a_program_whose_code_never_reads_its_knobs_is_not_tuned(tmp_path):
    from population import Candidate
    cfg, store, runs = _runs(tmp_path)
    unused = ('KNOBS = {"w": (0.5, 0.0, 1.0)}\n\n\ndef route(queue, replicas, now, knobs):\n'
              '    return [(q.id, replicas[0].id) for q in queue]\n')
    cand = Candidate(source=unused, island=0, operator="mutate", status="ok", fitness=1.0)
    store.add(cand)
    runs.islands.insert(cand)
    assert runs.consider(cand) is None and runs.study is None
    assert runs.stats()["not_tuned_unused_knobs"] == 1
    store.close()
