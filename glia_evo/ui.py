"""`glia-evo ui DIR`: the MLflow UI on 127.0.0.1 over one run's tracking store.

- A port already in use (another `glia-evo ui`, any other program, even one that accepts and never
  answers) is found before MLflow starts: with `--port` that is one line and exit 2; without it
  the next free port after 5000 is taken, and the line says which.
- Before printing the address, the server that answers is checked to be *this* process's MLflow,
  serving *this* run's store (its experiments and runs are those of DIR/mlflow.db), so it never
  shows another run's data.
- The MLflow server runs in its own process group; Ctrl-C, SIGTERM or SIGHUP stops that whole
  group (gunicorn/uvicorn workers and helpers included), and so does the server ending early.
- The address printed opens the run's candidates (the experiment's runs table).
"""
from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
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
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    proc = None
    log = tempfile.TemporaryFile(mode="w+", prefix="glia-evo-ui-")   # never a full pipe

    def last_line(default: str) -> str:
        log.seek(0)
        lines = [ln for ln in log.read()[-20000:].splitlines() if ln.strip()]
        return (lines[-1] if lines else default)[:300]
    try:
        proc = subprocess.Popen(command(run_dir, port), stdout=subprocess.DEVNULL, stderr=log,
                                text=True, start_new_session=True)
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
        exp = sorted(expected["experiments"], key=lambda i: int(i) if i.isdigit() else 0)
        own = [i for i in exp if i != "0"] or exp
        page = f"{url}/#/experiments/{own[-1]}/runs" if own else url
        print(f"MLflow UI for {run_dir}: {page}  (Ctrl-C to stop)", flush=True)
        proc.wait()
        print(f"glia-evo: error: the MLflow server stopped: "
              f"{last_line(f'exit status {proc.returncode}')}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if proc is not None:
            stop_group(proc)
        log.close()
