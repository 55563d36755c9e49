"""Evaluation jobs on a Dask (`distributed`) cluster, contained as on the local pool.

Each Dask task unpacks one job on a worker and runs it through that worker's own
`sandbox.WorkerPool`: a forked process with the run's wall-clock, CPU-time and address-space
limits, new process group, no files, no network descriptors. So a candidate that loops, eats
memory or kills its process gets the same `JobOutcome` as locally, and the Dask worker lives on.

A Dask worker that dies (machine lost, process killed) takes its job process with it
(PR_SET_PDEATHSIG); the scheduler gives the task to another worker, so no job is lost. Only a
task whose workers died `allowed_failures + 1` times in a row (Dask's `KilledWorker`) comes back
as `crashed`.

    DaskExecutor.local(workers=2)            a LocalCluster of worker processes on 127.0.0.1
    DaskExecutor.connect("tcp://HOST:8786")  workers started by `dask worker tcp://HOST:8786`

Workers need glia-evo installed (the same version) and nothing else: jobs are sent as
(function, arguments) and the candidate's source travels inside the arguments.
"""
from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
import uuid

from sandbox.pool import JobOutcome, WorkerPool


class ExecutorError(RuntimeError):
    """The cluster cannot be used (no `distributed`, scheduler unreachable, no workers)."""


ALLOWED_FAILURES = 3          # worker deaths a task survives (Dask's default)
SLOTS_REFRESH_S = 5.0         # how often a scheduler's worker threads are counted again
CONNECT_TIMEOUT_ENV = "GLIA_EVO_DASK_CONNECT_TIMEOUT_S"   # reaching the scheduler (default 20 s)
WORKER_WAIT_ENV = "GLIA_EVO_DASK_WORKER_WAIT_S"          # waiting for a first worker (default 60 s)


def _env_seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        raise ExecutorError(f"{name} must be a number of seconds, got "
                            f"{os.environ[name]!r}") from None
    return value if value > 0 else default


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise ExecutorError("the Dask executor needs the `distributed` package: "
                            "pip install 'glia-evo[dask]'") from None
    return distributed


# --- on the worker ---------------------------------------------------------------------------------
IDLE_POOL_ENV = "GLIA_EVO_DASK_IDLE_POOL_S"   # a session's idle pool is closed (default 600 s)
_worker_pools: dict[tuple, WorkerPool] = {}
_pool_use: dict[tuple, list] = {}             # key -> [jobs running, time the last one ended]
_worker_pools_lock = threading.Lock()


def _worker_pool(session: str, timeout_s, memory_mb, cpu_s) -> tuple[tuple, WorkerPool]:
    """One sandbox pool per worker process and session (a run's executor), counted as in use
    until `_release`. Dask's threads bound the concurrency, so the pool itself admits plenty.
    Pools of other sessions idle for IDLE_POOL_ENV seconds are closed on the way: a run
    SIGKILLed never says goodbye (`close_session`), and its pool would stay for the worker's
    life; a live session whose pool was closed gets a new one with its next job."""
    key = (os.getpid(), session)
    idle_s = _env_seconds(IDLE_POOL_ENV, 600.0)
    now = time.monotonic()
    with _worker_pools_lock:
        stale = [k for k, (running, last) in _pool_use.items()
                 if k != key and running == 0 and now - last > idle_s]
        closing = [_worker_pools.pop(k) for k in stale]
        for k in stale:
            del _pool_use[k]
        pool = _worker_pools.get(key)
        if pool is None:
            pool = WorkerPool(64, timeout_s=timeout_s, memory_mb=memory_mb, cpu_s=cpu_s)
            _worker_pools[key] = pool
            _pool_use[key] = [0, now]
        _pool_use[key][0] += 1
    for old in closing:
        old.shutdown(wait=True, kill=True)
    return key, pool


def _release(key: tuple) -> None:
    with _worker_pools_lock:
        use = _pool_use.get(key)
        if use is not None:
            use[0] -= 1
            use[1] = time.monotonic()


def close_session(session: str) -> bool:
    """Run on every worker when a session's executor shuts down: kill the session's jobs still
    running (Dask cannot stop a running task; nobody waits for these any more) and drop its
    pool. Other sessions sharing the worker are left alone."""
    with _worker_pools_lock:
        pool = _worker_pools.pop((os.getpid(), session), None)
        _pool_use.pop((os.getpid(), session), None)
    if pool is not None:
        pool.shutdown(wait=True, kill=True)
    return pool is not None


class _WorkerSetup:
    """A worker plugin, run on every worker as it joins (restarted ones too): import what the
    jobs need once, so each forked job process starts with it as on the local pool; and, for
    LocalCluster workers, ignore SIGINT: they share the terminal's process group, so a Ctrl-C
    meant for the run would kill them mid-job (the run handles it: finish, then stop)."""

    name = "glia-evo-worker-setup"

    def __init__(self, ignore_interrupt: bool):
        self.ignore_interrupt = ignore_interrupt
        self.owner_pid = os.getpid()    # a worker in this very process (processes=False) is
        #                                 the run's own process: its Ctrl-C must stay its own

    def setup(self, worker) -> None:
        import signal
        import glia_evo.evaluation.jobs  # noqa: F401
        if (self.ignore_interrupt and os.getpid() != self.owner_pid
                and threading.current_thread() is threading.main_thread()):
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _register_setup(client, ignore_interrupt: bool) -> None:
    import distributed
    plugin = type("GliaEvoWorkerSetup", (_WorkerSetup, distributed.WorkerPlugin), {})
    client.register_plugin(plugin(ignore_interrupt))


def run_contained(session, fn, args, kwargs, timeout_s, memory_mb, cpu_s) -> JobOutcome:
    """The Dask task: `fn(*args, **kwargs)` in a contained process of this worker."""
    key, pool = _worker_pool(session, timeout_s, memory_mb, cpu_s)
    try:
        outcome = pool.submit(fn, *args, **kwargs).result()
    finally:
        _release(key)
    if outcome.status == "error" and outcome.traceback:
        outcome.traceback = outcome.traceback[-4000:]
    return outcome


# --- on the engine's side --------------------------------------------------------------------------
class DaskExecutor:
    """The `WorkerPool` interface on a Dask cluster (see the module docstring).

    `workers` is the number of jobs the engine keeps in flight: the cluster's worker threads.
    On a LocalCluster it is fixed (one thread per worker process), so a search is as
    deterministic as on the local pool even while a killed worker restarts. On a cluster of
    your own it follows the workers that join or leave, looked up at most every
    `SLOTS_REFRESH_S` seconds (never below 1).
    """

    def __init__(self, client, cluster=None, *, timeout_s: float | None = 600.0,
                 memory_mb: float | None = 2048, cpu_s: float | None = None):
        self._client, self._cluster = client, cluster
        self._timeout_s, self._memory_mb = timeout_s, memory_mb
        self._cpu_s = timeout_s if cpu_s is None else cpu_s
        self._lock = threading.Lock()
        self._pending: dict = {}          # dask future key -> (dask future, our future)
        self._closed = False
        self._session = uuid.uuid4().hex
        self._elastic = cluster is None
        self._slots = max(1, sum(client.nthreads().values()))
        self._slots_at = time.monotonic()

    @property
    def workers(self) -> int:
        if self._elastic and not self._closed and \
                time.monotonic() - self._slots_at > SLOTS_REFRESH_S:
            self._slots_at = time.monotonic()
            try:
                self._slots = max(1, sum(self._client.nthreads().values()))
            except Exception:      # the scheduler is briefly unreachable: keep the last count
                pass
        return self._slots

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def local(cls, workers: int, **limits) -> "DaskExecutor":
        """Start a LocalCluster of `workers` single-threaded worker processes on loopback."""
        distributed = _import_distributed()
        import dask
        with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
            cluster = distributed.LocalCluster(
                n_workers=int(workers), threads_per_worker=1, processes=True,
                host="127.0.0.1", dashboard_address="127.0.0.1:0", memory_limit=0,
                silence_logs=logging.CRITICAL)
        try:
            client = distributed.Client(cluster)
            _register_setup(client, ignore_interrupt=True)
            return cls(client, cluster, **limits)
        except BaseException:
            cluster.close()
            raise

    @classmethod
    def connect(cls, address: str, **limits) -> "DaskExecutor":
        """Connect to a running scheduler (`dask scheduler`) that has, or soon gets, workers."""
        distributed = _import_distributed()
        connect_s = _env_seconds(CONNECT_TIMEOUT_ENV, 20.0)
        wait_s = _env_seconds(WORKER_WAIT_ENV, 60.0)
        try:
            client = distributed.Client(address, timeout=f"{connect_s}s",
                                        set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ExecutorError(f"cannot reach the Dask scheduler at {address}: "
                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                                ) from None
        try:
            client.wait_for_workers(1, timeout=wait_s)
        except (TimeoutError, OSError):
            client.close()
            raise ExecutorError(f"the Dask scheduler at {address} has no workers after "
                                f"{wait_s:g} s; start some with `dask worker {address}`") from None
        _register_setup(client, ignore_interrupt=False)
        return cls(client, None, **limits)

    # --- the WorkerPool interface ----------------------------------------------------------------
    @property
    def timeout_s(self) -> float | None:
        return self._timeout_s

    @property
    def memory_mb(self) -> float | None:
        return self._memory_mb

    @property
    def cpu_s(self) -> float | None:
        return self._cpu_s

    @property
    def client(self):
        return self._client

    def submit(self, fn, *args, **kwargs) -> concurrent.futures.Future:
        """Queue `fn(*args, **kwargs)` on the cluster; the future resolves to a JobOutcome."""
        ours: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a DaskExecutor that was shut down")
            started = time.monotonic()
            theirs = self._client.submit(run_contained, self._session, fn, args, kwargs,
                                         self._timeout_s, self._memory_mb, self._cpu_s,
                                         pure=False)
            self._pending[theirs.key] = (theirs, ours)
        theirs.add_done_callback(lambda f: self._done(f, ours, started))
        return ours

    def map_outcomes(self, fn, *iterables):
        futures = [self.submit(fn, *items) for items in zip(*iterables)]
        for future in futures:
            yield future.result()

    def _done(self, theirs, ours, started: float) -> None:
        with self._lock:
            self._pending.pop(theirs.key, None)
        if ours.done():
            return
        try:
            outcome = theirs.result()
        except BaseException as exc:          # KilledWorker, CancelledError, lost connection
            name = type(exc).__name__
            if name == "KilledWorker":
                text = (f"its Dask workers died {ALLOWED_FAILURES + 1} times "
                        f"(KilledWorker); the job was not retried again")
            elif name == "CancelledError":
                text = "cancelled: the executor shut down while it ran"
            else:
                text = f"the Dask task failed: {name}: {str(exc).splitlines()[0] if str(exc) else ''}"
            outcome = JobOutcome(status="crashed", error=text,
                                 duration_s=time.monotonic() - started)
        if not isinstance(outcome, JobOutcome):
            outcome = JobOutcome(status="error", error=f"the Dask task returned "
                                 f"{type(outcome).__name__}, not a JobOutcome")
        try:
            ours.set_result(outcome)
        except concurrent.futures.InvalidStateError:
            pass

    def shutdown(self, wait: bool = True, *, kill: bool = True) -> None:
        """Stop accepting jobs. kill=True cancels what is queued and kills what is running
        (status crashed); kill=False waits for every submitted job. Closes the client (and a
        LocalCluster)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._pending.values())
        if not kill:
            concurrent.futures.wait([ours for _, ours in pending])
        else:
            for theirs, ours in pending:
                try:
                    ours.set_result(JobOutcome(status="crashed", error="cancelled: the "
                                               "executor shut down while it ran"))
                except concurrent.futures.InvalidStateError:
                    pass
            try:
                self._client.cancel([theirs for theirs, _ in pending], force=True)
            except Exception:
                pass
        if self._cluster is None:          # a LocalCluster's workers die with it anyway
            try:
                self._client.run(close_session, self._session, on_error="ignore")
            except Exception:
                pass
        try:
            self._client.close(timeout=10)
        except Exception:
            pass
        if self._cluster is not None:
            try:
                self._cluster.close(timeout=20)
            except Exception:
                pass

    def __enter__(self) -> "DaskExecutor":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.shutdown(wait=True, kill=exc_type is not None)
