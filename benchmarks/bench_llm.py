"""How usable are a model's answers to glia-evo's agents? A search against any OpenAI-compatible
endpoint, measured from its events.

Runs `glia-evo run --llm openai` (a subprocess, the real CLI) against `--base-url` / `--model`
and prints: Researcher answers usable on the first try and after the repair round, the reasons
answers were refused (signature, noop, truncated, echo, no_code, diff, compile, ...), duplicates,
children that beat their parent, Supervisor notes and Analyst summaries refused, and the
evaluation workers' idle time (workers x wall time from the first proposal to the last result -
time spent evaluating).

`--scripted small` needs no model: it starts the test suite's scripted loopback server
(tests/llm_server.py) in its "small model" mode (tests/llm_scripts.py: a wrong entry-point
signature, a docstring-only copy of the parent, an answer cut off with finish_reason "length", a
hypothesis echoing the template, one good diff, in turn; a Supervisor note that is a program; an
Analyst that states a wrong fitness).

Usage:
    python benchmarks/bench_llm.py --scripted small [--evaluations 20] [--delay 2.0]
    python benchmarks/bench_llm.py --base-url http://127.0.0.1:8080/v1 --model qwen2.5-coder-0.5b \
        [--evaluations 20] [--workers 2] [--timeout 600] [--max-tokens 1024] [--concurrency 0] \
        [--offline-fraction 0] [--problem routing] [--out DIR] [--keep]
(see docs/llm.md for llama.cpp's server with a small model)
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIG = """
name = "bench-llm"
problem = "{problem}"
seed = 0
[search]
islands = 2
island_capacity = 6
seeds = {seeds}
migration_interval = 50
[budget]
minutes = {minutes}
max_evaluations = {evals}
[evaluation]
workers = {workers}
split = "quick"
cascade = false
timeout_s = 300.0
[tuning]
enabled = false
[tracking]
enabled = false
[report]
at_end = false
[llm]
mode = "openai"
base_url = "{url}"
models = {{"{model}" = 1.0}}
timeout_s = {timeout}
max_retries = 2
backoff_base_s = 0.5
backoff_max_s = 10.0
max_output_tokens = {max_tokens}
concurrency = {concurrency}
offline_fraction = {offline}
supervisor_interval = {supervise}
"""
SEEDS = {"routing": '["llq"]', "scheduling": '["fcfs"]', "autoscaling": '["threshold"]'}


def measure(out: Path, workers: int) -> dict:
    from glia_evo.events import read_events
    from population import Store
    evs = list(read_events(out / "events.jsonl"))
    by = collections.defaultdict(list)
    for e in evs:
        by[e["event"]].append(e)
    llm = [e for e in by["proposal"] if e.get("operator") == "llm"]
    first = sum(not e.get("repaired") for e in llm)
    dup = [e for e in by["duplicate"] if e.get("operator") == "llm"]
    asked = len(llm) + len(dup) + len(by["discarded"]) + len(by["llm_error"])
    reasons = collections.Counter(r for e in llm + by["discarded"] for r in e.get("reasons", []))
    # from the first proposal (the seeds; the reference baseline's own run before is not
    # search time) to the stop
    t0 = by["proposal"][0]["t"] if by["proposal"] else evs[0]["t"]
    t1 = by["evaluation"][-1]["t"] if by["evaluation"] else evs[-1]["t"]   # the last result
    tail = (by["stop"][-1]["t"] if by["stop"] else evs[-1]["t"]) - t1
    wall = max(1e-9, t1 - t0)
    busy = sum(e.get("seconds") or 0 for e in by["evaluation"])
    store = Store(out / "state.sqlite", create=False)
    try:
        cands = store.all()
    finally:
        store.close()
    children = [c for c in cands if c.operator == "llm" and c.status != "pending"]
    beat = [c for c in children if c.status == "ok" and isinstance(
        c.extra.get("parent_fitness"), (int, float)) and c.fitness > c.extra["parent_fitness"]]
    errors = collections.Counter(c.status for c in children)
    return {"asked": asked, "first": first, "repaired": len(llm) - first, "duplicates": len(dup),
            "discarded": len(by["discarded"]), "llm_errors": len(by["llm_error"]),
            "reasons": reasons, "children": len(children), "child_status": errors,
            "beat_parent": len(beat), "evaluations": len(by["evaluation"]), "wall_s": wall,
            "idle_s": max(0.0, workers * wall - busy), "idle_share": max(0.0, 1 - busy /
                                                                          (workers * wall)),
            "supervisor": (sum(e.get("ok", False) for e in by["supervisor"]),
                           len(by["supervisor"])),
            "analyst": (sum(e.get("ok", False) for e in by["analysis"]), len(by["analysis"])),
            "refusals": [e.get("error") for e in by["supervisor"] + by["analysis"]
                         if not e.get("ok")][:4],
            "stop": by["stop"][-1].get("reason") if by["stop"] else "?", "tail_s": tail}


def report(m: dict, label: str) -> None:
    a = max(1, m["asked"])
    print(f"== {label}")
    print(f"Researcher proposals asked: {m['asked']}")
    print(f"  usable on the first try:  {m['first']} ({m['first'] / a:.0%})")
    print(f"  usable after repair:      {m['first'] + m['repaired']} "
          f"({(m['first'] + m['repaired']) / a:.0%}; {m['repaired']} repaired)")
    print(f"  discarded: {m['discarded']}, duplicates: {m['duplicates']}, endpoint errors: "
          f"{m['llm_errors']}")
    print("  answers refused, by reason: " + (", ".join(
        f"{k} {v}" for k, v in m["reasons"].most_common()) or "none"))
    print(f"Children evaluated: {m['children']} ({dict(m['child_status'])}); beat their parent: "
          f"{m['beat_parent']}")
    print(f"Supervisor notes accepted: {m['supervisor'][0]}/{m['supervisor'][1]}; Analyst "
          f"summaries accepted: {m['analyst'][0]}/{m['analyst'][1]}")
    for why in m["refusals"]:
        print(f"  refused: {why}")
    print(f"Evaluations: {m['evaluations']} in {m['wall_s']:.1f} s; worker idle time "
          f"{m['idle_s']:.1f} s ({m['idle_share']:.0%} of worker time); stop: {m['stop']}; "
          f"then {m['tail_s']:.1f} s for the last Analyst/Supervisor calls")


def _slow(fn, seconds: float):
    def slow(record):
        reply = fn(record)
        reply.delay = seconds
        return reply
    return slow


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default="")
    ap.add_argument("--model", default="")
    ap.add_argument("--scripted", choices=["small"], help="the scripted loopback server instead")
    ap.add_argument("--problem", default="routing", choices=sorted(SEEDS))
    ap.add_argument("--evaluations", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--timeout", type=float, default=600.0, help="per call, seconds")
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--concurrency", type=int, default=0, help="0: the engine's default")
    ap.add_argument("--offline-fraction", type=float, default=0.0)
    ap.add_argument("--supervisor-interval", type=int, default=5)
    ap.add_argument("--delay", type=float, default=0.0,
                    help="--scripted: seconds each answer takes (a slow local model)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the run folder")
    args = ap.parse_args()
    server = None
    env = dict(os.environ)
    if args.scripted:
        sys.path.insert(0, str(ROOT / "tests"))
        import llm_scripts
        from llm_server import ScriptedServer, loopback_env
        server = ScriptedServer().start()
        llm_scripts.install_small_model(server)
        if args.delay:        # a slow model: every answer takes this long
            for kind in ("researcher", "researcher_repair", "analyst", "supervisor"):
                server.default(kind, _slow(server._defaults[kind], args.delay))
        url, model = server.url, args.model or "scripted-small"
        env = loopback_env(env)
        if args.problem != "routing":
            ap.error("--scripted small scripts routing programs")
        timeout = min(args.timeout, 30.0)
    else:
        if not args.base_url or not args.model:
            ap.error("give --base-url and --model, or --scripted small")
        url, model, timeout = args.base_url, args.model, args.timeout
    tmp = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    out = args.out or tmp / "run"
    cfg = tmp / "bench.toml"
    cfg.write_text(CONFIG.format(problem=args.problem, seeds=SEEDS[args.problem],
                                 minutes=args.minutes, evals=args.evaluations,
                                 workers=args.workers, url=url, model=model, timeout=timeout,
                                 max_tokens=args.max_tokens, concurrency=args.concurrency,
                                 offline=args.offline_fraction,
                                 supervise=args.supervisor_interval))
    began = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "glia_evo.cli", "run", str(cfg), "--out",
                               str(out), "--quiet"], capture_output=True, text=True, env=env,
                              cwd=ROOT)
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
            sys.exit(f"glia-evo run failed (exit {proc.returncode})")
        m = measure(out, args.workers)
        label = (f"scripted small model (loopback {url})" if args.scripted
                 else f"{model} at {url}")
        report(m, f"{label}, {args.problem}, {args.evaluations} evaluations, "
                  f"{args.workers} workers, {time.monotonic() - began:.0f} s")
        if server is not None:
            print(f"Server: {len(server.requests)} requests, at most {server.max_active} at once")
    finally:
        if server is not None:
            server.stop()
        if args.keep or args.out:
            print(f"run folder: {out}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
