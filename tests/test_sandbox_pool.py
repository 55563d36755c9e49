"""sandbox.WorkerPool: every job ends with a status, nothing hangs, nothing is left behind;
results come back as JSON and nothing a job writes to its result pipe can hurt the pool;
and glia_evo.evaluation.evaluate_many on top of it (statuses, identical results, baselines).
(The kernel layer's own tests: tests/test_sandbox_kernel.py.)"""
from __future__ import annotations

import ctypes
import json
import math
import os
import pickle
import signal
import struct
import subprocess
import sys
import time

import pytest

from glia_evo.evaluation import EvalResult, evaluate, policy_seed
from glia_evo.evaluation.parallel import evaluate_many, resolve_limits
from glia_evo.evaluation.wire import outcome_to_result
from glia_evo.problems import Scenario, get_problem
import sandbox.pool
from sandbox import JobOutcome, WorkerPool
from sim import ClusterSpec, ReplicaSpec, simulate
from sim.policies import baseline_names, baseline_source, load_trusted
from sim.workload import glia_workload

ROUTING = get_problem("routing")


# --- jobs (module level: they run in forked job processes) ----------------------------------------
def double(x, plus=0):
    return 2 * x + plus


def fail():
    raise ValueError("bad input 42")


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def spin():
    while True:
        pass


def allocate_at_once():
    return len(bytearray(8 * 2**30))


def allocate_gradually():
    hoard = []
    while True:
        hoard.append(bytearray(2**24))


def exit_hard(code):
    os._exit(code)


def kill_self(sig):
    os.kill(os.getpid(), sig)
    time.sleep(5)


def segfault():
    ctypes.string_at(0)


def sys_exit(code):
    sys.exit(code)


def flood():
    block = b"x" * 2**20
    for _ in range(64):
        os.write(1, block)
        os.write(2, block)
        print("y" * 100_000)
        print("z" * 100_000, file=sys.stderr)
    return "flooded"


def unpicklable():
    return lambda: None


def returns(value):
    return value


def cyclic():
    loop = []
    loop.append(loop)
    return loop


def write_file(path):
    with open(path, "w") as fh:
        fh.write("data")


def fd_is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def fork_sleeper():
    pid = os.fork()
    if pid == 0:
        time.sleep(600)
        os._exit(0)
    return pid


def try_fork():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    return pid


def children_of(pid: int, servers=()) -> list[int]:
    """`pid`'s live children that are forks of it (job processes), not programs it started
    (e.g. multiprocessing's resource tracker, left by an earlier test's Dask LocalCluster).
    A child in `servers` (a pool's fork server) stands for the jobs it forked."""
    out = []
    for k in all_children_of(pid):
        if _cmdline(k) != _cmdline(pid):
            continue
        out.extend(children_of(k) if k in servers else [k])
    return out


def _cmdline(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return None


def all_children_of(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                kids.append(int(entry))
    return kids



def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


# --- the pool --------------------------------------------------------------------------------------
def test_ok_error_and_value():
    with WorkerPool(2, timeout_s=30, memory_mb=512) as pool:
        ok = pool.submit(double, 20, plus=2).result()
        bad = pool.submit(fail).result()
    assert ok == JobOutcome("ok", 42, None, ok.duration_s)
    assert bad.status == "error" and bad.error == "ValueError: bad input 42"
    assert bad.error_type == "ValueError" and "raise ValueError" in bad.traceback
    assert ok.duration_s > 0


def test_wall_clock_timeout():
    with WorkerPool(1, timeout_s=1, memory_mb=512, cpu_s=60) as pool:
        out = pool.submit(sleep, 60).result()
    assert out.status == "timeout"
    assert out.error == "timed out: exceeded the wall-clock limit of 1 s"


def test_cpu_time_limit():
    with WorkerPool(1, timeout_s=60, memory_mb=512, cpu_s=1) as pool:
        out = pool.submit(spin).result()
    assert out.status == "timeout"
    assert out.error == "timed out: exceeded the CPU-time limit of 1 s"
    assert out.exitcode == -signal.SIGXCPU


@pytest.mark.parametrize("job", [allocate_at_once, allocate_gradually])
def test_memory_limit(job):
    with WorkerPool(1, timeout_s=60, memory_mb=256) as pool:
        out = pool.submit(job).result()
    assert out.status == "memory"
    assert out.error == "exceeded the memory limit of 256 MiB"
    assert out.error_type == "MemoryError"


@pytest.mark.parametrize("job, args, fragment, exitcode", [
    (exit_hard, (3,), "exited with code 3", 3),
    (sys_exit, (5,), "exited with code 5", 5),
    (segfault, (), "killed by SIGSEGV (segmentation fault)", -signal.SIGSEGV),
    (kill_self, (signal.SIGSEGV,), "killed by SIGSEGV (segmentation fault)", -signal.SIGSEGV),
    (kill_self, (signal.SIGKILL,), "killed by SIGKILL", -signal.SIGKILL),
    (kill_self, (signal.SIGTERM,), "killed by SIGTERM", -signal.SIGTERM),
])
def test_a_dying_job_process_is_reported(job, args, fragment, exitcode):
    # the kernel layer forbids signalling even oneself: kill_self runs without it
    with WorkerPool(1, timeout_s=30, memory_mb=512, kernel_layer=job is not kill_self) as pool:
        out = pool.submit(job, *args).result()
        after = pool.submit(double, 1).result()      # the pool carries on
    assert out.status == "crashed" and fragment in out.error
    assert out.exitcode == exitcode
    assert after.status == "ok" and after.value == 2


def test_result_that_cannot_be_sent_back():
    with WorkerPool(1, timeout_s=30, memory_mb=512) as pool:
        out = pool.submit(unpicklable).result()
    assert out.status == "error" and "cannot be sent back" in out.error


def test_results_are_json_data():
    value = {"a": [1, 2.5, None, True, "s\u2603\ud800"], "t": (1, (2, 3)), "n": {"x": {}},
             "big": 2**70, "neg": -0.0}
    rejected = [({1: 2}, "a dict key is int"), ({"k": {1, 2}}, "set is not JSON data"),
                (b"raw", "bytes is not JSON data"), (EvalResult("ok"), "EvalResult is not JSON"),
                (cyclic, "nested deeper than 64 levels")]
    with WorkerPool(1, timeout_s=30, memory_mb=512) as pool:
        ok = pool.submit(returns, value).result()
        special = pool.submit(returns, [math.nan, math.inf, -math.inf]).result()
        bad = [pool.submit(cyclic).result() if v is cyclic else pool.submit(returns, v).result()
               for v, _ in rejected]
    assert ok.status == "ok"
    assert ok.value == {"a": [1, 2.5, None, True, "s\u2603\ud800"], "t": [1, [2, 3]],
                        "n": {"x": {}}, "big": 2**70, "neg": -0.0}
    assert special.status == "ok" and math.isnan(special.value[0])
    assert special.value[1:] == [math.inf, -math.inf]
    for out, (_, fragment) in zip(bad, rejected):
        assert out.status == "error", out
        assert out.error.startswith("the job's result cannot be sent back: ") and \
            fragment in out.error, out.error


def big_result(n):
    return "x" * n


def test_results_are_size_limited():
    with WorkerPool(1, timeout_s=30, memory_mb=512, max_result_mb=1) as pool:
        small = pool.submit(big_result, 2**19).result()
        big = pool.submit(big_result, 2**21).result()
    assert small.status == "ok" and len(small.value) == 2**19
    assert big.status == "error" and "larger than the limit of 1 MiB" in big.error


# --- a job that got out of the Python sandbox writes its own bytes to the result pipe -------------
class MakesAFile:
    """Unpickling this would create `path`: the parent must never unpickle what a job sent."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def frame(payload: bytes) -> bytes:
    return struct.pack("!Q", len(payload)) + payload


def send_raw(data: bytes, then: str = "exit"):
    """Trusted test code standing in for an escaped candidate: it writes `data` to the result
    descriptor itself, then exits (or keeps running, or returns normally)."""
    fd = sandbox.pool._RESULT_FD
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    if then == "return":
        return "a second message"
    if then == "sleep":
        time.sleep(60)
    os._exit(0)


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


HOSTILE_MESSAGES = {
    "garbage": (frame(b"\x00\xffnot json at all\x80"), "malformed result: UnicodeDecodeError"),
    "not json": (frame(b"hello"), "malformed result: JSONDecodeError"),
    "pickle of None": (frame(pickle.dumps(None)), "malformed result"),
    "huge header": (b"\xff" * 8 + b"[]", "length header announces"),
    "header over the limit": (struct.pack("!Q", 4 * 2**20 + 1), "more than the limit of 4 MiB"),
    "truncated json": (frame(b'["ok", [1, 2'), "malformed result: JSONDecodeError"),
    "deep nesting": (frame(b'["ok", ' + deep(100_000) + b"]"), "malformed result: RecursionError"),
    "65 levels": (frame(b'["ok", ' + deep(65) + b"]"), "nested deeper than 64 levels"),
    "too many values": (frame(b'["ok", [' + b"0," * 1_100_000 + b"0]]"),
                        "more than 1000000 values"),
    "an object": (frame(b'{"ok": 1}'), "not a result message: dict"),
    "empty list": (frame(b"[]"), "not a result message"),
    "unknown kind": (frame(b'["pwned", 1]'), "not a result message"),
    "unhashable kind": (frame(b'[["ok"], 1]'), "not a result message"),
    "ok without value": (frame(b'["ok"]'), "has 2 fields"),
    "error with numbers": (frame(b'["error", 1, 2, 3]'), "has 3 strings after its kind"),
    "memory too short": (frame(b'["memory", "MemoryError"]'), "has 2 strings after its kind"),
    "big integer": (frame(b'["ok", ' + b"9" * 5000 + b"]"), "malformed result: ValueError"),
    "half a message": (struct.pack("!Q", 100) + b'["ok", ', "without returning a result"),
}


def test_nothing_a_job_writes_to_its_result_pipe_hurts_the_pool(tmp_path):
    made = tmp_path / "made-by-unpickling.txt"
    cases = dict(HOSTILE_MESSAGES)
    cases["pickle that makes a file"] = (frame(pickle.dumps(MakesAFile(str(made)))),
                                         "malformed result")
    with WorkerPool(2, timeout_s=20, memory_mb=512, max_result_mb=4) as pool:
        outcomes = {name: pool.submit(send_raw, data).result()
                    for name, (data, _) in cases.items()}
        after = pool.submit(double, 21).result()
    for name, (_, fragment) in cases.items():
        out = outcomes[name]
        assert out.status == "crashed", (name, out)
        assert fragment in out.error, (name, out.error)
        assert len(out.error.splitlines()) == 1 and len(out.error) < 600, (name, out.error)
    assert not made.exists()
    assert after.status == "ok" and after.value == 42


def test_a_forged_message_counts_only_once_and_nan_is_data():
    forged = frame(b'["ok", {"fitness": NaN, "status": "ok"}]')
    with WorkerPool(1, timeout_s=20, memory_mb=512) as pool:
        first = pool.submit(send_raw, forged, "return").result()
        waiting = pool.submit(send_raw, forged, "sleep").result()
    for out in (first, waiting):      # the first message wins, the process is reaped at once
        assert out.status == "ok" and out.value["status"] == "ok"
        assert math.isnan(out.value["fitness"])
    assert waiting.duration_s < 10


def test_an_exception_while_handling_one_job_crashes_that_job_only(monkeypatch):
    with WorkerPool(1, timeout_s=20, memory_mb=512) as pool:
        decode = pool._decode
        calls = []

        def broken_once(job):
            calls.append(job)
            if len(calls) == 1:
                raise RuntimeError("a bug in the pool")
            return decode(job)

        monkeypatch.setattr(pool, "_decode", broken_once)
        first = pool.submit(double, 1).result()
        second = pool.submit(double, 2).result()
    assert first.status == "crashed" and "RuntimeError: a bug in the pool" in first.error
    assert second.status == "ok" and second.value == 4


def test_messages_round_trip():
    for message in [("ok", {"a": (1, 2)}), ("error", "ValueError", "ValueError: x", "tb"),
                    ("memory", "MemoryError", "")]:
        data = sandbox.pool.encode_message(message)
        assert sandbox.pool.decode_message(data) == json.loads(json.dumps(message))


def test_output_flood_goes_nowhere(capfd):
    with WorkerPool(1, timeout_s=30, memory_mb=512) as pool:
        out = pool.submit(flood).result()
    assert out.status == "ok" and out.value == "flooded"
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize("kernel_layer", [False, True])
def test_jobs_cannot_write_files_or_see_the_parents_descriptors(tmp_path, kernel_layer):
    target = tmp_path / "written.txt"
    with open(tmp_path / "secret.txt", "w") as secret:
        with WorkerPool(1, timeout_s=30, memory_mb=512, kernel_layer=kernel_layer) as pool:
            wrote = pool.submit(write_file, str(target)).result()
            sees = pool.submit(fd_is_open, secret.fileno()).result()
    assert wrote.status == "error"
    if kernel_layer:     # seccomp refuses to open for writing: the file is not even created
        assert "PermissionError: [Errno 1] Operation not permitted" in wrote.error
        assert not target.exists()
    else:                # RLIMIT_FSIZE=0
        assert "File too large" in wrote.error
        assert target.read_bytes() == b""
    assert sees.status == "ok" and sees.value is False


@pytest.mark.skipif(os.geteuid() == 0, reason="RLIMIT_NPROC does not apply to root")
def test_jobs_cannot_fork_unless_allowed():
    with WorkerPool(1, timeout_s=30, memory_mb=512, kernel_layer=False) as pool:
        out = pool.submit(try_fork).result()
    assert out.status == "error" and "BlockingIOError" in out.error


def test_the_kernel_layer_forbids_forking_even_for_root():
    with WorkerPool(1, timeout_s=30, memory_mb=512) as pool:
        out = pool.submit(try_fork).result()
    assert out.status == "error" and "PermissionError" in out.error


def test_processes_forked_by_a_job_die_with_it():
    with WorkerPool(1, timeout_s=30, memory_mb=512, allow_fork=True) as pool:
        out = pool.submit(fork_sleeper).result()
    assert out.status == "ok"
    deadline = time.monotonic() + 10
    while alive(out.value) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(out.value)


def test_many_failing_jobs_never_hang_or_get_lost():
    jobs = [(double, (i,)) for i in range(6)] + [
        (exit_hard, (7,)), (segfault, ()), (sleep, (60,)), (fail, ()),
        (allocate_at_once, ()), (spin, ()), (double, (100,))]
    with WorkerPool(2, timeout_s=2, memory_mb=256) as pool:
        futures = [pool.submit(fn, *args) for fn, args in jobs]
        outcomes = [f.result() for f in futures]
    assert [o.status for o in outcomes] == ["ok"] * 6 + [
        "crashed", "crashed", "timeout", "error", "memory", "timeout", "ok"]
    assert [o.value for o in outcomes[:6]] + [outcomes[-1].value] == [0, 2, 4, 6, 8, 10, 200]


def test_map_outcomes_keeps_order():
    with WorkerPool(2, timeout_s=30, memory_mb=512) as pool:
        outcomes = list(pool.map_outcomes(double, [5, 1, 3], [0, 1, 2]))
    assert [o.value for o in outcomes] == [10, 3, 8]


def test_at_most_workers_processes_and_none_left_after_shutdown():
    me = os.getpid()
    pool = WorkerPool(2, timeout_s=30, memory_mb=512)
    servers = (pool.fork_server_pid,)
    futures = [pool.submit(sleep, 0.3) for _ in range(6)]
    most = 0
    while not all(f.done() for f in futures):
        most = max(most, len(children_of(me, servers)))
        time.sleep(0.02)
    assert all(f.result().status == "ok" for f in futures)
    assert 1 <= most <= 2
    running = [pool.submit(sleep, 60) for _ in range(2)]
    queued = [pool.submit(sleep, 60) for _ in range(3)]
    while len(children_of(me, servers)) < 2:
        time.sleep(0.02)
    pool.shutdown()
    assert children_of(me) == []
    assert [f.result().status for f in running] == ["crashed", "crashed"]
    assert "shut down" in running[0].result().error
    assert all(f.cancelled() for f in queued)
    with pytest.raises(RuntimeError):
        pool.submit(double, 1)


def test_leaving_the_block_waits_for_jobs_and_an_exception_kills_them():
    with WorkerPool(1, timeout_s=30, memory_mb=512) as pool:
        future = pool.submit(sleep, 0.2)
    assert future.done() and future.result().status == "ok"
    with pytest.raises(KeyError):
        with WorkerPool(1, timeout_s=30, memory_mb=512) as pool:
            future = pool.submit(sleep, 60)
            while not children_of(os.getpid(), (pool.fork_server_pid,)):
                time.sleep(0.02)
            raise KeyError("stop")
    assert future.result().status == "crashed"
    assert children_of(os.getpid()) == []


def test_sandbox_does_not_import_the_simulator_or_the_engine():
    code = ("import sys, sandbox; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('glia_evo', 'sim', 'population', 'simpy', 'numpy')); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- evaluate_many on the pool --------------------------------------------------------------------
def small_workload(seed: int):
    return glia_workload(seed, duration_s=20.0)


SMALL = Scenario("small", "about 200 requests on 2 x A10",
                 ClusterSpec(replicas=(ReplicaSpec("llama3-8b/a10"),) * 2), small_workload,
                 seeds=(0, 1))
LOOP = "def route(queue, replicas, now, knobs):\n    while True:\n        pass\n"


def test_evaluate_many_equals_sequential_evaluate():
    sources = [baseline_source("routing", "hra"), baseline_source("routing", "random"),
               "def route(queue, replicas, now, knobs):\n    return [(q.id, 9) for q in queue]\n"]
    instances = SMALL.instances()
    parallel = evaluate_many(sources, ROUTING, instances, workers=2, timeout_s=60)
    for source, got in zip(sources, parallel):
        want = evaluate(source, ROUTING, instances)
        assert (got.status, got.fitness, got.scenarios, got.reference, got.error, got.line) == \
               (want.status, want.fitness, want.scenarios, want.reference, want.error, want.line)
        assert got.diagnostics == want.diagnostics
    assert parallel[2].status == "invalid"


def test_a_looping_program_does_not_disturb_the_others():
    good = baseline_source("routing", "llq")
    results = evaluate_many([LOOP, good], ROUTING, SMALL.instances([0]), workers=2, timeout_s=2)
    assert results[0].status == "timeout" and results[0].fitness == 0.0
    assert results[0].error == "small#0: timed out: exceeded the wall-clock limit of 2 s"
    assert results[1].status == "ok" and results[1].fitness == 1.0


def test_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("GLIA_EVO_EVAL_TIMEOUT_S", "2")
    assert resolve_limits() == (2.0, 2048, 2.0)
    [result] = evaluate_many([LOOP], ROUTING, SMALL.instances([0]), workers=1)
    assert result.status == "timeout" and "limit of 2 s" in result.error
    monkeypatch.setenv("GLIA_EVO_EVAL_TIMEOUT_S", "-1")
    with pytest.raises(ValueError, match="GLIA_EVO_EVAL_TIMEOUT_S must be a positive number"):
        resolve_limits()


@pytest.mark.parametrize("outcome, status, error", [
    (JobOutcome("timeout", error="timed out: exceeded the CPU-time limit of 5 s"), "timeout",
     "small#0: timed out: exceeded the CPU-time limit of 5 s"),
    (JobOutcome("memory", error="exceeded the memory limit of 64 MiB"), "crashed",
     "small#0: exceeded the memory limit of 64 MiB"),
    (JobOutcome("crashed", error="the job process was killed by SIGSEGV (segmentation fault)"),
     "crashed", "small#0: the job process was killed by SIGSEGV (segmentation fault)"),
    (JobOutcome("crashed", error="the job process exited with code 3 without returning a result"),
     "crashed", "small#0: the job process exited with code 3 without returning a result"),
    (JobOutcome("error", error="KeyError: 'x'"), "error", "small#0: KeyError: 'x'"),
    (JobOutcome("ok", EvalResult("error", error="small#0: line 4 in route: MemoryError")
                .to_dict()),
     "crashed", "small#0: exceeded the memory limit of 64 MiB (line 4 in route: MemoryError)"),
    (JobOutcome("ok", EvalResult("error", error="line 2: MemoryError (while executing the "
                                                "module body)").to_dict()),
     "crashed", "small#0: exceeded the memory limit of 64 MiB (line 2: MemoryError (while "
                "executing the module body))"),
    (JobOutcome("ok", EvalResult("error", error="small#0: line 4 in route: ValueError: "
                                                "MemoryError").to_dict()),
     "error", "small#0: line 4 in route: ValueError: MemoryError"),
])
def test_outcomes_become_eval_results(outcome, status, error):
    with WorkerPool(1, timeout_s=5, memory_mb=64) as pool:
        result = outcome_to_result(outcome, SMALL.instances([0])[0], pool)
    assert (result.status, result.error, result.fitness) == (status, error, 0.0)


def broken_workload(seed: int):
    raise ValueError("this workload cannot run here")


def test_a_reference_that_cannot_run_is_an_input_error():
    broken = Scenario("broken", "", SMALL.cluster, broken_workload)
    with pytest.raises(ValueError, match="this workload cannot run here"):
        evaluate_many([baseline_source("routing", "llq")], ROUTING, broken.instances(),
                      workers=1, timeout_s=30)


def test_baselines_in_the_sandbox_match_direct_runs():
    """Every shipped baseline, compiled by the sandbox and run in a job process, gives exactly
    the metrics of the same file imported directly (load_trusted) and simulated in-process."""
    [instance] = ROUTING.split("quick")
    names = baseline_names("routing")
    sandboxed = evaluate_many([baseline_source("routing", n) for n in names], ROUTING,
                              [instance], workers=2, timeout_s=120)
    for name, result in zip(names, sandboxed):
        entry, knobs = load_trusted("routing", name, policy_seed(0, instance))
        direct = simulate(instance.workload(), instance.cluster(), entry["route"], knobs)
        assert result.status == "ok", (name, result.error)
        assert result.scenarios[instance.name] == direct.metrics, name
