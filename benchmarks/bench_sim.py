"""Simulator speed on the `glia` scenario: simulated requests per second, and fast / reference.

Prints figures measured in this one run (machines here are noisy; compare ratios, not absolute
times across runs). Usage: python benchmarks/bench_sim.py [--seeds 0-9] [--policies llq,hra]
"""
from __future__ import annotations

import argparse
import time

from sim import ClusterSpec, simulate
from sim.policies import load_trusted
from sim.workload import glia_workload


def run(policy: str, seeds: list[int], fast: bool) -> tuple[int, float, list[dict]]:
    requests, elapsed, metrics = 0, 0.0, []
    for seed in seeds:
        workload = glia_workload(seed)
        entry, knobs = load_trusted("routing", policy, seed)
        t0 = time.process_time()
        result = simulate(workload, ClusterSpec.uniform(4), entry["route"], knobs, fast=fast)
        elapsed += time.process_time() - t0
        requests += len(workload)
        metrics.append(result.metrics)
    return requests, elapsed, metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,1")
    ap.add_argument("--policies", default="llq,hra")
    args = ap.parse_args()
    if "-" in args.seeds:
        lo, hi = map(int, args.seeds.split("-"))
        seeds = list(range(lo, hi + 1))
    else:
        seeds = [int(s) for s in args.seeds.split(",")]
    print(f"glia scenario, seeds {args.seeds}, 4 x A10; CPU time of one process "
          f"(Vidur: ~26 s for 8,240 requests, ~320 req/s)")
    for policy in args.policies.split(","):
        n, fast_s, fast_m = run(policy, seeds, True)
        _, ref_s, ref_m = run(policy, seeds, False)
        same = "identical" if fast_m == ref_m else "DIFFERENT"
        print(f"{policy:>6}: fast {n / fast_s:10,.0f} req/s   reference {n / ref_s:10,.0f} req/s"
              f"   fast/reference speed {ref_s / fast_s:5.2f}x   metrics {same}"
              f"   ({n} requests)")


if __name__ == "__main__":
    main()
