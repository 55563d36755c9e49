"""Every registered problem (built-in, the examples as files) and every executor passes the
conformance checks in `conformance.py`."""
from pathlib import Path

import pytest

from conformance import PROBLEM_CHECKS, check_baselines_json, check_simulate_json
from glia_evo.evaluation.executors import EXECUTORS, make_executor
from glia_evo.evaluation.jobs import EvalJob, evaluate_job
from glia_evo.problems import PROBLEMS, get_problem

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SPECS = [*PROBLEMS, f"{EXAMPLES / 'binpack' / 'binpack_problem' / '__init__.py'}:PROBLEM",
         f"{EXAMPLES / 'custom_trace' / 'chat_routing.py'}:PROBLEM"]


def _id(spec: str) -> str:
    return spec if spec in PROBLEMS else Path(spec.split(":")[0]).parent.name


@pytest.mark.parametrize("check", PROBLEM_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("spec", SPECS, ids=_id)
def test_problem_conformance(spec, check):
    check(get_problem(spec))


@pytest.mark.parametrize("spec", SPECS, ids=_id)
def test_problem_cli_json_schema(spec):
    check_simulate_json(spec, get_problem(spec))
    check_baselines_json(spec, get_problem(spec))


class _Limits:
    workers, timeout_s, memory_mb, scheduler = 2, 120.0, 2048, None

    def __init__(self, executor):
        self.executor = executor


@pytest.mark.parametrize("executor", [e for e in EXECUTORS if e != "dask"])
def test_executor_conformance(executor):
    """Each executor runs the engine's job in a contained process and returns the same result
    as every other executor; a job that raises is an outcome, not an exception."""
    pytest.importorskip("distributed") if executor.startswith("dask") else None
    problem = get_problem("routing")
    job = EvalJob(source=problem.baseline_source("round_robin"), problem=problem.key,
                  split="quick")
    pool = make_executor(_Limits(executor), problem.read_paths())
    try:
        outcome = pool.submit(evaluate_job, job).result(timeout=300)
        assert outcome.status == "ok", outcome.error
        assert outcome.value["status"] == "ok" and outcome.value["fitness"] > 0
        local = evaluate_job(job)
        assert outcome.value["scenarios"] == local["scenarios"]
        bad = pool.submit(evaluate_job, EvalJob(source=job.source, problem="no_such_problem"))
        assert bad.result(timeout=300).status != "ok"
    finally:
        pool.shutdown()


def test_an_executor_registered_once_is_known_to_the_config_and_the_cli(monkeypatch):
    """The registry is the one list of executors: a kind registered there validates in a config,
    is built by make_executor and is a choice of `--executor`; an unknown name is one line that
    lists the built-in ones."""
    from glia_evo import cli
    from glia_evo.config import ConfigError, from_dict
    from glia_evo.evaluation import executors
    from sandbox.pool import WorkerPool
    monkeypatch.setattr(executors, "_KINDS", dict(executors._KINDS))
    made = []

    def one_worker(e, read_paths):
        made.append(read_paths)
        return WorkerPool(1, timeout_s=e.timeout_s, memory_mb=e.memory_mb, read_paths=read_paths)
    executors.register(executors.ExecutorKind("one-worker", "a one-process pool", one_worker))
    monkeypatch.setattr(executors, "EXECUTORS", tuple(executors._KINDS))
    cfg = from_dict({"name": "x", "evaluation": {"executor": "one-worker"}}, files=False)
    pool = executors.make_executor(cfg.evaluation, ("/tmp",))
    try:
        assert made == [("/tmp",)] and pool.workers == 1
    finally:
        pool.shutdown()
    with pytest.raises(ConfigError, match=r"evaluation.executor.*'local', 'dask-local', 'dask'"):
        from_dict({"name": "x", "evaluation": {"executor": "nope"}}, files=False)
    args = cli.build_parser().parse_args(["run", "--executor", "one-worker"])
    assert args.executor == "one-worker"
