"""Cost of the sandbox, and how evaluation throughput scales with workers.

Prints two ratios, both measured in this one run (machines here are noisy: compare ratios, not
absolute times across runs):

1. sandboxed / plain policy time on the `glia` scenario: the same simulation driven by a baseline
   compiled by the sandbox (RestrictedPython, `compile_policy`) and by the same file imported
   directly (`load_trusted`), with the same rng seed (`policy_seed`). CPU time of `simulate` only;
   the metrics must be identical. Target: <= 1.5x.
2. 2-worker / 1-worker throughput of `evaluate_many` (every job in its own contained process) on
   a batch of evaluations, reference baselines already known. Target: >= 1.8x on 2 free cores.
3. per-job cost of the kernel layer (sandbox.kernel: environment scrub, no_new_privs, Landlock,
   seccomp): fork + contain() + exit against fork + exit, in alternating rounds (wall time and
   the child's CPU time from wait4, min and median); and a trivial job through a WorkerPool with
   and without the layer (wall time per job, median).

Usage: python benchmarks/bench_sandbox.py [--seeds 0] [--policies llq,hra]
                                          [--batch-policies ...] [--batch-scenario glia_short]
                                          [--kernel-rounds 200]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from glia_evo.evaluation import policy_seed
from glia_evo.evaluation.parallel import evaluate_many
from glia_evo.problems import get_problem
from sandbox import WorkerPool, compile_policy, kernel
from sim import simulate
from sim.policies import baseline_source, load_trusted


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = map(int, text.split("-"))
        return list(range(lo, hi + 1))
    return [int(s) for s in text.split(",")]


def sandbox_overhead(problem, policy: str, seeds: list[int], repeats: int) -> tuple[float, float, bool]:
    """(plain CPU s, sandboxed CPU s, identical metrics) summed over seeds; best of `repeats`."""
    plain_s = sandboxed_s = 0.0
    identical = True
    entry = problem.entrypoints[0]
    for seed in seeds:
        [instance] = problem.scenario("glia").instances([seed])
        workload, cluster = instance.workload(), instance.cluster()
        rng_seed = policy_seed(0, instance)
        best_plain = best_sandboxed = float("inf")
        for _ in range(repeats):
            functions, knobs = load_trusted(problem.name, policy, rng_seed)
            t0 = time.process_time()
            plain = simulate(workload, cluster, functions[entry], knobs)
            best_plain = min(best_plain, time.process_time() - t0)
            compiled = compile_policy(baseline_source(problem.name, policy), problem.entrypoints,
                                      seed=rng_seed)
            t0 = time.process_time()
            sandboxed = simulate(workload, cluster, compiled.entrypoints[entry], compiled.knobs)
            best_sandboxed = min(best_sandboxed, time.process_time() - t0)
            identical = identical and plain.metrics == sandboxed.metrics
        plain_s += best_plain
        sandboxed_s += best_sandboxed
    return plain_s, sandboxed_s, identical


def throughput(problem, policies: list[str], scenario: str, seeds: list[int] | None,
               workers: int) -> tuple[float, list]:
    sources = [baseline_source(problem.name, p) for p in policies]
    instances = problem.scenario(scenario).instances(seeds)
    with WorkerPool(workers, timeout_s=600, memory_mb=2048) as pool:
        t0 = time.perf_counter()
        results = evaluate_many(sources, problem, instances, pool=pool)
        return time.perf_counter() - t0, results


def _fork_once(plan) -> tuple[float, float]:
    """(wall s, child CPU s) of fork [+ contain] + exit, the parent waiting with wait4."""
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if plan is not None:
                kernel.contain(prepared=plan)
        except BaseException:
            code = 1
        os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("contain() failed in the benchmark's child")
    return wall, usage.ru_utime + usage.ru_stime


def _trivial_job():
    return 1


def kernel_layer_cost(rounds: int) -> tuple[dict, dict, dict]:
    """Alternating A/B rounds: {'plain'|'contained': (walls, cpus)} and pool jobs per second."""
    plan = kernel.plan()
    forks = {"plain": ([], []), "contained": ([], [])}
    for i in range(rounds):
        for name in (("plain", "contained") if i % 2 == 0 else ("contained", "plain")):
            wall, cpu = _fork_once(plan if name == "contained" else None)
            forks[name][0].append(wall)
            forks[name][1].append(cpu)
    jobs = {True: [], False: []}
    pools = {flag: WorkerPool(1, timeout_s=60, memory_mb=1024, kernel_layer=flag)
             for flag in (True, False)}
    try:
        for i in range(max(10, rounds // 4)):
            for flag in ((True, False) if i % 2 == 0 else (False, True)):
                t0 = time.perf_counter()
                out = pools[flag].submit(_trivial_job).result()
                jobs[flag].append(time.perf_counter() - t0)
                if not out.ok:
                    raise RuntimeError(f"trivial job failed: {out.error}")
    finally:
        for pool in pools.values():
            pool.shutdown()
    return forks, jobs, {"support": plan.support, "paths": len(plan.paths),
                         "filter": len(plan.bpf or b"") // 8}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0", help="glia seeds for the overhead, e.g. 0 or 0-2")
    ap.add_argument("--policies", default="llq,hra")
    ap.add_argument("--repeats", type=int, default=2, help="best of N runs per measurement")
    ap.add_argument("--batch-policies", default="llq,hra,expert,lor,least_kv,power_of_two")
    ap.add_argument("--batch-scenario", default="glia_short")
    ap.add_argument("--batch-seeds", default=None, help="default: the scenario's seeds")
    ap.add_argument("--kernel-rounds", type=int, default=200,
                    help="A/B rounds for the kernel layer's cost (0: skip)")
    args = ap.parse_args()
    problem = get_problem("routing")
    seeds = parse_seeds(args.seeds)

    print(f"1. sandboxed / plain policy, glia scenario, seeds {args.seeds} "
          f"(CPU time of simulate, best of {args.repeats})")
    for policy in args.policies.split(","):
        plain_s, sandboxed_s, identical = sandbox_overhead(problem, policy, seeds, args.repeats)
        ratio = sandboxed_s / plain_s
        print(f"   {policy:>13}: sandboxed / plain = {ratio:5.2f}x  (target <= 1.5x: "
              f"{'met' if ratio <= 1.5 else 'MISSED'})   metrics "
              f"{'identical' if identical else 'DIFFERENT'}")

    policies = args.batch_policies.split(",")
    batch_seeds = parse_seeds(args.batch_seeds) if args.batch_seeds else None
    throughput(problem, policies[:1], args.batch_scenario, batch_seeds, 2)  # references cached
    one_s = two_s = float("inf")
    for _ in range(args.repeats):     # interleaved, best of N: background load hits both alike
        elapsed, one = throughput(problem, policies, args.batch_scenario, batch_seeds, 1)
        one_s = min(one_s, elapsed)
        elapsed, two = throughput(problem, policies, args.batch_scenario, batch_seeds, 2)
        two_s = min(two_s, elapsed)
    jobs = len(policies) * len(problem.scenario(args.batch_scenario).instances(batch_seeds))
    same = all(a.scenarios == b.scenarios and a.status == b.status == "ok"
               for a, b in zip(one, two))
    ratio = one_s / two_s
    print(f"2. evaluate_many throughput, {jobs} jobs ({len(policies)} policies on "
          f"{args.batch_scenario}), {os.cpu_count()} cores, wall time, best of {args.repeats}; "
          f"load average before: {os.getloadavg()[0]:.1f}")
    print(f"   2 workers / 1 worker = {ratio:5.2f}x  (target >= 1.8x: "
          f"{'met' if ratio >= 1.8 else 'MISSED'})   results "
          f"{'identical' if same else 'DIFFERENT'}")

    if args.kernel_rounds > 0:
        forks, jobs, info = kernel_layer_cost(args.kernel_rounds)
        ms = 1e3
        print(f"3. kernel layer per job, {args.kernel_rounds} alternating rounds "
              f"({info['support'].reason}; {info['paths']} read paths, "
              f"{info['filter']} BPF instructions)")
        for what, index in (("wall", 0), ("child CPU", 1)):
            plain, contained = forks["plain"][index], forks["contained"][index]
            print(f"   fork+exit {what:>9}: plain min {min(plain) * ms:6.2f} ms, median "
                  f"{statistics.median(plain) * ms:6.2f} ms | +contain min "
                  f"{min(contained) * ms:6.2f} ms, median {statistics.median(contained) * ms:6.2f}"
                  f" ms | cost (median) {(statistics.median(contained) - statistics.median(plain)) * ms:+6.2f} ms")
        on, off = statistics.median(jobs[True]), statistics.median(jobs[False])
        print(f"   trivial job through a WorkerPool: kernel layer {on * ms:6.2f} ms, without "
              f"{off * ms:6.2f} ms (median of {len(jobs[True])}), cost {(on - off) * ms:+6.2f} ms")


if __name__ == "__main__":
    main()
