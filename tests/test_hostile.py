"""Hostile candidate programs, evaluated through the real path (`evaluate_many` on a worker pool).

Each file in tests/hostile/ is one program whose first line says what must become of it:
`# expect: <status>: <fragment of the error message>`. An optional `# problem: <name>` line
(routing, scheduling or autoscaling; default routing) names the problem it is evaluated as.
Inside the programs `@CANARY@` stands for the path of a canary file they try to overwrite or
delete, `@PORT@` for the port of a listening loopback socket they try to reach, and the
environment variable `GLIA_HOSTILE_CANARY` holds a secret they try to read;
`# pad-to-bytes: N` pads the source with comment lines to N bytes (for the size limit, without
storing a huge file).

All programs run in one pool, in one batch per problem, on tiny instances with short limits
(8 s, 512 MiB). Every job process runs with an audit hook (sys.addaudithook, installed by the
pool's initializer) that reports sockets, subprocesses, forks, signals, file writes and
deletions over a pipe; the tests check that the hook saw nothing, that the canary file is
untouched, that no output or error contains the secret, that the socket accepted no connection,
that no process outlived the batch, that no error holds a control character, and that the hook
does see such attempts when trusted code makes them.
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from glia_evo.evaluation.parallel import evaluate_many
from glia_evo.problems import Instance, Scenario, get_problem
from sandbox import WorkerPool
from sandbox.guards import ALLOWED_IMPORTS, guarded_getattr, make_globals
from sim import ClusterSpec, ReplicaSpec
from sim.cluster import AutoscaleSpec
from sim.workload import glia_workload

HOSTILE_DIR = Path(__file__).parent / "hostile"
PROGRAMS = sorted(HOSTILE_DIR.glob("*.py"))
EXPECT = re.compile(r"^# expect: (ok|error|invalid|timeout|crashed)(?:: (.+))?$")
PAD = re.compile(r"^# pad-to-bytes: (\d+)$", re.M)
PROBLEM = re.compile(r"^# problem: (\w+)$", re.M)
ROUTING = get_problem("routing")
TIMEOUT_S, MEMORY_MB = 8.0, 512   # generous: a C stack overflow takes seconds on a loaded machine
SECRET_VAR = "GLIA_HOSTILE_CANARY"


def tiny_workload(seed: int):
    return glia_workload(seed, duration_s=20.0)


TINY = Instance(Scenario("hostile", "about 200 requests on 2 x A10",
                         ClusterSpec(replicas=(ReplicaSpec("llama3-8b/a10"),) * 2),
                         tiny_workload, seeds=(0,)), 0)
TINY_AUTOSCALE = Instance(Scenario(
    "hostile_autoscale", "about 200 requests on 1-4 x A10",
    ClusterSpec(replicas=(ReplicaSpec("llama3-8b/a10"),) * 2,
                autoscale=AutoscaleSpec(1, 4, 5.0, 10.0, 30.0)),
    tiny_workload, seeds=(0,)), 0)
INSTANCES = {"routing": TINY, "scheduling": TINY, "autoscaling": TINY_AUTOSCALE}


def problem_of(path: Path) -> str:
    match = PROBLEM.search(path.read_text())
    return match.group(1) if match else "routing"


def expectation(path: Path) -> tuple[str, str]:
    match = EXPECT.match(path.read_text().lstrip("\ufeff").splitlines()[0])
    assert match, f"{path.name}: first line must be '# expect: <status>: <message fragment>'"
    return match.group(1), match.group(2) or ""


def program_source(path: Path, canary: Path, port: int = 9) -> str:
    source = path.read_text().replace("@CANARY@", str(canary)).replace("@PORT@", str(port))
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


# --- processes: every descendant of the test process, orphans included ----------------------------
PR_SET_CHILD_SUBREAPER = 36


def _set_subreaper(on: bool) -> bool:
    """Orphaned descendants (a double fork) are re-parented to us instead of to init, so the
    leak check sees them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def live_descendants() -> set[int]:
    """Pids of the live (not zombie) descendants of this process, from /proc."""
    parents, states = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        states[int(entry)], parents[int(entry)] = fields[0], int(fields[1])
    found, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return {pid for pid in found if states.get(pid) not in ("Z", "X")}


def _secret_holders(secret: str) -> list[int]:
    """Processes (other than ours) whose environment holds the secret: exec'd escapees."""
    holders = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if secret.encode() in fh.read():
                        holders.append(int(entry))
            except OSError:
                pass
    return holders


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """Evaluate every hostile program in one pool; returns {name: EvalResult} and evidence."""
    folder = tmp_path_factory.mktemp("canary")
    canary = folder / "canary.txt"
    canary.write_text("canary\n")
    secret = "glia-secret-" + secrets.token_hex(16)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    old_secret = os.environ.get(SECRET_VAR)
    os.environ[SECRET_VAR] = secret             # before the pool forks its workers
    reaper = _set_subreaper(True)
    before = live_descendants()
    log = AuditLog()
    results = {}
    try:
        with log.pool() as pool:
            for problem in sorted({problem_of(p) for p in PROGRAMS}):
                paths = [p for p in PROGRAMS if problem_of(p) == problem]
                sources = [program_source(p, canary, port) for p in paths]
                batch = evaluate_many(sources, get_problem(problem), [INSTANCES[problem]],
                                      pool=pool)
                results.update({p.name: r for p, r in zip(paths, batch)})
    finally:
        events = log.close()
        if old_secret is None:
            os.environ.pop(SECRET_VAR, None)
        else:
            os.environ[SECRET_VAR] = old_secret
    deadline = time.monotonic() + 10
    while (leaked := live_descendants() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    if reaper:
        _set_subreaper(False)
    accepted = []
    while True:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            break
        accepted.append(conn.recv(1024) if conn else b"")
        conn.close()
    listener.close()
    return {
        "results": results,
        "events": events,
        "canary": canary.read_text() if canary.exists() else None,
        "folder": sorted(x.name for x in folder.iterdir()),
        "secret": secret,
        "accepted": accepted,
        "leaked": sorted(leaked),
        "secret_holders": _secret_holders(secret),
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


def test_no_output_or_error_holds_the_secret(hostile_run):
    secret = hostile_run["secret"]
    for name, result in hostile_run["results"].items():
        assert secret not in repr(result), name


def test_the_loopback_socket_accepted_no_connection(hostile_run):
    assert hostile_run["accepted"] == []


def test_no_process_outlived_the_batch(hostile_run):
    assert hostile_run["leaked"] == []
    assert hostile_run["secret_holders"] == []


CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def test_no_error_holds_a_control_character(hostile_run):
    for name, result in hostile_run["results"].items():
        assert not CONTROL.search(result.error or ""), (name, result.error)


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
    # the hook sees each attempt whether or not a kernel layer below refuses it
    assert "socket.__new__" in names and "open" in names and "os.remove" in names
    refused = "not permitted"
    assert socket_outcome.status == "ok" or refused in (socket_outcome.error or "")
    assert write_outcome.status == "error" and ("File too large" in write_outcome.error
                                                or refused in write_outcome.error)
    if delete_outcome.status == "ok":
        assert not canary.exists()      # the canary check would have seen it
    else:
        assert refused in delete_outcome.error and canary.read_text() == "canary\n"


def test_the_loopback_and_process_checks_detect_real_attempts():
    """The evidence the batch is checked with sees a trusted connection and a trusted child."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    with socket.create_connection(listener.getsockname(), timeout=5):
        conn, _ = listener.accept()
        conn.close()
    listener.close()
    before = live_descendants()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in live_descendants() - before
    finally:
        child.kill()
        child.wait()
    assert child.pid not in live_descendants()


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
    roots += [namespace["__builtins__"]["__import__"](m) for m in ALLOWED_IMPORTS]
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


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_subclass_answers_are_invalid_in_fast_and_reference_mode(fast):
    """The answer checks are the same code in both simulation modes."""
    from sim import PolicyInvalid, simulate

    class Liar(int):
        def __le__(self, other):
            return True

        def __ge__(self, other):
            return True

        def __lt__(self, other):
            return True

    workload = tiny_workload(0)[:20]
    routes = {
        "replica id": lambda queue, replicas, now, knobs: [(q.id, Liar(99)) for q in queue],
        "request id": lambda queue, replicas, now, knobs: [(Liar(q.id), 0) for q in queue],
        "list": lambda queue, replicas, now, knobs: type("L", (list,), {})([(q.id, 0) for q in queue]),
    }
    for what, route in routes.items():
        with pytest.raises(PolicyInvalid, match="subclass of"):
            simulate(workload, TINY.scenario.cluster, route, fast=fast)
    spec = TINY_AUTOSCALE.scenario.cluster
    with pytest.raises(PolicyInvalid, match=r"got Liar \(a subclass of int\)"):
        simulate(workload, spec, lambda q, r, n, k: [(x.id, 0) for x in q],
                 scale=lambda cluster, now, knobs: Liar(40), fast=fast)
