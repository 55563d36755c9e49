"""The disk holding the run folder fills up mid-run (issue 8): a real, small tmpfs, filled from
outside while the search runs.

The run must stop within seconds with one clear line and a non-zero exit, kill what was in
flight, and leave a consistent state file holding every evaluation committed before; `resume` on
the full disk refuses in one line; once space is freed, `resume` completes the budget with every
candidate evaluated once.
"""
import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glia_evo.events import read_events
from cli_helpers import run_glia as glia, small_run_toml, start_run

EVALS = 24
CONFIG = small_run_toml("faults", EVALS)   # offline, no tracking, no report


@pytest.fixture
def small_disk(tmp_path):
    """A 32 MiB tmpfs mounted under tmp_path (root, or CAP_SYS_ADMIN, needed: else skipped)."""
    if not sys.platform.startswith("linux") or shutil.which("mount") is None:
        pytest.skip("needs Linux and mount(8)")
    disk = tmp_path / "disk"
    disk.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32M", "tmpfs", str(disk)],
                         capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip() or res.returncode}")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True, timeout=30).returncode:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


def read_state(state: Path) -> tuple[dict, int]:
    """({candidate id: (status, fitness)} of the finished candidates, the evaluations counter),
    read-only (never writes to the run's file)."""
    con = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute("SELECT id, status, fitness, operator FROM candidates").fetchall()
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    finally:
        con.close()
    done = {cid: (status, fitness) for cid, status, fitness, op in rows
            if status != "pending" and op != "migration"}
    return done, int(json.loads(meta.get("evaluations", "0")))


def fill(path: Path) -> None:
    """Write `path` until the disk refuses (ENOSPC), in 1 MiB then 4 KiB pieces."""
    with open(path, "wb", buffering=0) as fh:
        for size in (1 << 20, 4096):
            block = b"\0" * size
            while True:
                try:
                    fh.write(block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break


def session_processes(sid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                out.append(int(entry.name))
    return out


def one_clear_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_full_disk_stops_the_run_cleanly_and_resume_completes_after_freeing_space(
        tmp_path, small_disk):
    cfg = tmp_path / "diskfull.toml"
    cfg.write_text(CONFIG)
    run = small_disk / "run"
    state = run / "state.sqlite"
    filler = small_disk / "filler"
    proc = start_run(cfg, run)
    try:
        deadline = time.time() + 60
        seen, counted = {}, 0
        while time.time() < deadline:
            if state.exists():
                try:
                    seen, counted = read_state(state)
                except sqlite3.Error:
                    pass
            if counted >= 4 or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the run ended before the disk was filled"
        assert counted >= 4, "fewer than 4 evaluations after 60 s"

        t0 = time.time()
        fill(filler)
        stdout, stderr = proc.communicate(timeout=60)
        stopped_s = time.time() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.communicate(timeout=30)

    assert proc.returncode == 1, (stdout, stderr)
    line = one_clear_line(stderr)
    assert line.startswith(f"glia-evo: the disk holding {run} is full (")
    assert line.endswith(f"free some space and run `glia-evo resume {run}`"), line
    assert stopped_s < 30, f"took {stopped_s:.1f} s to stop"
    deadline = time.time() + 10                     # the evaluations in flight were killed
    while session_processes(proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not session_processes(proc.pid), "processes of the run outlived it"

    # consistent, and nothing committed before the fill is lost
    con = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    con.close()
    after, evaluations = read_state(state)
    assert all(after.get(cid) == v for cid, v in seen.items()), (seen, after)
    assert evaluations == len(after) < EVALS

    # still full: resume refuses in one line and changes nothing
    refused = glia("resume", str(run), "--quiet", timeout=120)
    assert refused.returncode == 2
    assert "MiB free" in one_clear_line(refused.stderr)
    assert read_state(state) == (after, evaluations)
    status = glia("status", str(run), "--json", timeout=120)         # reading needs no space
    assert status.returncode == 0 and json.loads(status.stdout)["evaluations"] == evaluations

    filler.unlink()
    resumed = glia("resume", str(run), "--quiet", timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    final, evaluations = read_state(state)
    assert evaluations == len(final) == EVALS                       # the budget, exactly
    assert all(final[cid] == v for cid, v in after.items())         # nothing finished was lost
    con = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    assert con.execute("SELECT COUNT(*) FROM candidates WHERE status='pending'").fetchone() \
        == (0,)
    con.close()
    evaluated = [e["candidate"] for e in read_events(run / "events.jsonl")
                 if e["event"] == "evaluation"]
    assert len(evaluated) == len(set(evaluated))                    # none evaluated twice
    assert set(evaluated) <= set(final)


def test_the_store_rolls_back_a_transaction_the_full_disk_refuses(small_disk):
    from population import Candidate, Store
    from population.store import StoreFull
    store = Store(small_disk / "state.sqlite")
    try:
        kept = [store.add(Candidate(source=f"def route(q, r, now, knobs):\n    return [] # {i}\n"))
                for i in range(3)]
        store.set_meta("evaluations", 3)
        fill(small_disk / "filler")
        with pytest.raises(StoreFull) as info:
            with store.transaction():
                for i in range(200):                    # more than the page cache holds
                    store.add(Candidate(source="x = 1\n" + "# pad\n" * 2000 + f"# {i}\n"))
                store.set_meta("evaluations", 203)
        assert "disk is full" in str(info.value) and info.value.reason
        assert [c.id for c in store.all()] == [c.id for c in kept]
        assert store.get_meta("evaluations") == 3
        assert store._conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        (small_disk / "filler").unlink()
        store.add(Candidate(source="def route(q, r, now, knobs):\n    return [] # after\n"))
        assert len(store) == 4
    finally:
        store.close()
