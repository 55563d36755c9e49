"""Every registered problem (built-in, the examples as files) and every executor passes the
conformance checks in `conformance.py`."""
from pathlib import Path

import pytest

from conformance import PROBLEM_CHECKS, check_simulate_json
from glia_evo.executors import EXECUTORS, make_executor
from glia_evo.jobs import EvalJob, evaluate_job
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
