"""The Python API does what the command line does (the CLI's `run` goes through it)."""
from pathlib import Path

import pytest

import glia_evo
from glia_evo.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BINPACK = f"{ROOT / 'examples' / 'binpack' / 'binpack_problem' / '__init__.py'}:PROBLEM"


def test_evaluate_takes_a_baseline_name_a_file_or_program_text(tmp_path):
    by_name = glia_evo.evaluate("hra", "routing", split="quick")
    path = tmp_path / "mine.py"
    path.write_text((ROOT / "sim" / "policies" / "routing" / "hra.py").read_text())
    by_file = glia_evo.evaluate(path, "routing", split="quick")
    by_text = glia_evo.evaluate(path.read_text(), "routing", split="quick")
    assert by_name.status == by_file.status == by_text.status == "ok"
    assert by_name.scenarios == by_file.scenarios == by_text.scenarios
    assert by_name.fitness > 0
    broken = glia_evo.evaluate("def route(queue, replicas, now, knobs):\n    return 1 / 0\n",
                               "routing", split="quick")
    assert broken.status == "error" and "ZeroDivisionError" in broken.error


def test_search_returns_a_run_that_reports_and_exports(tmp_path):
    config = {"name": "api", "problem": BINPACK, "report": {"at_end": False},
              "search": {"islands": 2, "island_capacity": 4}}
    run = glia_evo.search(config, out=str(tmp_path / "run"), max_evaluations=8, tracking=False)
    assert run.status()["evaluations"] >= 6
    assert run.best["fitness"] > 0.9 and "def pack" in run.best_source()
    report = run.report(split="validation", baselines=False)
    assert {r["policy"].split(" ")[0] for r in report["rows"]} == {"best", "first_fit"}
    out = run.export(tmp_path / "policy.py")
    assert "def pack" in out.read_text()
    before = run.status()["evaluations"]
    again = glia_evo.resume(run.path, max_evaluations=14)
    assert again.path == run.path and again.status()["evaluations"] > before


def test_api_errors_are_exceptions_with_the_cli_message(tmp_path):
    with pytest.raises(TypeError, match="unknown option"):
        glia_evo.search({}, max_evaluation=3)
    with pytest.raises(ConfigError, match="evaluation.split"):
        glia_evo.search({"evaluation": {"split": "trian"}}, out=str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()
    with pytest.raises(KeyError, match="unknown problem"):
        glia_evo.evaluate("llq", "no_such_problem")
