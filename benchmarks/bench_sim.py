"""Simulator speed per problem: simulated requests per second, and fast / reference.

- routing: the `glia` scenario (4 x A10 at the scenario's KV budget, or `--kv-blocks N`), the
  router under test;
- scheduling: the scheduling problem's `glia` scenario (llq routing), the scheduler under test;
- autoscaling: the autoscaling problem's `diurnal` scenario (llq routing), the autoscaler under
  test.
Policies are the shipped baselines imported directly (no sandbox), so this measures the simulator.
Prints figures measured in this one run (machines here are noisy; compare ratios, not absolute
times across runs). Usage:
    python benchmarks/bench_sim.py [--seeds 0-9] [--problems routing,scheduling,autoscaling]
                                   [--kv-blocks N]
                                   [--policies llq,hra] [--schedulers fcfs,shortest_prompt_first]
                                   [--scalers threshold,target_utilisation]
"""
from __future__ import annotations

import argparse
import time

from sim import ClusterSpec, simulate
from sim.policies import load_trusted
from sim.workload import glia_workload


def _timed(workload, spec, route, knobs, fast, **policies) -> tuple[float, dict]:
    t0 = time.process_time()
    result = simulate(workload, spec, route, knobs, fast=fast, **policies)
    return time.process_time() - t0, result.metrics


def routing_cluster(kv_blocks: int | None) -> ClusterSpec:
    """The routing problem's `glia` cluster (its KV budget: docs/fidelity.md), or 4 x A10 with
    `kv_blocks` blocks each."""
    if kv_blocks is not None:
        return ClusterSpec.uniform(4).with_kv_blocks(kv_blocks)
    from glia_evo.problems.routing import SCENARIOS
    return SCENARIOS["glia"].cluster


def run_routing(policy: str, seeds: list[int], fast: bool, kv_blocks: int | None = None):
    requests, elapsed, metrics = 0, 0.0, []
    spec = routing_cluster(kv_blocks)
    for seed in seeds:
        workload = glia_workload(seed)
        entry, knobs = load_trusted("routing", policy, seed)
        dt, m = _timed(workload, spec, entry["route"], knobs, fast)
        elapsed += dt
        requests += len(workload)
        metrics.append(m)
    return requests, elapsed, metrics


def run_problem(problem_name: str, scenario: str, entry: str, policy: str, seeds: list[int],
                fast: bool):
    """One baseline of the scheduling or autoscaling problem, routing fixed to llq."""
    from glia_evo.problems import get_problem
    sc = get_problem(problem_name).scenario(scenario)
    requests, elapsed, metrics = 0, 0.0, []
    for seed in seeds:
        instance = sc.instances([seed])[0]
        workload = instance.workload()
        route = load_trusted("routing", "llq")[0]["route"]
        fns, knobs = load_trusted(problem_name, policy, seed)
        kw = ({"schedule": fns[entry], "schedule_knobs": knobs} if entry == "schedule"
              else {"scale": fns[entry], "scale_knobs": knobs})
        dt, m = _timed(workload, instance.cluster(), route, None, fast, **kw)
        elapsed += dt
        requests += len(workload)
        metrics.append(m)
    return requests, elapsed, metrics


def report(label: str, run) -> None:
    n, fast_s, fast_m = run(True)
    _, ref_s, ref_m = run(False)
    same = "identical" if fast_m == ref_m else "DIFFERENT"
    print(f"{label:>26}: fast {n / fast_s:10,.0f} req/s   reference {n / ref_s:10,.0f} req/s"
          f"   fast/reference speed {ref_s / fast_s:5.2f}x   metrics {same}   ({n} requests)")


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = map(int, text.split("-"))
        return list(range(lo, hi + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,1 (autoscaling: diurnal "
                                                   "seeds exist for 0-4 only)")
    ap.add_argument("--problems", default="routing,scheduling,autoscaling")
    ap.add_argument("--policies", default="llq,hra", help="routers")
    ap.add_argument("--schedulers", default="fcfs,shortest_prompt_first")
    ap.add_argument("--scalers", default="threshold,target_utilisation")
    ap.add_argument("--kv-blocks", type=int, help="routing: 4 x A10 with N blocks each instead "
                                                  "of the glia scenario's cluster")
    args = ap.parse_args()
    seeds = parse_seeds(args.seeds)
    problems = args.problems.split(",")
    print("CPU time of one process (Vidur: ~26 s for 8,240 requests, ~320 req/s)")
    if "routing" in problems:
        spec = routing_cluster(args.kv_blocks)
        print(f"routing: glia scenario, seeds {args.seeds}, {len(spec.replicas)} x A10, "
              f"{spec.replicas[0].gpu_profile().num_blocks} KV blocks each")
        for policy in args.policies.split(","):
            report(policy, lambda fast, p=policy: run_routing(p, seeds, fast, args.kv_blocks))
    if "scheduling" in problems:
        print(f"scheduling: glia scenario, seeds {args.seeds}, 4 x A10, llq routing")
        for policy in args.schedulers.split(","):
            report(policy, lambda fast, p=policy: run_problem(
                "scheduling", "glia", "schedule", p, seeds, fast))
    if "autoscaling" in problems:
        scale_seeds = [s for s in seeds if s <= 4] or [0]
        print(f"autoscaling: diurnal scenario, seeds {scale_seeds}, A10 replicas 1-8, "
              f"llq routing")
        for policy in args.scalers.split(","):
            report(policy, lambda fast, p=policy: run_problem(
                "autoscaling", "diurnal", "scale", p, scale_seeds, fast))


if __name__ == "__main__":
    main()
