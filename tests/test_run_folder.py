"""The run folder's layout is named in one place (glia_evo/run_folder.py): what a run writes is
where RunFolder says, and a folder holds a run exactly when its state and config exist."""
from cli_helpers import run_glia, small_run_toml
from glia_evo.run_folder import RunFolder


def test_a_run_writes_what_run_folder_names(tmp_path):
    cfg = tmp_path / "r.toml"
    cfg.write_text(small_run_toml("rf", 3))
    out = RunFolder(tmp_path / "run")
    assert not out.holds_run()
    proc = run_glia("run", str(cfg), "--out", str(out.path), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert out.holds_run() and out.events.is_file() and out.best.is_file()
    assert not out.report.exists()                  # (no report asked for: test_report's)
    report = run_glia("report", str(out.path), "--split", "quick", "--no-baselines")
    assert report.returncode == 0, report.stderr
    assert out.heldout_json.is_file() and (out.report / RunFolder.HELDOUT_MD).is_file()
