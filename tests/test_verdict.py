"""Honest results (issue 15): the best's held-out fitness next to the shipped baselines', and a
plain warning wherever a user looks (run's last lines, status, report, export header) when the
search did not beat a baseline or the reference, or drops a lot from train to held-out; plots
that count migrants and use a log scale when values span orders of magnitude."""
import json

import matplotlib
import pytest

from cli_helpers import run_glia as glia, small_run_toml
from glia_evo.verdict import verdict

matplotlib.use("Agg")


def report(best, baselines, train=None, status="ok", split="test"):
    rows = [{"policy": "best (c000009)", "status": status, "fitness": best, "error": None,
             "scenarios": {}}]
    rows += [{"policy": n, "status": "ok", "fitness": f, "error": None, "scenarios": {}}
             for n, f in baselines.items()]
    return {"problem": "routing", "split": split, "baselines": True, "metric": "mean_e2e_s",
            "reference": "llq", "best": {"id": "c000009", "train_fitness": train},
            "rows": rows, "instances": []}


def test_below_the_best_shipped_baseline_says_so():
    v = verdict(report(1.050, {"llq": 1.0, "lor": 1.068, "hra": 1.518}, train=1.3), "train")
    assert v["lines"][0] == ("held-out: best c000009 1.3000 on 'train' -> 1.0500 on held-out "
                             "'test'; best shipped baseline hra 1.5180; reference llq 1.0000")
    assert any("did not beat the shipped baseline hra: 1.0500 vs 1.5180" in w
               for w in v["warnings"])
    assert any("drops from 1.3000 on 'train' to 1.0500" in w and "-19%" in w
               for w in v["warnings"])


def test_worse_than_the_reference_and_overfitting():
    v = verdict(report(0.893, {"fixed": 0.5, "threshold": 1.0}, train=1.058) |
                {"reference": "threshold"}, "train")
    text = " ".join(v["warnings"])
    assert "worse than the reference threshold" in text and "(0.8930 < 1.0000)" in text
    assert "drops from 1.0580" in text and "-16%" in text
    assert "did not beat the shipped baseline" not in text     # the best baseline IS the reference


def test_a_real_improvement_has_no_warning_and_a_failure_has_one():
    assert verdict(report(1.7, {"llq": 1.0, "hra": 1.5}, train=1.75), "train")["warnings"] == []
    v = verdict(report(0.0, {"llq": 1.0}, status="timeout"))
    assert "did not run correctly" in v["warnings"][0] and "do not deploy" in v["warnings"][0]


def test_every_place_a_user_looks_shows_the_warning(tmp_path):
    cfg = tmp_path / "v.toml"
    cfg.write_text(small_run_toml("v", 1, search={"islands": 1, "seeds": ["random"]},
                                  report={"at_end": True, "split": "quick"}))
    run = tmp_path / "run"
    proc = glia("run", str(cfg), "--out", str(run), "--quiet")   # the best is `random` itself
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    held = next(ln for ln in out if ln.startswith("held-out: best "))
    assert "on held-out 'quick'" in held and "; best shipped baseline " in held
    status = json.loads(glia("status", str(run), "--json").stdout)
    top = status["heldout"]["best_baseline"]
    assert top not in ("random", None) and status["heldout"]["heldout"] < 1.0
    worse = next(ln for ln in out if ln.startswith("warning: the best candidate is worse than "
                                                   "the reference llq"))
    if top != "llq":        # a shipped baseline beats the reference too: say which to deploy
        beat = next(ln for ln in out if ln.startswith("warning: the search did not beat"))
        assert f"the shipped baseline {top}: " in beat and f"{top} is the better policy" in beat
        assert beat in glia("status", str(run)).stdout.splitlines()
    warning = worse
    assert warning in glia("status", str(run)).stdout.splitlines()
    md = (run / "report" / "heldout.md").read_text()
    assert "**Warning:** the best candidate is worse than the reference llq" in md
    rep = glia("report", str(run), "--split", "quick")
    assert rep.returncode == 0 and warning in rep.stdout.splitlines()
    exported = tmp_path / "p.py"
    exp = glia("export", str(run), "--out", str(exported))
    assert exp.returncode == 0 and warning in exp.stdout.splitlines()
    head = exported.read_text().split('"""')[0]
    assert "# held-out fitness on the 'quick' split (never used for selection): " in head
    assert "# WARNING: the best candidate is worse than the reference llq" in head
    assert f"# best shipped baseline there: {top} " in head


def test_without_a_report_the_run_says_the_train_fitness_is_not_held_out(tmp_path):
    cfg = tmp_path / "v.toml"
    cfg.write_text(small_run_toml("v", 2))
    proc = glia("run", str(cfg), "--out", str(tmp_path / "run"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert any(ln.startswith("held-out: not evaluated (the report is off)")
               for ln in proc.stdout.splitlines())


def _capture_plots(monkeypatch, report_dict, history, tmp_path):
    from matplotlib.figure import Figure
    from glia_evo import heldout
    seen = {}

    def savefig(fig, path, *a, **kw):
        ax = fig.axes[0]
        seen[path.name] = {"yscale": ax.get_yscale(),
                           "lines": [list(zip(*ln.get_data())) for ln in ax.get_lines()]}
    monkeypatch.setattr(Figure, "savefig", savefig)
    heldout._plots(tmp_path, report_dict, history)
    return seen


def test_heldout_plot_uses_a_log_scale_when_values_span_orders_of_magnitude(monkeypatch,
                                                                            tmp_path):
    r = report(1.0, {"llq": 1.0})
    r["instances"] = ["a#0", "b#0"]
    r["rows"][0]["scenarios"] = {"a#0": 1.2, "b#0": 3.6e8}
    r["rows"][1]["scenarios"] = {"a#0": 1.0, "b#0": 2.0e8}
    seen = _capture_plots(monkeypatch, r, [(0.0, 0, 1.0)], tmp_path)
    assert seen["heldout.png"]["yscale"] == "log"
    r["rows"][0]["scenarios"] = {"a#0": 1.2, "b#0": 3.0}
    r["rows"][1]["scenarios"] = {"a#0": 1.0, "b#0": 2.0}
    assert _capture_plots(monkeypatch, r, [(0.0, 0, 1.0)], tmp_path)["heldout.png"][
        "yscale"] == "linear"


def test_fitness_over_time_counts_migrants(tmp_path):
    """A run whose islands exchange migrants: island 1's curve reaches island 0's best."""
    from population import Store
    cfg = tmp_path / "m.toml"
    cfg.write_text(small_run_toml("m", 12, search={"islands": 2, "island_capacity": 8,
                                                   "migration_interval": 3,
                                                   "seeds": ["round_robin", "random"]},
                                  report={"at_end": False}))
    run = tmp_path / "run"
    assert glia("run", str(cfg), "--out", str(run), "--quiet").returncode == 0
    store = Store(run / "state.sqlite", create=False)
    migrants = [c for c in store.all() if c.operator == "migration"]
    store.close()
    assert migrants, "the run's migration interval must admit a migrant"
    from glia_evo.heldout import heldout
    import matplotlib.figure
    seen = {}
    real = matplotlib.figure.Figure.savefig

    def savefig(fig, path, *a, **kw):
        seen[path.name] = [max(ln.get_ydata()) for ln in fig.axes[0].get_lines()]
        return real(fig, path, *a, **kw)
    mp = pytest.MonkeyPatch()
    mp.setattr(matplotlib.figure.Figure, "savefig", savefig)
    try:
        heldout(run, "routing", "quick", workers=1, include_baselines=False)
    finally:
        mp.undo()
    for m in migrants:      # every migrant's fitness is reached by its island's curve
        assert seen["fitness_over_time.png"][m.island] >= m.fitness
