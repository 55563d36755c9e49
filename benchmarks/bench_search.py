"""Offline search from `round_robin` on `glia`, and the cost of tracking and tuning.

1. One run of `glia-evo run` (2 workers, 200 evaluations, seeds 0 and 1 of `glia` as the
   training split, the quick first stage on, MLflow tracking and Optuna tuning on) measured from
   the inside: the engine's own CPU time and the workers' idle time per candidate, the best
   fitness reached against llq (1.0) and hra, and the time a tuning trial takes.
2. Two short identical searches (quick split, tuning off), tracking on and off, alternated:
   evaluations per second with tracking / without.
4. The held-out report (`glia-evo report DIR`, test split, every baseline) of one small run,
   with a cold baseline cache (an empty GLIA_EVO_CACHE_DIR) and a warm one, alternated:
   report seconds cold / warm (`--only-report`).
3. `--tuning-ab`: does tuning pay for itself? The default routing config (runs/routing.toml)
   seeded from `round_robin`, 200 evaluations, for search seeds 0, 1, 2, with tuning on and
   off (alternated, same seeds and budget): the run's best on the validation split (its own
   choice among the `search.validate_top` fittest), worker-seconds spent on tuning (trials
   and sensitivity probes) and on candidates, trial sets (knob-free code + knob values)
   evaluated twice, trials cut by the cascade, studies started / improved / stopped early.
   Smaller sizes from the command line, e.g. `--evaluations 40 --seeds 0`.
Usage: python benchmarks/bench_search.py [--evaluations 200] [--workers 2] [--out DIR]
       python benchmarks/bench_search.py --tuning-ab [--evaluations 200] [--seeds 0,1,2]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from glia_evo.config import load
from glia_evo.events import read_events
from glia_evo.evaluation import evaluate
from glia_evo.problems import get_problem
from glia_evo.runner import start
from population import Store
from sim.policies import baseline_source

CONFIG = """
name = "bench"
seed = 0
[search]
islands = 2
island_capacity = 10
seeds = ["round_robin"]
migration_interval = 20
[budget]
minutes = 120.0
max_evaluations = {evals}
[evaluation]
workers = {workers}
split = "glia_train"
cascade = true
cascade_threshold = 0.9
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--evaluations", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--only-tracking", action="store_true", help="only part 2")
    ap.add_argument("--tuning-ab", action="store_true", help="only part 3")
    ap.add_argument("--only-report", action="store_true", help="only part 4")
    ap.add_argument("--seeds", default="0,1,2", help="search seeds of part 3")
    args = ap.parse_args()
    if args.tuning_ab:
        tuning_ab(args.out or Path(tempfile.mkdtemp()), args.evaluations, args.workers,
                  [int(s) for s in args.seeds.split(",")])
        return
    if args.only_tracking:
        base = Path(tempfile.mkdtemp())
        tracking_ratio(base, args.workers)
        return
    if args.only_report:
        report_cache_ratio(Path(tempfile.mkdtemp()), args.workers)
        return
    out = args.out or Path(tempfile.mkdtemp()) / "bench"
    shutil.rmtree(out, ignore_errors=True)
    cfg_path = out.parent / "bench.toml"
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(CONFIG.format(evals=args.evaluations, workers=args.workers))
    cfg = load(cfg_path, {"out": str(out)})

    wall0, cpu0 = time.perf_counter(), time.process_time()
    start(cfg, progress=False)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0

    store = Store(out / "state.sqlite", create=False)
    cands = [c for c in store.all() if c.status != "pending" and c.operator != "migration"]
    best = max(cands, key=lambda c: c.fitness)
    busy = sum(c.eval_seconds for c in cands if c.operator != "tune")
    store.close()
    trials = [e for e in read_events(out / "events.jsonl") if e["event"] == "trial"]
    busy += sum(e["seconds"] for e in trials)       # trials keep the workers busy too
    problem = get_problem("routing")
    hra = evaluate(baseline_source("routing", "hra"), problem, problem.split("glia_train"))
    n = len(cands)
    print(f"{n} candidates evaluated in {wall:.0f} s with {args.workers} workers")
    print(f"engine CPU time per candidate:          {cpu / n * 1000:8.1f} ms "
          f"({cpu / wall:.1%} of wall time)")
    print(f"worker idle time per candidate:          {(wall * args.workers - busy) / n * 1000:8.1f} ms "
          f"({1 - busy / (wall * args.workers):.1%} of worker time)")
    print(f"best fitness from round_robin: {best.fitness:.4f} ({best.id}, {best.operator}); "
          f"llq = 1.0000, hra = {hra.fitness:.4f} on the same split")
    print(f"best / llq = {best.fitness:.3f}x, best / hra = {best.fitness / hra.fitness:.3f}x")
    if trials:
        per = sum(e["seconds"] for e in trials) / len(trials)
        per_eval = sum(c.eval_seconds for c in cands if c.operator != "tune") / n
        print(f"tuning: {len(trials)} trials, {per:.2f} s per trial "
              f"({per / per_eval:.2f}x a candidate evaluation)")
    tracking_ratio(out.parent, args.workers)
    report_cache_ratio(out.parent, args.workers)


def report_cache_ratio(base: Path, workers: int, rounds: int = 2) -> None:
    """Seconds `glia-evo report` takes with a cold baseline cache and a warm one (alternated,
    each its own process, so start-up counts as it does for a user)."""
    import os
    import subprocess
    import sys
    run = base / "report_run"
    shutil.rmtree(run, ignore_errors=True)
    path = base / "report_run.toml"
    path.write_text(QUICK.format(workers=workers, evals=6, tracking="false"))
    start(load(path, {"out": str(run), "report.at_end": False}), progress=False)
    warm_dir = base / "cache_warm"
    times: dict[str, list[float]] = {"cold": [], "warm": []}
    for r in range(rounds + 1):
        for kind in ("cold", "warm"):
            cache = warm_dir if kind == "warm" else base / f"cache_cold_{r}"
            shutil.rmtree(cache, ignore_errors=True) if kind == "cold" else None
            env = {**os.environ, "GLIA_EVO_CACHE_DIR": str(cache)}
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "glia_evo.cli", "report", str(run), "--json",
                            "--workers", str(workers)], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            if r or kind == "cold":       # round 0's warm run fills the warm cache
                times[kind].append(time.perf_counter() - t0)
    cold, warm = min(times["cold"]), min(times["warm"])
    print(f"report on the test split: {cold:.1f} s cold / {warm:.1f} s warm baseline cache = "
          f"{cold / warm:.1f}x (min of {rounds} alternated runs each; median "
          f"{statistics.median(times['cold']):.1f} / {statistics.median(times['warm']):.1f} s)")


QUICK = """
name = "track"
seed = 1
[search]
islands = 2
island_capacity = 6
seeds = ["round_robin", "llq"]
[budget]
max_evaluations = {evals}
[evaluation]
workers = {workers}
split = "train"
cascade = false
[tuning]
enabled = false
[tracking]
enabled = {tracking}
"""


def tracking_ratio(base: Path, workers: int, rounds: int = 1, evals: int = 40) -> None:
    """Evaluations/s with tracking on / off, from alternated identical searches on the train
    split (evaluations of realistic cost; start-up and the final drain of the backlog count)."""
    rates = {True: [], False: []}
    for r in range(rounds):
        for tracking in (True, False):
            out = base / f"track_{tracking}_{r}"
            shutil.rmtree(out, ignore_errors=True)
            path = base / f"track_{tracking}.toml"
            path.write_text(QUICK.format(workers=workers, evals=evals,
                                         tracking=str(tracking).lower()))
            cfg = load(path, {"out": str(out)})
            t0 = time.perf_counter()
            start(cfg, progress=False)
            rates[tracking].append(evals / (time.perf_counter() - t0))
    on, off = max(rates[True]), max(rates[False])
    print(f"tracking on / off: {on:.2f} / {off:.2f} evaluations/s = {on / off:.3f}x "
          f"(target >= 0.95x; best of {rounds} alternated runs each)")


def _tuning_run(base: Path, seed: int, tuning: bool, evals: int, workers: int) -> dict:
    import json
    from glia_evo.evaluation.parallel import evaluate_many
    from glia_evo.tuning_runs import knob_free_hash
    from glia_evo.validation import VALIDATION_KEY
    out = base / f"tune_{tuning}_{seed}"
    shutil.rmtree(out, ignore_errors=True)
    repo = Path(__file__).resolve().parent.parent
    cfg = load(repo / "runs" / "routing.toml", {
        "out": str(out), "seed": seed, "search.seeds": ["round_robin"],
        "budget.max_evaluations": evals, "budget.minutes": 600.0,
        "evaluation.workers": workers, "tuning.enabled": tuning, "tracking.enabled": False,
        "report.at_end": False})
    t0 = time.perf_counter()
    start(cfg, progress=False)
    wall = time.perf_counter() - t0
    store = Store(out / "state.sqlite", create=False)
    cands = {c.id: c for c in store.all()}
    best = max((c for c in cands.values() if c.status == "ok"), key=lambda c: c.fitness)
    choice = store.get_meta(VALIDATION_KEY) or {}
    stats = store.get_meta("tuning_stats") or {}
    store.close()
    if choice.get("best") in cands:        # the run's own choice (search.validate_top)
        chosen = cands[choice["best"]]
        validation = choice["scores"][chosen.id]["fitness"]
    else:                                  # no choice stored: the train-best on validation
        chosen = best
        problem = get_problem("routing")
        [val] = evaluate_many([best.source], problem, problem.split("validation"),
                              workers=workers)
        validation = val.fitness if val.status == "ok" else 0.0
    events = read_events(out / "events.jsonl")
    trials = [e for e in events if e["event"] == "trial"]
    evaluated = [e for e in trials if not e.get("reused")]
    # a trial set: the program's code without its KNOBS literal + the knob values it ran with
    sets = [(knob_free_hash(cands[e["candidate"]].source), json.dumps(sorted(e["knobs"].items())))
            for e in evaluated]
    candidate_s = sum(e["seconds"] for e in events if e["event"] == "evaluation"
                      and not e.get("recovered"))
    return {"validation": validation, "train": chosen.fitness, "best": chosen.id,
            "operator": chosen.operator, "train_best": best.fitness,
            "trial_s": sum(e["seconds"] for e in evaluated),
            "probe_s": float(stats.get("probe_seconds", 0.0)),
            "probes": int(stats.get("probes", 0)),
            "candidate_s": candidate_s, "trials": len(evaluated),
            "reused": len(trials) - len(evaluated), "duplicates": len(sets) - len(set(sets)),
            "cut": sum(1 for e in evaluated if e.get("cut")), "wall": wall,
            "studies": sum(1 for e in events if e["event"] == "tuning_start"),
            "improved": sum(1 for e in events if e["event"] == "tuning_done"
                            and e.get("improved")),
            "stopped_early": int(stats.get("stopped_early", 0)),
            "insensitive": int(stats.get("not_tuned_insensitive", 0)),
            "unused": int(stats.get("not_tuned_unused_knobs", 0)),
            "shares": [e["share"] for e in events if e["event"] == "tuning_share"]}


def tuning_ab(base: Path, evals: int, workers: int, seeds: list[int]) -> None:
    """Part 3 (see the module docstring); on / off alternate per seed. Worker-seconds are
    measured (each job's own duration), so they depend on the machine's load; the counts
    (trials, duplicates, cuts, studies) and the fitness values do not."""
    rows = []
    print(f"tuning on / off: routing from round_robin, {evals} evaluations, {workers} workers, "
          f"search seeds {seeds}", flush=True)
    for seed in seeds:
        for tuning in (True, False):
            r = _tuning_run(base, seed, tuning, evals, workers)
            rows.append((seed, tuning, r))
            tuning_s = r["trial_s"] + r["probe_s"]
            print(f"seed {seed} tuning {'on ' if tuning else 'off'}: validation "
                  f"{r['validation']:.4f} (its train {r['train']:.4f}, {r['best']} "
                  f"{r['operator']}; train-best {r['train_best']:.4f}), {r['wall']:.0f} s wall; "
                  f"trials {r['trials']} ({r['cut']} cut by the cascade, {r['reused']} reused, "
                  f"{r['duplicates']} trial sets evaluated twice); studies {r['studies']} "
                  f"({r['improved']} improved, {r['stopped_early']} stopped early; not tuned: "
                  f"{r['insensitive']} knobs insensitive to the probe, {r['unused']} knobs "
                  f"unused; {r['probes']} probe jobs); worker-s: tuning {tuning_s:.0f} "
                  f"(trials {r['trial_s']:.0f}, probes {r['probe_s']:.0f}), candidates "
                  f"{r['candidate_s']:.0f} = tuning share "
                  f"{tuning_s / max(1e-9, tuning_s + r['candidate_s']):.1%}"
                  + (f"; share limit after each study {r['shares']}" if r["shares"] else ""),
                  flush=True)
    better = worse = 0
    for seed in seeds:
        on = next(r for s, t, r in rows if s == seed and t)
        off = next(r for s, t, r in rows if s == seed and not t)
        ratio = on["validation"] / off["validation"] if off["validation"] else float("inf")
        better += ratio > 1.0 + 1e-9
        worse += ratio < 1.0 - 1e-9
        print(f"seed {seed}: validation on / off = {ratio:.4f}x")
    on_rows = [r for _, t, r in rows if t]
    tuning_s = sum(r["trial_s"] + r["probe_s"] for r in on_rows)
    total = tuning_s + sum(r["candidate_s"] for r in on_rows)
    print(f"tuning on better on {better} of {len(seeds)} seeds, worse on {worse} "
          f"(target: never worse, better on at least 2 of 3); tuning's share of the "
          f"worker-seconds with tuning on: {tuning_s / max(1e-9, total):.1%} (target <= 30% "
          f"unless it pays off: {sum(r['improved'] for r in on_rows)} of "
          f"{sum(r['studies'] for r in on_rows)} studies improved their program); duplicate "
          f"trial sets: {sum(r['duplicates'] for r in on_rows)}; trials cut by the cascade: "
          f"{sum(r['cut'] for r in on_rows)}")


if __name__ == "__main__":
    main()
