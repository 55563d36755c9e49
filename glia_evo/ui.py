"""`glia-evo ui DIR`: the MLflow UI on 127.0.0.1 over one run's tracking store.

- A port already in use (another `glia-evo ui`, any other program, even one that accepts and never
  answers) is found before MLflow starts: with `--port` that is one line and exit 2; without it
  the next free port after 5000 is taken, and the line says which.
- Before printing the address, the server that answers is checked to be *this* process's MLflow,
  serving *this* run's store (its experiments and runs are those of DIR/mlflow.db), so it never
  shows another run's data.
- The MLflow server runs in its own process group; Ctrl-C, SIGTERM or SIGHUP stops that whole
  group (gunicorn/uvicorn workers and helpers included), and so does the server ending early.
- The address printed opens the run's candidates: the `glia-evo` experiment's runs table in
  MLflow's "Model training" view (not its GenAI overview), filtered to the candidates' runs and
  sorted by fitness (clear the filter to see the search's parent run too).
- A second address serves the run's lineage page, built afresh from the state file at each load
  (so a running search shows its newest candidates): a click on a node opens that candidate's
  MLflow run page. (The copy logged to MLflow as `lineage.html` cannot do that from MLflow's
  artifact preview, which sandboxes it: see glia_evo/lineage.py.) It is a thread of this
  process on a free loopback port, gone when `glia-evo ui` ends.
"""
from __future__ import annotations

import errno
import http.server
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from .run_folder import RunFolder

DEFAULT_PORT = 5000
PORTS_TRIED = 50            # without --port: 5000, 5001, ... 5049
HOST = "127.0.0.1"


class UIError(Exception):
    """One line for the user (exit 2)."""


def command(run_dir: Path, port: int) -> list[str]:
    db = RunFolder(run_dir).mlflow_db.resolve()
    artifacts = RunFolder(run_dir).mlflow_artifacts.resolve()
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
            "--default-artifact-root", artifacts.as_uri(), "--host", HOST,
            "--port", str(port), "--workers", "1"]


def server_env() -> dict:
    """The MLflow server's environment: without MLflow's job execution (its huey consumers
    only run GenAI jobs such as judges and trace roll-ups, none of which a glia-evo run has;
    they were 8 more Python processes and most of a start's tens of seconds) and without MLflow's
    telemetry. Either can be turned back on in the environment."""
    env = dict(os.environ)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return env


def port_in_use(port: int, host: str = HOST) -> str | None:
    """Why `port` cannot be ours, or None when it is free: something listens there (it accepts a
    connection), or binding it fails."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        if probe.connect_ex((host, port)) == 0:
            return "something is already listening there"
    except OSError:
        pass
    finally:
        probe.close()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # as the server binds (uvicorn sets SO_REUSEADDR): connections of a server that has just
    # stopped, still in TIME_WAIT, do not make the port look taken; a socket bound or listening
    # there still does
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return "it is already in use"
        if exc.errno == errno.EACCES:
            return "this user may not use it (ports below 1024 need privileges)"
        return exc.strerror or str(exc)
    finally:
        sock.close()
    return None


def choose_port(port: int | None) -> tuple[int, str | None]:
    """(port, note): the given port if free (else UIError), or the first free one from 5000."""
    if port is not None:
        why = port_in_use(port)
        if why:
            raise UIError(f"port {port} on {HOST} cannot be used: {why} (another `glia-evo ui`, "
                          f"or any other program); choose another with --port, or leave --port "
                          f"out to take a free one")
        return port, None
    for candidate in range(DEFAULT_PORT, DEFAULT_PORT + PORTS_TRIED):
        if port_in_use(candidate) is None:
            note = None if candidate == DEFAULT_PORT else \
                f"port {DEFAULT_PORT} is in use; using port {candidate}"
            return candidate, note
    raise UIError(f"ports {DEFAULT_PORT} to {DEFAULT_PORT + PORTS_TRIED - 1} on {HOST} are all in "
                  f"use; choose one with --port")


def store_identity(db: Path) -> dict:
    """{"experiments": {id: (name, creation_time)}, "runs": set of run ids} read from the run's
    own MLflow store (read-only)."""
    try:
        con = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        raise UIError(f"cannot read {db}: {exc}") from None
    try:
        exps = {str(i): (n, t) for i, n, t in con.execute(
            "SELECT experiment_id, name, creation_time FROM experiments "
            "WHERE lifecycle_stage = 'active'")}
        runs = {r for (r,) in con.execute(
            "SELECT run_uuid FROM runs WHERE lifecycle_stage = 'active'")}
    except sqlite3.Error as exc:
        raise UIError(f"{db} is not an MLflow store ({exc})") from None
    finally:
        con.close()
    return {"experiments": exps, "runs": runs}


def _get(url: str, timeout: float = 5.0, data: dict | None = None) -> dict:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read().decode() or "{}")


def serves_this_store(url: str, expected: dict) -> bool:
    """The server at `url` lists exactly the experiments of `expected` (ids, names, creation
    times) and knows one of its runs."""
    try:
        got = _get(f"{url}/api/2.0/mlflow/experiments/search", data={"max_results": 1000})
    except (OSError, ValueError):
        return False
    exps = {str(e.get("experiment_id")): (e.get("name"), e.get("creation_time"))
            for e in got.get("experiments", []) if e.get("lifecycle_stage", "active") == "active"}
    if exps != expected["experiments"]:
        return False
    if not expected["runs"]:
        return True
    run_id = next(iter(expected["runs"]))
    try:
        got = _get(f"{url}/api/2.0/mlflow/runs/get?" + urllib.parse.urlencode({"run_id": run_id}))
    except (OSError, ValueError):
        return False
    return got.get("run", {}).get("info", {}).get("run_id") == run_id


def wait_until_up(url: str, proc: subprocess.Popen, timeout_s: float = 180.0) -> bool:
    """True once `proc` is alive and `url` answers /health; False if `proc` ends first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the server's whole process group, then SIGKILL to whatever is left."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if pgid is not None and pgid != os.getpgrp():
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    elif proc.poll() is None:
        proc.terminate()
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    if pgid is not None and pgid != os.getpgrp():
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.1)
        try:
            os.killpg(pgid, signal.SIGKILL)      # workers that ignored SIGTERM
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def experiment_id(expected: dict) -> str | None:
    """The id of the run's experiment (glia-evo's), else the newest one that is not MLflow's
    Default, else None."""
    from .tracking import EXPERIMENT
    exps = expected["experiments"]
    named = [i for i, (name, _) in exps.items() if name == EXPERIMENT]
    if named:
        return named[0]
    ids = sorted(exps, key=lambda i: int(i) if i.isdigit() else 0)
    own = [i for i in ids if i != "0"] or ids
    return own[-1] if own else None


def candidates_url(url: str, exp: str | None) -> str:
    """The MLflow UI's page of the run's candidates: the experiment's runs table in the model
    training view, the candidates' runs only, fittest first."""
    if exp is None:
        return url
    query = urllib.parse.urlencode(
        {"workflowType": "machine_learning", "searchFilter": "tags.`glia.kind` = 'candidate'",
         "orderByKey": "metrics.`fitness`", "orderByAsc": "false"},
        quote_via=urllib.parse.quote)
    return f"{url}/#/experiments/{exp}/runs?{query}"


def candidate_runs(db: Path, exp: str) -> dict[str, str]:
    """candidate id -> MLflow run id, read from the run's store (read-only)."""
    try:
        con = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return {}
    try:
        return {cid: run for cid, run in con.execute(
            "SELECT t.value, r.run_uuid FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid "
            "WHERE t.key = 'glia.candidate' AND r.experiment_id = ? "
            "AND r.lifecycle_stage = 'active' ORDER BY r.start_time", (int(exp),))}
    except (sqlite3.Error, ValueError):
        return {}
    finally:
        con.close()


def lineage_page(run_dir: Path, mlflow_url: str, exp: str | None) -> str:
    """The run's lineage page as it stands, each node linked to its candidate's run page."""
    from population import Store

    from .lineage import lineage_html, lineage_record
    from .tracking import run_route
    store = Store(RunFolder(run_dir).state, create=False)
    try:
        cands = [lineage_record(c) for c in store.all() if c.status != "pending"]
    finally:
        store.close()
    runs = candidate_runs(RunFolder(run_dir).mlflow_db, exp) if exp is not None else {}
    return lineage_html(cands, title=f"glia-evo lineage: {Path(run_dir).resolve().name}",
                        links={cid: run_route(exp, run) for cid, run in runs.items()},
                        base=mlflow_url + "/")


class LineageServer(http.server.ThreadingHTTPServer):
    """GET / : the lineage page (loopback, a free port, daemon threads)."""
    daemon_threads = True

    def __init__(self, run_dir: Path, mlflow_url: str, exp: str | None):
        self.run_dir, self.mlflow_url, self.exp = run_dir, mlflow_url, exp
        super().__init__((HOST, 0), _LineageHandler)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"

    def start(self) -> "LineageServer":
        self._thread = threading.Thread(target=self.serve_forever, name="glia-evo-lineage",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if getattr(self, "_thread", None) is not None:
            self.shutdown()
        self.server_close()


class _LineageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        port = self.server.server_address[1]
        if self.headers.get("Host", "") not in (f"{HOST}:{port}", f"localhost:{port}"):
            # a page of another site reaching loopback through a rebound DNS name
            return self._send(403, "text/plain", "forbidden: open this page at its address")
        if urllib.parse.urlsplit(self.path).path not in ("/", "/lineage.html"):
            return self._send(404, "text/plain", "not found: the lineage page is at /")
        try:
            page = lineage_page(self.server.run_dir, self.server.mlflow_url, self.server.exp)
        except Exception as exc:       # a run folder without its state file, a locked one...
            return self._send(500, "text/plain", f"cannot build the lineage page: "
                                                 f"{type(exc).__name__}: {exc}"[:500])
        self._send(200, "text/html; charset=utf-8", page)

    def _send(self, code: int, ctype: str, text: str) -> None:
        body = text.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):      # noqa: A002 - quiet: no access log
        pass


class _Stop(Exception):
    pass


def serve(run_dir: Path, port: int | None = None) -> int:
    db = RunFolder(run_dir).mlflow_db
    if not db.exists():
        raise FileNotFoundError(f"{run_dir} has no MLflow store (mlflow.db): was it run with "
                                f"tracking on?")
    expected = store_identity(db)
    port, note = choose_port(port)
    url = f"http://{HOST}:{port}"
    if note:
        print(f"glia-evo: {note}", file=sys.stderr, flush=True)

    def on_signal(signum, frame):
        raise _Stop()
    # SIGINT too: a process started with SIGINT ignored (as a background job's parent may
    # leave it) would otherwise never see Ctrl-C
    old = {s: signal.signal(s, on_signal)
           for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    proc = None
    lineage = None
    log = tempfile.TemporaryFile(mode="w+", prefix="glia-evo-ui-")   # never a full pipe

    def last_line(default: str) -> str:
        log.seek(0)
        lines = [ln for ln in log.read()[-20000:].splitlines() if ln.strip()]
        return (lines[-1] if lines else default)[:300]
    try:
        proc = subprocess.Popen(command(run_dir, port), stdout=subprocess.DEVNULL, stderr=log,
                                text=True, start_new_session=True, env=server_env())
        if not wait_until_up(url, proc):
            why = last_line("no answer") if proc.poll() is not None else "no answer"
            print(f"glia-evo: error: the MLflow UI did not start on {url}: {why}",
                  file=sys.stderr)
            return 1
        if proc.poll() is not None or not serves_this_store(url, expected):
            print(f"glia-evo: error: the server answering on {url} does not serve {run_dir}'s "
                  f"store (another program took port {port}); try again, or choose another "
                  f"--port", file=sys.stderr)
            return 1
        exp = experiment_id(expected)
        lineage = LineageServer(run_dir, url, exp).start()
        print(f"MLflow UI for {run_dir}: {candidates_url(url, exp)}  (Ctrl-C to stop)",
              flush=True)
        print(f"lineage page: {lineage.url}  (click a node to open its candidate's MLflow run)",
              flush=True)
        proc.wait()
        print(f"glia-evo: error: the MLflow server stopped: "
              f"{last_line(f'exit status {proc.returncode}')}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if lineage is not None:
            lineage.stop()
        if proc is not None:
            stop_group(proc)
        log.close()
