"""The offline search end to end: run, kill, resume, stop, status, config errors."""
import json
import os
import signal
import time
from pathlib import Path

import pytest

from glia_evo.events import read_events
from population import Store
from cli_helpers import run_glia as glia, small_run_toml, start_run


def write_config(tmp_path: Path, evals=16, seeds=("llq", "round_robin"), seed=0,
                 tuning=True) -> Path:
    path = tmp_path / f"cfg_{evals}_{seed}_{tuning}.toml"
    path.write_text(small_run_toml(
        "t", evals, seed, search={"seeds": list(seeds), "migration_interval": 5},
        budget={"minutes": 30.0}, evaluation={"timeout_s": 120.0},
        tuning={"enabled": tuning}, tracking={"enabled": True}))
    return path


def population(run_dir: Path) -> list[tuple]:
    """Everything that defines the search's outcome, per candidate, in id order."""
    store = Store(run_dir / "state.sqlite", create=False)
    try:
        return [(c.id, c.source, c.island, c.operator, tuple(c.parents), c.status,
                 round(c.fitness, 12), c.reasoning) for c in store.all()], \
            {i: [m.id for m in store.members(i)] for i in range(2)}
    finally:
        store.close()


def evaluation_events(run_dir: Path) -> list[str]:
    return [e["candidate"] for e in read_events(run_dir / "events.jsonl")
            if e["event"] == "evaluation"]


def test_sigkill_then_resume_loses_nothing_and_matches_an_uninterrupted_run(tmp_path):
    # Tuning off: Optuna's journal is written outside the SQLite transactions, so trials that
    # were running at the kill are failed and re-asked, which can change later proposals
    # (README, "Determinism"). Everything else must resume exactly.
    cfg = write_config(tmp_path, evals=12, tuning=False)
    straight = tmp_path / "straight"
    proc = glia("run", str(cfg), "--out", str(straight), "--quiet")
    assert proc.returncode == 0, proc.stderr

    killed = tmp_path / "killed"
    child = start_run(cfg, killed, capture=False)
    deadline = time.time() + 300
    while time.time() < deadline and len(evaluation_events(killed)) < 5:
        time.sleep(0.05)
    before = evaluation_events(killed)
    assert len(before) >= 5, "the run did not get going"
    os.killpg(child.pid, signal.SIGKILL)          # the engine and its workers, mid-search
    child.wait(timeout=30)
    store = Store(killed / "state.sqlite", create=False)
    evaluated_before = {c.id: c.fitness for c in store.all() if c.status != "pending"}
    store.close()
    assert len(evaluated_before) < 12 + 2 * 2

    proc = glia("resume", str(killed), "--quiet")
    assert proc.returncode == 0, proc.stderr

    # nothing evaluated was lost, nothing was evaluated twice
    store = Store(killed / "state.sqlite", create=False)
    after = {c.id: c for c in store.all()}
    assert store.get_meta("evaluations") == 12
    store.close()
    for cid, fitness in evaluated_before.items():
        assert after[cid].fitness == fitness
    events = evaluation_events(killed)
    assert len(events) == len(set(events)) == 12
    assert set(before) <= set(events)
    # and the resumed run ends exactly where the uninterrupted one did
    assert population(killed) == population(straight)


def test_offline_search_improves_on_its_seed(tmp_path):
    cfg = write_config(tmp_path, evals=30, seeds=("round_robin",), seed=3)
    out = tmp_path / "improve"
    proc = glia("run", str(cfg), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    store = Store(out / "state.sqlite", create=False)
    seed_fitness = max(c.fitness for c in store.all() if c.operator == "seed")
    best = max(store.all(), key=lambda c: c.fitness)
    store.close()
    assert best.fitness > seed_fitness * 1.05, (best.fitness, seed_fitness)
    assert best.operator != "seed"
    assert (out / "best.py").read_text().endswith("\n" + best.source)    # after its header
    assert "best:" in proc.stdout and str(out / "best.py") in proc.stdout


def test_sigint_finishes_in_flight_work_and_exits_zero(tmp_path):
    cfg = write_config(tmp_path, evals=200)
    out = tmp_path / "interrupted"
    child = start_run(cfg, out)
    deadline = time.time() + 300
    while time.time() < deadline and len(evaluation_events(out)) < 4:
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=300)
    assert child.returncode == 0, stderr
    assert "interrupted" in stdout
    store = Store(out / "state.sqlite", create=False)
    assert store.count("pending") == 0              # in-flight work finished and recorded
    done = store.get_meta("evaluations")
    store.close()
    assert 4 <= done < 200
    events = read_events(out / "events.jsonl")
    assert events[-1]["event"] == "stop" and events[-1]["reason"] == "interrupted"

    status = json.loads(glia("status", str(out), "--json").stdout)
    assert status["evaluations"] == done
    assert status["budget_left"]["evaluations"] == 200 - done
    assert status["best"]["fitness"] >= 1.0
    assert len(status["islands"]) == 2


def test_run_folder_is_never_overwritten(tmp_path):
    cfg = write_config(tmp_path, evals=4)
    out = tmp_path / "once"
    assert glia("run", str(cfg), "--out", str(out), "--quiet").returncode == 0
    again = glia("run", str(cfg), "--out", str(out), "--quiet")
    assert again.returncode == 2 and "glia-evo resume" in again.stderr
    assert "Traceback" not in again.stderr


@pytest.mark.parametrize("text, fragment", [
    ("[search]\nislandz = 3\n", "'search.islandz'"),
    ("[search]\nislands = 0\n", "'search.islands'"),
    ("[budget]\nminutes = 'soon'\n", "'budget.minutes'"),
    ("colour = 'blue'\n", "'colour'"),
    ("[evaluation]\nworkers = 1.5\n", "'evaluation.workers'"),
    ("[search\n", "not valid TOML"),
])
def test_bad_config_is_rejected_with_the_key(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    proc = glia("run", str(path), "--out", str(tmp_path / "never"))
    assert proc.returncode == 2
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "never" / "state.sqlite").exists()


def test_status_of_a_folder_that_is_not_a_run(tmp_path):
    proc = glia("status", str(tmp_path))
    assert proc.returncode == 2 and "not a glia-evo run folder" in proc.stderr
