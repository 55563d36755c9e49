"""The Dask executor: real worker processes over TCP on loopback, containment on every worker,
a worker killed mid-evaluation, and a search whose results equal the local pool's."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

from glia_evo.evaluation.dask import DaskExecutor  # noqa: E402
from cli_helpers import run_glia, start_run  # noqa: E402
from test_engine import population, write_config  # noqa: E402


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


# a job is a worker's child, or its grandchild through the worker's warm fork server
_JOB_DEPTH = 1 if os.environ.get("SANDBOX_FORK_SERVER") == "0" else 2


def _descendants(pid: int) -> list[int]:
    kids = _children(pid)
    return kids + [d for k in kids for d in _descendants(k)]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


# --- jobs (module-level so the workers can unpickle them) ------------------------------------------
def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def job_pids(x):
    return x * 2, os.getppid()   # a Dask worker, or the worker's warm fork server (the sandbox
                                 # denies the job /proc, so the test looks the parent up itself)


def job_slow_pids(seconds):
    time.sleep(seconds)
    return os.getppid()


def job_exit():
    os._exit(3)


def job_hog():
    return len(bytearray(8 << 30))


def job_loop():
    while True:
        pass


@pytest.fixture(scope="module")
def executor():
    ex = DaskExecutor.local(2, timeout_s=3, memory_mb=512)
    yield ex
    ex.shutdown()


def _worker_pids(ex) -> dict[str, int]:
    return ex.client.run(os.getpid)


def test_jobs_run_in_contained_processes_on_the_workers(executor):
    workers = _worker_pids(executor)
    assert executor.workers == 2 and len(workers) == 2
    outcomes = [executor.submit(job_pids, i).result(timeout=60) for i in range(6)]
    assert [o.status for o in outcomes] == ["ok"] * 6, [o.error for o in outcomes]
    assert [o.value[0] for o in outcomes] == [0, 2, 4, 6, 8, 10]
    for parent in {o.value[1] for o in outcomes}:           # forked by a worker or its server
        assert parent in workers.values() or _parent_of(parent) in workers.values()


def test_containment_holds_on_a_worker_and_the_worker_survives(executor):
    before = _worker_pids(executor)
    died = executor.submit(job_exit).result(timeout=60)
    hog = executor.submit(job_hog).result(timeout=60)
    loop = executor.submit(job_loop).result(timeout=60)
    assert (died.status, died.exitcode) == ("crashed", 3)
    assert hog.status == "memory" and "512 MiB" in hog.error
    assert loop.status == "timeout" and "3 s" in loop.error
    assert _worker_pids(executor) == before          # no worker died or restarted


def test_a_worker_killed_mid_evaluation_loses_no_job():
    with DaskExecutor.local(2, timeout_s=60, memory_mb=512) as ex:
        workers = _worker_pids(ex)
        future = ex.submit(job_slow_pids, 3.0)
        deadline = time.monotonic() + 30
        victim = None
        while victim is None and time.monotonic() < deadline:   # the worker running the job
            victim = next((pid for pid in workers.values()      # (its pool and fork server
                           if len(_descendants(pid)) >= _JOB_DEPTH), None)   # start with it)
            time.sleep(0.02)
        assert victim is not None, "the job never started on a worker"
        os.kill(victim, signal.SIGKILL)
        outcome = future.result(timeout=90)
        assert outcome.status == "ok", outcome.error
        assert outcome.value != victim and _pid_alive(outcome.value)   # retried elsewhere


def test_shutdown_resolves_what_is_still_queued():
    ex = DaskExecutor.local(1, timeout_s=60, memory_mb=512)
    futures = [ex.submit(job_slow_pids, 5.0) for _ in range(3)]
    ex.shutdown()
    outcomes = [f.result(timeout=30) for f in futures]
    assert {o.status for o in outcomes} == {"crashed"}
    assert all("shut down" in o.error for o in outcomes)
    with pytest.raises(RuntimeError):
        ex.submit(job_pids, 1)


# --- whole searches --------------------------------------------------------------------------------
def _run_pid_children_with_jobs(run_pid: int) -> list[int]:
    """Dask worker processes of a dask-local run (children of the run) that run a job now."""
    return [pid for pid in _children(run_pid) if _children(pid)]


def test_search_on_dask_with_a_worker_killed_equals_the_local_search(tmp_path):
    cfg = write_config(tmp_path, evals=14, tuning=False)
    local = run_glia("run", str(cfg), "--out", str(tmp_path / "local"), "--quiet",
                     "--no-tracking")
    assert local.returncode == 0, local.stderr
    proc = start_run(cfg, tmp_path / "dask", "--no-tracking", "--executor", "dask-local",
                     "--workers", "2", new_session=False)
    killed = None
    try:
        deadline = time.monotonic() + 120
        while killed is None and proc.poll() is None and time.monotonic() < deadline:
            busy = _run_pid_children_with_jobs(proc.pid)
            if busy and (tmp_path / "dask" / "state.sqlite").exists():
                killed = busy[0]
                os.kill(killed, signal.SIGKILL)      # a Dask worker, in the middle of a job
            time.sleep(0.01)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, "no worker was seen running a job"
    assert proc.returncode == 0, err
    assert "14 evaluations" in out
    assert population(tmp_path / "dask") == population(tmp_path / "local")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def scheduler():
    """A `dask scheduler` on 127.0.0.1; `scheduler.add_worker(nthreads)` starts a `dask worker`."""
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                               "127.0.0.1", "--port", str(port), "--dashboard-address",
                               "127.0.0.1:0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]

    class Scheduler:
        address = f"tcp://127.0.0.1:{port}"

        def add_worker(self, nthreads: int) -> None:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", self.address,
                 "--nthreads", str(nthreads), "--nworkers", "1", "--memory-limit", "0",
                 "--host", "127.0.0.1", "--no-dashboard"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    try:
        yield Scheduler()
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_search_on_a_dask_scheduler_with_separately_started_workers(tmp_path, scheduler):
    scheduler.add_worker(nthreads=2)
    cfg = write_config(tmp_path, evals=8, tuning=False)
    res = run_glia("run", str(cfg), "--out", str(tmp_path / "remote"), "--quiet",
                   "--no-tracking", "--scheduler", scheduler.address, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "8 evaluations" in res.stdout
    local = run_glia("run", str(cfg), "--out", str(tmp_path / "local"), "--quiet",
                     "--no-tracking")
    assert local.returncode == 0, local.stderr
    assert population(tmp_path / "remote") == population(tmp_path / "local")


def test_slots_follow_the_workers_that_join_a_scheduler(scheduler, monkeypatch):
    import glia_evo.evaluation.dask as dx
    monkeypatch.setattr(dx, "SLOTS_REFRESH_S", 0.0)
    scheduler.add_worker(nthreads=1)
    with DaskExecutor.connect(scheduler.address, timeout_s=60, memory_mb=512) as ex:
        assert ex.workers == 1
        scheduler.add_worker(nthreads=2)
        deadline = time.monotonic() + 60
        while ex.workers != 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ex.workers == 3
        # (a function the separately started workers can import: this test module is not)
        outcomes = [ex.submit(os.getpid).result(timeout=60) for _ in range(3)]
        assert [o.status for o in outcomes] == ["ok"] * 3, [o.error for o in outcomes]
        assert len({o.value for o in outcomes}) == 3          # each in its own job process


def test_shutdown_kills_the_jobs_running_on_a_cluster_of_your_own(scheduler):
    scheduler.add_worker(nthreads=1)
    ex = DaskExecutor.connect(scheduler.address, timeout_s=120, memory_mb=512)
    [worker_pid] = ex.client.run(os.getpid).values()
    future = ex.submit(time.sleep, 100)     # time.sleep: importable by the separate worker
    deadline = time.monotonic() + 60
    while len(_descendants(worker_pid)) < _JOB_DEPTH and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _descendants(worker_pid)
    assert len(left) >= _JOB_DEPTH, "the job never started on the worker"
    ex.shutdown()
    assert future.result(timeout=5).status == "crashed"
    deadline = time.monotonic() + 30
    while any(map(_pid_alive, left)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_pid_alive, left)), "the job kept running on the worker after the shutdown"


def test_an_unreachable_scheduler_is_one_clear_line(tmp_path):
    cfg = write_config(tmp_path, evals=4, tuning=False)
    res = run_glia("run", str(cfg), "--out", str(tmp_path / "r"), "--quiet",
                   "--scheduler", f"tcp://127.0.0.1:{_free_port()}", timeout=120,
                   env={**os.environ, "GLIA_EVO_DASK_CONNECT_TIMEOUT_S": "2"})
    assert res.returncode == 2
    assert res.stderr.startswith("glia-evo: error: cannot reach the Dask scheduler at tcp://")
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_ctrl_c_to_the_whole_process_group_stops_cleanly_and_resume_matches(tmp_path):
    """A terminal's Ctrl-C reaches the run and its Dask worker processes alike."""
    cfg = write_config(tmp_path, evals=16, tuning=False)
    out = tmp_path / "dask"
    proc = start_run(cfg, out, "--no-tracking", "--executor", "dask-local")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            events = out / "events.jsonl"
            if events.exists() and events.read_text().count('"event": "evaluation"') >= 4:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr
    assert "stopped: interrupted" in stdout
    done = population(out)[0]
    assert 4 <= len([c for c in done if c[5] != "pending"]) < 16
    res = run_glia("resume", str(out), "--quiet", "--executor", "dask-local")
    assert res.returncode == 0, res.stderr
    local = run_glia("run", str(cfg), "--out", str(tmp_path / "local"), "--quiet",
                     "--no-tracking")
    assert local.returncode == 0, local.stderr
    assert population(out) == population(tmp_path / "local")


def test_without_distributed_the_executor_says_what_to_install(monkeypatch):
    from glia_evo.evaluation.dask import ExecutorError
    from glia_evo.config import EvaluationConfig
    from glia_evo.evaluation.executors import make_executor
    monkeypatch.setitem(sys.modules, "distributed", None)      # as if it were not installed
    with pytest.raises(ExecutorError, match=r"pip install 'glia-evo\[dask\]'"):
        make_executor(EvaluationConfig(executor="dask-local"))


def test_a_pool_left_idle_by_a_vanished_run_is_closed_on_the_worker(monkeypatch):
    # a run SIGKILLed never calls close_session: its pool on each worker (a thread, a pipe) is
    # closed once idle, when another session's job arrives; a live session keeps its own
    from glia_evo.evaluation import dask as dx
    monkeypatch.setenv(dx.IDLE_POOL_ENV, "0.3")
    assert dx.run_contained("gone", job_pids, (1,), {}, 30, 512, 30).status == "ok"
    gone = dx._worker_pools[(os.getpid(), "gone")]
    assert dx.run_contained("alive", job_pids, (1,), {}, 30, 512, 30).status == "ok"
    assert (os.getpid(), "gone") in dx._worker_pools          # not idle long enough yet
    time.sleep(0.5)
    assert dx.run_contained("alive", job_pids, (1,), {}, 30, 512, 30).status == "ok"
    assert (os.getpid(), "gone") not in dx._worker_pools
    with pytest.raises(RuntimeError, match="shut down"):
        gone.submit(job_pids, 1)
    assert (os.getpid(), "alive") in dx._worker_pools         # its own pool is never reaped
    assert dx.close_session("alive") and not dx._worker_pools


def test_worker_setup_leaves_the_runs_own_process_answering_ctrl_c():
    """A worker living in the run's own process (processes=False) must not make that process
    ignore SIGINT: every process it starts would inherit the ignored signal."""
    import signal
    from glia_evo.evaluation.dask import _WorkerSetup
    before = signal.getsignal(signal.SIGINT)
    try:
        _WorkerSetup(ignore_interrupt=True).setup(None)
        assert signal.getsignal(signal.SIGINT) is before
        elsewhere = _WorkerSetup(ignore_interrupt=True)
        elsewhere.owner_pid = -1                 # as if unpickled in a worker process
        elsewhere.setup(None)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
