"""Hostile candidate programs, evaluated through the real path (`evaluate_many` on a worker pool).

Each file in tests/hostile/ is one program whose first line says what must become of it:
`# expect: <status>: <fragment of the error message>`. Inside the programs `@CANARY@` stands for
the path of a canary file they try to overwrite or delete; `# pad-to-bytes: N` pads the source
with comment lines to N bytes (for the size limit, without storing a huge file).

All programs run in one batch on a tiny instance with short limits (3 s, 512 MiB). Every job
process runs with an audit hook (sys.addaudithook, installed by the pool's initializer) that
reports sockets, subprocesses, forks, signals, file writes and deletions over a pipe; the tests
check that the hook saw nothing, that the canary is untouched, and that the hook does see such
attempts when trusted code makes them.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest

from glia_evo.parallel import evaluate_many
from glia_evo.problems import Instance, Scenario, get_problem
from sandbox import WorkerPool
from sandbox.guards import ALLOWED_IMPORTS, guarded_getattr, make_globals
from sim import ClusterSpec, ReplicaSpec
from sim.workload import glia_workload

HOSTILE_DIR = Path(__file__).parent / "hostile"
PROGRAMS = sorted(HOSTILE_DIR.glob("*.py"))
EXPECT = re.compile(r"^# expect: (ok|error|invalid|timeout|crashed)(?:: (.+))?$")
PAD = re.compile(r"^# pad-to-bytes: (\d+)$", re.M)
ROUTING = get_problem("routing")
TIMEOUT_S, MEMORY_MB = 3.0, 512


def tiny_workload(seed: int):
    return glia_workload(seed, duration_s=20.0)


TINY = Instance(Scenario("hostile", "about 200 requests on 2 x A10",
                         ClusterSpec(replicas=(ReplicaSpec("llama3-8b/a10"),) * 2),
                         tiny_workload, seeds=(0,)), 0)


def expectation(path: Path) -> tuple[str, str]:
    match = EXPECT.match(path.read_text().splitlines()[0])
    assert match, f"{path.name}: first line must be '# expect: <status>: <message fragment>'"
    return match.group(1), match.group(2) or ""


def program_source(path: Path, canary: Path) -> str:
    source = path.read_text().replace("@CANARY@", str(canary))
    pad = PAD.search(source)
    if pad:
        size = int(pad.group(1))
        line = "# " + "padding " * 12 + "\n"
        source += line * (max(0, size - len(source.encode())) // len(line) + 1)
    return source


# --- the audit hook, installed in every job process -------------------------------------------------
WATCHED_PREFIXES = ("socket.", "subprocess.", "os.system", "os.exec", "os.fork", "os.forkpty",
                    "os.posix_spawn", "os.spawn", "os.kill", "os.killpg", "os.remove",
                    "os.unlink", "os.rmdir", "os.rename", "os.replace", "os.truncate",
                    "os.chmod", "os.chown", "os.mkdir", "os.symlink", "os.link", "os.putenv",
                    "shutil.", "ctypes.", "http.", "urllib.", "ftplib.", "smtplib.", "pty.")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _install_audit_hook(fd: int) -> None:
    def hook(event, args):
        watched = event.startswith(WATCHED_PREFIXES)
        if event == "open" and len(args) >= 3:
            mode, flags = args[1], args[2]
            watched = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITE_FLAGS)
        if watched:
            try:
                os.write(fd, (json.dumps([os.getpid(), event, repr(args)[:200]]) + "\n").encode())
            except OSError:
                pass
    sys.addaudithook(hook)


class AuditLog:
    """A pipe the job processes' audit hooks write to, drained by a thread of the test process."""

    def __init__(self):
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)
        self.data = bytearray()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self):
        while chunk := os.read(self.read_fd, 65536):
            self.data += chunk

    def pool(self, workers: int = 2, **limits) -> WorkerPool:
        limits = {"timeout_s": TIMEOUT_S, "memory_mb": MEMORY_MB, **limits}
        return WorkerPool(workers, initializer=_install_audit_hook, initargs=(self.write_fd,),
                          keep_fds=(self.write_fd,), **limits)

    def close(self) -> list:
        os.close(self.write_fd)
        self.thread.join(10)
        os.close(self.read_fd)
        return [json.loads(line) for line in self.data.decode().splitlines()]


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """Evaluate every hostile program in one batch; returns {name: EvalResult} and evidence."""
    folder = tmp_path_factory.mktemp("canary")
    canary = folder / "canary.txt"
    canary.write_text("canary\n")
    log = AuditLog()
    sources = [program_source(p, canary) for p in PROGRAMS]
    try:
        with log.pool() as pool:
            results = evaluate_many(sources, ROUTING, [TINY], pool=pool)
    finally:
        events = log.close()
    return {
        "results": {p.name: r for p, r in zip(PROGRAMS, results)},
        "events": events,
        "canary": canary.read_text() if canary.exists() else None,
        "folder": sorted(x.name for x in folder.iterdir()),
    }


def test_corpus_is_large_and_well_formed():
    assert len(PROGRAMS) >= 25
    for path in PROGRAMS:
        expectation(path)


@pytest.mark.parametrize("path", PROGRAMS, ids=[p.stem for p in PROGRAMS])
def test_hostile_program_is_contained(hostile_run, path):
    status, fragment = expectation(path)
    result = hostile_run["results"][path.name]
    assert result.status == status, (result.status, result.error)
    assert fragment in (result.error or ""), result.error
    if status != "ok":
        assert result.fitness == 0.0 and result.scenarios == {}


def test_no_file_was_touched(hostile_run):
    assert hostile_run["canary"] == "canary\n"
    assert hostile_run["folder"] == ["canary.txt"]


def test_no_socket_fork_or_file_write_was_attempted(hostile_run):
    assert hostile_run["events"] == []


def test_audit_hook_and_canary_detect_real_attempts(tmp_path):
    """The same pool set-up, running trusted code that does what the hostile programs cannot."""
    canary = tmp_path / "canary.txt"
    canary.write_text("canary\n")
    log = AuditLog()
    try:
        with log.pool(workers=1) as pool:
            socket_outcome = pool.submit(_open_socket).result()
            write_outcome = pool.submit(_overwrite, str(canary)).result()
            delete_outcome = pool.submit(os.remove, str(canary)).result()
    finally:
        events = log.close()
    names = [event for _, event, _ in events]
    assert socket_outcome.status == "ok" and "socket.__new__" in names
    assert write_outcome.status == "error" and "File too large" in write_outcome.error
    assert "open" in names
    assert delete_outcome.status == "ok" and "os.remove" in names
    assert not canary.exists()      # the canary check would have seen it


def _open_socket():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM):
        return True


def _overwrite(path):
    with open(path, "w") as fh:
        fh.write("pwned\n")


def test_os_fork_and_exit_are_unreachable_from_a_policy():
    """Walk everything a policy can reach by attribute access from its globals, builtins and the
    allowed modules (through the same guard the compiled code uses): no way to fork, exit, kill,
    spawn, open files or sockets."""
    import builtins
    import io
    import posix
    import subprocess as sp
    forbidden = {id(x) for x in (os.fork, os._exit, os.kill, os.system, os.execv, os.popen,
                                 os.forkpty, os.remove, posix.fork, posix._exit, sp.Popen,
                                 socket.socket, builtins.open, io.open, sys.exit, builtins.exit,
                                 builtins.eval, builtins.exec, builtins.compile,
                                 builtins.__import__, getattr, setattr, type, object)}
    namespace = make_globals(0)
    roots = [v for k, v in namespace.items() if not k.startswith("_") or k == "__builtins__"]
    roots += list(namespace["__builtins__"].values())
    roots += [namespace["__builtins__"]["__import__"](m, fromlist=["x"]) for m in ALLOWED_IMPORTS]
    seen, frontier = set(), roots
    for depth in range(3):
        reached = []
        for obj in frontier:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            assert id(obj) not in forbidden, obj
            if isinstance(obj, types.ModuleType):
                assert obj.__name__.partition(".")[0] in ALLOWED_IMPORTS, obj
            for name in dir(obj):
                if name.startswith("_"):
                    continue
                try:
                    reached.append(guarded_getattr(obj, name))
                except Exception:
                    pass
        frontier = reached
    assert len(seen) > 500


def test_cli_infinite_loop_ends_with_timeout_and_one_line(tmp_path):
    policy = tmp_path / "loop.py"
    policy.write_text("def route(queue, replicas, now, knobs):\n    while True:\n        pass\n")
    env = {**os.environ, "GLIA_EVO_EVAL_TIMEOUT_S": "3"}
    proc = subprocess.run(
        [sys.executable, "-m", "glia_evo.cli", "simulate", "--policy", str(policy),
         "--scenario", "glia_short", "--seed", "100", "--workers", "1"],
        capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "(timeout)" in lines[0] and "exceeded the wall-clock limit of 3 s" in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_rejects_a_bad_timeout_setting(tmp_path):
    env = {**os.environ, "GLIA_EVO_EVAL_TIMEOUT_S": "soon"}
    proc = subprocess.run(
        [sys.executable, "-m", "glia_evo.cli", "simulate", "--policy", "llq",
         "--scenario", "glia_short", "--seed", "100"],
        capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "glia-evo: error: GLIA_EVO_EVAL_TIMEOUT_S must be a positive number of seconds, "
        "got 'soon'"]
