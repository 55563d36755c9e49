"""Soak: a search with faults injected at random, then every invariant checked (issue 8).

`glia-evo run` (offline, tracking on: MLflow's SQLite store in the run folder) runs as a
subprocess for a fixed `max_evaluations`; a seeded injector (tests/faults/soak_helpers.py) kills a
sandbox job, kills the MLflow tracking process, sends SIGTERM, Ctrl-C (once or twice), SIGKILLs
the process group or the run process alone, at random moments, and resumes the run until the
state says the budget is used; a last resume lets the tracker drain. After every session the
SQLite state is checked (and that nothing finished was lost or changed); at the end also
events.jsonl, the Optuna journal, leftover processes and MLflow:

- evaluations counted once: the `evaluations` counter equals the finished evaluated candidates;
  no candidate or tuning trial recorded twice; every trial the engine told Optuna is counted;
- the budget: evaluations + tuning trials never above `max_evaluations`, equal to it at the end;
- population: members finished ok, at most `island_capacity` per island, one per code hash, the
  island's best candidate ever among them, parents exist, migrants and tuned children are
  copies of their parent, no proposal duplicates earlier code, columns mirror the records;
- tuning: a finished study whose best trial beats its program has exactly one `tune` child
  with that fitness (none otherwise); no study stays active with all its trials done;
- a graceful stop leaves nothing it proposed pending and, with the tracker alive, no tracking
  backlog; events.jsonl reads line by line, except a line cut by a hard kill; no process
  (sandbox job, tracker) outlives the run;
- MLflow: one parent run, one nested run per finished candidate under it (no duplicates, none
  missing), with the state's fitness, status, operator and parents.

The short version runs in the normal test suite (40 evaluations, 7 faults: one of each kind;
15-35 s on 2 cores). The long version (islands of 8 above 100 evaluations), e.g.:

    GLIA_EVO_SOAK_EVALUATIONS=500 GLIA_EVO_SOAK_SEED=random \\
        python3 -m pytest -m soak tests/faults/test_soak.py -s

Variables: GLIA_EVO_SOAK_EVALUATIONS (budget, default 40), GLIA_EVO_SOAK_SEED (the injector's
seed, default 0; `random` draws one; it is printed with every failure), GLIA_EVO_SOAK_FAULTS
(default 7, or one per 8 evaluations above 60), GLIA_EVO_SOAK_KINDS (a comma-separated subset
of job,tracker,sigterm,sigint,sigint2,kill_group,kill_pid; default all), GLIA_EVO_SOAK_CASCADE=1
(train split with the cascade: slower evaluations, longer in flight). A failure message starts
with the seed, the folder and what each session did; the folder is kept (pytest's tmp_path).
"""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from cli_helpers import run_glia as glia, start_run
from soak_helpers import (KINDS, Settings, Soak, alive, children, is_job, is_tracker, killed_at,
                          repro_config, state_of)


def settings_from_env() -> Settings:
    n = int(os.environ.get("GLIA_EVO_SOAK_EVALUATIONS", "40"))
    seed_text = os.environ.get("GLIA_EVO_SOAK_SEED", "0")
    seed = random.SystemRandom().randrange(10**6) if seed_text == "random" else int(seed_text)
    faults = int(os.environ.get("GLIA_EVO_SOAK_FAULTS",
                                str(len(KINDS) if n <= 60 else max(len(KINDS), n // 8))))
    cascade = os.environ.get("GLIA_EVO_SOAK_CASCADE", "0") not in ("", "0", "false")
    kinds = tuple(k for k in os.environ.get("GLIA_EVO_SOAK_KINDS", ",".join(KINDS)).split(",")
                  if k)
    unknown = set(kinds) - set(KINDS)
    assert kinds and not unknown, f"GLIA_EVO_SOAK_KINDS: unknown {unknown}; known {KINDS}"
    deadline = 150 + (6 if cascade else 3) * n + 20 * faults
    return Settings(evaluations=n, seed=seed, faults=faults, cascade=cascade,
                    deadline_s=deadline, kinds=kinds, capacity=4 if n <= 100 else 8)


@pytest.mark.soak
def test_soak_random_faults_keep_every_invariant(tmp_path):
    s = settings_from_env()
    print(f"soak: seed {s.seed}, {s.evaluations} evaluations, {s.faults} faults, "
          f"cascade {s.cascade}, deadline {s.deadline_s:.0f} s, folder {tmp_path}")
    soak = Soak(tmp_path, s)
    try:
        soak.run()
        state = soak.check_final()
    finally:
        soak.cleanup()
    injected = [f.kind for session in soak.sessions for f in session.faults]
    print(f"soak: {len(soak.sessions)} sessions, faults injected {injected}, "
          f"{len(state['counted'])} evaluations, {state['meta'].get('trials', 0)} trials, "
          f"{len(state['candidates'])} candidates")


# --- Reproductions of what the soak found -------------------------------------------------------
# Each puts the run in the exact state a fault at an unlucky moment leaves (a SIGKILL at a chosen
# line, or the soak's own fault with the timing pinned), then applies the soak's checks. Each was
# a real bug (found by the soak, fixed since); they stay as regression tests.

def test_reference_job_killed_from_outside_does_not_end_the_run(tmp_path):
    cfg = repro_config(tmp_path, evaluations=6)
    out = tmp_path / "run"
    proc = start_run(cfg, out)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            jobs = [c for c in children(proc.pid) if is_job(c)]
            if jobs:                  # the first job of a fresh run: the reference baseline
                os.kill(jobs[0], signal.SIGKILL)
                break
            time.sleep(0.005)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Traceback" not in stderr, stderr
    assert proc.returncode == 0, stderr
    Soak.inspect(out, 6).check_state(final=True)


def test_run_killed_alone_leaves_no_tracker_racing_the_next_session(tmp_path):
    """Found by the soak (fixed in 5c51116): the tracker of a run killed alone (kill -9 PID, or
    a second Ctrl-C while it drains) went on draining beside the next session's tracker: the
    same records twice, concurrent MLflow migrations, and a session closing with a backlog."""
    cfg = repro_config(tmp_path, evaluations=20, tracking=True)
    out = tmp_path / "run"
    proc = start_run(cfg, out, capture=False)
    tracker = None
    try:
        deadline = time.time() + 120
        while tracker is None and time.time() < deadline:
            found = [c for c in children(proc.pid) if is_tracker(c)]
            tracker = found[0] if found else None
            time.sleep(0.01)
        if not tracker:
            raise RuntimeError("no tracking process")
        os.kill(tracker, signal.SIGSTOP)           # it falls behind (a slow store), then:
        while time.time() < deadline and proc.poll() is None and sum(
                b'"evaluation"' in line for line in (out / "events.jsonl").read_bytes()
                .splitlines()) < 14:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)          # kill -9 PID: the run alone
        proc.wait(timeout=30)
        os.kill(tracker, signal.SIGCONT)
        offset = (out / "events.jsonl").stat().st_size
        res = glia("resume", str(out), "--quiet", "--max-evaluations", "24", timeout=300)
        if res.returncode != 0:
            raise RuntimeError(f"resume failed: {res.stderr}")
        end = time.time() + 60
        while alive(tracker) and time.time() < end:
            time.sleep(0.1)
        events = [json.loads(line) for line in
                  (out / "events.jsonl").read_bytes()[offset:].splitlines() if line.strip()]
        left = [e for e in events if e["event"] == "tracking_backlog"]
        assert not left, f"the resumed session left a tracking backlog: {left}"
        soak = Soak.inspect(out, 24)
        soak.check_mlflow(state_of(out))
    finally:
        for pid in [proc.pid] + ([tracker] if tracker else []):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_result_committed_just_before_a_kill_reaches_mlflow(tmp_path):
    """Found by the soak (fixed in 5c51116: each session syncs from state.sqlite): a result is
    committed before its MLflow record is queued; a kill in between lost the record."""
    out = killed_at(tmp_path, """
        from glia_evo import tracking
        _orig, _n = tracking.Tracker.candidate, [0]
        def candidate(self, cand, parent_source):
            _n[0] += 1
            if _n[0] == 6:          # the 6th result is committed, its MLflow record not queued
                die()
            return _orig(self, cand, parent_source)
        tracking.Tracker.candidate = candidate
    """, evaluations=12, tracking=True)
    Soak.inspect(out, 12).check_mlflow(state_of(out))


def test_trial_told_just_before_a_kill_is_counted_in_the_budget(tmp_path):
    out = killed_at(tmp_path, """
        from glia_evo import tuning
        _orig, _n = tuning.Tuner.tell, [0]
        def tell(self, number, fitness):
            _orig(self, number, fitness)
            _n[0] += 1
            if _n[0] == 2:          # in the journal, not yet in the state's trials counter
                die()
        tuning.Tuner.tell = tell
    """, evaluations=24, tuning=True, seed=0)
    Soak.inspect(out, 24).check_journal(state_of(out))


def test_tune_child_survives_a_kill_as_its_study_closes(tmp_path):
    from sim.policies import baseline_source
    from glia_evo.tuning import with_knob_values
    mis_tuned = tmp_path / "mis_tuned_hra.py"       # a study of it improves: a tune child
    mis_tuned.write_text(with_knob_values(baseline_source("routing", "hra"),
                                          {"headroom": 2.0, "min_free": 0.2}))
    out = killed_at(tmp_path, """
        from population import islands
        _orig = islands.Islands.insert
        def insert(self, cand):
            if cand.operator == "tune":     # the study is closed, its child not stored yet
                die()
            return _orig(self, cand)
        islands.Islands.insert = insert
    """, evaluations=24, tuning=True, seed=0,
                    seeds=[str(mis_tuned), "llq"])
    Soak.inspect(out, 24).check_journal(state_of(out))


def test_best_trial_told_before_a_kill_still_becomes_a_tune_child(tmp_path):
    out = killed_at(tmp_path, """
        from glia_evo import tuning_runs
        _orig = tuning_runs.TuningRuns.told
        def told(self, trial, result, **kw):
            out = _orig(self, trial, result, **kw)
            if trial.number == 1:   # the first trial evaluated (trial 0, the program's own
                                    # knobs, is known): told and counted
                die()
            return out
        tuning_runs.TuningRuns.told = told
    """, evaluations=24, tuning=True, seed=0)
    Soak.inspect(out, 24).check_journal(state_of(out))


def test_study_whose_last_trial_was_running_at_a_kill_closes_on_resume(tmp_path):
    out = killed_at(tmp_path, """
        from glia_evo import tuning
        _orig = tuning.Tuner.ask
        def ask(self):
            number, values = _orig(self)
            if number == 2:         # the study's last trial is running
                die()
            return number, values
        tuning.Tuner.ask = ask
    """, evaluations=24, tuning=True, seed=0)
    Soak.inspect(out, 24).check_journal(state_of(out))


def test_tracker_killed_as_it_creates_the_parent_run_leaves_one_parent(tmp_path):
    cfg = repro_config(tmp_path, evaluations=6, tracking=True)
    out = tmp_path / "run"
    proc = start_run(cfg, out, capture=False)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:           # its tracker dies before it logs anything
            found = [c for c in children(proc.pid) if is_tracker(c)]
            if found:
                os.kill(found[0], signal.SIGKILL)
                break
            time.sleep(0.002)
        if proc.wait(timeout=300) != 0 or (out / "mlflow_parent_run_id").exists():
            raise RuntimeError("the tracker was not killed before it created the parent run")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    driver = tmp_path / "tracker.py"             # the tracker, killed at an exact line
    driver.write_text(f"""
import os, signal
from pathlib import Path
from glia_evo import tracking

write = tracking._write_atomically

def _write_atomically(path, text):
    if path.name == tracking.PARENT_RUN_FILE:   # the parent run exists; its id is not saved
        os.kill(os.getpid(), signal.SIGKILL)
    write(path, text)

tracking._write_atomically = _write_atomically
run = Path({str(out)!r})
tracking.TrackerProcess(run, tracking.default_uri(run), "repro", 1.0).loop()
""")
    res = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True,
                         timeout=300)
    if res.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the tracker driver was not killed where planned: {res.stderr}")
    res = glia("resume", str(out), "--quiet", timeout=300)
    if res.returncode != 0:
        raise RuntimeError(f"resume failed: {res.stderr}")
    Soak.inspect(out, 6).check_mlflow(state_of(out))
