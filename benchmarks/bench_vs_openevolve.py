"""glia-evo against OpenEvolve: candidates per minute and CPU per candidate, same evaluator,
same instant mock LLM, same settings, measured side by side in alternating rounds (issue 13).

Both engines evaluate routing programs with glia-evo's own evaluation function on the `quick`
split (`glia_evo.evaluation.evaluate`: OpenEvolve calls it from its evaluator file, in its worker
processes; glia-evo runs it in its sandboxed job processes), starting from `llq`, with 2 islands,
2 parallel evaluations and `--candidates` evaluations in all (glia-evo: max_evaluations, seeds
included; OpenEvolve: the initial program plus iterations). The LLM is the test suite's scripted
OpenAI-compatible server on loopback (tests/llm_server.py), answering at once with a
SEARCH/REPLACE diff that makes a new program each time (glia-evo: tests/llm_scripts.py's
Researcher, Analyst and Supervisor; OpenEvolve: the same kind of diff on its current program).
OpenEvolve gets the reference baseline's metric precomputed (glia-evo simulates it in its run).

Each engine runs as its own process (the real `glia-evo run` CLI; OpenEvolve's `run_evolution`
in a small driver); the measurements are the whole process tree's: wall time from launch to exit,
CPU time of the process and all its descendants (getrusage of the reaped children), the peak RSS
of its largest process. From the engines' own records (glia-evo's events.jsonl, the evaluator's
log for OpenEvolve): candidates evaluated, the evaluation window (first to last result),
start-up (launch to first result) and exit (last result to exit) times, and the evaluation time
per candidate, the same way for both: the CPU time of glia-evo's evaluation function run
in-process on the programs (OpenEvolve: measured by its evaluator in its workers; glia-evo: a
sample of the run's programs evaluated again in the benchmark's process afterwards), so "rest"
is everything else: the engine, the LLM calls, the sandbox's per-job cost (fork, containment,
a fresh process's cold caches), re-checks of a new best, tracking.

Engines: `openevolve`, `glia` (tracking on: MLflow), `glia-notrack` (tracking off),
`glia-cold` (tracking on, SANDBOX_FORK_SERVER=0: jobs forked from the engine, as before issue 13).
Rounds alternate the order (ABCD, DCBA, ...); the table gives the median over rounds (min in
brackets), then the ratios of medians. Machines here are noisy: compare ratios from one run.

OpenEvolve is not a dependency: `pip install openevolve` (0.4.1 was measured) or
`pip install -e '.[bench]'`; without it the OpenEvolve rows are skipped with a message.

Usage: python benchmarks/bench_vs_openevolve.py [--candidates 60] [--rounds 3] [--workers 2]
                                                [--engines openevolve,glia,glia-notrack,glia-cold]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GLIA_CONFIG = """
name = "bench-vs-oe"
problem = "routing"
seed = 0
[search]
islands = {islands}
island_capacity = 10
seeds = ["llq"]
migration_interval = 20
validate_top = {validate_top}
[budget]
minutes = 60.0
max_evaluations = {candidates}
[evaluation]
workers = {workers}
split = "quick"
cascade = false
timeout_s = 300.0
[tuning]
enabled = false
[tracking]
enabled = {tracking}
[report]
at_end = false
[llm]
mode = "openai"
base_url = "{url}"
models = {{"scripted" = 1.0}}
timeout_s = 30.0
max_retries = 1
"""

EVALUATOR = '''
import json, sys, time
sys.path.insert(0, {root!r})
from glia_evo.evaluation import evaluate as _evaluate
from glia_evo.problems import get_problem
_P = get_problem("routing")
_I = _P.split("quick")
_REF = {reference!r}
_LOG = {log!r}


def evaluate(program_path):
    t0 = time.process_time()
    with open(program_path) as fh:
        source = fh.read()
    r = _evaluate(source, _P, _I, reference=_REF)
    cpu = time.process_time() - t0
    with open(_LOG, "a") as fh:
        fh.write(json.dumps({{"t": time.time(), "cpu": cpu, "status": r.status,
                             "fitness": r.fitness}}) + "\\n")
    return {{"combined_score": r.fitness if r.status == "ok" else 0.0}}
'''

ENGINES = ("openevolve", "glia", "glia-notrack", "glia-cold")


def have_openevolve() -> str | None:
    try:
        from importlib.metadata import version
        return version("openevolve")
    except Exception:
        return None


# --- the mock LLM's answers for OpenEvolve ------------------------------------------------------
_COUNTER = {"n": 0}


def _current_program(messages: list[dict]) -> str:
    text = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
    m = re.search(r"^# Current Program\s*\n```python\n(.*?)\n```", text, re.S | re.M) or \
        re.search(r"```python\n(.*?)\n```", text, re.S)
    return m.group(1) if m else ""


def openevolve_answer(record: dict):
    """The same scripted mutation glia-evo's Researcher gets (tests/llm_scripts.child_change),
    as a SEARCH/REPLACE diff on OpenEvolve's current program, so both engines evaluate the same
    kinds of programs (shortest prompt first on LLQ, then head-room admission and its variants)."""
    import llm_scripts
    from llm_server import Reply
    _COUNTER["n"] += 1
    program = _current_program(record["messages"])
    if not program:
        return Reply("No change.\n")
    search, replace, hypothesis = llm_scripts.child_change(program, _COUNTER["n"])
    return Reply(f"{hypothesis}.\n\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n"
                 f">>>>>>> REPLACE\n")


# --- drivers (run as their own processes) -----------------------------------------------------
def drive_openevolve(out: Path, url: str, candidates: int, islands: int, workers: int) -> None:
    from openevolve import run_evolution
    from openevolve.config import Config, LLMModelConfig
    from glia_evo.evaluation import reference_metrics
    from glia_evo.problems import get_problem
    from sim.policies import baseline_source
    problem = get_problem("routing")
    reference = {i.name: reference_metrics(problem, i)[problem.metric]
                 for i in problem.split("quick")}
    log = out / "evaluations.jsonl"
    evaluator = out / "evaluator.py"
    evaluator.write_text(EVALUATOR.format(root=str(ROOT), reference=reference, log=str(log)))
    cfg = Config()
    cfg.max_iterations = candidates - 1
    cfg.checkpoint_interval = 10_000
    cfg.log_level = "WARNING"
    cfg.random_seed = 0
    cfg.llm.api_base = url
    cfg.llm.models = [LLMModelConfig(name="scripted", api_base=url, api_key="none", weight=1.0,
                                     timeout=30, retries=1)]
    cfg.database.num_islands = islands
    cfg.evaluator.parallel_evaluations = workers
    cfg.evaluator.cascade_evaluation = False
    (out / "launched").write_text(sys.argv[-1])
    run_evolution(initial_program=baseline_source("routing", "llq"), evaluator=str(evaluator),
                  config=cfg, iterations=candidates - 1, output_dir=str(out / "oe"),
                  cleanup=False)


# --- the parent: launch, measure --------------------------------------------------------------
def run_engine(engine: str, url: str, args, tmp: Path, round_no: int, env: dict) -> dict:
    out = tmp / f"{engine}-{round_no}"
    out.mkdir(parents=True)
    env = dict(env)
    if engine == "openevolve":
        cmd = [sys.executable, __file__, "--drive-openevolve", str(out), url,
               str(args.candidates), str(args.islands), str(args.workers)]
    else:
        cfg = out / "bench.toml"
        cfg.write_text(GLIA_CONFIG.format(islands=args.islands, candidates=args.candidates,
                                          validate_top=args.validate_top,
                                          workers=args.workers, url=url,
                                          tracking="false" if engine == "glia-notrack"
                                          else "true"))
        if engine == "glia-cold":
            env["SANDBOX_FORK_SERVER"] = "0"
        cmd = [sys.executable, "-m", "glia_evo.cli", "run", str(cfg), "--out", str(out / "run"),
               "--quiet"]
    if args.profile:            # py-spy over the whole tree; times then include py-spy's own
        args.profile.mkdir(parents=True, exist_ok=True)
        cmd = ["py-spy", "record", "--subprocesses", "--rate", "200", "--format", "raw",
               "--output", str(args.profile / f"{engine}-{round_no}.txt"), "--"] + cmd
    began_wall = time.time()
    began = time.monotonic()
    with open(out / "stdout.txt", "w") as so, open(out / "stderr.txt", "w") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)     # this tree's CPU and peak RSS
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - began
    cpu = usage.ru_utime + usage.ru_stime
    maxrss = usage.ru_maxrss
    if proc.returncode != 0:
        print((out / "stdout.txt").read_text()[-3000:], (out / "stderr.txt").read_text()[-3000:],
              file=sys.stderr)
        raise SystemExit(f"{engine} failed (exit {proc.returncode})")
    ended_wall = began_wall + wall
    if engine == "openevolve":
        recs = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
        times = [r["t"] for r in recs]
        eval_s = sum(r["cpu"] for r in recs)
    else:
        from glia_evo.events import read_events
        evs = [e for e in read_events(out / "run" / "events.jsonl") if e["event"] == "evaluation"]
        times = [e["t"] for e in evs]
        eval_s = _evaluation_cpu(out / "run") * len(evs)
    n = len(times)
    window = max(times) - min(times) if n > 1 else float("nan")
    m = {"engine": engine, "candidates": n, "wall_s": wall, "cpu_s": cpu,
         "per_min": n / wall * 60, "window_per_min": (n - 1) / window * 60 if n > 1 else 0.0,
         "cpu_ms": cpu / n * 1000, "eval_ms": eval_s / n * 1000,
         "engine_ms": (cpu - eval_s) / n * 1000, "startup_s": min(times) - began_wall,
         "exit_s": ended_wall - max(times), "maxrss_mb": maxrss / 1024}
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return m


def _evaluation_cpu(run_dir: Path, sample: int = 6) -> float:
    """CPU seconds one evaluation of this run's programs takes in-process, as OpenEvolve's
    evaluator measures its own: the mean over a sample of the evaluated programs, run here."""
    from glia_evo.evaluation import evaluate, reference_metrics
    from glia_evo.problems import get_problem
    from population import Store
    problem = get_problem("routing")
    instances = problem.split("quick")
    reference = {i.name: reference_metrics(problem, i)[problem.metric] for i in instances}
    store = Store(run_dir / "state.sqlite", create=False)
    try:
        sources = [c.source for c in store.all() if c.status == "ok"]
    finally:
        store.close()
    picked = sources[:: max(1, len(sources) // sample)][:sample] or sources[:1]
    t0 = time.process_time()
    for source in picked:
        evaluate(source, problem, instances, reference=reference)
    return (time.process_time() - t0) / max(1, len(picked))


FIELDS = [("candidates", "candidates", "{:.0f}"), ("per_min", "cand/min (whole run)", "{:.1f}"),
          ("window_per_min", "cand/min (eval window)", "{:.1f}"),
          ("cpu_ms", "CPU ms/cand (tree)", "{:.0f}"), ("eval_ms", "  evaluation ms/cand", "{:.0f}"),
          ("engine_ms", "  rest ms/cand", "{:.0f}"), ("startup_s", "start-up s", "{:.1f}"),
          ("exit_s", "exit s", "{:.1f}"), ("wall_s", "wall s", "{:.1f}"),
          ("maxrss_mb", "peak RSS MB (largest process)", "{:.0f}")]


def summarize(results: dict[str, list[dict]]) -> dict[str, dict]:
    table = {}
    for engine, runs in results.items():
        table[engine] = {k: (statistics.median(r[k] for r in runs), min(r[k] for r in runs))
                         for k, _, _ in FIELDS}
    return table


def print_table(table: dict[str, dict], rounds: int) -> None:
    engines = list(table)
    width = max(len(label) for _, label, _ in FIELDS) + 2
    print(f"\nmedian over {rounds} round(s) [min]:")
    print(" " * width + "".join(f"{e:>22}" for e in engines))
    for key, label, fmt in FIELDS:
        cells = "".join(f"{fmt.format(table[e][key][0]) + ' [' + fmt.format(table[e][key][1]) + ']':>22}"
                        for e in engines)
        print(f"{label:<{width}}{cells}")


def ratio_lines(table: dict[str, dict]) -> list[str]:
    lines = []

    def ratio(a, b, key, invert=False):
        if a in table and b in table and table[b][key][0]:
            x = table[a][key][0] / table[b][key][0]
            return 1 / x if invert else x
        return None

    pairs = [("glia", "openevolve", "glia-evo (tracking on) / OpenEvolve"),
             ("glia-notrack", "openevolve", "glia-evo (tracking off) / OpenEvolve"),
             ("glia", "glia-notrack", "glia-evo tracking on / off"),
             ("glia", "glia-cold", "glia-evo warm fork server / cold fork from the engine")]
    for a, b, label in pairs:
        r1 = ratio(a, b, "per_min")
        r2 = ratio(a, b, "window_per_min")
        r3 = ratio(a, b, "cpu_ms")
        if r1 is not None:
            lines.append(f"{label}: candidates/min x{r1:.2f} (whole run), x{r2:.2f} (evaluation "
                         f"window); CPU per candidate x{r3:.2f}")
    return lines


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--drive-openevolve":
        out, url, candidates, islands, workers = sys.argv[2:7]
        drive_openevolve(Path(out), url, int(candidates), int(islands), int(workers))
        return
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--islands", type=int, default=2)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--keep", action="store_true", help="keep the run folders")
    ap.add_argument("--profile", type=Path, default=None,
                    help="record each engine's process tree with py-spy (collapsed stacks in this "
                         "folder; for finding where time goes, not for the timings)")
    ap.add_argument("--validate-top", type=int, default=0,
                    help="glia-evo's search.validate_top (default 0: like OpenEvolve, the best is "
                         "the fittest on the training split; 6 is glia-evo's default, which adds "
                         "that many evaluations on the validation split after the search)")
    ap.add_argument("--json", type=Path, help="also write the raw measurements here")
    args = ap.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for e in engines:
        if e not in ENGINES:
            ap.error(f"unknown engine {e!r} (known: {', '.join(ENGINES)})")
    oe = have_openevolve()
    if "openevolve" in engines and oe is None:
        print("OpenEvolve is not installed (pip install openevolve, or pip install -e "
              "'.[bench]'): skipping its rows; glia-evo's variants are still compared.",
              file=sys.stderr)
        engines.remove("openevolve")
    if not engines:
        sys.exit("nothing to run")

    sys.path.insert(0, str(ROOT / "tests"))
    import llm_scripts
    from llm_server import ScriptedServer, loopback_env
    server = ScriptedServer().start()
    llm_scripts.install_defaults(server)
    server.default("unknown", openevolve_answer)
    env = loopback_env(dict(os.environ))
    env.setdefault("GLIA_EVO_CACHE_DIR", str(Path(tempfile.gettempdir()) / "bench-vs-oe-cache"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-vs-oe-"))
    load = os.getloadavg()
    print(f"{args.candidates} candidates, {args.islands} islands, {args.workers} workers, "
          f"routing on 'quick'; OpenEvolve {oe or 'not installed'}; {os.cpu_count()} CPUs, "
          f"load average at start {load[0]:.1f}")
    results: dict[str, list[dict]] = {e: [] for e in engines}
    try:
        for r in range(args.rounds):
            order = engines if r % 2 == 0 else engines[::-1]
            for engine in order:
                m = run_engine(engine, server.url, args, tmp, r, env)
                results[engine].append(m)
                print(f"round {r + 1} {engine:>13}: {m['candidates']} candidates in "
                      f"{m['wall_s']:.1f} s = {m['per_min']:.1f}/min, CPU {m['cpu_ms']:.0f} "
                      f"ms/candidate, load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"run folders: {tmp}")
    table = summarize(results)
    print_table(table, args.rounds)
    print()
    for line in ratio_lines(table):
        print(line)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "table": table}, indent=2))


if __name__ == "__main__":
    main()
