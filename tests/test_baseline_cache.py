"""The baseline cache (glia_evo.evaluation.baseline_cache): JSON entries keyed by problem, split,
baseline and code version, validated on the way back; the held-out report takes baselines from it."""
from __future__ import annotations

import json
import pickle
from dataclasses import replace

import pytest

from glia_evo.evaluation import baseline_cache as bc
from glia_evo import heldout
from glia_evo.evaluation import evaluate
from glia_evo.problems import get_problem
from sim.policies import baseline_source


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(bc.CACHE_ENV, str(tmp_path / "cache"))
    return bc.BaselineCache()


@pytest.fixture(scope="module")
def quick():
    problem = get_problem("routing")
    instances = problem.split("quick")
    source = baseline_source("routing", problem.reference)
    return problem, instances, source, evaluate(source, problem, instances)


def test_the_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(bc.CACHE_ENV, str(tmp_path / "a"))
    assert bc.cache_dir() == tmp_path / "a"
    monkeypatch.delenv(bc.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert bc.cache_dir() == tmp_path / "xdg" / "glia-evo"
    monkeypatch.setenv(bc.CACHE_ENV, "off")
    assert bc.cache_dir() is None and not bc.BaselineCache().enabled


def test_a_result_comes_back_checked_and_only_for_the_same_inputs(cache, quick, monkeypatch):
    problem, instances, source, result = quick
    assert cache.get(problem, "quick", instances, problem.reference, source) is None
    cache.put(problem, "quick", instances, problem.reference, source, result)
    back = cache.get(problem, "quick", instances, problem.reference, source)
    assert back is not None and back.status == "ok"
    assert back.scenarios == result.scenarios and back.fitness == pytest.approx(1.0)
    assert (cache.hits, cache.misses) == (1, 1)
    # anything the result depends on changes the key
    assert cache.get(problem, "quick", instances, problem.reference, source + "\n") is None
    assert cache.get(problem, "test", instances, problem.reference, source) is None
    faster = [replace(instances[0], rate_scale=2.0)]
    assert cache.get(problem, "quick", faster, problem.reference, source) is None
    monkeypatch.setattr(bc, "code_version", lambda: "a recalibrated simulator")
    assert cache.get(problem, "quick", instances, problem.reference, source) is None


def test_the_code_version_covers_the_simulator_and_the_scenarios():
    files = {p.name for p in bc._code_files()}
    assert {"cluster.py", "replica.py", "workload.py", "run.py", "routing.py"} <= files
    assert any(p.suffix == ".csv" for p in bc._code_files())       # packaged traces too
    assert len(bc.code_version()) == 64


@pytest.mark.parametrize("tamper", ["forged_fitness", "nan", "missing_instance", "pickle",
                                    "not_json", "wrong_key", "negative_metric"])
def test_a_tampered_entry_is_ignored(cache, quick, tamper):
    problem, instances, source, result = quick
    other = baseline_source("routing", "round_robin")
    cache.put(problem, "quick", instances, problem.reference, source, result)
    cache.put(problem, "quick", instances, "round_robin", other,
              evaluate(other, problem, instances, reference=result.reference))
    key = bc.entry_key(problem, "quick", instances, "round_robin", other)
    path = cache._path(problem, key)
    entry = json.loads(path.read_text())
    name = instances[0].name
    if tamper == "forged_fitness":
        entry["result"]["fitness"] = 99.0     # recomputed from the metrics: not believed
    elif tamper == "nan":
        entry["result"]["scenarios"][name]["mean_e2e_s"] = float("nan")
    elif tamper == "missing_instance":
        entry["result"]["scenarios"] = {}
    elif tamper == "wrong_key":
        entry["key"] = "0" * 64
    elif tamper == "negative_metric":
        entry["result"]["scenarios"][name]["mean_e2e_s"] = -1.0
    if tamper == "pickle":
        path.write_bytes(pickle.dumps(entry))
    elif tamper == "not_json":
        path.write_text("{not json")
    else:
        path.write_text(json.dumps(entry))
    reference = {name: result.scenarios[name][problem.metric]}
    back = cache.get(problem, "quick", instances, "round_robin", other, reference=reference)
    if tamper == "forged_fitness":
        assert back is not None and back.fitness < 5
        assert back.fitness == pytest.approx(
            reference[name] / entry["result"]["scenarios"][name]["mean_e2e_s"])
    else:
        assert back is None


def test_the_report_simulates_a_baseline_only_once(cache, quick, monkeypatch):
    problem, instances, source, _ = quick
    names = [problem.reference, "round_robin"]
    best = baseline_source("routing", "least_kv")
    sources = [best] + [baseline_source("routing", n) for n in names]
    calls = []
    real = heldout.evaluate_many

    def counting(srcs, *args, **kwargs):
        calls.append(len(srcs))
        return real(srcs, *args, **kwargs)

    monkeypatch.setattr(heldout, "evaluate_many", counting)
    first = heldout._evaluate(sources, names, problem, "quick", instances, 2, None)
    second = heldout._evaluate(sources, names, problem, "quick", instances, 2, None)
    assert calls == [3, 1]                   # then only the best candidate
    assert [r.status for r in second] == ["ok"] * 3
    for a, b in zip(first, second):
        assert a.scenarios == b.scenarios
        assert a.fitness == pytest.approx(b.fitness)
