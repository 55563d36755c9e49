"""Progress and budgets (issue 15): one count of evaluations + tuning trials against the budget,
an ETA, the report's progress in a log, `resume --max-evaluations N` without --minutes, and
--no-report on run and resume."""
import json
import re

from cli_helpers import run_glia as glia, small_run_toml


def test_the_count_includes_tuning_trials_and_shows_an_eta(tmp_path):
    from sim.policies import baseline_source
    from glia_evo.tuning import with_knob_values
    mis_tuned = tmp_path / "mis_tuned_hra.py"      # knobs that matter: its study gets trials
    mis_tuned.write_text(with_knob_values(baseline_source("routing", "hra"),
                                          {"headroom": 2.0, "min_free": 0.2}))
    cfg = tmp_path / "t.toml"
    cfg.write_text(small_run_toml("t", 24, search={"seeds": [str(mis_tuned), "llq"]},
                                  tuning={"enabled": True, "trials": 3, "top_fraction": 1.0}))
    run = tmp_path / "run"
    proc = glia("run", str(cfg), "--out", str(run))     # not a terminal: plain log lines
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("[")]
    counts = [tuple(map(int, re.match(r"\[(\d+)/(\d+)\]", ln).groups())) for ln in lines]
    assert all(total == 24 and done <= 24 for done, total in counts)
    assert all(" | eta " in ln for ln in lines)
    status = json.loads(glia("status", str(run), "--json").stdout)
    assert status["tuning_trials"] > 0, "the test needs a run that tunes"
    assert counts[-1][0] == status["evaluations"] + status["tuning_trials"] == 24
    assert any("trials" in ln for ln in lines)
    assert "stopped: evaluation budget of 24 reached" in proc.stdout
    human = glia("status", str(run)).stdout
    assert "budget left: 0 evaluations (tuning trials count too)" in human


def test_resume_with_a_larger_evaluation_budget_lifts_the_old_time_budget(tmp_path):
    cfg = tmp_path / "r.toml"
    cfg.write_text(small_run_toml("r", 2, budget={"minutes": 0.001}))   # 60 ms: used up
    run = tmp_path / "run"
    first = glia("run", str(cfg), "--out", str(run), "--quiet")
    assert first.returncode == 0 and "stopped: time budget of 0.001 min reached" in first.stdout
    again = glia("resume", str(run), "--quiet")                          # same budget: says so
    assert again.stdout.startswith(f"resume: {run} at ")
    assert "the time budget is already used up: pass --minutes" in again.stdout.splitlines()[0]
    proc = glia("resume", str(run), "--max-evaluations", "5", "--quiet")
    assert proc.returncode == 0, proc.stderr
    first_line = proc.stdout.splitlines()[0]
    assert "budget for the whole run: 5 evaluations, no time limit" in first_line
    assert "the old 0.001-min time budget is lifted" in first_line
    assert "stopped: evaluation budget of 5 reached" in proc.stdout
    status = json.loads(glia("status", str(run), "--json").stdout)
    assert status["evaluations"] + status["tuning_trials"] == 5
    assert "no time limit" in glia("status", str(run)).stdout
    # --minutes sets the time budget again
    proc = glia("resume", str(run), "--max-evaluations", "9", "--minutes", "0.001", "--quiet")
    assert "9 evaluations, 0.001 min" in proc.stdout.splitlines()[0]
    assert "stopped: time budget of 0.001 min reached" in proc.stdout


def test_no_report_on_run_and_resume_and_the_report_progress_in_a_log(tmp_path):
    cfg = tmp_path / "p.toml"
    cfg.write_text(small_run_toml("p", 2, report={"at_end": True, "split": "quick",
                                                  "baselines": False}))
    run = tmp_path / "run"
    proc = glia("run", str(cfg), "--out", str(run), "--quiet", "--no-report")
    assert proc.returncode == 0, proc.stderr
    assert not (run / "report").exists() and "report:" not in proc.stdout
    proc = glia("resume", str(run), "--max-evaluations", "3", "--no-report", "--quiet")
    assert proc.returncode == 0 and not (run / "report").exists()
    proc = glia("resume", str(run), "--max-evaluations", "4")      # a log, not a terminal
    assert proc.returncode == 0, proc.stderr
    assert (run / "report" / "heldout.json").is_file()
    progress = [ln for ln in proc.stderr.splitlines() if ln.startswith("report: simulated")]
    assert progress and progress[-1].endswith("/" + progress[-1].split("/")[-1])
    done, total = map(int, progress[-1].split()[-1].split("/"))
    assert done == total > 0


def test_the_last_lines_say_how_long_the_session_took_and_where():
    from glia_evo.runner import took_line
    clock = {"began": 0.0, "search": 95.2, "validation": 115.0, "report": 160.1}
    assert took_line(clock, 161.0) == ("took 2 min 41 s (search 1 min 35 s, choosing on "
                                       "validation 20 s, report 45 s, closing 1 s)")
    assert took_line({"began": 0.0, "search": 4.0, "validation": 4.1, "report": 4.2},
                     4.3) == "took 4 s"            # one phase: no breakdown
