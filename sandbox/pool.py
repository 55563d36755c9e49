"""Contained execution of jobs: every job runs in its own forked process, under limits.

`WorkerPool(workers, timeout_s, memory_mb, cpu_s).submit(fn, *args)` returns a
`concurrent.futures.Future` that always resolves to a `JobOutcome`:

=========  =================================================================================
status     when
=========  =================================================================================
ok         `fn` returned; `value` is what it returned
error      `fn` raised (`error` is "Type: message", `traceback` the formatted traceback), or
           its value could not be sent back (not JSON data, too large)
timeout    the wall-clock limit passed (the process is killed), or the CPU-time limit did
           (the kernel sends SIGXCPU)
memory     the address-space limit made an allocation fail (MemoryError)
crashed    the process died without a result: killed by a signal (segfault, ...), `os._exit`,
           `sys.exit`, or the pool was shut down while the job ran; or it sent bytes that are
           not a well-formed result (the job got out of the Python sandbox: see below)
=========  =================================================================================

Why one process per job: `multiprocess.Pool` waits forever for a task whose worker died, and
RestrictedPython limits neither CPU nor memory. So each job is forked on its own; in the child,
before `fn` runs: it becomes the leader of a new process group (so it and anything it forks are
killed together), asks the kernel to kill it if the pool's thread dies (PR_SET_PDEATHSIG), closes
every inherited file descriptor but its result pipe, points stdin/stdout/stderr at /dev/null (an
output flood goes nowhere), and sets RLIMIT_AS (address space: `memory_mb` on top of what the fork
already maps), RLIMIT_CPU, RLIMIT_CORE=0 (no core files), RLIMIT_FSIZE=0 (no writing to regular
files; `max_file_mb`) and RLIMIT_NPROC=0 (no forking for non-root users; `allow_fork`). Then
it empties its environment (os.environ and the original environment block in memory, so
/proc/self/environ shows no secret) and installs the kernel layer (`sandbox.kernel`: no_new_privs,
Landlock read-only file access, a seccomp filter against sockets, processes, signals, writes and
more; `kernel_layer=False` leaves it out, for trusted jobs), and only then runs the initializer
(trusted code, already confined) and `fn`. The
parent waits on the result pipe and the process sentinel with the job's deadline and kills the
whole process group (SIGKILL) when the job ends, whatever the reason, so nothing is left behind.
At most `workers` job processes are alive at any moment.

Where jobs are forked from: by default, a fork server (`sandbox.forkserver`) the pool starts with
itself -- a single-threaded copy of this process as it was then, before any LLM client or key
existed, that `warm(fn, *args)` can preload (scenarios, traces, imports) so each job starts
warm. Every job is still its own fresh process, contained as above; the pool still reads its
result and kills its group itself. `fn` and its arguments go to the server as a pickle by
reference (the pool's process to its own server, never the other way from a job); a job whose
function or arguments cannot be pickled (a lambda, a closure) is forked from this process, so any
callable works. Note that a job forked by the server sees module state as it was when the pool
started (plus the warm-ups), not changes this process made later. The value
comes back as JSON over a non-blocking pipe that the parent reads with the job's deadline (a
length header, then `["ok", value]`, `["error", type, message, traceback]` or
`["memory", type, traceback]`), never as a pickle: a job that escapes the Python sandbox can
write whatever bytes it likes to that pipe, and unpickling them would run its code in the engine.
So `fn` must return JSON data: dicts with str keys, lists, tuples (they come back as lists), str,
int, float (NaN and infinities allowed, as JSON extensions), bool, None, nested at most 64 levels,
at most 1,000,000 values in all; anything else ends as status `error` ("the job's result cannot
be sent back: ..."). The parent decodes with limits: the length header is checked against
`max_result_mb` before anything more is read; a message that is not UTF-8 JSON, nests too deep,
is too large, or does not have one of the three shapes above makes the job `crashed` ("the job
process sent a malformed result: ..."). Whatever a job sends, the pool goes on serving the others.

This module imports only the standard library, `multiprocess`, `sandbox.kernel` and
`sandbox.forkserver`.
"""
from __future__ import annotations

import atexit
import collections
import concurrent.futures
import ctypes
import json
import math
import os
import pickle
import resource
import signal
import struct
import sys
import threading
import time
import traceback as _traceback
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import multiprocess
from multiprocess import popen_fork
from multiprocess.connection import wait as _wait
from multiprocess.context import ForkProcess

from sandbox import kernel

STATUSES = ("ok", "error", "timeout", "memory", "crashed")
FORK_SERVER_ENV = "SANDBOX_FORK_SERVER"     # "0": fork jobs from the pool's process
_SERVER_RESTARTS = 3                        # a server that died is started again this often

_EXIT_MEMORY = 86          # the child ran out of memory outside `fn` (e.g. pickling the result)
_EXIT_INTERNAL = 87        # the child's own containment code failed
_RESERVE_BYTES = 4 << 20   # released on MemoryError so the child can still report it
_HEADER = struct.Struct("!Q")
_MAX_MESSAGE = 2000
_MAX_TRACEBACK = 8000
MAX_RESULT_DEPTH = 64            # nesting levels of a job's JSON value
MAX_RESULT_VALUES = 1_000_000    # values (containers and scalars) in a job's JSON value
_PR_SET_PDEATHSIG = 1
_SIGNAL_NOTES = {
    "SIGSEGV": "segmentation fault", "SIGBUS": "bus error", "SIGABRT": "aborted",
    "SIGFPE": "floating-point exception", "SIGILL": "illegal instruction",
    "SIGXFSZ": "tried to write to a file", "SIGKILL": "killed",
    "SIGXCPU": "CPU-time limit", "SIGSYS": "a system call of another ABI",
}


@dataclass
class JobOutcome:
    """What became of one job (see the module docstring for the statuses)."""

    status: str                      # ok | error | timeout | memory | crashed
    value: Any = None                # fn's return value when status == "ok"
    error: str | None = None         # one line, for every status but ok
    duration_s: float = 0.0          # wall clock from fork to the end of the job
    exitcode: int | None = None      # of a job process that died or was killed (negative: signal)
    error_type: str | None = None    # exception class name when status == "error" / "memory"
    traceback: str | None = None     # formatted traceback when fn raised

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class _Limits:
    timeout_s: float | None
    memory_mb: float | None
    cpu_s: float | None
    max_file_mb: float | None
    allow_fork: bool
    max_result_bytes: int


class _Job:
    __slots__ = ("future", "fn", "args", "kwargs", "process", "reader", "buffer", "expected",
                 "started", "deadline", "eof")

    def __init__(self, future, fn, args, kwargs):
        self.future, self.fn, self.args, self.kwargs = future, fn, args, kwargs
        self.process = self.reader = self.expected = None
        self.buffer = bytearray()
        self.started = self.deadline = None
        self.eof = False


_POOLS: "weakref.WeakSet[WorkerPool]" = weakref.WeakSet()


@atexit.register
def _shutdown_all() -> None:
    """Interpreter exit kills every job still running, in every pool."""
    for pool in list(_POOLS):
        pool.shutdown(wait=True, kill=True)


class WorkerPool:
    """Run jobs in forked, resource-limited processes, at most `workers` at a time.

    workers:    job processes alive at once.
    timeout_s:  wall-clock limit per job (None: none).
    memory_mb:  address space (RLIMIT_AS) a job may add to what its fork already maps (None: none).
    cpu_s:      CPU-time limit per job (RLIMIT_CPU, whole seconds, rounded up; default: timeout_s).
    max_file_mb: RLIMIT_FSIZE; 0 (default) forbids writing to regular files (None: no limit).
    allow_fork: leave RLIMIT_NPROC alone (by default it is 0: a job cannot fork or start threads,
                unless it runs as root, which the kernel exempts).
                With the kernel layer, `allow_fork` also leaves fork/vfork/clone allowed.
    kernel_layer: install `sandbox.kernel.contain()` in each job process (default). False: only
                the limits above and the environment scrub (for trusted jobs, and tests of the
                pool itself).
    read_paths: more files or directories the kernel layer leaves readable.
    initializer, initargs: called in each job process after the limits and the kernel layer
                (trusted code, but confined like the job).
    keep_fds:   inherited file descriptors the job may keep (all others are closed).
    max_result_mb: larger values are refused (status error).
    fork_server: fork the jobs from a warm, single-threaded server process started with the pool
                (`sandbox.forkserver`; `warm()` preloads it) instead of from this process.
                Default: on, unless SANDBOX_FORK_SERVER=0. Jobs whose function or arguments
                cannot be pickled by reference are forked from this process, as without it.

    `kernel_support` is what `sandbox.kernel.probe()` found on this machine (None without the
    kernel layer); layers it lists as missing are not installed.

    Use as a context manager: leaving the block normally waits for the submitted jobs; leaving it
    with an exception kills them. `shutdown()` kills everything by default.
    """

    def __init__(self, workers: int = 1, timeout_s: float | None = 600.0,
                 memory_mb: float | None = 2048, cpu_s: float | None = None, *,
                 max_file_mb: float | None = 0, allow_fork: bool = False,
                 kernel_layer: bool = True, read_paths: Iterable[str] = (),
                 initializer: Callable | None = None, initargs: tuple = (),
                 keep_fds: Iterable[int] = (), max_result_mb: float = 64,
                 fork_server: bool | None = None):
        if int(workers) < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        for name, value in (("timeout_s", timeout_s), ("memory_mb", memory_mb), ("cpu_s", cpu_s)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value}")
        self.workers = int(workers)
        self.limits = _Limits(
            timeout_s=timeout_s, memory_mb=memory_mb,
            cpu_s=timeout_s if cpu_s is None else cpu_s,
            max_file_mb=max_file_mb, allow_fork=allow_fork,
            max_result_bytes=int(max_result_mb * 2**20))
        self._initializer, self._initargs = initializer, tuple(initargs)
        self.kernel_layer = bool(kernel_layer)
        self._read_paths = tuple(str(p) for p in read_paths)
        self.kernel_support = None
        if self.kernel_layer:    # probe and build the filter now, in this process, not per job
            self.kernel_support = kernel.plan(self._read_paths, allow_fork=allow_fork).support
        self._keep_fds = tuple(sorted(set(int(fd) for fd in keep_fds)))
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._queue: collections.deque[_Job] = collections.deque()
        self._running: list[_Job] = []
        self._closed = False          # no more submissions
        self._kill = False            # kill running jobs, cancel queued ones
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        if fork_server is None:
            fork_server = os.environ.get(FORK_SERVER_ENV, "1").strip() not in ("0", "false", "no")
        self._want_server = bool(fork_server)
        self._server = None
        self._server_failures = 0
        self._warmups: list[tuple] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="sandbox-pool", daemon=True)
        self._thread.start()
        self._ready.wait()        # the server is forked before anything else happens here
        _POOLS.add(self)

    # --- public API ------------------------------------------------------------------------------
    @property
    def timeout_s(self) -> float | None:
        return self.limits.timeout_s

    @property
    def memory_mb(self) -> float | None:
        return self.limits.memory_mb

    @property
    def cpu_s(self) -> float | None:
        return self.limits.cpu_s

    def submit(self, fn: Callable, *args, **kwargs) -> concurrent.futures.Future:
        """Queue `fn(*args, **kwargs)`; the future resolves to a JobOutcome (never raises)."""
        if os.getpid() != self._pid:
            raise RuntimeError("a WorkerPool cannot be used in a process forked from its owner")
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a WorkerPool that was shut down")
            self._queue.append(_Job(future, fn, args, kwargs))
        self._wakeup()
        return future

    def warm(self, fn: Callable, *args) -> str | None:
        """Run the trusted `fn(*args)` once in the fork server, so every job forked after it
        starts with what it loaded (scenarios, traces, imports). Remembered: a server started
        again runs it too. Returns None, or why it did not run (no server, an exception: the
        jobs then only start colder)."""
        if os.getpid() != self._pid:
            raise RuntimeError("a WorkerPool cannot be used in a process forked from its owner")
        self._warmups.append((fn, args))
        server = self._server
        if server is None or not server.alive:
            return "no fork server"
        return server.warm(fn, *args)

    @property
    def fork_server_pid(self) -> int | None:
        """The fork server's pid while it runs (None: jobs fork from this process)."""
        server = self._server
        return server.pid if server is not None and server.alive else None

    def map_outcomes(self, fn: Callable, *iterables) -> Iterator[JobOutcome]:
        """Submit `fn(*items)` for every item of zip(*iterables) at once; yield the outcomes in
        order. Every job yields an outcome, whatever it did."""
        futures = [self.submit(fn, *items) for items in zip(*iterables)]
        for future in futures:
            yield future.result()

    def shutdown(self, wait: bool = True, *, kill: bool = True) -> None:
        """Stop accepting jobs. kill=True: kill running jobs (status crashed) and cancel queued
        ones; kill=False: let every submitted job finish. wait=True: return only when no job
        process is left."""
        with self._lock:
            self._closed = True
            if kill:
                self._kill = True
        self._wakeup()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.shutdown(wait=True, kill=exc_type is not None)

    # --- the supervisor thread -------------------------------------------------------------------
    def _wakeup(self) -> None:
        with self._lock:     # never write to the descriptor once closed (its number may be reused)
            if self._wake_w is None:
                return
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass      # the pipe is full: a wake-up is pending anyway

    def _supervise(self) -> None:
        try:
            self._start_server()
        finally:
            self._ready.set()
        try:
            while self._step():
                pass
        except BaseException as exc:  # never leave a future unresolved, even on a bug here
            detail = f"internal error in the worker pool: {type(exc).__name__}: {exc}"
            for job in list(self._running):
                self._kill_job(job)
                self._resolve(job, JobOutcome("crashed", error=detail))
            with self._lock:
                self._closed = True
                queued, self._queue = list(self._queue), collections.deque()
            for job in queued:
                if job.future.set_running_or_notify_cancel():
                    job.future.set_result(JobOutcome("crashed", error=detail))
        finally:
            server, self._server = self._server, None
            if server is not None:
                server.close()           # kills and reaps whatever job it still has
            with self._lock:
                self._closed = True
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_w = None

    def _start_server(self) -> None:
        """Fork the server from this (the supervisor) thread: PR_SET_PDEATHSIG ties it to the
        thread that lives as long as the pool."""
        if not self._want_server or self._server_failures > _SERVER_RESTARTS:
            return
        from sandbox import forkserver
        try:
            self._server = forkserver.ForkServer(self._served_child, self._keep_fds)
        except Exception:
            self._server = None
            self._server_failures += 1
            return
        for fn, args in self._warmups:
            self._server.warm(fn, *args)

    def _served_child(self, writer: int, sentinel: int, fn, args, kwargs, plan) -> None:
        """In a job process forked by the server: the same containment as any job."""
        global _SENTINEL_FD
        _SENTINEL_FD = sentinel
        _child_main(writer, None, fn, args, kwargs, self.limits, self._initializer,
                    self._initargs, self._keep_fds, plan)

    def _step(self) -> bool:
        """One round: start jobs, wait for news or a deadline, finish jobs. False: stop."""
        with self._lock:
            kill = self._kill
            starting = []
            if kill:
                cancelled, self._queue = list(self._queue), collections.deque()
            else:
                cancelled = []
                while self._queue and len(self._running) + len(starting) < self.workers:
                    starting.append(self._queue.popleft())
        for job in cancelled:
            job.future.cancel()
        if kill:
            for job in list(self._running):
                self._kill_job(job)
                self._finish(job, JobOutcome(
                    "crashed", error="killed: the worker pool was shut down while the job ran"))
            return False
        for job in starting:
            if job.future.set_running_or_notify_cancel():
                try:
                    self._start(job)
                except Exception as exc:    # this job only; the pool goes on
                    self._fail(job, "could not start the job process", exc)
        if not self._running:
            with self._lock:
                if self._closed and not self._queue:
                    return False
                if self._queue:
                    return True

        waitables = [self._wake_r]
        deadline = None
        for job in self._running:
            waitables.append(job.process.sentinel)
            if not job.eof:
                waitables.append(job.reader)
            if job.deadline is not None:
                deadline = job.deadline if deadline is None else min(deadline, job.deadline)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = set(_wait(waitables, timeout))
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except (BlockingIOError, OSError):
                pass

        now = time.monotonic()
        for job in list(self._running):
            try:
                self._handle(job, ready, now)
            except Exception as exc:        # a bug, or bytes nobody expected: this job only
                self._fail(job, "internal error in the worker pool while handling the job", exc)
        return True

    def _fail(self, job: _Job, what: str, exc: BaseException) -> None:
        try:
            self._kill_job(job)
        except Exception:
            pass
        self._finish(job, JobOutcome("crashed", error=f"{what}: {type(exc).__name__}: "
                                                      f"{_one_line(exc)}"))

    def _handle(self, job: _Job, ready: set, now: float) -> None:
        """Finish `job` if it answered, died or ran out of time."""
        if job.reader in ready:
            self._read(job)
        if (job.expected is not None
                and job.expected - _HEADER.size > self.limits.max_result_bytes):
            self._kill_job(job)     # our own child code never sends more than the limit
            self._finish(job, JobOutcome("crashed", error=(
                f"the job process sent a malformed result: its length header announces "
                f"{job.expected - _HEADER.size} bytes, more than the limit of "
                f"{self.limits.max_result_bytes / 2**20:g} MiB")))
        elif job.expected is not None and len(job.buffer) >= job.expected:
            self._kill_job(job)              # it has answered; reap it (and its group)
            self._finish(job, self._decode(job))
        elif job.process.sentinel in ready:
            self._kill_job(job)              # stray children of the job die with it
            self._read(job)
            if job.expected is not None and len(job.buffer) >= job.expected:
                self._finish(job, self._decode(job))
            else:
                self._finish(job, self._died(job))
        elif job.deadline is not None and now >= job.deadline:
            self._kill_job(job)
            self._finish(job, JobOutcome(
                "timeout", error=f"timed out: exceeded the wall-clock limit of "
                                 f"{self.limits.timeout_s:g} s"))

    def _start(self, job: _Job) -> None:
        if self._server is not None and not self._server.alive:
            self._server = None
            self._server_failures += 1
            self._start_server()            # a server that died: start another one
        if self._server is not None and self._start_served(job):
            return
        reader = writer = None
        for attempt in range(3):
            try:
                plan = (kernel.plan(self._read_paths, allow_fork=self.limits.allow_fork)
                        if self.kernel_layer else None)
                reader, writer = os.pipe()
                job.process = _JobProcess(
                    target=_child_main, daemon=True,
                    args=(writer, reader, job.fn, job.args, job.kwargs, self.limits,
                          self._initializer, self._initargs, self._keep_fds, plan))
                job.started = time.monotonic()
                job.process.start()
                break
            except OSError as exc:      # EAGAIN / ENOMEM: no process could be created right now
                for fd in (reader, writer):
                    if fd is not None:
                        os.close(fd)
                reader = writer = None
                if attempt == 2:
                    self._resolve(job, JobOutcome(
                        "crashed", error=f"could not start a job process: {exc}"))
                    return
                time.sleep(0.2 * (attempt + 1))
        os.close(writer)
        try:   # also set in the child; doing it here too closes the race with an early kill
            os.setpgid(job.process.pid, job.process.pid)
        except OSError:
            pass
        self._started(job, reader)

    def _started(self, job: _Job, reader: int) -> None:
        os.set_blocking(reader, False)
        job.reader = reader
        if self.limits.timeout_s is not None:
            job.deadline = job.started + self.limits.timeout_s
        self._running.append(job)

    def _start_served(self, job: _Job) -> bool:
        """Fork the job from the fork server; False: fork it from here instead (its function
        or arguments cannot be pickled by reference, or the server failed)."""
        from sandbox.forkserver import ForkServerError, ServedProcess
        try:
            payload = pickle.dumps((job.fn, job.args, job.kwargs),
                                   protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            return False
        plan = (kernel.plan(self._read_paths, allow_fork=self.limits.allow_fork)
                if self.kernel_layer else None)
        fields = None if plan is None else (plan.support, plan.bpf, plan.paths)
        reader, writer = os.pipe()
        sentinel_r, sentinel_w = os.pipe()
        try:
            job.started = time.monotonic()
            pid = self._server.start(payload, fields, writer, sentinel_w)
        except ForkServerError:
            pid = None
        finally:
            os.close(writer)
            os.close(sentinel_w)
        if pid is None:
            os.close(reader)
            os.close(sentinel_r)
            job.started = None
            return False
        job.process = ServedProcess(self._server, pid, sentinel_r)
        self._started(job, reader)
        return True

    def _read(self, job: _Job) -> None:
        """Take what the pipe holds now, without blocking."""
        limit = self.limits.max_result_bytes + _HEADER.size
        while not job.eof:
            try:
                chunk = os.read(job.reader, 1 << 20)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                job.eof = True
                return
            job.buffer += chunk
            if job.expected is None and len(job.buffer) >= _HEADER.size:
                job.expected = _HEADER.size + _HEADER.unpack_from(job.buffer)[0]
            if len(job.buffer) > limit or (job.expected is not None and job.expected > limit):
                return

    def _kill_job(self, job: _Job) -> None:
        """SIGKILL the job's process group, then reap the job process.

        The group is signalled before the leader is reaped, so its id cannot have been reused."""
        process = job.process
        if process is None:
            return
        if hasattr(process, "kill_group"):       # forked by the fork server, which reaps it
            process.kill_group()
            process.join(5)
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            try:
                process.kill()
            except Exception:
                pass
        process.join(5)

    def _finish(self, job: _Job, outcome: JobOutcome) -> None:
        if job in self._running:
            self._running.remove(job)
        job.eof = True
        process = job.process
        if outcome.status in ("timeout", "crashed") and outcome.exitcode is None and process:
            outcome.exitcode = process.exitcode
        if process is not None and process.exitcode is not None:
            try:
                process.close()
            except Exception:
                pass
        if job.reader is not None:
            try:
                os.close(job.reader)
            except OSError:
                pass
            job.reader = None
        job.buffer = bytearray()
        self._resolve(job, outcome)

    def _resolve(self, job: _Job, outcome: JobOutcome) -> None:
        if job.started is not None:
            outcome.duration_s = time.monotonic() - job.started
        job.fn = job.args = job.kwargs = None
        if not job.future.done():
            job.future.set_result(outcome)

    def _decode(self, job: _Job) -> JobOutcome:
        """The job's message as an outcome; anything but a well-formed message: crashed."""
        try:
            message = decode_message(bytes(job.buffer[_HEADER.size:job.expected]))
        except Exception as exc:     # RecursionError, UnicodeDecodeError, ValueError, ...
            return JobOutcome("crashed", error=(
                f"the job process sent a malformed result: {type(exc).__name__}: "
                f"{_one_line(exc)[:300]}"))
        kind = message[0]
        if kind == "ok":
            return JobOutcome("ok", value=message[1])
        if kind == "memory":
            return JobOutcome("memory", error=self._memory_message(), error_type=message[1],
                              traceback=message[2])
        _, error_type, text, tb = message
        return JobOutcome("error", error=text, error_type=error_type, traceback=tb)

    def _memory_message(self) -> str:
        if self.limits.memory_mb is None:
            return "ran out of memory"
        return f"exceeded the memory limit of {self.limits.memory_mb:g} MiB"

    def _died(self, job: _Job) -> JobOutcome:
        code = job.process.exitcode
        if code == _EXIT_MEMORY:
            return JobOutcome("memory", error=self._memory_message(), exitcode=code)
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            if name == "SIGXCPU":
                return JobOutcome("timeout", exitcode=code, error=(
                    f"timed out: exceeded the CPU-time limit of {self.limits.cpu_s:g} s"))
            note = _SIGNAL_NOTES.get(name)
            return JobOutcome("crashed", exitcode=code, error=(
                f"the job process was killed by {name}" + (f" ({note})" if note else "")))
        if code == _EXIT_INTERNAL:
            return JobOutcome("crashed", exitcode=code,
                              error="the job process failed to set up its limits or its kernel layer")
        if code is None:
            return JobOutcome("crashed", error="the job process could not be reaped")
        return JobOutcome("crashed", exitcode=code, error=(
            f"the job process exited with code {code} without returning a result"))


# --- the result channel --------------------------------------------------------------------------
def check_json_value(value: Any) -> None:
    """Raise TypeError / ValueError unless `value` is JSON data within the limits (module
    docstring). Iterative: a deep or cyclic value cannot exhaust the stack."""
    count = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > MAX_RESULT_VALUES:
            raise ValueError(f"it holds more than {MAX_RESULT_VALUES} values")
        if item is None or isinstance(item, (str, bool, int, float)):
            continue
        if isinstance(item, (list, tuple, dict)) and depth >= MAX_RESULT_DEPTH:
            raise ValueError(f"it is nested deeper than {MAX_RESULT_DEPTH} levels")
        if isinstance(item, (list, tuple)):
            stack.extend((x, depth + 1) for x in item)
        elif isinstance(item, dict):
            for key, x in item.items():
                if not isinstance(key, str):
                    raise TypeError(f"a dict key is {type(key).__name__} {key!r:.80}, not str")
                stack.append((x, depth + 1))
        else:
            raise TypeError(f"{type(item).__name__} is not JSON data (dict with str keys, list, "
                            f"tuple, str, int, float, bool, None)")


def encode_message(message: tuple) -> bytes:
    """The child's side: one message as UTF-8 JSON (raises TypeError / ValueError)."""
    check_json_value(message[1] if message[0] == "ok" else list(message))
    return json.dumps(message, allow_nan=True, check_circular=False,
                      separators=(",", ":")).encode("ascii")


_SHAPES = {"ok": None, "memory": (str, str), "error": (str, str, str)}


def decode_message(data: bytes) -> list:
    """The parent's side: parse and check one message; raises on anything malformed."""
    structural = data.count(b",") + data.count(b"[") + data.count(b"{")
    if structural > 2 * MAX_RESULT_VALUES:
        raise ValueError(f"more than {MAX_RESULT_VALUES} values")
    message = json.loads(data.decode("utf-8"))
    if (not isinstance(message, list) or not message or type(message[0]) is not str
            or message[0] not in _SHAPES):
        raise ValueError(f"not a result message: {type(message).__name__} "
                         f"{str(message)[:80]!r}")
    kind, fields = message[0], _SHAPES[message[0]]
    if fields is None:
        if len(message) != 2:
            raise ValueError(f"an {kind!r} message has 2 fields, this one {len(message)}")
        check_json_value(message[1])
    elif len(message) != 1 + len(fields) or not all(
            isinstance(x, t) for x, t in zip(message[1:], fields)):
        raise ValueError(f"an {kind!r} message has {len(fields)} strings after its kind")
    return message


# --- the job process -----------------------------------------------------------------------------
_SENTINEL_FD: int | None = None   # in a job process: the pipe end whose closing tells the parent
_RESULT_FD: int | None = None     # in a job process: the pipe end its result is written to
_INHERITED_STDIO: list = []


class _Popen(popen_fork.Popen):
    """multiprocess's fork Popen, except that the child remembers which descriptor keeps the
    parent's sentinel open, so it can close every other inherited descriptor."""

    def _launch(self, process_obj):
        code = 1
        parent_r, child_w = os.pipe()
        child_r, parent_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                global _SENTINEL_FD
                _SENTINEL_FD = child_w
                os.close(parent_r)
                os.close(parent_w)
                code = process_obj._bootstrap(parent_sentinel=child_r)
            finally:
                os._exit(code)
        else:
            os.close(child_w)
            os.close(child_r)
            self.finalizer = multiprocess.util.Finalize(
                self, multiprocess.util.close_fds, (parent_r, parent_w))
            self.sentinel = parent_r


class _JobProcess(ForkProcess):
    @staticmethod
    def _Popen(process_obj):
        return _Popen(process_obj)


def _one_line(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = ""
    return " ".join(text.split())[:_MAX_MESSAGE]


def _describe(exc: BaseException) -> tuple[str, str, str]:
    name = type(exc).__name__
    detail = _one_line(exc)
    try:
        tb = "".join(_traceback.format_exception(exc, limit=30))[-_MAX_TRACEBACK:]
    except Exception:
        tb = ""
    return name, (f"{name}: {detail}" if detail else name), tb


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _close_inherited_fds(keep: set[int]) -> None:
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limit = 65536 if limit in (resource.RLIM_INFINITY, -1) or limit > 65536 else limit
    low = 3
    for fd in sorted(k for k in keep if k >= 3) + [limit]:
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1


def _redirect_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if devnull != fd:
            os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
    # Fresh objects: the parent's may hold a lock taken by another thread at fork time. The old
    # ones are kept alive, because freeing them would flush them (taking that lock).
    _INHERITED_STDIO.extend((sys.stdin, sys.stdout, sys.stderr,
                             sys.__stdin__, sys.__stdout__, sys.__stderr__))
    sys.stdin = sys.__stdin__ = open(0, "r", closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", closefd=False)


def _die_with_parent(parent_pid: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass
    if os.getppid() != parent_pid:   # the parent died before prctl took effect
        os._exit(_EXIT_INTERNAL)


def _address_space_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def _set_limit(which: int, value: int) -> None:
    soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY and value > hard:
        value = hard
    resource.setrlimit(which, (value, value))


def _apply_limits(limits: _Limits) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits.max_file_mb is not None:
        _set_limit(resource.RLIMIT_FSIZE, int(limits.max_file_mb * 2**20))
    if not limits.allow_fork:
        _set_limit(resource.RLIMIT_NPROC, 0)
    if limits.cpu_s is not None:
        soft = max(1, math.ceil(limits.cpu_s))
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        if hard == resource.RLIM_INFINITY or hard > soft:   # SIGXCPU at soft, SIGKILL 1 s later
            resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1 if hard == resource.RLIM_INFINITY
                                                      else min(hard, soft + 1)))
    if limits.memory_mb is not None:
        _set_limit(resource.RLIMIT_AS, _address_space_bytes() + int(limits.memory_mb * 2**20))


def _child_main(writer: int, reader: int, fn, args, kwargs, limits: _Limits, initializer,
                initargs, keep_fds, plan) -> None:
    """Body of a job process: contain, run `fn`, send one message, exit. Never returns.

    Order matters: what needs /proc (the address space, the environment block) or creating
    descriptors happens before the kernel layer, raising limits is impossible after it; the
    initializer runs last, confined (ctypes calls of the kernel layer would show in an audit
    hook it installs)."""
    global _RESULT_FD
    try:
        parent_pid = os.getppid()
        if reader is not None:
            os.close(reader)
        os.setpgid(0, 0)
        _die_with_parent(parent_pid)
        _close_inherited_fds({writer, _SENTINEL_FD, *keep_fds} - {None})
        _redirect_stdio()
        _RESULT_FD = writer
        reserve = bytearray(_RESERVE_BYTES)
        _apply_limits(limits)
        if plan is not None:
            kernel.contain(prepared=plan)      # scrubs the environment first
        else:
            kernel.scrub_environment()
        if initializer is not None:
            initializer(*initargs)
    except BaseException:
        os._exit(_EXIT_INTERNAL)
    try:
        try:
            message = ("ok", fn(*args, **(kwargs or {})))
        except MemoryError as exc:
            del reserve
            name, _, tb = _describe(exc)
            message = ("memory", name, tb)
        except SystemExit as exc:
            code = exc.code
            os._exit(code if isinstance(code, int) and 0 <= code < 256 else 1)
        except BaseException as exc:
            message = ("error", *_describe(exc))
        try:
            payload = encode_message(message)
        except MemoryError:
            raise
        except Exception as exc:
            payload = encode_message(("error", type(exc).__name__, (
                f"the job's result cannot be sent back: {type(exc).__name__}: {_one_line(exc)}"),
                ""))
        if len(payload) > limits.max_result_bytes:
            payload = encode_message(("error", "ValueError", (
                f"the job's result is larger than the limit of "
                f"{limits.max_result_bytes / 2**20:g} MiB"), ""))
        _write_all(writer, _HEADER.pack(len(payload)) + payload)
    except MemoryError:
        os._exit(_EXIT_MEMORY)
    except BaseException:
        os._exit(_EXIT_INTERNAL)
    os._exit(0)
