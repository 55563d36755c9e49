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
    from glia_evo.evaluation.jobs import evaluate_job
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
    spec = {k: (0.5, 0.0, 1.0) for k in "abcdef"}
    first = Tuner("c000001", spec, tmp_path / "j", seed=0, trials=4, own_fitness=1.0)
    second = Tuner("c000002", spec, tmp_path / "j", seed=0, trials=4, own_fitness=1.0,
                   warm=[dict.fromkeys("abcdef", 0.9)])
    assert first.finished() == 1 and first.remaining() == 3       # trial 0 recorded, not run
    assert second.ask()[1] == dict.fromkeys("abcdef", 0.9)       # an earlier winner, first
    assert first.ask()[1] != second.ask()[1]            # their own random local directions


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


# --- knobs that matter, results shared by the knob-free hash, work instead of seconds -----------
DEAD_KNOB = """
KNOBS = {"w": (0.5, 0.0, 1.0)}


def route(queue, replicas, now, knobs):
    out = []
    for q in queue:
        if knobs["w"] > 5:              # never: the knob is read but changes nothing
            out.append((q.id, replicas[-1].id))
        else:
            best = min(replicas, key=lambda r: r.num_pending + r.num_active)
            out.append((q.id, best.id))
    return out
"""


def test_the_sensitivity_probe_starts_studies_only_for_programs_whose_knobs_matter(tmp_path):
    from glia_evo.bus import Bus
    from glia_evo.evaluation.evaluator import Evaluator
    from glia_evo.trials import Trials
    from population import Candidate
    cfg, store, runs = _runs(tmp_path, evaluation={"split": "quick", "cascade": False})
    problem = get_problem("routing")
    with WorkerPool(2, timeout_s=300, memory_mb=2048, cpu_s=300) as pool:
        evaluator = Evaluator(cfg, problem, pool, store, Bus(), lambda: None)
        evaluator.prepare()
        Trials(cfg, problem, runs, evaluator, store, runs.islands, Bus())   # attaches the probe
        dead = Candidate(source=DEAD_KNOB, island=0, operator="mutate", status="ok",
                         fitness=1.0)
        store.add(dead)
        runs.islands.insert(dead)
        assert runs.consider(dead) is None and runs.study is None
        stats = runs.stats()
        assert stats["not_tuned_insensitive"] == 1 and stats["studies"] == 0
        assert stats["probes"] == 3         # no stage-1 fitness known: its own knobs too
        assert stats["probe_seconds"] > 0 and stats["trial_work"] > 0   # tuning's cost
        hra = Candidate(source=with_knob_values(baseline_source("routing", "hra"),
                                                {"headroom": 2.0, "min_free": 0.2}),
                        island=0, operator="mutate", status="ok", fitness=1.3)
        store.add(hra)
        runs.islands.insert(hra)
        assert runs.consider(hra) is hra and runs.study is not None   # its knobs matter
    assert runs.stats()["studies"] == 1 and runs.stats()["probes"] == 6
    store.close()


def test_probe_knob_sets_and_what_counts_as_sensitive():
    from glia_evo.evaluation import EvalResult
    from glia_evo.tuning_runs import probe_sets, sensitive
    spec = {"a": (0.5, 0.0, 2.0), "n": (3, 1, 9), "fixed": (1.0, 1.0, 1.0)}
    assert probe_sets(spec) == [{"a": 1.5, "n": 7, "fixed": 1.0}]   # at 1/4: its own knobs
    assert probe_sets({"a": (0.1, 0.0, 1.0)}) == [{"a": 0.25}, {"a": 0.75}]
    same = EvalResult(status="rejected", fitness=1.2)
    assert not sensitive(1.2, [same, same])
    assert sensitive(1.2, [same, EvalResult(status="rejected", fitness=1.25)])
    assert sensitive(1.2, [same, EvalResult(status="timeout")])     # a crawl: knobs matter
    assert not sensitive(None, [same, same])                        # own knobs probed first
    assert sensitive(None, [EvalResult(status="crashed"), same])    # nothing to compare with


def test_trial_results_are_shared_by_the_knob_free_hash_across_studies(tmp_path):
    from glia_evo.evaluation import EvalResult
    from glia_evo.tuning_runs import knob_free_hash
    from population import Candidate, code_hash
    hra = baseline_source("routing", "hra")
    wider = hra.replace('"min_free": (0.03, 0.0, 0.2)', '"min_free": (0.05, 0.0, 0.3)')
    assert wider != hra and code_hash(wider) != code_hash(hra)     # the bounds count there
    assert knob_free_hash(wider) == knob_free_hash(hra)            # not here
    assert knob_free_hash(hra + "\nEXTRA = 1\n") != knob_free_hash(hra)   # code counts
    cfg, store, runs = _runs(tmp_path, tuning={"trials": 2})
    first = Candidate(source=hra, island=0, operator="mutate", status="ok", fitness=1.5)
    store.add(first)
    runs.islands.insert(first)
    assert runs.consider(first) is first
    trial, _, cached = runs.next_job("routing", "train", ())
    assert cached is None
    runs.told(trial, EvalResult(status="ok", fitness=1.4, scenarios={"x#0": {}}))
    assert runs.study is None                                      # 2 trials: done
    second = Candidate(source=wider, island=0, operator="mutate", status="ok", fitness=1.6)
    store.add(second)
    runs.islands.insert(second)
    assert runs.consider(second) is None        # the same code, knob bounds aside: tuned once
    assert runs.stats()["studies"] == 1
    store.close()


def test_the_share_counts_simulated_work_not_seconds(tmp_path):
    from glia_evo.evaluation import EvalResult
    cfg, store, runs = _runs(tmp_path, evaluation={"split": "quick", "cascade": False})
    problem = get_problem("routing")
    runs.attach(problem, lambda: {i.name: 1000 for i in problem.split("quick")}, None)
    fast = EvalResult(status="ok", fitness=1.0, duration_s=0.1)
    slow = EvalResult(status="ok", fitness=1.0, duration_s=100.0)
    assert runs.work(fast, "quick") == runs.work(slow, "quick") == \
        1000 * len(problem.split("quick"))
    with store.transaction():
        runs.count_candidate(slow)
    stats = runs.stats()
    assert stats["candidate_work"] == runs.work(slow, "quick") and stats["candidate_seconds"] == 100
    assert runs.within_share()
    cut = EvalResult(status="timeout", diagnostics={"cascade": {"stage": 1}})
    # a first stage cut by its timeout counts as a whole evaluation (train: no lengths given)
    assert runs.work(cut, "train") == runs.work(fast, "quick") + len(problem.split("train"))
    store.close()
