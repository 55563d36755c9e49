"""The pool's fork server (sandbox.forkserver): jobs fork from a warm, single-threaded parent
started with the pool, and are contained exactly like jobs forked from the pool's process."""
from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from sandbox import WorkerPool

LIMITS = dict(timeout_s=30, memory_mb=512)
_WARM: dict = {}
SECRET_HOLDER: list = []


def double(x):
    return 2 * x


def whoami():
    return {"pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0),
            "env": dict(os.environ)}


def warm_value(key, value):
    _WARM[key] = value


def read_warm(key):
    return _WARM.get(key)


def remember_secret_in_parent(text):
    SECRET_HOLDER.append(text)


def secret_seen():
    return list(SECRET_HOLDER)


def fails_to_warm():
    raise RuntimeError("no warm-up today")


def exit_code(code):
    os._exit(code)


def die_by(sig):
    os.kill(os.getpid(), sig)


def gc_frozen():
    import gc
    return gc.get_freeze_count()


def sleep(s):
    time.sleep(s)
    return s


def test_jobs_fork_from_the_server_each_in_a_fresh_process_group():
    with WorkerPool(2, **LIMITS) as pool:
        server = pool.fork_server_pid
        assert server is not None and server != os.getpid()
        outs = [pool.submit(whoami).result() for _ in range(3)]
    assert all(o.status == "ok" for o in outs)
    pids = {o.value["pid"] for o in outs}
    assert len(pids) == 3                                 # one fresh process per job
    assert all(o.value["ppid"] == server for o in outs)
    assert all(o.value["pgid"] == o.value["pid"] for o in outs)
    assert all(o.value["env"] == {} for o in outs)         # environment scrubbed
    with pytest.raises(ProcessLookupError):
        os.kill(server, 0)                                 # shut down with the pool


def test_warm_state_is_inherited_and_later_parent_state_is_not():
    with WorkerPool(1, **LIMITS) as pool:
        assert read_warm("k") is None
        assert pool.warm(warm_value, "k", [1, 2, 3]) is None
        remember_secret_in_parent("sk-created-after-the-pool")   # e.g. an LLM client's key
        warmed = pool.submit(read_warm, "k").result()
        secret = pool.submit(secret_seen).result()
        frozen = pool.submit(gc_frozen).result()
        assert "RuntimeError: no warm-up today" in pool.warm(fails_to_warm)
        after = pool.submit(double, 4).result()
    SECRET_HOLDER.clear()
    assert warmed.value == [1, 2, 3]
    assert secret.value == []                # the server was forked before the secret existed
    assert frozen.value > 0                  # the warm objects are out of the jobs' collections
    assert after.value == 8


def test_unpicklable_jobs_fork_from_the_pool_process():
    box = {"n": 20}
    with WorkerPool(1, **LIMITS) as pool:
        out = pool.submit(lambda: box["n"] + 1).result()
        pid = pool.submit(whoami).result()
    assert out.status == "ok" and out.value == 21
    assert pid.value["ppid"] != os.getpid()


@pytest.mark.parametrize("fork_server", [True, False])
def test_exit_codes_and_signals_are_reported_either_way(fork_server):
    with WorkerPool(1, fork_server=fork_server, kernel_layer=False, **LIMITS) as pool:
        assert (pool.fork_server_pid is not None) == fork_server
        code = pool.submit(exit_code, 3).result()
        killed = pool.submit(die_by, signal.SIGSEGV).result()
        ok = pool.submit(double, 5).result()
    assert code.status == "crashed" and code.exitcode == 3
    assert killed.status == "crashed" and killed.exitcode == -signal.SIGSEGV
    assert "SIGSEGV" in killed.error
    assert ok.value == 10


def test_a_dead_server_is_replaced_and_its_running_jobs_crash():
    with WorkerPool(1, **LIMITS) as pool:
        first = pool.fork_server_pid
        running = pool.submit(sleep, 60)
        time.sleep(0.5)
        os.kill(first, signal.SIGKILL)
        out = running.result(timeout=30)
        again = pool.submit(whoami).result(timeout=30)
        second = pool.fork_server_pid
    assert out.status == "crashed"
    assert again.status == "ok"
    assert second is not None and second != first and again.value["ppid"] == second


def test_the_environment_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv("SANDBOX_FORK_SERVER", "0")
    with WorkerPool(1, **LIMITS) as pool:
        assert pool.fork_server_pid is None
        assert pool.warm(warm_value, "x", 1) == "no fork server"
        out = pool.submit(whoami).result()
    assert out.value["ppid"] == os.getpid()


def test_a_killed_pool_process_takes_the_server_and_its_jobs_along(tmp_path):
    import subprocess
    script = tmp_path / "owner.py"
    script.write_text(
        "import os, sys, time\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r})\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
        "from sandbox import WorkerPool\n"
        "from test_forkserver import sleep\n"
        "pool = WorkerPool(1, timeout_s=60, memory_mb=256)\n"
        "pool.submit(sleep, 60)\n"
        "time.sleep(0.5)\n"
        "print(pool.fork_server_pid, flush=True)\n"
        "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    server = int(proc.stdout.readline())
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{server}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    break
        except OSError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the fork server outlived the pool's process")
