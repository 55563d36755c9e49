"""Evaluation throughput on Dask (1 and 2 workers) against the local sandbox pool, in one run.

Every executor gets the same batch of engine jobs (`glia_evo.evaluation.jobs.evaluate_job`: one
candidate on a split, in its own limited process) and the batch's wall time is measured from the
first submit to the last result. Executors start before the clock starts (a LocalCluster takes about
half a second). Ratios are what to read; absolute rates depend on the machine's load.

    python3 benchmarks/bench_scale.py [--split train] [--policies llq,hra,...] [--rounds 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from glia_evo.evaluation.dask import DaskExecutor  # noqa: E402
from glia_evo.evaluation.jobs import EvalJob, evaluate_job  # noqa: E402
from glia_evo.evaluation.reference import reference_job  # noqa: E402
from sandbox.pool import WorkerPool  # noqa: E402
from sim.policies import baseline_source  # noqa: E402

LIMITS = {"timeout_s": 600.0, "memory_mb": 2048}


def jobs(problem: str, split: str, policies: list[str], rounds: int) -> list[EvalJob]:
    # in a job process, as the engine does, so this process's caches stay cold for every pool
    with WorkerPool(1, **LIMITS) as pool:
        reference = tuple(sorted(pool.submit(reference_job, problem, (split,)).result()
                                 .value.items()))
    return [EvalJob(source=baseline_source(problem, name), problem=problem, split=split,
                    reference=reference) for _ in range(rounds) for name in policies]


def measure(executor, batch: list[EvalJob]) -> tuple[float, list]:
    started = time.perf_counter()
    outcomes = [f.result() for f in [executor.submit(evaluate_job, job) for job in batch]]
    elapsed = time.perf_counter() - started
    bad = [o for o in outcomes if o.status != "ok" or o.value.status != "ok"]
    if bad:
        raise SystemExit(f"an evaluation failed: {bad[0].error or bad[0].value.error}")
    return len(batch) / elapsed, [round(o.value.fitness, 9) for o in outcomes]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problem", default="routing")
    ap.add_argument("--split", default="train")
    ap.add_argument("--policies", default="llq,hra,lor,round_robin,expert,power_of_two")
    ap.add_argument("--rounds", type=int, default=2, help="copies of the batch")
    args = ap.parse_args()
    batch = jobs(args.problem, args.split, args.policies.split(","), args.rounds)
    print(f"{len(batch)} evaluations of {args.problem} on the {args.split!r} split, "
          f"{os.cpu_count()} cores\n")

    rates, fitness = {}, {}
    for name, make in [("local pool, 1 worker", lambda: WorkerPool(1, **LIMITS)),
                       ("local pool, 2 workers", lambda: WorkerPool(2, **LIMITS)),
                       ("dask-local, 1 worker", lambda: DaskExecutor.local(1, **LIMITS)),
                       ("dask-local, 2 workers", lambda: DaskExecutor.local(2, **LIMITS))]:
        executor = make()
        try:
            rates[name], fitness[name] = measure(executor, batch)
        finally:
            executor.shutdown()
        print(f"  {name:<24} {rates[name]:6.2f} evaluations/s")

    same = all(f == fitness["local pool, 1 worker"] for f in fitness.values())
    base = rates["local pool, 2 workers"]
    print("\nratios (same run):")
    print(f"  dask 1 worker  / local 1 worker  = "
          f"{rates['dask-local, 1 worker'] / rates['local pool, 1 worker']:5.2f}x")
    print(f"  dask 1 worker  / local 2 workers = {rates['dask-local, 1 worker'] / base:5.2f}x")
    print(f"  dask 2 workers / local 2 workers = {rates['dask-local, 2 workers'] / base:5.2f}x")
    print(f"  dask 2 workers / dask 1 worker   = "
          f"{rates['dask-local, 2 workers'] / rates['dask-local, 1 worker']:5.2f}x")
    print(f"  local 2 workers / local 1 worker = {base / rates['local pool, 1 worker']:5.2f}x")
    print(f"  identical fitness on every executor: {same}")


if __name__ == "__main__":
    main()
