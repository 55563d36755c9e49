"""A whole `glia-evo run` with research turns (issue 18), through glia_evo.api against the
scripted OpenAI-compatible server on 127.0.0.1 (tests/llm_server.py): the Crew builds the
experiment tools from `[llm] experiments`, the Researcher calls each tool in the OpenAI wire
format (and sends one malformed call, answered with an error, the run going on), the answers
match direct simulations, the per-proposal budgets are hit, the experiments' simulated requests
are charged to the evaluation budget, events.jsonl, the child's extra, experiments.md (run
folder and MLflow) and the lineage page hold the experiments, and the Supervisor's insights
reach the report."""
import json
import re
from html import escape

import pytest

from llm_scripts import DEFAULT_PLAN, install_research_run
from llm_server import PROXY_VARS, ScriptedServer

from glia_evo import api
from glia_evo.config import SearchConfig
from glia_evo.events import read_events
from glia_evo.problems import get_problem
from glia_evo.research.jobs import windowed
from population import Store
from sim import simulate
from sim.policies import load_trusted

ROUTING = get_problem("routing")
INST = ROUTING.split("quick")[0]
MALFORMED = '{"program": "parent", "overrides": {'
PLAN = ([("simulate", MALFORMED)],) + DEFAULT_PLAN
TURN_REQUESTS = 3000        # simulate(parent) (2241 requests) fits, the windowed compare not
BUDGET = 11                 # evaluations' worth of work: enough for two reviews


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def direct(name, window=None):
    """A trusted, direct simulation of a shipped baseline (no sandbox: it ships with us)."""
    fns, knobs = load_trusted("routing", name, 0)
    inst = windowed(INST, window)
    return simulate(inst.workload(), inst.cluster(), fns["route"], knobs)


def config(url: str, out, evaluations: int, tracking: bool) -> dict:
    search = {"islands": 2, "island_capacity": 4, "seeds": ["llq"], "migration_interval": 100}
    if "validate_top" in SearchConfig.__dataclass_fields__:
        search["validate_top"] = 0          # the best on the training split (no extra work)
    return {
        "name": "research", "seed": 0, "out": str(out), "search": search,
        "budget": {"minutes": 10.0, "max_evaluations": evaluations},
        "evaluation": {"workers": 1, "split": "quick", "cascade": False, "timeout_s": 120.0},
        "tuning": {"enabled": False}, "report": {"at_end": False},
        "tracking": {"enabled": tracking},
        "llm": {"mode": "openai", "base_url": str(url), "models": {"m": 1.0},
                "timeout_s": 60.0, "max_retries": 0, "supervisor_interval": 2,
                "analyst": False, "experiments": 4, "experiment_requests": TURN_REQUESTS}}


@pytest.fixture(scope="module")
def research_run(tmp_path_factory):
    """One run: 2 islands of an llq seed, BUDGET evaluations' worth of work, research turns of 4
    experiments; the tracker drained afterwards so the MLflow artifacts can be read."""
    from glia_evo.tracking import drain
    out = tmp_path_factory.mktemp("research") / "run"
    with pytest.MonkeyPatch.context() as mp:
        for name in PROXY_VARS:
            mp.delenv(name, raising=False)
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        with ScriptedServer() as server:
            install_research_run(server, PLAN)
            run = api.search(config(server.url, out, BUDGET, tracking=True), report=False)
            requests = list(server.requests)
    drain(out)
    store = Store(out / "state.sqlite", create=False)
    try:
        cands = {c.id: c for c in store.all()}
        meta = store.meta()
    finally:
        store.close()
    return {"run": run, "out": out, "requests": requests, "cands": cands, "meta": meta,
            "events": read_events(out / "events.jsonl")}


def tool_replies(r) -> list[tuple[str, dict, dict]]:
    """(tool, arguments, answer) of every tool call the server saw answered (each research
    turn's last request holds its whole conversation)."""
    out, seen = [], set()
    for req in r["requests"]:
        if req["role"] != "researcher":
            continue
        msgs = req["messages"]
        calls = {c["id"]: c["function"] for m in msgs if m.get("tool_calls")
                 for c in m["tool_calls"]}
        for m in msgs:
            if m.get("role") == "tool" and m["tool_call_id"] not in seen:
                seen.add(m["tool_call_id"])
                fn = calls[m["tool_call_id"]]
                try:
                    args = json.loads(fn["arguments"])
                except json.JSONDecodeError:
                    args = {"malformed": fn["arguments"]}
                out.append((fn["name"], args, json.loads(m["content"])))
    return out


def children(r) -> list:
    return [c for c in r["cands"].values() if c.operator == "llm"]


def test_the_researcher_calls_every_tool_and_gets_direct_simulations_answers(research_run):
    r = research_run
    replies = tool_replies(r)
    assert {name for name, _, _ in replies} == {"simulate", "request_log", "compare",
                                                "workload_stats"}
    seeds = {c.id for c in r["cands"].values() if c.operator == "seed"}
    llq = direct("llq")
    sims = [a for n, args, a in replies if n == "simulate" and "error" not in a
            and a["program"] in seeds]
    assert sims, "no simulate(parent) of a seed"
    for ans in sims:
        for k in ("mean_e2e_s", "p99_e2e_s", "restarts", "completed"):
            assert ans["metrics"][k] == pytest.approx(llq.metrics[k], abs=1e-3)
        # the same simulation as the evaluation: the parent's stored metrics
        stored = r["cands"][ans["program"]].metrics[INST.name]
        assert ans["metrics"]["mean_e2e_s"] == pytest.approx(stored["mean_e2e_s"], abs=1e-3)
    slow = [a for n, _, a in replies if n == "request_log" and "error" not in a]
    assert slow
    want = sorted(llq.requests, key=lambda q: (q["finish_s"] - q["arrival_s"], q["id"]),
                  reverse=True)[:5]
    cols = slow[0]["table"]["columns"]
    assert [row[cols.index("id")] for row in slow[0]["table"]["rows"]] == [q["id"] for q in want]
    comp = [a for n, args, a in replies if n == "compare" and "table" in a]
    assert comp
    a, b = direct("llq", (0.0, 60.0)), direct("hra", (0.0, 60.0))
    rows = {row[0]: row for row in comp[0]["table"]["rows"]}
    assert rows["mean_e2e_s"][1] == pytest.approx(a.metrics["mean_e2e_s"], abs=1e-3)
    assert rows["mean_e2e_s"][2] == pytest.approx(b.metrics["mean_e2e_s"], abs=1e-3)
    work = [a for n, _, a in replies if n == "workload_stats"]
    assert work and work[0]["requests"] == len(INST.workload())
    # each research turn offered the four functions and ended with tool_choice "none"
    first = next(q for q in r["requests"] if q["role"] == "researcher")
    assert sorted(t["function"]["name"] for t in first["body"]["tools"]) == [
        "compare", "request_log", "simulate", "workload_stats"]
    assert any(q["body"].get("tool_choice") == "none" for q in r["requests"])


def test_a_malformed_call_gets_a_clear_error_and_the_run_goes_on(research_run):
    r = research_run
    bad = [a for n, args, a in tool_replies(r) if "malformed" in args]
    assert bad and all("not valid JSON" in a["error"] for a in bad)
    kids = children(r)
    assert len(kids) >= 2 and all(c.status != "pending" for c in kids)
    records = [e for c in kids for e in c.extra["experiments"]]
    assert sum("not valid JSON" in (e.get("error") or "") for e in records) == len(bad)
    assert r["meta"]["experiments"]["malformed"] >= len(bad)   # (and other unusable calls)
    # the record says so too, and the next call of the same turn was answered
    first = kids[0].extra["experiments"]
    assert first[0]["ok"] is False and first[0]["refused"] == "call"
    assert "not valid JSON" in first[0]["error"] and first[1]["ok"]


def test_the_per_proposal_budgets_are_hit(research_run):
    r = research_run
    stats = r["meta"]["experiments"]
    records = [e for c in children(r) for e in c.extra["experiments"]]
    over = [e for e in records if e.get("refused") == "budget"]
    assert over and stats["over_budget"] >= len(over)
    assert any("simulated requests" in e["error"] for e in over)
    # the calls budget: a turn that used its 4 calls was told to conclude
    closing = [q["messages"][-1]["content"] for q in r["requests"] if q["role"] == "researcher"
               and str(q["messages"][-1].get("content") or "").startswith("No more experiments")]
    assert any("4 experiment calls" in t for t in closing)
    for c in children(r):
        work = c.extra["experiment_work"]
        assert work["calls"] <= 4
        # a turn's requests stay within its budget, but for the one run it could not size
        assert work["requests"] <= TURN_REQUESTS + 2 * 1400


def test_experiment_work_is_charged_to_the_evaluation_budget(research_run):
    r = research_run
    stats = r["meta"]["experiments"]
    per_evaluation = r["meta"]["reference"]["completed"][INST.name]
    assert stats["requests"] > 0 and stats["simulations"] > 0
    assert stats["evaluations"] == pytest.approx(stats["requests"] / per_evaluation, abs=1e-4)
    evaluations = r["meta"]["evaluations"]
    assert evaluations < BUDGET                  # fewer evaluations: the experiments used work
    assert evaluations + stats["evaluations"] >= BUDGET
    assert evaluations + stats["evaluations"] < BUDGET + 1 + 2   # (a turn and a child in flight)
    status = r["run"].status()
    assert status["experiments"]["turns"] == stats["turns"]
    assert status["budget_left"]["evaluations"] == 0
    turns = [e for e in r["events"] if e["event"] == "experiments"]
    assert sum(len(e["calls"]) for e in turns) == stats["calls"]
    assert sum(e["work"]["requests"] for e in turns) == stats["requests"]


def test_events_extra_experiments_md_and_lineage_hold_the_experiments(research_run):
    r = research_run
    out = r["out"]
    turns = [e for e in r["events"] if e["event"] == "experiments"]
    kids = children(r)
    assert {e["candidate"] for e in turns if e["candidate"]} == {c.id for c in kids}
    for e in turns:
        assert e["protocol"] == "tools" and e["conclusion"].startswith("the parent's mean")
        for call in e["calls"]:
            assert call["tool"] and "answer" in call and len(call["answer"]) <= 400
    tools = {call["tool"] for e in turns for call in e["calls"]}
    assert tools == {"simulate", "request_log", "compare", "workload_stats"}
    for c in kids:
        assert c.extra["conclusion"] and c.extra["protocol"] == "tools"
        assert all(len(e["answer"]) <= 1000 for e in c.extra["experiments"])
        md = (out / "experiments" / f"{c.id}.md").read_text()
        assert md.startswith(f"# Experiments of {c.id}") and "## Conclusion" in md
        assert "not valid JSON" in md and "## 3. simulate" in md
    # the MLflow artifacts: each child's run has its experiments.md; the lineage page shows them
    logged = {p.read_text().splitlines()[0] for p in out.rglob("experiments.md")}
    assert logged == {f"# Experiments of {c.id}" for c in kids}
    html = next(out.rglob("lineage.html")).read_text()
    assert "experiments and conclusion" in html
    assert all(escape(c.extra["conclusion"][:40]) in html for c in kids)
    assert "workload_stats, simulate" in html
    lineage = json.loads(next(out.rglob("lineage.json")).read_text())
    research = [n for n in lineage["nodes"] if n.get("experiments")]
    assert {n["id"] for n in research} == {c.id for c in kids if c.status != "pending"}


def test_the_supervisor_reads_conclusions_across_islands_and_the_report_lists_insights(
        research_run):
    r = research_run
    reviews = [q for q in r["requests"] if q["role"] == "supervisor"]
    assert reviews
    last = reviews[-1]["messages"][-1]["content"]
    section = last.split("## Conclusions of research turns", 1)[1].split("\n## ", 1)[0]
    islands = set(re.findall(r"^- island (\d+): c\d+", section, re.M))
    assert islands == {"0", "1"}, section
    assert "experiments: " in section and "vs the parent's" in section
    insights = r["meta"]["insights"]
    assert insights and all(i["text"].startswith("INSIGHT-") for i in insights)
    assert [e for e in r["events"] if e["event"] == "insights"]
    report = r["run"].report(split="quick", baselines=False)
    assert [i["text"] for i in report["insights"]] == [i["text"] for i in insights]
    md = (r["out"] / "report" / "heldout.md").read_text()
    assert "## What the search learnt about the workload" in md
    assert all(i["text"] in md for i in insights)


def test_hostile_strings_in_tool_calls_stay_out_of_events_extra_and_artifacts(tmp_path):
    """A tool name and a scenario carrying terminal escapes: refused, and cleaned in the
    event log, the child's extra and its experiments.md."""
    plan = ([("\x1b[31msimulate", {}), ("simulate", {"scenario": "\x1b]0;pwn\x07",
                                                       "program": "parent"})],)
    out = tmp_path / "run"
    with ScriptedServer() as server:
        install_research_run(server, plan)
        cfg = config(server.url, out, 3, tracking=False)
        cfg["search"]["islands"] = 1
        cfg["llm"]["supervisor_interval"] = 0
        api.search(cfg, report=False)
    raw = (out / "events.jsonl").read_bytes()
    assert b"\x1b" not in raw and b"\x07" not in raw and b"\\u001b" not in raw
    for path in (out / "experiments").glob("*.md"):
        text = path.read_text()
        assert "\x1b" not in text and "\x07" not in text and "unknown tool" in text
    store = Store(out / "state.sqlite", create=False)
    try:
        kids = [c for c in store.all() if c.operator == "llm"]
    finally:
        store.close()
    assert kids
    blob = json.dumps([c.extra for c in kids])
    assert "\\u001b" not in blob and "\\u0007" not in blob


def test_experiments_zero_builds_no_tools(tmp_path):
    """`[llm] experiments = 0` is today's proposal: no tools offered, no experiments."""
    out = tmp_path / "run"
    with ScriptedServer() as server:
        install_research_run(server)
        cfg = config(server.url, out, 3, tracking=False)
        cfg["search"]["islands"] = 1
        cfg["llm"].update(experiments=0, supervisor_interval=0)
        run = api.search(cfg, report=False)
        bodies = [q["body"] for q in server.requests if q["role"] == "researcher"]
    assert bodies and all("tools" not in b for b in bodies)
    assert all("EXPERIMENT" not in b["messages"][1]["content"] for b in bodies)
    assert "experiments" not in run.status()
    assert not [e for e in read_events(out / "events.jsonl") if e["event"] == "experiments"]


def test_the_supervisor_prompt_without_research_turns_is_the_plain_one():
    """No research conclusion: no extra section (experiments = 0 sends today's prompt)."""
    from glia_evo.llm import Prompts
    from glia_evo.llm.agents import Supervisor, SupervisorSnapshot
    from population import Candidate
    c = Candidate(id="c000004", source=ROUTING.baseline_source("llq"), fitness=1.0, status="ok",
                  island=1, parents=["c000001"], extra={"hypothesis": "H"})
    snap = SupervisorSnapshot(review=1, evaluations=4, leaderboard=[c], island_best=[(1, c)],
                              recent=[c], previous="", model="m")
    plain = Supervisor(None, ROUTING, Prompts()).messages(snap)[1]["content"]
    assert "Conclusions of research turns" not in plain
    assert "\n\n## Your previous notes" in plain and "\n\n\n## Your" not in plain
    c.extra.update(conclusion="\x1b[2Jqueueing dominates", parent_fitness=0.9,
                   experiments=[{"tool": "simulate", "ok": True}, {"tool": "compare", "ok": False}])
    snap.conclusions = [c]
    text = Supervisor(None, ROUTING, Prompts()).messages(snap)[1]["content"]
    line = next(x for x in text.splitlines() if x.startswith("- island 1: c000004 (parent"))
    assert "fitness 1.0000 vs the parent's 0.9000; 1 experiment: simulate)" in line
    assert "\x1b" not in line and "queueing dominates" in line


def test_a_fraction_of_an_evaluation_is_charged_and_shown():
    """The experiments' work (a fraction of evaluations) counts in the budget left."""
    from glia_evo.run_state import Budget
    b = Budget(minutes=10, max_evaluations=10)
    assert b.left(7.4, 0)["evaluations"] == 2
    assert b.exhausted(9.5, 0) is None and b.exhausted(10.0, 0)
