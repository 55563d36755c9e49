"""Faults during a run: signals, a worker killed from outside, damaged state files.

Each test checks that nothing finished is lost and that the run ends cleanly or resumes.
(Tracking-server and LLM-endpoint outages are covered in test_tracking.py and test_llm_run.py.)
"""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from glia_evo.events import read_events
from population import Store
from cli_helpers import run_glia as glia, small_run_toml, start_run



def start(tmp_path: Path, evals: int, split: str = "quick") -> tuple[subprocess.Popen, Path]:
    cfg = tmp_path / "faults.toml"
    cfg.write_text(small_run_toml("faults", evals, evaluation={"split": split}))
    out = tmp_path / "run"
    proc = start_run(cfg, out)
    return proc, out




def wait_for(out: Path, n: int, timeout_s: float = 300) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if sum(e["event"] == "evaluation" for e in read_events(out / "events.jsonl")) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} evaluations after {timeout_s} s")


def finished(out: Path) -> dict:
    store = Store(out / "state.sqlite", create=False)
    try:
        return {c.id: (c.status, c.fitness) for c in store.all() if c.status != "pending"}
    finally:
        store.close()


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def test_sigterm_finishes_in_flight_work_then_resume_completes(tmp_path):
    proc, out = start(tmp_path, evals=30)
    wait_for(out, 5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "terminated" in stdout
    before = finished(out)
    store = Store(out / "state.sqlite", create=False)
    assert store.count("pending") == 0
    store.close()
    resumed = glia("resume", str(out), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    after = finished(out)
    assert all(after[cid] == v for cid, v in before.items())      # nothing finished was lost
    events = [e["candidate"] for e in read_events(out / "events.jsonl")
              if e["event"] == "evaluation"]
    assert len(events) == len(set(events)) == 30                   # none evaluated twice


def test_a_worker_killed_from_outside_is_recorded_and_the_run_goes_on(tmp_path):
    proc, out = start(tmp_path, evals=6, split="train")             # slow enough to catch
    wait_for(out, 2)
    victim = None                  # tracking and LLM are off: the engine's children are workers
    deadline = time.time() + 120
    while victim is None and time.time() < deadline:
        found = children(proc.pid)
        victim = found[0] if found else None
        time.sleep(0.05)
    assert victim is not None, "no worker process found"
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    done = finished(out)
    assert len([e for e in read_events(out / "events.jsonl") if e["event"] == "evaluation"]) == 6
    crashed = [s for s, _ in done.values() if s == "crashed"]
    assert crashed, "the killed evaluation should be recorded as crashed"
    store = Store(out / "state.sqlite", create=False)
    assert store.count("pending") == 0
    store.close()


def test_a_corrupted_state_file_gives_one_clear_line(tmp_path):
    proc, out = start(tmp_path, evals=3)
    proc.communicate(timeout=300)
    assert proc.returncode == 0
    state = out / "state.sqlite"
    for path in out.glob("state.sqlite-*"):
        path.unlink()
    data = bytearray(state.read_bytes())
    data[100:4096] = os.urandom(3996)                                 # smash the header pages
    state.write_bytes(bytes(data))
    for args in (("resume", str(out)), ("status", str(out)), ("export", str(out), "--out",
                                                                 str(tmp_path / "x.py"))):
        res = glia(*args)
        assert res.returncode == 2, (args, res.stderr)
        assert "Traceback" not in res.stderr and str(state) in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


def test_a_truncated_event_log_line_is_skipped_and_the_run_resumes(tmp_path):
    proc, out = start(tmp_path, evals=6)
    proc.communicate(timeout=300)
    assert proc.returncode == 0
    with open(out / "events.jsonl", "a") as fh:
        fh.write('{"t": 1, "event": "evaluat')                          # a crash mid-write
    assert glia("status", str(out)).returncode == 0
    res = glia("resume", str(out), "--quiet", "--max-evaluations", "8")
    assert res.returncode == 0, res.stderr
    events = [e for e in read_events(out / "events.jsonl") if e["event"] == "evaluation"]
    assert len(events) == 8


def test_an_evaluation_whose_event_a_kill_cut_off_is_logged_on_resume(tmp_path):
    # the event is written after its result commits: a SIGKILL between the two leaves a counted
    # evaluation without a line, which the next session writes once, marked `recovered`
    proc, out = start(tmp_path, evals=6)
    proc.communicate(timeout=300)
    assert proc.returncode == 0
    path = out / "events.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    last = max(i for i, line in enumerate(lines) if '"event": "evaluation"' in line)
    lost = json.loads(lines[last])
    path.write_text("".join(lines[:last] + lines[last + 1:]))
    res = glia("resume", str(out), "--quiet", "--max-evaluations", "7")
    assert res.returncode == 0, res.stderr
    events = [e for e in read_events(path) if e["event"] == "evaluation"]
    ids = [e["candidate"] for e in events]
    assert len(ids) == len(set(ids)) == 7
    again = [e for e in events if e["candidate"] == lost["candidate"]]
    assert again[0]["recovered"] is True
    assert {k: again[0][k] for k in ("island", "status", "fitness", "error")} == \
        {k: lost[k] for k in ("island", "status", "fitness", "error")}
    assert sum(1 for e in events if e.get("recovered")) == 1
