"""What the scheduling and autoscaling building blocks (glia_evo/operators/filters.py) buy.

For each problem, the offline search of `runs/<problem>.toml` (its seeds, islands, the cascade
and tuning) runs twice with the same seed and evaluation budget: with the problem's blocks, and
with the generic AST operators only. Printed per problem: the best fitness on the training split
and that candidate's fitness on the validation split (never used for selection), both runs, and
the ratio with / without measured in this one run.
Usage: python benchmarks/bench_filters.py [--evaluations 60] [--seed 0] [--problems scheduling,autoscaling]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from unittest import mock

from glia_evo import engine
from glia_evo.config import load
from glia_evo.evaluation import evaluate
from glia_evo.operators import filters
from glia_evo.operators.offline import OfflineMutator
from glia_evo.problems import get_problem
from glia_evo.runner import start
from population import Store

RUNS = Path(__file__).resolve().parent.parent / "runs"


def search(problem: str, out: Path, evaluations: int, seed: int, blocks: bool):
    """The best candidate (fitness on train, on validation) and its operator lineage."""
    shutil.rmtree(out, ignore_errors=True)
    cfg = load(RUNS / f"{problem}.toml", {"out": str(out), "seed": seed,
                                          "budget.max_evaluations": evaluations,
                                          "budget.minutes": 600.0, "tracking.enabled": False,
                                          "report.at_end": False})
    generic = (lambda p: OfflineMutator(p.entrypoints))
    with mock.patch.object(engine, "for_problem", engine.for_problem if blocks else generic):
        t0 = time.perf_counter()
        start(cfg, progress=False)
        wall = time.perf_counter() - t0
    store = Store(out / "state.sqlite", create=False)
    best = max((c for c in store.all() if c.status == "ok"), key=lambda c: c.fitness)
    ops = [c.operator for c in store.all() if c.status != "pending"]
    store.close()
    prob = get_problem(problem)
    val = evaluate(best.source, prob, prob.split("validation"), knobs=best.knobs)
    return best, val.fitness, ops, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--evaluations", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--problems", default="scheduling,autoscaling")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp())
    blocks = set(filters.SCHEDULING_OPERATORS) | set(filters.AUTOSCALING_OPERATORS)
    for problem in args.problems.split(","):
        rows = {}
        for with_blocks in (True, False):
            label = "with blocks" if with_blocks else "generic only"
            best, val, ops, wall = search(problem, base / f"{problem}_{with_blocks}",
                                          args.evaluations, args.seed, with_blocks)
            used = sum(1 for o in ops if o in blocks)
            rows[with_blocks] = (best.fitness, val)
            print(f"{problem:12s} {label:13s}: best train {best.fitness:.4f} ({best.id}, "
                  f"{best.operator}), validation {val:.4f}; {len(ops)} candidates, "
                  f"{used} from blocks, {wall:.0f} s")
        (bt, bv), (gt, gv) = rows[True], rows[False]
        print(f"{problem:12s} with / without blocks: train {bt / gt:.3f}x, "
              f"validation {bv / gv:.3f}x")


if __name__ == "__main__":
    main()
