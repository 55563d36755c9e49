"""The held-out report: best candidate and baselines on a split never used for selection, at the
end of a run ([report] at_end) and on demand (`glia-evo report`)."""
import json
import re

from cli_helpers import run_glia as glia, small_run_toml

FILES = {"heldout.md", "heldout.png", "fitness_over_time.png", "heldout.json"}


def write(tmp_path, evals=5, at_end=False):
    cfg = tmp_path / "rep.toml"
    cfg.write_text(small_run_toml("rep", evals, search={"islands": 1,
                                                         "seeds": ["round_robin", "least_kv"]},
                                  tracking={"enabled": True},
                                  report={"at_end": at_end, "split": "quick"}))
    return cfg


def logged_report_files(run):
    return {p.name for p in (run / "mlartifacts").rglob("*") if p.parent.name == "report"}


def test_a_run_writes_the_report_at_the_end_and_logs_it_then_on_demand(tmp_path):
    run = tmp_path / "run"
    proc = glia("run", str(write(tmp_path, at_end=True)), "--out", str(run), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = run / "report"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("report:")]
    assert "on the 'quick' split" in lines[0]                     # says it is running
    assert lines[1].startswith("report: held-out fitness on 'quick'") and "llq 1.0000" in lines[1]
    assert f"to {out}/" in lines[2] and "logged to the MLflow parent run" in lines[2]
    assert {p.name for p in out.iterdir()} == FILES
    at_end = json.loads((out / "heldout.json").read_text())
    assert at_end["split"] == "quick" and at_end["rows"][0]["status"] == "ok"
    assert FILES <= logged_report_files(run)                       # before `glia-evo report`

    proc = glia("report", str(run), "--split", "quick", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    policies = [r["policy"] for r in report["rows"]]
    assert policies[0].startswith("best (c") and "llq" in policies and "hra" in policies
    llq = next(r for r in report["rows"] if r["policy"] == "llq")
    assert llq["fitness"] == 1.0 and report["instances"] == ["glia_short#101"]
    best = report["rows"][0]
    assert best["status"] == "ok" and best["fitness"] > 0
    assert report["rows"] == at_end["rows"]                         # the same numbers
    for name in ("heldout.png", "fitness_over_time.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| llq | 1.0000 |" in (out / "heldout.md").read_text()


def test_a_failing_report_leaves_the_run_done_with_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "report").write_text("a file where the report folder goes")   # only the report
    proc = glia("run", str(write(tmp_path, evals=3, at_end=True)), "--out", str(run),
                "--quiet", "--no-tracking")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("glia-evo: no held-out report: cannot write the report to")
    assert line.endswith(f"`glia-evo report {run} --split quick`")
    assert "stopped: evaluation budget of 3 reached" in proc.stdout
    assert re.search(r"^took \d+ s( \(search \d+ s, .*\))?$", proc.stdout, re.M), proc.stdout
    status = glia("status", str(run), "--json")
    assert json.loads(status.stdout)["evaluations"] == 3


def test_report_on_an_unknown_split_is_one_line(tmp_path):
    run = tmp_path / "run"
    proc = glia("run", str(write(tmp_path, evals=2)), "--out", str(run), "--quiet",
                "--no-tracking")
    assert proc.returncode == 0, proc.stderr
    assert not (run / "report").exists()                           # at_end = false
    proc = glia("report", str(run), "--split", "nope")
    assert proc.returncode == 2 and "unknown split 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_report_split_is_checked_when_the_config_is_read(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[report]\nsplit = "tset"\n')
    proc = glia("run", str(cfg), "--out", str(tmp_path / "never"))
    assert proc.returncode == 2 and "'report.split' must be one of" in proc.stderr
    assert not (tmp_path / "never").exists()
