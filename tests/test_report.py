"""The held-out report: best candidate and baselines on a split never used for selection."""
import json
from cli_helpers import run_glia as glia

CONFIG = """
name = "rep"
seed = 0
[search]
islands = 1
island_capacity = 4
seeds = ["round_robin", "least_kv"]
[budget]
max_evaluations = 5
[evaluation]
workers = 2
split = "quick"
cascade = false
[tuning]
enabled = false
"""




def test_report_table_plots_and_mlflow(tmp_path):
    cfg = tmp_path / "rep.toml"
    cfg.write_text(CONFIG)
    run = tmp_path / "run"
    assert glia("run", str(cfg), "--out", str(run), "--quiet").returncode == 0
    proc = glia("report", str(run), "--split", "quick", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    policies = [r["policy"] for r in report["rows"]]
    assert policies[0].startswith("best (c") and "llq" in policies and "hra" in policies
    llq = next(r for r in report["rows"] if r["policy"] == "llq")
    assert llq["fitness"] == 1.0 and report["instances"] == ["glia_short#101"]
    best = report["rows"][0]
    assert best["status"] == "ok" and best["fitness"] > 0
    out = run / "report"
    for name in ("heldout.png", "fitness_over_time.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| llq | 1.0000 |" in (out / "heldout.md").read_text()
    logged = {p.name for p in (run / "mlartifacts").rglob("*") if p.parent.name == "report"}
    assert {"heldout.md", "heldout.png", "fitness_over_time.png", "heldout.json"} <= logged


def test_report_on_an_unknown_split_is_one_line(tmp_path):
    cfg = tmp_path / "rep.toml"
    cfg.write_text(CONFIG.replace("max_evaluations = 5", "max_evaluations = 2"))
    run = tmp_path / "run"
    assert glia("run", str(cfg), "--out", str(run), "--quiet", "--no-tracking").returncode == 0
    proc = glia("report", str(run), "--split", "nope")
    assert proc.returncode == 2 and "unknown split 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr
