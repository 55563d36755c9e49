"""Research turns vs plain proposals (issue 18): `experiments = 0` and `experiments = K` on the
same budget of evaluation work, against any OpenAI-compatible endpoint.

The budget is counted in *simulated requests*: every evaluation of a child costs the requests of
the split's instances, and every experiment the requests it simulated, so a mode that
experiments gets fewer evaluations. Each mode runs the same small search: a hill climb from the
problem's reference baseline (the parent is the best program so far, the second best is the
inspiration), the Researcher proposing, every child evaluated in the sandbox pool
(`glia_evo.evaluation.evaluate_many`). Printed per mode: proposals, answers usable on the first
try and after the repair round, tool calls and their validity (calls the tools could run / all
calls), the protocol used (function calling or the EXPERIMENT: text protocol), evaluations,
experiment requests, tokens, wall time and the best fitness (1.0 = the reference baseline). With
`--excerpt` the experiments.md of the last research turn is printed.

`--scripted` needs no model: the test suite's loopback server (tests/llm_server.py) answers as a
researcher that runs workload_stats, simulate, request_log and compare, then concludes and
proposes (tests/llm_scripts.py; `--scripted-no-tools`: a server without function calling, so
the text protocol is used).

Usage:
    python benchmarks/bench_research.py --scripted [--budget 40000] [--experiments 0,4]
    python benchmarks/bench_research.py --base-url http://127.0.0.1:8080/v1 --model qwen \\
        [--budget 40000] [--experiments 0,4] [--timeout 600] [--max-tokens 1024] [--excerpt]
(see docs/research.md for a llama.cpp or vLLM server with a small model)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def run_mode(k: int, args, url: str, problem, instances, pool) -> dict:
    from glia_evo.config import LLMConfig
    from glia_evo.hygiene import clean
    from glia_evo.llm import LLMClient, Prompts, Researcher, ResearchSnapshot, api_key_from_env
    from glia_evo.evaluation.parallel import evaluate_many
    from glia_evo.research import make_tools
    from population import Candidate
    from population.dedup import code_hash

    cfg = LLMConfig(mode="openai", base_url=url, models={args.model: 1.0},
                    timeout_s=args.timeout, max_retries=2, backoff_base_s=0.5,
                    backoff_max_s=10.0, max_output_tokens=args.max_tokens,
                    temperature=args.temperature, experiments=k,
                    experiment_requests=args.experiment_requests)
    client = LLMClient(cfg, api_key_from_env(args.api_key_env) if args.api_key_env else None,
                       seed=args.seed)
    programs: dict[str, Candidate] = {}
    tools = make_tools(pool, problem, cfg, store=programs, instances=instances,
                       seed=args.seed, timeout_s=args.sim_timeout)
    if tools is not None:
        tools.lookup = programs.get
    researcher = Researcher(client, problem, Prompts(), tools=tools, experiments=k)

    def evaluate(cand: Candidate) -> int:
        res = evaluate_many([cand.source], problem, instances, pool=pool, seed=args.seed)[0]
        cand.status, cand.fitness, cand.metrics = res.status, res.fitness, res.scenarios
        cand.error = res.error
        return int(sum(m.get("completed", 0) for m in res.scenarios.values())) or per_eval

    seed = Candidate(id="c000000", source=problem.baseline_source(problem.reference),
                     generation=0, rationale="the reference baseline")
    per_eval = 0
    per_eval = evaluate(seed)          # the seed's evaluation is not charged to either mode
    programs[seed.id] = seed
    stats = {"experiments": k, "proposals": 0, "first_try": 0, "repaired": 0, "discarded": 0,
             "failed": 0, "evaluations": 0, "improved": 0, "tool_calls": 0, "tool_ok": 0,
             "tool_malformed": 0, "tool_budget": 0, "experiment_requests": 0, "eval_requests": 0, "tokens": 0,
             "protocol": set(), "best": seed.fitness, "best_id": seed.id, "excerpt": "",
             "excerpt_ok": 0}
    work = 0
    started = time.monotonic()
    while work + per_eval <= args.budget and stats["proposals"] < args.max_proposals:
        if tools is not None:      # experiments may use what an evaluation would leave
            tools.max_requests = max(1, min(args.experiment_requests,
                                            args.budget - work - per_eval))
        ranked = sorted((c for c in programs.values() if c.status == "ok"),
                        key=lambda c: -c.fitness)
        parent, insp = ranked[0], ranked[1:2]
        snap = ResearchSnapshot(index=stats["proposals"] + 1, island=0, parent=parent,
                                inspirations=insp, notes="", model=args.model,
                                known={code_hash(c.source): c.id for c in programs.values()})
        out = researcher.propose(snap)
        stats["proposals"] += 1
        stats["tokens"] += sum(c.tokens for c in out.calls)
        for e in out.experiments:
            stats["tool_calls"] += 1
            stats["tool_ok"] += int(bool(e.get("ok")))
        stats["tool_malformed"] += sum(1 for e in out.experiments if e.get("refused") == "call")
        stats["tool_budget"] += sum(1 for e in out.experiments if e.get("refused") == "budget")
        req = int(out.work.get("requests", 0) or 0)
        stats["experiment_requests"] += req
        work += req
        if out.protocol:
            stats["protocol"].add(out.protocol)
        if out.status != "ok":
            stats["discarded" if out.status == "discarded" else "failed"] += 1
            if out.status == "fatal":
                print(f"  endpoint refused the request: {clean(out.message, 300)}")
                break
            continue
        stats["repaired" if out.repaired else "first_try"] += 1
        child = Candidate(id=f"c{len(programs):06d}", source=out.answer.source,
                          parents=[parent.id], generation=parent.generation + 1,
                          rationale=out.answer.rationale,
                          extra={"hypothesis": out.answer.hypothesis,
                                 "conclusion": out.conclusion})
        cost = evaluate(child)
        work += cost
        stats["eval_requests"] += cost
        stats["evaluations"] += 1
        programs[child.id] = child
        answered = sum(1 for e in out.experiments if e.get("ok"))
        if answered > stats["excerpt_ok"]:     # the richest research turn, for --excerpt
            stats["excerpt"], stats["excerpt_ok"] = out.experiments_md, answered
        if child.status == "ok" and child.fitness > parent.fitness:
            stats["improved"] += 1
        if child.status == "ok" and child.fitness > stats["best"]:
            stats["best"], stats["best_id"] = child.fitness, child.id
        print(f"  [{k}] proposal {stats['proposals']}: {child.id} {child.status} fitness "
              f"{child.fitness:.4f} ({len(out.experiments)} experiments, work {work})",
              flush=True)
    stats["seconds"] = round(time.monotonic() - started, 1)
    stats["work"] = work
    stats["protocol"] = ",".join(sorted(stats["protocol"])) or "-"
    client.close()
    return stats


def report(results: list[dict]) -> None:
    rows = [("experiments per proposal", "experiments"), ("proposals", "proposals"),
            ("usable first try", "first_try"), ("usable after repair", "repaired"),
            ("discarded", "discarded"), ("endpoint failures", "failed"),
            ("evaluations", "evaluations"), ("children beating their parent", "improved"),
            ("tool calls", "tool_calls"), ("tool calls answered", "tool_ok"),
            ("tool calls malformed", "tool_malformed"),
            ("tool calls over budget", "tool_budget"),
            ("protocol", "protocol"), ("experiment requests", "experiment_requests"),
            ("evaluation requests", "eval_requests"), ("work (simulated requests)", "work"),
            ("tokens", "tokens"), ("wall time s", "seconds"), ("best fitness", "best"),
            ("best program", "best_id")]
    print()
    print(f"{'':32}" + "".join(f"{'K=' + str(r['experiments']):>14}" for r in results))
    for label, key in rows:
        vals = []
        for r in results:
            v = r[key]
            if key == "best":
                v = f"{v:.4f}"
            vals.append(f"{v!s:>14}")
        print(f"{label:32}" + "".join(vals))
    for r in results:
        p = max(1, r["proposals"])
        usable = (r["first_try"] + r["repaired"]) / p
        valid = 1 - r["tool_malformed"] / r["tool_calls"] if r["tool_calls"] else float("nan")
        print(f"K={r['experiments']}: usable answers {usable:.0%}, tool-call validity "
              f"{valid:.0%} (well-formed calls / all calls)" if r["tool_calls"] else
              f"K={r['experiments']}: usable answers {usable:.0%}, no tool calls")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", default="")
    ap.add_argument("--model", default="scripted")
    ap.add_argument("--api-key-env", default="", help="name of the variable holding a key")
    ap.add_argument("--scripted", action="store_true", help="the loopback scripted researcher")
    ap.add_argument("--scripted-no-tools", action="store_true",
                    help="scripted, without function calling (text protocol)")
    ap.add_argument("--experiments", default="0,4", help="comma-separated K values")
    ap.add_argument("--budget", type=int, default=40_000,
                    help="simulated requests per mode (evaluations + experiments)")
    ap.add_argument("--experiment-requests", type=int, default=20_000,
                    help="simulated requests per research turn")
    ap.add_argument("--max-proposals", type=int, default=50)
    ap.add_argument("--problem", default="routing")
    ap.add_argument("--split", default="quick")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per LLM call")
    ap.add_argument("--sim-timeout", type=float, default=120.0, help="seconds per simulation")
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--excerpt", action="store_true", help="print a research turn's record")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args(argv)

    from glia_evo.evaluation.parallel import make_pool
    from glia_evo.problems import get_problem

    server = None
    url = args.base_url
    if args.scripted or args.scripted_no_tools:
        from llm_scripts import install_research
        from llm_server import ScriptedServer
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                     "all_proxy"):
            os.environ.pop(name, None)
        os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
        server = ScriptedServer(tools=not args.scripted_no_tools).start()
        install_research(server)
        url = server.url
    elif not url:
        ap.error("give --base-url URL (an OpenAI-compatible endpoint) or --scripted")
    problem = get_problem(args.problem)
    instances = problem.split(args.split)
    ks = [int(x) for x in args.experiments.split(",") if x.strip()]
    results = []
    try:
        with make_pool(args.workers, read_paths=problem.read_paths()) as pool:
            for k in ks:
                print(f"experiments = {k}: budget {args.budget} simulated requests", flush=True)
                results.append(run_mode(k, args, url, problem, instances, pool))
    finally:
        if server is not None:
            server.stop()
    report(results)
    if args.excerpt:
        for r in results:
            if r["excerpt"]:
                print(f"\n--- a research turn (K={r['experiments']}) ---\n{r['excerpt']}")
                break
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if not k.startswith("excerpt")}
                          for r in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
