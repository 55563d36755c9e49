"""Does the offline search discover policies that beat the shipped ones on scenarios it never
trained on? (issue 17)

For each problem: its default run configuration (`runs/<problem>.toml`: lexicase selection,
the quick first stage, tuning on, the best chosen on validation), a budget of `--evaluations`
evaluations (tuning trials count), started from the weakest shipped seed (`round_robin`,
`fcfs`, `fixed`) and from the configuration's own seeds, for each search seed. Per run it
prints:

- the best (as the run chose it: on validation) against the best shipped baseline, on the
  validation split and on the held-out test split (fitness vs the problem's reference);
- how many evaluations the search needed until its best so far on the training split also beat
  the best shipped baseline on validation (each new training best is evaluated on validation
  afterwards, the way `glia_evo.validation` would have chosen it; "-" if it never did);
- the wall time of the search (the validation choice included, the test evaluation not).

Baselines on validation and test come from the baseline cache (`glia_evo.evaluation.baseline_cache`)
when the simulator and problems are unchanged, else they are simulated once.

Usage: python benchmarks/bench_discovery.py [--problems routing,scheduling,autoscaling]
           [--evaluations 200] [--seeds 0,1,2] [--starts weakest,default] [--workers 2]
           [--out DIR] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEAKEST = {"routing": "round_robin", "scheduling": "fcfs", "autoscaling": "fixed"}


def baseline_fitness(problem, split: str, workers: int) -> dict:
    """{baseline: fitness} on a split, through the baseline cache."""
    from glia_evo.heldout import _evaluate
    names = problem.baseline_names()
    sources = [problem.baseline_source(problem.reference)] + \
        [problem.baseline_source(n) for n in names]
    results = _evaluate(sources, names, problem, split, problem.split(split), workers, None)
    return {n: r.fitness for n, r in zip(names, results[1:]) if r.status == "ok"}


def evaluation_order(run_dir: Path) -> dict:
    """candidate id -> evaluations (and tuning trials) done when its result came in."""
    from glia_evo.events import read_events
    count, order = 0, {}
    for e in read_events(run_dir / "events.jsonl"):
        if e["event"] in ("evaluation", "trial"):
            count += 1
            if e["event"] == "evaluation" and e.get("candidate"):
                order.setdefault(e["candidate"], count)
        elif e["event"] == "tuning_done" and e.get("child"):
            order.setdefault(e["child"], count)
    return order


def evaluations_to_pass(run_dir: Path, problem, bar: float, workers: int) -> int | None:
    """Evaluations until the running best on train also beats `bar` on validation."""
    from glia_evo.evaluation.parallel import evaluate_many
    from population import Store
    store = Store(run_dir / "state.sqlite", create=False)
    try:
        order = evaluation_order(run_dir)
        cands = sorted((c for c in store.all() if c.viable and c.id in order),
                       key=lambda c: order[c.id])
        known = {i: s["fitness"] for i, s in
                 ((store.get_meta("validation") or {}).get("scores") or {}).items()}
    finally:
        store.close()
    best, leaders = 0.0, []
    for c in cands:
        if c.fitness > best:
            best = c.fitness
            leaders.append(c)
    todo = [c for c in leaders if c.id not in known]
    if todo:
        results = evaluate_many([c.source for c in todo], problem, problem.split("validation"),
                                workers=workers)
        known.update({c.id: r.fitness for c, r in zip(todo, results)})
    for c in leaders:
        if known.get(c.id, 0.0) > bar:
            return order[c.id]
    return None


def one_run(problem_name: str, start: str, seed: int, evaluations: int, workers: int,
            out: Path, base_val: dict, base_test: dict) -> dict:
    import glia_evo
    from glia_evo.config import load
    from glia_evo.heldout import heldout
    from glia_evo.problems import get_problem
    problem = get_problem(problem_name)
    cfg = load(ROOT / "runs" / f"{problem_name}.toml", {
        "budget.max_evaluations": evaluations, "budget.minutes": 24 * 60.0, "seed": seed,
        "evaluation.workers": workers, "tracking.enabled": False})
    if start == "weakest":
        cfg.search.seeds = [WEAKEST[problem_name]]
    cfg.report.at_end = False
    run_dir = out / f"{problem_name}_{start}_{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cfg.out = str(run_dir)
    t0 = time.monotonic()
    run = glia_evo.search(cfg, report=False)
    wall = time.monotonic() - t0
    status = run.status()
    val = (status.get("validation") or {}).get("fitness")
    report = heldout(run_dir, problem_name, "test", workers, include_baselines=False)
    test = report["rows"][0]["fitness"] if report["rows"][0]["status"] == "ok" else 0.0
    top_val = max(base_val, key=base_val.get)
    top_test = max(base_test, key=base_test.get)
    needed = evaluations_to_pass(run_dir, problem, base_val[top_val], workers)
    return {"problem": problem_name, "start": start, "seed": seed,
            "seeds": list(cfg.search.seeds), "evaluations": status["evaluations"],
            "tuning_trials": status.get("tuning_trials", 0),
            "best": status["best"]["id"], "train": status["best"]["fitness"],
            "validation": val, "test": test,
            "best_baseline_validation": [top_val, base_val[top_val]],
            "best_baseline_test": [top_test, base_test[top_test]],
            "evaluations_to_pass_on_validation": needed, "wall_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", default="routing,scheduling,autoscaling")
    ap.add_argument("--evaluations", type=int, default=200)
    ap.add_argument("--seeds", default="0,1,2", help="search seeds")
    ap.add_argument("--starts", default="weakest,default",
                    help="weakest (round_robin / fcfs / fixed) and/or default (the config's)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = ap.parse_args()
    from glia_evo.problems import get_problem
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_discovery_"))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    print("problem      start    seed  evals  train   valid (best baseline)     test (best baseline)"
          "      evals to pass  wall")
    for name in args.problems.split(","):
        problem = get_problem(name)
        base_val = baseline_fitness(problem, "validation", args.workers)
        base_test = baseline_fitness(problem, "test", args.workers)
        for start in args.starts.split(","):
            for seed in [int(s) for s in args.seeds.split(",")]:
                r = one_run(name, start, seed, args.evaluations, args.workers, out, base_val,
                            base_test)
                rows.append(r)
                bv, bt = r["best_baseline_validation"], r["best_baseline_test"]
                val = f"{r['validation']:.3f}" if r["validation"] is not None else "  -  "
                print(f"{name:12} {start:8} {seed:4}  {r['evaluations']:5}  {r['train']:.3f}  "
                      f"{val} ({bv[0]} {bv[1]:.3f})  {r['test']:.3f} ({bt[0]} {bt[1]:.3f})  "
                      f"{r['evaluations_to_pass_on_validation'] or '-':>5}  "
                      f"{r['wall_s'] / 60:.1f} min", flush=True)
                if args.json:
                    args.json.write_text(json.dumps(rows, indent=1))
    for name in args.problems.split(","):
        mine = [r for r in rows if r["problem"] == name]
        for start in args.starts.split(","):
            these = [r for r in mine if r["start"] == start]
            wins = sum(r["test"] > r["best_baseline_test"][1] for r in these)
            print(f"{name} from {start}: best beats the best shipped baseline on test in {wins}/"
                  f"{len(these)} search seeds")
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
