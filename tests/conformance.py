"""What every registered problem and executor must do (like Optuna's storage test suites):
import these checks into a test module and parametrise them over problems / executors.

A problem passes when its splits exist, every baseline runs and the reference scores 1.0,
results are the same in two separate job processes, the simulator's fast path equals its
reference mode (simulated problems), a nonsense answer is one line, and `glia-evo simulate
--json` prints the documented schema.
"""
import json
import os
import subprocess
import sys

from cli_helpers import run_glia
from glia_evo.evaluation import evaluate
from glia_evo.evaluation.parallel import evaluate_many
from glia_evo.problems import Problem

SPLITS = ("train", "validation", "test", "quick")
SIMULATE_JSON_KEYS = {"problem", "policy", "fitness", "status", "error", "scenarios", "summary",
                      "reference"}


def nonsense(problem: Problem) -> str:
    return "".join(f"def {e}(*args):\n    return 'nonsense'\n\n" for e in problem.entrypoints)


def check_splits(problem: Problem) -> None:
    for split in SPLITS:
        instances = problem.split(split)
        assert instances, f"{problem.name}: split {split} is empty"
        for inst in instances:
            assert inst.seed in inst.scenario.seeds or split in ("test", "quick"), inst.name
    train = {i.name for i in problem.split("train")}
    assert not train & {i.name for i in problem.split("test")}, "train and test share instances"


def check_baselines(problem: Problem) -> None:
    names = problem.baseline_names()
    assert problem.reference in names and set(problem.seeds()) <= set(names)
    quick = problem.split("quick")
    results = evaluate_many([problem.baseline_source(n) for n in names], problem, quick,
                            workers=2)
    for name, result in zip(names, results):
        assert result.status == "ok", (name, result.error)
        assert result.fitness > 0, name
        if name == problem.reference:
            assert abs(result.fitness - 1.0) < 1e-9, result.fitness


_EVERY_BASELINE = """
import json, sys
from glia_evo.evaluation import evaluate
from glia_evo.problems import get_problem
problem = get_problem(sys.argv[1])
quick = problem.split("quick")
out = {n: (lambda r: [r.status, r.fitness, r.scenarios])(
    evaluate(problem.baseline_source(n), problem, quick)) for n in problem.baseline_names()}
json.dump(out, sys.stdout, sort_keys=True)
"""


def check_determinism_across_processes(problem: Problem) -> None:
    """Every baseline gives the same metrics, bit for bit, in two fresh interpreters with
    different hash seeds (set and dict order must never reach a result), and in job processes."""
    runs = []
    for hashseed in ("0", "31337"):
        proc = subprocess.run([sys.executable, "-c", _EVERY_BASELINE,
                               problem.origin or problem.key],
                              capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONHASHSEED": hashseed})
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(proc.stdout)
    assert runs[0] == runs[1]
    source = problem.baseline_source(problem.seeds()[-1])
    quick = problem.split("quick")
    [a] = evaluate_many([source], problem, quick, workers=1)
    assert a.status == "ok"
    in_job = json.loads(json.dumps([a.status, a.fitness, a.scenarios]))
    assert in_job == json.loads(runs[0])[problem.seeds()[-1]]


def check_fast_path_is_reference_mode(problem: Problem) -> None:
    if not problem.simulated:
        return
    source = problem.baseline_source(problem.reference)
    quick = problem.split("quick")
    fast = evaluate(source, problem, quick, fast=True)
    slow = evaluate(source, problem, quick, fast=False)
    assert fast.scenarios == slow.scenarios


def check_nonsense_is_one_line(problem: Problem) -> None:
    [result] = evaluate_many([nonsense(problem)], problem, problem.split("quick"), workers=1)
    assert result.status in ("invalid", "error"), result.status
    assert result.error and "\n" not in result.error and len(result.error) < 600, result.error


def check_simulate_json(spec: str, problem: Problem) -> None:
    proc = run_glia("simulate", "--problem", spec, "--policy", problem.reference, "--split",
                    "quick", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) >= SIMULATE_JSON_KEYS and out["problem"] == problem.name
    assert out["status"] == "ok" and out["reference"]["policy"] == problem.reference
    assert set(out["scenarios"]) == {i.name for i in problem.split("quick")}


PROBLEM_CHECKS = (check_splits, check_baselines, check_determinism_across_processes,
                  check_fast_path_is_reference_mode, check_nonsense_is_one_line)


def check_baselines_json(spec: str, problem: Problem) -> None:
    """`glia-evo baselines --json` on the problem's first quick scenario: every baseline in the
    problem's order, each ok, the reference at 1.0 and named with its metric per instance."""
    scenario = problem.split("quick")[0].scenario.name
    proc = run_glia("baselines", "--problem", spec, "--scenario", scenario, "--workers", "2",
                    "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["problem"] == problem.name and out["reference"] == problem.reference
    assert [b["policy"] for b in out["baselines"]] == problem.baseline_names()
    by_name = {b["policy"]: b for b in out["baselines"]}
    assert all(b["status"] == "ok" and set(b) >= SIMULATE_JSON_KEYS for b in out["baselines"])
    assert abs(by_name[problem.reference]["fitness"] - 1.0) < 1e-9
    for b in out["baselines"]:
        assert b["reference"]["policy"] == problem.reference
        assert set(b["scenarios"]) == set(by_name[problem.reference]["scenarios"])
