"""A warm parent for job processes: the fork server of a `sandbox.pool.WorkerPool`.

Forking every job from the engine's process makes each job start cold: whatever the engine
never loaded (the problem's scenarios, parsed traces, lazily imported modules) the job loads
again, and whatever the engine holds (LLM clients and their keys, MLflow, threads and their
locks) is copied into it. A pool with a fork server instead forks, once, a small single-threaded
process when the pool starts -- before the engine creates any secret -- and every job is forked
from that process. `WorkerPool.warm(fn, *args)` runs trusted code in the server first (e.g.
`glia_evo.evaluation.jobs.warm`: load the problem's scenarios and traces, import and compile what a job
needs), then freezes the garbage collector's view of everything loaded so far (`gc.freeze`), so
a job does not touch those pages again and pays no copy-on-write faults for them.

Containment is the same as without a server: each job is still one fresh process per
evaluation, forked for that job only, and runs `sandbox.pool._child_main` -- its own process
group, PR_SET_PDEATHSIG (here: dies with the server, which dies with the pool's thread), every
inherited descriptor closed but its result pipe and sentinel, stdio on /dev/null, the rlimits,
the environment scrub and the kernel layer (the seccomp/Landlock plan is still made by the
pool's process, per job, and handed over) -- before `fn` runs. The result pipe and the
sentinel pipe are created by the pool's process and passed to the server with SCM_RIGHTS, so
the pool reads the result itself, with the job's deadline, exactly as before; the server never
sees a job's result. The pool kills a job's process group itself; the server reaps it only when
the pool asks (after the kill), so a process group id cannot be reused in between.

The protocol (a private AF_UNIX socketpair; only the pool's process and the server hold it, a
job closes it with every other inherited descriptor): the pool sends a length-prefixed pickle of
a request, the server answers with a length-prefixed pickle. Pickles only travel from the pool
to the server and back between these two trusted processes; nothing a job produces is ever
unpickled (a job's result is JSON, read by the pool). Requests:

    ("job", fn, args, kwargs, plan fields) + 2 descriptors  -> ("started", pid) | ("refused", text)
    ("reap", pid, wait_s)                                   -> ("reaped", exitcode or None)
    ("warm", fn, args)                                      -> ("warmed", None | error text)

A job whose function or arguments cannot be pickled by reference (a lambda, a closure, an open
file) is forked from the pool's process as before; so is every job of a pool whose server could
not start or died (`WorkerPool(fork_server=False)` never starts one). When the pool's process
closes the socket (shutdown, or it died) the server kills the process groups of the jobs still
alive, reaps them and exits.

Only the standard library.
"""
from __future__ import annotations

import array
import gc
import os
import pickle
import signal
import socket
import struct
import sys
import threading
import time
from typing import Callable

_LEN = struct.Struct("!I")
_MAX_REQUEST = 256 << 20


class ForkServerError(RuntimeError):
    """The server cannot be reached (it died, or never started)."""


# --- framing --------------------------------------------------------------------------------------
def _send(sock: socket.socket, obj, fds: tuple[int, ...] = ()) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    frame = _LEN.pack(len(data)) + data
    if fds:
        sent = sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       array.array("i", fds))])
    else:
        sent = sock.send(frame)
    if sent < len(frame):
        sock.sendall(frame[sent:])


def _recv_exact(sock: socket.socket, n: int, into: bytearray) -> None:
    while len(into) < n:
        chunk = sock.recv(min(n - len(into), 1 << 20))
        if not chunk:
            raise EOFError("the other end closed the socket")
        into += chunk


def _recv(sock: socket.socket, max_fds: int = 0):
    """One frame: (unpickled object, received descriptors)."""
    fds: list[int] = []
    head = bytearray()
    if max_fds:
        data, ancdata, _flags, _addr = sock.recvmsg(
            _LEN.size, socket.CMSG_SPACE(max_fds * array.array("i").itemsize))
        for level, kind, blob in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(blob[:len(blob) - len(blob) % got.itemsize])
                fds.extend(got)
        if not data:
            for fd in fds:
                os.close(fd)
            raise EOFError("the other end closed the socket")
        head += data
    _recv_exact(sock, _LEN.size, head)
    (size,) = _LEN.unpack(head)
    if size > _MAX_REQUEST:
        for fd in fds:
            os.close(fd)
        raise ValueError(f"a request of {size} bytes")
    body = bytearray()
    _recv_exact(sock, size, body)
    return pickle.loads(bytes(body)), fds


# --- the pool's side ----------------------------------------------------------------------------
class ForkServer:
    """The pool's handle on its server. Create it in the thread that will use it for the whole
    life of the pool (PR_SET_PDEATHSIG binds the server to that thread); calls are serialised."""

    def __init__(self, child_main: Callable, keep_fds: tuple[int, ...] = ()):
        parent_sock, server_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        parent_pid = os.getpid()
        pid = os.fork()
        if pid == 0:                      # the server
            code = 0
            try:
                parent_sock.close()
                code = _serve(server_sock, parent_pid, child_main, keep_fds)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        server_sock.close()
        self.pid = pid
        self._sock = parent_sock
        self._lock = threading.Lock()
        self.alive = True
        self.jobs_started = 0
        try:
            reply, _ = _recv(self._sock)        # the server says it is ready
        except (OSError, EOFError, ValueError, pickle.PickleError) as exc:
            self._dead()
            raise ForkServerError(f"the fork server did not start: {exc}") from None
        if reply != ("ready", pid):
            self.close()
            raise ForkServerError(f"the fork server answered {reply!r}")

    def _ask(self, request, fds: tuple[int, ...] = ()):
        with self._lock:
            if not self.alive:
                raise ForkServerError("the fork server is not running")
            try:
                _send(self._sock, request, fds)
                reply, _ = _recv(self._sock)
                return reply
            except (OSError, EOFError, ValueError, pickle.PickleError) as exc:
                self._dead()
                raise ForkServerError(f"the fork server stopped answering: "
                                      f"{type(exc).__name__}: {exc}") from None

    def _dead(self) -> None:
        self.alive = False
        try:
            self._sock.close()
        except OSError:
            pass
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except OSError:
            pass

    def start(self, payload: bytes, plan_fields, result_w: int, sentinel_w: int) -> int | None:
        """Fork a job from the server: its pid, or None when the server cannot unpickle
        `payload` (then fork it from the pool's process). Raises ForkServerError."""
        reply = self._ask(("job", payload, plan_fields), (result_w, sentinel_w))
        if reply[0] == "started":
            self.jobs_started += 1
            return reply[1]
        return None

    def reap(self, pid: int, wait_s: float) -> int | None:
        """Wait (up to wait_s) for a job the pool has killed; its exit code (negative: the
        signal), or None."""
        try:
            reply = self._ask(("reap", pid, wait_s))
        except ForkServerError:
            return None
        return reply[1]

    def warm(self, fn: Callable, *args) -> str | None:
        """Run fn(*args) in the server (trusted code); None, or what went wrong."""
        try:
            payload = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            return f"cannot send the warm-up: {type(exc).__name__}: {exc}"
        try:
            return self._ask(("warm", payload))[1]
        except ForkServerError as exc:
            return str(exc)

    def close(self) -> None:
        """The server kills and reaps the jobs still alive, then exits."""
        with self._lock:
            if not self.alive:
                return
            self.alive = False
            try:
                self._sock.close()
            except OSError:
                pass
        deadline = time.monotonic() + 10
        while True:
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        if not done:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except OSError:
                pass


class ServedProcess:
    """The parts of a `multiprocess.Process` the pool uses, for a job forked by the server."""

    def __init__(self, server: ForkServer, pid: int, sentinel: int):
        self.server, self.pid, self.sentinel = server, pid, sentinel
        self.exitcode: int | None = None
        self._reaped = False

    def kill_group(self) -> None:
        """SIGKILL the job's process group (safe: the server has not reaped its leader)."""
        if self._reaped or not self.server.alive:
            return     # a dead server's jobs died with it (PR_SET_PDEATHSIG)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass

    def kill(self) -> None:
        self.kill_group()

    def join(self, timeout: float | None = None) -> None:
        if self._reaped:
            return
        self.exitcode = self.server.reap(self.pid, 5.0 if timeout is None else timeout)
        self._reaped = True

    def close(self) -> None:
        if self.sentinel is not None:
            try:
                os.close(self.sentinel)
            except OSError:
                pass
            self.sentinel = None


# --- the server ---------------------------------------------------------------------------------
def _die_with(parent_pid: int) -> None:
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)           # PR_SET_PDEATHSIG
    except Exception:
        pass
    if os.getppid() != parent_pid:
        os._exit(1)


def _close_fds(keep: set[int]) -> None:
    import resource
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limit = 65536 if limit in (resource.RLIM_INFINITY, -1) or limit > 65536 else limit
    low = 3
    for fd in sorted(k for k in keep if k >= 3) + [limit]:
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1


def _exitcode(status: int) -> int:
    try:
        return os.waitstatus_to_exitcode(status)
    except ValueError:
        return status


def _serve(sock: socket.socket, parent_pid: int, child_main: Callable,
           keep_fds: tuple[int, ...]) -> int:
    _die_with(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # the pool decides when jobs stop
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE):
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    _close_fds({sock.fileno(), *keep_fds})
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        if devnull != 0:
            os.close(devnull)
    except OSError:
        pass
    gc.collect()
    gc.freeze()          # what the fork inherited: jobs' collections never walk it again
    alive: set[int] = set()
    _send(sock, ("ready", os.getpid()))
    try:
        while True:
            try:
                request, fds = _recv(sock, max_fds=2)
            except (EOFError, OSError):
                return 0
            kind = request[0]
            if kind == "job":
                _send(sock, _fork_job(request, fds, child_main, alive))
            elif kind == "reap":
                _send(sock, ("reaped", _reap(request[1], request[2], alive)))
            elif kind == "warm":
                _send(sock, ("warmed", _warm(request[1])))
            elif kind == "hello":
                _send(sock, ("ready", os.getpid()))
            else:
                for fd in fds:
                    os.close(fd)
                _send(sock, ("refused", f"unknown request {kind!r}"))
    finally:
        for pid in list(alive):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                os.waitpid(pid, 0)
            except OSError:
                pass


def _fork_job(request, fds: list[int], child_main: Callable, alive: set[int]):
    if len(fds) != 2:
        for fd in fds:
            os.close(fd)
        return ("refused", f"a job request with {len(fds)} descriptors")
    result_w, sentinel_w = fds
    try:
        fn, args, kwargs = pickle.loads(request[1])
        plan = None
        if request[2] is not None:
            from sandbox import kernel
            plan = kernel.Plan(*request[2])
    except BaseException as exc:          # e.g. a function this process cannot import
        os.close(result_w)
        os.close(sentinel_w)
        return ("refused", f"{type(exc).__name__}: {exc}")
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(result_w)
        os.close(sentinel_w)
        return ("refused", f"fork failed: {exc}")
    if pid == 0:
        try:
            child_main(result_w, sentinel_w, fn, args, kwargs, plan)
        finally:
            os._exit(87)
    os.close(result_w)
    os.close(sentinel_w)
    try:
        os.setpgid(pid, pid)      # also done by the child; here too, before the pool may kill
    except OSError:
        pass
    alive.add(pid)
    return ("started", pid)


def _reap(pid: int, wait_s: float, alive: set[int]) -> int | None:
    if pid not in alive:
        return None
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            alive.discard(pid)
            return None
        if done:
            alive.discard(pid)
            return _exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.001)


def _warm(payload: bytes) -> str | None:
    try:
        fn, args = pickle.loads(payload)
        fn(*args)
    except BaseException as exc:        # a failed warm-up only costs the jobs their head start
        return f"{type(exc).__name__}: {exc}"[:500]
    finally:
        gc.collect()
        gc.freeze()
    return None


if __name__ == "__main__":     # pragma: no cover - not a program
    sys.exit("sandbox.forkserver is used by sandbox.pool")
