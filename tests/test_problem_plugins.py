"""Problems of your own: found by file, by module or as an installed plug-in (entry point), and
run end to end by the CLI without touching glia-evo's source."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import run_glia
from glia_evo.evaluation import evaluate
from glia_evo.problems import ProblemNotFound, get_problem

ROOT = Path(__file__).resolve().parents[1]
BINPACK = ROOT / "examples" / "binpack"
BINPACK_SPEC = f"{BINPACK / 'binpack_problem' / '__init__.py'}:PROBLEM"

FIRST_FIT_RAISES = '''
def pack(item, bins, knobs):
    for i, free in enumerate(bins):
        if free >= item:
            return i
    return bins[len(bins) + 5]
'''
OVERFILLS = '''
def pack(item, bins, knobs):
    return 0 if bins else -1
'''


def problem_file(tmp_path, body: str, name="my_problem.py") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def test_a_problem_file_is_found_with_an_absolute_key_and_its_own_baselines():
    problem = get_problem(BINPACK_SPEC)
    assert problem.name == "binpack" and problem.key == BINPACK_SPEC
    assert get_problem(problem.key) is problem
    assert problem.baseline_names() == ["next_fit", "first_fit", "best_fit"]
    assert not problem.simulated


@pytest.mark.parametrize("spec, says", [
    ("no_such_problem", "unknown problem 'no_such_problem'"),
    ("missing_file.py:PROBLEM", "no file missing_file.py"),
    ("json:PROBLEM", "json defines no PROBLEM"),
    ("json:__name__", "is a str, not a glia_evo Problem"),
    ("json:dumps", "failed to load: TypeError"),
    ("no_such_module_xyz:PROBLEM", "failed to load: ModuleNotFoundError"),
])
def test_a_spec_that_finds_no_problem_is_one_line(spec, says):
    with pytest.raises(ProblemNotFound) as err:
        get_problem(spec)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_problem_file_that_fails_or_is_inconsistent_is_one_line(tmp_path):
    broken = problem_file(tmp_path, "raise RuntimeError('boom')\n", "broken.py")
    with pytest.raises(ProblemNotFound, match="failed to load: RuntimeError: boom"):
        get_problem(f"{broken}:PROBLEM")
    clash = problem_file(tmp_path, "from dataclasses import replace\n"
                                   "from glia_evo.problems import PROBLEMS\n"
                                   "PROBLEM = replace(PROBLEMS['routing'], description='x')\n",
                         "clash.py")
    with pytest.raises(ProblemNotFound, match="built-in problem; give it a name of its own"):
        get_problem(f"{clash}:PROBLEM")
    no_ref = problem_file(tmp_path, f"import sys; sys.path.insert(0, {str(BINPACK)!r})\n"
                                    "from dataclasses import replace\n"
                                    "from binpack_problem import PROBLEM as P\n"
                                    "PROBLEM = replace(P, name='bp2', reference='worst_fit')\n",
                          "no_ref.py")
    with pytest.raises(ProblemNotFound, match="reference baseline 'worst_fit' is not among"):
        get_problem(f"{no_ref}:PROBLEM")


def test_own_evaluate_blames_the_candidate_or_the_problem_correctly():
    problem = get_problem(BINPACK_SPEC)
    quick = problem.split("quick")
    ok = evaluate(problem.baseline_source("best_fit"), problem, quick)
    assert ok.status == "ok" and ok.fitness > 0
    assert set(ok.scenarios["small#100"]) == {"bins", "lower_bound", "excess", "fill"}
    raised = evaluate(FIRST_FIT_RAISES, problem, quick)
    assert raised.status == "error" and "IndexError" in raised.error and raised.line == 6
    invalid = evaluate(OVERFILLS, problem, quick)
    assert invalid.status == "invalid" and "too little room" in invalid.error
    escape = evaluate("import os\ndef pack(item, bins, knobs):\n    return -1\n", problem, quick)
    assert escape.status == "error" and "os" in escape.error      # the sandbox, as always


def test_metrics_a_problem_cannot_use_are_a_one_line_error(tmp_path):
    spec = problem_file(tmp_path, f"""
import sys; sys.path.insert(0, {str(BINPACK)!r})
from dataclasses import replace
from binpack_problem import PROBLEM as P

def nan(policy, instance, knobs):
    policy["pack"](0.5, [], knobs)
    return {{"bins": float("nan")}}

def crash(policy, instance, knobs):
    return {{}}["bins"]

NAN = replace(P, name="bp_nan", evaluate=nan)
CRASH = replace(P, name="bp_crash", evaluate=crash)
""", "bad_metrics.py")
    for attr, says in (("NAN", "metric 'bins' = nan"), ("CRASH", "evaluate() failed: KeyError")):
        problem = get_problem(f"{spec}:{attr}")
        result = evaluate(problem.baseline_source("first_fit"), problem, problem.split("quick"))
        assert result.status == "error" and says in result.error, result.error


def _small_config(tmp_path, problem: str) -> Path:
    config = tmp_path / "run.toml"
    config.write_text(f'name = "bp"\nproblem = "{problem}"\n'
                      '[search]\nislands = 2\nisland_capacity = 4\n'
                      '[budget]\nmax_evaluations = 10\n'
                      '[evaluation]\nworkers = 2\ncascade = true\n'
                      '[tracking]\nenabled = false\n[report]\nat_end = false\n')
    return config


def test_a_problem_file_runs_through_the_config_key_and_resumes_from_elsewhere(tmp_path):
    out = tmp_path / "run"
    proc = run_glia("run", str(_small_config(tmp_path, BINPACK_SPEC)), "--out", str(out),
                    "--quiet")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(run_glia("status", str(out), "--json").stdout)
    assert status["evaluations"] >= 6 and status["best"]["fitness"] > 0.9
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_glia("resume", str(out), "--max-evaluations", "14", "--quiet", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(run_glia("status", str(out), "--json").stdout)["evaluations"] >= 10


def install_example(target: Path) -> dict:
    """pip-installs examples/binpack into `target` (not into this environment) and returns
    the environment under which `target` is on the path, as an installed package would be."""
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--target", str(target), str(BINPACK)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(target), *filter(None, [os.environ.get("PYTHONPATH")])])}


def test_the_example_installed_as_a_package_runs_every_command_by_name(tmp_path):
    env = install_example(tmp_path / "site")
    work = tmp_path / "work"        # not the repository: the plug-in comes from `site` alone
    work.mkdir()
    sim = run_glia("simulate", "--problem", "binpack", "--policy", "best_fit", "--json",
                   env=env, cwd=work)
    assert sim.returncode == 0, sim.stderr
    result = json.loads(sim.stdout)
    assert result["problem"] == "binpack" and result["reference"]["policy"] == "first_fit"
    assert set(result["scenarios"]) == {"uniform#0", "uniform#1", "uniform#2", "uniform#3"}
    out = work / "run"
    run = run_glia("run", "--problem", "binpack", "--out", str(out), "--max-evaluations", "8",
                   "--no-tracking", "--no-report", "--quiet", env=env, cwd=work)
    assert run.returncode == 0, run.stderr
    status = json.loads(run_glia("status", str(out), "--json", env=env, cwd=work).stdout)
    assert status["problem"] == "binpack" and status["best"]["fitness"] > 0
    report = run_glia("report", str(out), "--json", env=env, cwd=work)
    assert report.returncode == 0, report.stderr
    rows = {r["policy"].split(" ")[0]: r for r in json.loads(report.stdout)["rows"]}
    assert {"best", "next_fit", "first_fit", "best_fit"} <= set(rows)
    exported = work / "policy.py"
    export = run_glia("export", str(out), "--out", str(exported), env=env, cwd=work)
    assert export.returncode == 0, export.stderr
    again = run_glia("simulate", "--problem", "binpack", "--policy", str(exported), "--json",
                     env=env, cwd=work)
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "ok", again.stderr
