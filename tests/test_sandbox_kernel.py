"""sandbox.kernel: what a job process can do when the language layer is bypassed entirely.

Every attack below is a plain Python function submitted to the pool (trusted test code standing
in for a candidate that escaped RestrictedPython): it runs as whatever user the tests run as
(root here and in CI), with ctypes at hand. The kernel layer must stop it; the test process and
its files must not notice anything.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from sandbox import WorkerPool, kernel

SUPPORT = kernel.probe()
needs = {layer: pytest.mark.skipif(layer not in SUPPORT.available,
                                   reason=f"{layer} unavailable: {SUPPORT.reason}")
         for layer in kernel.LAYERS}
LIMITS = {"timeout_s": 30, "memory_mb": 1024}


def attempt(results: dict, label: str, action) -> None:
    """Run `action`; record 'allowed: ...' or the error it met (JSON-friendly)."""
    try:
        value = action()
        results[label] = f"allowed: {value!r}"[:200]
    except BaseException as exc:      # noqa: BLE001 - the attack reports, never raises
        results[label] = f"{type(exc).__name__}: {getattr(exc, 'errno', '')}"


def libc():
    lib = ctypes.CDLL(None, use_errno=True)
    lib.syscall.restype = ctypes.c_long
    return lib


def raw(nr: int, *args) -> str:
    """A system call through ctypes: 'ok <result>' or the errno's name."""
    lib = libc()
    ctypes.set_errno(0)
    result = lib.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if result == -1:
        return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    return f"ok {result}"


# --- attacks ---------------------------------------------------------------------------------------
def network_attack(port: int) -> dict:
    out: dict = {}
    attempt(out, "tcp connect", lambda: socket.create_connection(("127.0.0.1", port), timeout=2))
    attempt(out, "udp socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    attempt(out, "unix socket", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    attempt(out, "netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW))
    attempt(out, "socketpair", socket.socketpair)
    attempt(out, "libc socket", lambda: os.strerror(ctypes.get_errno())
            if libc().socket(socket.AF_INET, socket.SOCK_STREAM, 0) < 0 else "made one")
    return out


def process_attack(pidfile: str) -> dict:
    out: dict = {}
    script = f"echo $$ > {pidfile}"

    def fork():
        pid = os.fork()
        if pid == 0:
            with open(pidfile, "w") as fh:
                fh.write(str(os.getpid()))
            os._exit(0)
        return pid

    attempt(out, "fork", fork)
    attempt(out, "subprocess", lambda: subprocess.run(["/bin/sh", "-c", script]).returncode)
    attempt(out, "posix_spawn", lambda: os.posix_spawn("/bin/sh", ["sh", "-c", script], {}))
    attempt(out, "system", lambda: os.system(script))
    attempt(out, "execv", lambda: os.execv("/bin/sh", ["sh", "-c", script]))
    attempt(out, "libc fork", lambda: libc().fork())
    if platform.machine() == "x86_64":
        def clone():           # clone(SIGCHLD): a fork by another name
            result = raw(56, signal.SIGCHLD, 0, 0, 0, 0)
            if result == "ok 0":
                os._exit(0)
            return result
        out["raw clone"] = clone()
        out["raw clone3"] = raw(435, 0, 0)
        out["raw clone newns thread"] = raw(56, 0x00010000 | 0x00000800 | 0x00000100 |
                                            0x00020000, 0, 0, 0, 0)
        out["raw unshare"] = raw(272, 0x00020000)

    def thread():              # threads are fine: they share the process and its filters
        box = []
        worker = threading.Thread(target=lambda: box.append(sum(range(1000))))
        worker.start()
        worker.join()
        return box[0]

    attempt(out, "thread", thread)
    return out


def signal_attack() -> dict:
    out: dict = {}
    parent = os.getppid()
    attempt(out, "kill parent", lambda: os.kill(parent, signal.SIGKILL))
    attempt(out, "probe init", lambda: os.kill(1, 0))
    attempt(out, "kill everyone", lambda: os.kill(-1, 0))
    attempt(out, "killpg parent", lambda: os.killpg(os.getpgid(parent), 0))
    attempt(out, "pidfd_open", lambda: os.pidfd_open(parent))
    attempt(out, "signal self", lambda: os.kill(os.getpid(), 0))
    if platform.machine() == "x86_64":
        out["raw tgkill"] = raw(234, parent, parent, 0)
        out["raw rt_sigqueueinfo"] = raw(129, parent, 0, 0)
        out["raw pidfd_send_signal"] = raw(424, 0, 0, 0, 0)
        out["raw ptrace attach"] = raw(101, 16, parent, 0, 0)
        out["raw process_vm_readv"] = raw(310, parent, 0, 0, 0, 0, 0)
    return out


def file_attack(canary: str) -> dict:
    out: dict = {}
    folder = os.path.dirname(canary)

    def read(path, mode="r"):
        with open(path, mode) as fh:
            return fh.read(100)

    def write(mode):
        with open(canary, mode) as fh:
            fh.write("pwned\n")

    attempt(out, "read", lambda: read(canary))
    attempt(out, "overwrite", lambda: write("w"))
    attempt(out, "append", lambda: write("a"))
    attempt(out, "update", lambda: write("r+"))
    attempt(out, "os.open O_RDWR", lambda: os.open(canary, os.O_RDWR))
    attempt(out, "create", lambda: open(canary + ".new", "x"))
    attempt(out, "truncate", lambda: os.truncate(canary, 0))
    attempt(out, "delete", lambda: os.remove(canary))
    attempt(out, "rename", lambda: os.rename(canary, canary + ".moved"))
    attempt(out, "link", lambda: os.link(canary, canary + ".link"))
    attempt(out, "symlink", lambda: os.symlink(canary, canary + ".sym"))
    attempt(out, "chmod", lambda: os.chmod(canary, 0o777))
    attempt(out, "utime", lambda: os.utime(canary, (0, 0)))
    attempt(out, "mkdir", lambda: os.mkdir(os.path.join(folder, "dir")))
    attempt(out, "mkfifo", lambda: os.mkfifo(os.path.join(folder, "fifo")))
    attempt(out, "listdir", lambda: os.listdir(folder))
    attempt(out, "etc passwd", lambda: read("/etc/passwd"))
    attempt(out, "proc parent mem", lambda: read(f"/proc/{os.getppid()}/mem", "rb"))
    attempt(out, "proc parent cmdline", lambda: read(f"/proc/{os.getppid()}/cmdline", "rb"))
    attempt(out, "root", lambda: os.listdir("/root"))
    attempt(out, "dev write", lambda: os.open("/dev/null", os.O_WRONLY))
    attempt(out, "setrlimit", lambda: __import__("resource").setrlimit(
        __import__("resource").RLIMIT_CPU, (10**6, 10**6)))
    if platform.machine() == "x86_64":
        out["raw openat2"] = raw(437, -100, 0, 0, 0)
        out["raw io_uring_setup"] = raw(425, 8, 0)
        out["raw bpf"] = raw(321, 0, 0, 0)
        out["raw mount"] = raw(165, 0, 0, 0, 0, 0)
        out["raw prlimit64 raise"] = raw(302, 0, 0, 1, 0)    # new-limit pointer 1: refused
    return out


def environment_attack() -> dict:
    out: dict = {"environ": dict(os.environ)}
    for path in ("/proc/self/environ", f"/proc/{os.getppid()}/environ"):
        attempt(out, path, lambda path=path: open(path, "rb").read().decode("latin-1"))
    return out


def still_works(module: str) -> dict:
    import random

    import numpy as np
    import simpy

    env = simpy.Environment()
    done = []

    def proc(env):
        yield env.timeout(3)
        done.append(env.now)

    env.process(proc(env))
    env.run()
    box = []
    worker = threading.Thread(target=lambda: box.append(float(np.linalg.det(np.eye(3) * 2))))
    worker.start()
    worker.join()
    imported = __import__(module)
    return {"simpy": done, "thread det": box, "random": random.Random().random() < 1,
            "urandom": len(os.urandom(8)), "localtime": time.localtime().tm_year > 2000,
            "lazy import": imported.__name__, "hoard": len(bytearray(200 * 2**20)),
            "getrlimit": __import__("resource").getrlimit(__import__("resource").RLIMIT_AS)[0]}


# --- tests -----------------------------------------------------------------------------------------
def test_probe_reports_every_layer():
    assert isinstance(SUPPORT, kernel.KernelSupport)
    assert set(SUPPORT.available) | set(SUPPORT.missing) == set(kernel.LAYERS)
    assert SUPPORT.ok == (not SUPPORT.missing)
    assert SUPPORT.reason and "\n" not in SUPPORT.reason
    assert kernel.probe() is SUPPORT          # cached
    with WorkerPool(1, **LIMITS) as pool:
        assert pool.kernel_support == SUPPORT
    with WorkerPool(1, kernel_layer=False, **LIMITS) as pool:
        assert pool.kernel_support is None


def denied(value: str) -> bool:
    return value.startswith(("PermissionError", "EPERM", "ENOSYS", "EACCES", "OSError: 1",
                             "ValueError"))


@needs["seccomp"]
def test_no_network():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    try:
        with WorkerPool(1, **LIMITS) as pool:
            out = pool.submit(network_attack, listener.getsockname()[1]).result()
        assert out.status == "ok", out
        assert all(v.startswith("PermissionError: 1") for k, v in out.value.items()
                   if k != "libc socket"), out.value
        assert out.value["libc socket"] == "allowed: 'Operation not permitted'"
        with pytest.raises(BlockingIOError):
            listener.accept()                 # nobody connected
    finally:
        listener.close()


@needs["seccomp"]
def test_no_new_processes_but_threads_work(tmp_path):
    pidfile = tmp_path / "pid"
    with WorkerPool(1, **LIMITS) as pool:
        out = pool.submit(process_attack, str(pidfile)).result()
    assert out.status == "ok", out
    values = dict(out.value)
    assert values.pop("thread") == "allowed: 499500"
    system = values.pop("system")    # os.system does not raise: -1, or 127 << 8 (glibc's
    assert system in ("allowed: -1", "allowed: 32512") or denied(system), system   # no spawn)
    assert values.pop("libc fork") == "allowed: -1"
    assert all(denied(v) for v in values.values()), values
    if "raw clone3" in values:
        assert values["raw clone3"] == "ENOSYS" and values["raw clone"] == "EPERM"
    assert not pidfile.exists()
    assert os.listdir(tmp_path) == []


@needs["seccomp"]
def test_no_signals_to_anyone():
    with WorkerPool(1, **LIMITS) as pool:
        out = pool.submit(signal_attack).result()
        after = pool.submit(os.getpid).result()
    assert out.status == "ok", out
    assert all(denied(v) for v in out.value.values()), out.value
    assert after.status == "ok"                # the test process (the parent) is still here


@needs["seccomp"]
@needs["landlock"]
def test_no_file_access_outside_the_installation(tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("canary\n")
    before = os.stat(canary)
    with WorkerPool(1, **LIMITS) as pool:
        out = pool.submit(file_attack, str(canary)).result()
    assert out.status == "ok", out
    assert all(denied(v) for v in out.value.values()), out.value
    assert out.value["read"] == f"PermissionError: {errno.EACCES}"      # Landlock
    assert out.value["overwrite"] == f"PermissionError: {errno.EPERM}"  # seccomp
    assert canary.read_text() == "canary\n"
    after = os.stat(canary)
    assert (after.st_mode, after.st_mtime_ns, after.st_nlink) == \
           (before.st_mode, before.st_mtime_ns, before.st_nlink)
    assert sorted(os.listdir(tmp_path)) == ["canary.txt"]


def test_the_environment_is_gone(monkeypatch):
    monkeypatch.setenv("GLIA_EVO_TEST_CANARY", "canary-3f9a1c-secret")
    with WorkerPool(1, **LIMITS) as pool:
        out = pool.submit(environment_attack).result()
    assert out.status == "ok", out
    assert out.value["environ"] == {}
    assert "canary-3f9a1c" not in repr(out.value)


def test_the_environment_block_is_zeroed_even_without_landlock():
    """The canary is in the process's original environment block (set by its parent), and the
    job may read /proc/self/environ (no kernel layer): it must find only zeros."""
    code = textwrap.dedent("""
        import json, os, sys
        from sandbox import WorkerPool
        def job():
            with open("/proc/self/environ", "rb") as fh:
                return {"environ": dict(os.environ), "block": fh.read().decode("latin-1")}
        with WorkerPool(1, timeout_s=30, memory_mb=512, kernel_layer=False) as pool:
            out = pool.submit(job).result()
        print(json.dumps([out.status, out.value]))
    """)
    env = {**os.environ, "GLIA_EVO_TEST_CANARY": "canary-77e1-secret"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 0, proc.stderr
    assert "canary-77e1" not in proc.stdout
    assert '"ok"' in proc.stdout and '"environ": {}' in proc.stdout


@needs["seccomp"]
@needs["landlock"]
def test_computing_importing_and_threads_still_work():
    module = "wave"
    assert module not in sys.modules         # imported lazily, inside the job
    with WorkerPool(1, **LIMITS) as pool:
        out = pool.submit(still_works, module).result()
    assert out.status == "ok", out
    assert out.value["simpy"] == [3] and out.value["thread det"] == [pytest.approx(8.0)]
    assert out.value["lazy import"] == module and out.value["hoard"] == 200 * 2**20
    assert out.value["random"] is True and out.value["urandom"] == 8
    assert out.value["localtime"] is True and out.value["getrlimit"] > 0


def test_without_the_kernel_layer_jobs_are_only_rlimited():
    with WorkerPool(1, kernel_layer=False, **LIMITS) as pool:
        out = pool.submit(network_attack, 9).result()
    assert out.status == "ok"
    assert out.value["socketpair"].startswith("allowed")


def test_a_layer_that_fails_to_install_crashes_the_job(monkeypatch):
    real = kernel.plan

    def broken(*args, **kwargs):
        good = real(*args, **kwargs)
        return kernel.Plan(kernel.KernelSupport(kernel.LAYERS, (), "forced", 7),
                           b"\x00" * 8 * 5000, good.paths)    # a filter the kernel refuses

    with WorkerPool(1, **LIMITS) as pool:
        monkeypatch.setattr(kernel, "plan", broken)
        out = pool.submit(os.getpid).result()
        monkeypatch.setattr(kernel, "plan", real)
        after = pool.submit(os.getpid).result()
    assert out.status == "crashed" and "kernel layer" in out.error
    assert after.status == "ok"


def test_read_paths_grant_packages_not_the_repository():
    paths = kernel.read_paths(["/nonexistent/extra", "/usr/share/zoneinfo"])
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    import sandbox
    assert os.path.dirname(os.path.abspath(sandbox.__file__)) in paths
    assert repo not in paths and "/" not in paths and os.getcwd() not in paths
    assert not any(p == "/tmp" or p.startswith(("/proc", "/etc/passwd", "/home")) for p in paths)
    assert "/nonexistent/extra" not in paths
    assert sys.prefix in paths or os.path.abspath(sys.prefix) in paths
