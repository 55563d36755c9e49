"""MLflow tracking end to end: a real MLflow server on loopback, read through its REST API."""
import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from glia_evo.ui import command, wait_until_up
from population import Store
from cli_helpers import run_glia as glia, small_run_toml



def config(evals: int, tuning: bool = True) -> str:
    return small_run_toml("trk", evals, search={"seeds": ["round_robin", "llq"],
                                                "migration_interval": 4},
                          tuning={"enabled": tuning, "trials": 2}, tracking={"enabled": True})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]




class Server:
    def __init__(self, store_dir: Path, port: int):
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(command(store_dir, port), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        assert wait_until_up(self.url, self.proc), "mlflow server did not start"

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(f"{self.url}/api/2.0/mlflow/{path}",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def runs(self) -> list[dict]:
        exps = self.post("experiments/search", {"max_results": 100})["experiments"]
        [exp] = [e for e in exps if e["name"] == "glia-evo"]
        out, token = [], None
        while True:
            body = {"experiment_ids": [exp["experiment_id"]], "max_results": 1000}
            if token:
                body["page_token"] = token
            page = self.post("runs/search", body)
            out += page.get("runs", [])
            token = page.get("next_page_token")
            if not token:
                return out

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def check_store_matches_mlflow(run_dir: Path, runs: list[dict]) -> None:
    store = Store(run_dir / "state.sqlite", create=False)
    cands = {c.id: c for c in store.all() if c.status != "pending"}
    store.close()
    [parent] = [r for r in runs if tags(r).get("glia.kind") == "search"]
    nested = {tags(r)["glia.candidate"]: r for r in runs if tags(r).get("glia.kind") == "candidate"}
    assert set(nested) == set(cands)                 # every candidate, exactly once
    for cid, run in nested.items():
        t = tags(run)
        assert t["mlflow.parentRunId"] == parent["info"]["run_id"]
        assert t["glia.parents"] == ",".join(cands[cid].parents)
        fitness = [m for m in run["data"]["metrics"] if m["key"] == "fitness"]
        assert fitness and fitness[0]["value"] == pytest.approx(cands[cid].fitness)
    # walk the best candidate's lineage back to a seed through the parent tags
    best = max(cands.values(), key=lambda c: c.fitness)
    cid, hops = best.id, 0
    while tags(nested[cid])["glia.parent"]:
        cid = tags(nested[cid])["glia.parent"]
        hops += 1
        assert hops < 500
    assert tags(nested[cid])["glia.operator"] == "seed"
    return parent


def test_mlflow_server_shows_the_search_and_every_candidate(tmp_path):
    cfg = tmp_path / "trk.toml"
    cfg.write_text(config(14))
    run = tmp_path / "run"
    proc = glia("run", str(cfg), "--out", str(run), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert not list((run / "tracking_backlog").glob("*.json"))
    # resume continues the same parent run
    proc = glia("resume", str(run), "--quiet", "--max-evaluations", "18")
    assert proc.returncode == 0, proc.stderr
    server = Server(run, free_port())
    try:
        runs = server.runs()
        parent = check_store_matches_mlflow(run, runs)   # exactly one parent run
        params = {p["key"]: p["value"] for p in parent["data"]["params"]}
        assert params["search.islands"] == "2" and params["problem"] == "routing"
    finally:
        server.stop()
    arts = run / "mlartifacts"
    assert list(arts.rglob("lineage.html")) and list(arts.rglob("lineage.json"))
    assert list(arts.rglob("program.py")) and list(arts.rglob("diff.txt"))
    assert list(arts.rglob("reasoning.md")) and list(arts.rglob("report.json"))


def test_candidates_a_session_left_unlogged_are_logged_by_the_next(tmp_path):
    """A run killed between committing a result and enqueueing its record (here: a whole
    session with tracking off) leaves candidates without a nested run; the next session's
    tracker finds them in the state file and logs them."""
    cfg = tmp_path / "trk.toml"
    cfg.write_text(config(6))
    run = tmp_path / "run"
    proc = glia("run", str(cfg), "--out", str(run), "--quiet", "--no-tracking")
    assert proc.returncode == 0, proc.stderr
    assert not (run / "mlflow.db").exists()
    saved = (run / "config.toml").read_text()
    (run / "config.toml").write_text(saved.replace("[tracking]\nenabled = false",
                                                   "[tracking]\nenabled = true"))
    proc = glia("resume", str(run), "--quiet", "--max-evaluations", "9")
    assert proc.returncode == 0, proc.stderr
    assert "left unlogged" in (run / "tracking.log").read_text()
    server = Server(run, free_port())
    try:
        check_store_matches_mlflow(run, server.runs())     # all 9, the first 6 included
    finally:
        server.stop()


def test_ui_serves_the_run_on_loopback_and_stops_on_ctrl_c(tmp_path):
    import signal
    cfg = tmp_path / "trk.toml"
    cfg.write_text(config(3, tuning=False))
    run = tmp_path / "run"
    assert glia("run", str(cfg), "--out", str(run), "--quiet").returncode == 0
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "glia_evo.cli", "ui", str(run), "--port",
                           str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ui.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line, (line, ui.stderr.read() if ui.poll() else "")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
            assert resp.status == 200
        ui.send_signal(signal.SIGINT)
        # ui gives the MLflow server 10 s to stop, then kills its group: 60 s leaves room for
        # a loaded CI machine (30 s was once too short there)
        assert ui.wait(timeout=60) == 0
    finally:
        if ui.poll() is None:
            ui.kill()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)


def test_ui_without_a_tracking_store_is_one_line(tmp_path):
    proc = glia("ui", str(tmp_path), "--port", str(free_port()))
    assert proc.returncode == 2 and "no MLflow store" in proc.stderr


# --- off the search's CPU budget (issue 13) ---------------------------------------------------------
def _record(backlog: Path, seq: int, item: dict) -> None:
    (backlog / f"{seq:09d}.json").write_text(json.dumps(item))


def _candidate(cid: str, fitness: float) -> dict:
    return {"id": cid, "status": "ok", "fitness": fitness, "operator": "seed", "island": 0,
            "generation": 0, "parents": [], "source": "def route(q, r, now, knobs):\n    return 0\n",
            "metrics": {"glia#0": {"mean_e2e_s": 1.5}}, "extra": {}, "reasoning": "",
            "rationale": "", "model": None}


def test_track_logs_a_left_backlog_and_new_stores_copy_one_template(tmp_path, monkeypatch):
    from glia_evo import tracking
    monkeypatch.setenv("GLIA_EVO_CACHE_DIR", str(tmp_path / "cache"))
    firsts = []
    for name in ("a", "b"):
        run = tmp_path / name
        backlog = run / "tracking_backlog"
        backlog.mkdir(parents=True)
        (run / "config.toml").write_text(small_run_toml(name, 3))
        Store(run / "state.sqlite").close()
        _record(backlog, 1, {"kind": "start", "config": {"name": name, "seed": 0}})
        _record(backlog, 2, {"kind": "candidate", "candidate": _candidate("c1", 1.25),
                             "parent_source": None})
        proc = glia("track", str(run)) if name == "b" else None
        left = tracking.drain(run) if name == "a" else None
        if proc is not None:
            assert proc.returncode == 0, proc.stderr
            assert "all records logged" in proc.stdout
        else:
            assert left == 0
        assert tracking.backlog_size(run) == 0 and (run / "mlflow.db").exists()
        template = tracking._template_path()
        assert template is not None and template.exists()
        firsts.append(template.stat().st_mtime_ns)
    assert firsts[0] == firsts[1]          # made once, then copied
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=tracking.default_uri(tmp_path / "b"))
    exp = client.get_experiment_by_name(tracking.EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], "tags.`glia.kind` = 'candidate'")
    assert [r.data.metrics["fitness"] for r in runs] == [1.25]


def test_the_drain_at_exit_is_bounded(monkeypatch):
    from glia_evo import tracking
    monkeypatch.setenv(tracking.DRAIN_ENV, "2.5")
    assert tracking.drain_seconds() == 2.5
    monkeypatch.setenv(tracking.DRAIN_ENV, "soon")
    assert tracking.drain_seconds() == tracking.DEFAULT_DRAIN_S


def test_the_lineage_page_is_logged_during_the_run_not_only_at_its_end(tmp_path):
    """A run killed after its tenth evaluation never finishes its session, yet MLflow has its
    lineage page and leaderboard (logged every LINEAGE_EVERY evaluations) once the backlog is
    logged (`glia-evo track`)."""
    import os
    import signal
    import time
    from cli_helpers import start_run
    from glia_evo.tracking import LINEAGE_EVERY
    cfg = tmp_path / "trk.toml"
    cfg.write_text(config(40, tuning=False))
    run = tmp_path / "run"
    proc = start_run(cfg, run, capture=False)
    deadline = time.time() + 600
    events = run / "events.jsonl"
    while time.time() < deadline and proc.poll() is None:
        done = events.read_text().count('"event": "evaluation"') if events.exists() else 0
        if done > LINEAGE_EVERY:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert done > LINEAGE_EVERY
    res = glia("track", str(run))
    assert res.returncode == 0, res.stderr
    pages = list((run / "mlartifacts").rglob("lineage.html"))
    assert pages and list((run / "mlartifacts").rglob("leaderboard.json"))
    page = pages[0].read_text()
    import re
    assert len(set(re.findall(r"c\d{6}", page))) >= LINEAGE_EVERY     # the candidates so far
