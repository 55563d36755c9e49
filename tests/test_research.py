"""Research turns (issue 18): the experiment tools against a real sandbox pool, checked against
direct simulations; their budgets; malformed calls; and the Researcher driving them through the
scripted loopback server in the real OpenAI wire format (tool_calls, role "tool" replies) and
through the EXPERIMENT: text protocol for an endpoint without tool support."""
import json

import pytest

from llm_scripts import HRA, install_defaults, install_research
from llm_server import PROXY_VARS, ScriptedServer

from glia_evo.config import LLMConfig
from glia_evo.llm import LLMClient, Prompts, Researcher, ResearchSnapshot, split_insights
from glia_evo.llm.agents import Supervisor, SupervisorSnapshot
from glia_evo.evaluation.parallel import make_pool
from glia_evo.problems import get_problem
from glia_evo.research import ResearchTools, ToolError, check_run, make_tools
from glia_evo.research.jobs import windowed
from population import Candidate
from sim import simulate
from sim.policies import load_trusted

ROUTING = get_problem("routing")
QUICK = ROUTING.split("quick")
LLQ = ROUTING.baseline_source("llq")
INST = QUICK[0]


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def pool():
    p = make_pool(2, timeout_s=120, read_paths=ROUTING.read_paths())
    yield p
    p.shutdown(wait=True, kill=True)


@pytest.fixture(scope="module")
def direct():
    """Trusted, direct simulations of shipped baselines (no sandbox: they ship with glia-evo)."""
    cache = {}

    def run(name, inst=INST, window=None):
        key = (name, inst, window)
        if key not in cache:
            fns, knobs = load_trusted("routing", name, 0)
            i = windowed(inst, window)
            cache[key] = simulate(i.workload(), i.cluster(), fns["route"], knobs)
        return cache[key]
    return run


def parent():
    return Candidate(id="c000001", source=LLQ, fitness=1.0, status="ok")


def tools(pool, **kw):
    opts = dict(instances=QUICK, calls=8)
    opts.update(kw)
    return ResearchTools(pool, ROUTING, **opts)


# ------------------------------------------------------------------------------ the tools

def test_simulate_answers_what_a_direct_simulation_gives(pool, direct):
    s = tools(pool).session(parent())
    ans = json.loads(s.call("simulate", {"program": "parent", "scenario": INST.name}))
    ref = direct("llq")
    assert ans["status"] == "ok" and ans["run_id"] == "r1" and ans["program"] == "c000001"
    for k in ("mean_e2e_s", "p99_e2e_s", "restarts", "completed"):
        assert ans["metrics"][k] == pytest.approx(ref.metrics[k], abs=1e-3)
    assert ans["requests"] == len(ref.requests)
    assert s.requests == len(ref.requests) and s.calls == 1 and s.simulations == 1
    assert s.records[0]["tool"] == "simulate" and s.records[0]["ok"]


def test_request_log_queries_match_the_direct_records(pool, direct):
    s = tools(pool).session(parent())
    s.call("simulate", {"program": "parent"})
    ref = direct("llq").requests
    slow = json.loads(s.call("request_log", {"run_id": "r1", "query": {"kind": "slowest",
                                                                        "n": 5}}))
    want = sorted(ref, key=lambda r: (r["finish_s"] - r["arrival_s"], r["id"]), reverse=True)[:5]
    cols = slow["table"]["columns"]
    assert [row[cols.index("id")] for row in slow["table"]["rows"]] == [r["id"] for r in want]
    row = slow["table"]["rows"][0]
    assert row[cols.index("e2e_s")] == pytest.approx(want[0]["finish_s"] - want[0]["arrival_s"],
                                                     abs=2e-3)
    assert row[cols.index("queued_s")] == pytest.approx(
        want[0]["dispatched_s"] - want[0]["arrival_s"], abs=2e-3)
    hist = json.loads(s.call("request_log", {"run_id": "r1", "query": {
        "kind": "histogram", "column": "prompt_tokens", "bins": 5}}))
    assert sum(r[2] for r in hist["table"]["rows"]) == len(ref)
    assert hist["stats"]["max"] == max(r["prompt_tokens"] for r in ref)
    rep = json.loads(s.call("request_log", '{"run_id": "r1", "query": "replica 2"}'))
    assert rep["served"] == sum(1 for r in ref if r["replica"] == 2)
    assert rep["num_blocks"] == INST.cluster().replicas[2].gpu_profile().num_blocks
    assert 0 < len(rep["timeline"]["rows"]) <= 20
    summary = json.loads(s.call("request_log", {"query": {"kind": "summary"}}))   # last run
    assert summary["run_id"] == "r1" and len(summary["table"]["rows"]) >= 10
    assert all(len(r["answer"]) <= 3100 for r in s.records)


def test_compare_and_workload_stats_against_direct_simulations(pool, direct):
    s = tools(pool).session(parent())
    window = [0.0, 60.0]
    ans = json.loads(s.call("compare", {"a": "parent", "b": HRA, "overrides": {
        "window": window}}))
    a, b = direct("llq", window=(0.0, 60.0)), direct("hra", window=(0.0, 60.0))
    rows = {r[0]: r for r in ans["table"]["rows"]}
    assert rows["mean_e2e_s"][1] == pytest.approx(a.metrics["mean_e2e_s"], abs=1e-3)
    assert rows["mean_e2e_s"][2] == pytest.approx(b.metrics["mean_e2e_s"], abs=1e-3)
    assert rows["mean_e2e_s"][3] == pytest.approx(
        b.metrics["mean_e2e_s"] - a.metrics["mean_e2e_s"], abs=2e-3)
    assert ans["b"]["program"].startswith("draft-") and s.simulations == 2
    assert s.requests == len(a.requests) + len(b.requests)
    w = json.loads(s.call("workload_stats", {"scenario": "glia_short"}))
    reqs = INST.workload()
    assert w["requests"] == len(reqs) and w["replicas"] == 4
    assert w["prompt_tokens"]["max"] == max(r.prompt_tokens for r in reqs)


def test_overrides_are_applied_and_bounded(pool, direct):
    s = tools(pool).session(parent())
    ans = json.loads(s.call("simulate", {"program": "parent", "overrides": {
        "replicas": 2, "rate_scale": 0.5, "window": [0, 40]}}))
    inst = windowed(INST.__class__(INST.scenario, INST.seed, rate_scale=0.5, replicas=2),
                    (0.0, 40.0))
    fns, knobs = load_trusted("routing", "llq", 0)
    ref = simulate(inst.workload(), inst.cluster(), fns["route"], knobs)
    assert ans["metrics"]["mean_e2e_s"] == pytest.approx(ref.metrics["mean_e2e_s"], abs=1e-3)
    assert len(ans["diagnostics"]["per_replica"]) == 2
    for bad, words in [({"replicas": 0}, "replicas must be"), ({"rate_scale": 99}, "rate_scale"),
                       ({"window": [5, 2]}, "window must be"), ({"gpus": 3}, "unknown override")]:
        err = json.loads(s.call("simulate", {"overrides": bad}))["error"]
        assert words in err
    err = json.loads(s.call("simulate", {"scenario": "glia#4"}))["error"]
    assert "unknown scenario" in err and "glia_short#101" in err      # never a held-out split


def test_kv_blocks_override_when_instances_have_it(pool):
    s = tools(pool).session(parent())
    assert s.tools.has_kv
    ans = json.loads(s.call("simulate", {"overrides": {"kv_blocks": 1200, "window": [0, 40]}}))
    assert ans["status"] == "ok"
    rep = json.loads(s.call("request_log", {"query": {"kind": "replica", "replica": 0}}))
    assert rep["num_blocks"] == 1200


def test_each_budget_is_hit_with_a_clear_answer(pool):
    s = tools(pool, calls=1).session(parent())
    s.call("workload_stats", {})
    err = json.loads(s.call("simulate", {}))["error"]
    assert "budget exhausted" in err and "1 experiment calls" in err and s.calls == 1
    # simulated requests: known from the parent's metrics before the run (refused up front),
    # or counted after it
    p = parent()
    p.metrics = {INST.name: {"completed": 2241}}
    s = tools(pool, max_requests=1000).session(p)
    err = json.loads(s.call("simulate", {}))["error"]
    assert "budget exhausted" in err and "2241" in err and s.simulations == 0
    assert "ok" in s.call("simulate", {"overrides": {"window": [0, 60]}})
    s2 = tools(pool, max_requests=500).session(parent())
    s2.call("simulate", {"overrides": {"window": [0, 60]}})
    assert s2.requests > 500
    assert "simulated requests" in json.loads(s2.call("workload_stats", {}))["error"]
    s3 = tools(pool, max_tokens=100).session(parent())
    s3.add_tokens(150)
    assert "tokens" in s3.exhausted()
    assert "budget exhausted" in json.loads(s3.call("workload_stats", {}))["error"]


def test_malformed_calls_get_clear_errors(pool):
    s = tools(pool).session(parent())
    assert "not valid JSON" in json.loads(s.call("simulate", '{"program": "parent",'))["error"]
    assert "unknown tool" in json.loads(s.call("rm_rf", {}))["error"]
    assert "call simulate first" in json.loads(s.call("request_log", {"run_id": "r9"}))["error"]
    s.call("simulate", {"overrides": {"window": [0, 30]}})
    assert "unknown run_id" in json.loads(s.call("request_log", {"run_id": "r9"}))["error"]
    assert "unknown query kind" in json.loads(
        s.call("request_log", {"query": {"kind": "drop table"}}))["error"]
    assert "no program" in json.loads(s.call("simulate", {"program": "c999999"}))["error"]
    assert "does not compile" in json.loads(
        s.call("simulate", {"program": "import os\ndef route(q, r, n, k):\n    return []\n"})
    )["error"]
    assert s.errors == 7 and s.calls == 1


def test_hostile_programs_and_results_are_contained(pool):
    s = tools(pool).session(parent())
    evil = ("def route(queue, replicas, now, knobs):\n"
            "    raise ValueError('\\x1b[2J\\x1b]0;pwned\\x07 gone')\n")
    ans = s.call("simulate", {"program": evil, "overrides": {"window": [0, 20]}})
    assert "\x1b" not in ans and "\x07" not in ans and "\\x1b" in ans
    assert json.loads(ans)["status"] == "error"
    loop = "def route(queue, replicas, now, knobs):\n    while True:\n        pass\n"
    with make_pool(1, timeout_s=3, read_paths=ROUTING.read_paths()) as short:
        ans = json.loads(tools(short).session(parent()).call("simulate", {"program": loop}))
    assert ans["status"] == "timeout" and "timed out" in ans["error"]
    with pytest.raises(ToolError):       # a forged result: percentiles out of order
        check_run({"status": "ok", "metrics": {"p50_e2e_s": 9.0, "p99_e2e_s": 1.0}})
    with pytest.raises(ToolError):
        check_run({"status": "ok", "metrics": {"mean_e2e_s": 1.0},
                   "columns": {"id": [1, 2], "arrival_s": [0.0]}})
    assert "\x1b" not in check_run({"status": "error", "error": "\x1b[31mred"})["error"]


def test_make_tools_follows_the_config(pool):
    assert make_tools(pool, ROUTING, LLMConfig()) is None            # experiments = 0
    t = make_tools(pool, ROUTING, LLMConfig(experiments=3, experiment_requests=777),
                   instances=QUICK)
    assert t.calls == 3 and t.max_requests == 777 and t.scenario_names() == [INST.name]
    assert make_tools(pool, ROUTING, LLMConfig(experiments=1)).scenario_names() == [
        i.name for i in ROUTING.split("train")]


# ------------------------------------------------------------------------------ the Researcher

def snapshot(index=1, p=None):
    return ResearchSnapshot(index=index, island=0, parent=p or parent(), inspirations=[],
                            notes="", model="scripted")


def client_for(server):
    return LLMClient(LLMConfig(mode="openai", base_url=server.url, models={"scripted": 1.0},
                               timeout_s=30, max_retries=0), None)


def test_a_research_turn_calls_every_tool_in_the_openai_wire_format(pool, direct):
    with ScriptedServer() as server:
        install_research(server)
        r = Researcher(client_for(server), ROUTING, Prompts(), tools=tools(pool),
                       experiments=4)
        out = r.propose(snapshot())
    assert out.status == "ok", (out.errors, out.message)
    assert [e["tool"] for e in out.experiments] == ["workload_stats", "simulate", "request_log",
                                                    "compare"]
    assert all(e["ok"] and e["via"] == "tools" for e in out.experiments)
    assert out.protocol == "tools" and r.native is True
    ref = direct("llq")
    assert f"{ref.metrics['mean_e2e_s']:.4f}"[:6] in out.conclusion
    assert out.answer.conclusion == out.conclusion and out.answer.experiments == out.experiments
    assert out.work["calls"] == 4 and out.work["simulations"] == 3
    assert len(out.calls) == 5                       # 4 rounds + the answer
    assert "## 2. simulate" in out.experiments_md and "Conclusion" in out.experiments_md
    reqs = server.by_role("researcher")
    assert reqs[0]["body"]["tools"][0]["function"]["name"] == "simulate"
    last = reqs[-1]["messages"]
    calls = [m for m in last if m.get("role") == "assistant" and m.get("tool_calls")]
    replies = [m for m in last if m.get("role") == "tool"]
    assert len(calls) == 4 and len(replies) == 4
    assert [m["tool_call_id"] for m in replies] == [m["tool_calls"][0]["id"] for m in calls]
    assert json.loads(replies[1]["content"])["run_id"] == "r1"
    assert "slowest" in replies[2]["content"] and "table" in replies[2]["content"]
    assert reqs[-1]["body"].get("tool_choice") == "none"     # the answer: no more calls


def test_a_malformed_tool_call_is_answered_with_an_error_and_the_turn_goes_on(pool):
    plan = ([("simulate", '{"program": "parent", "overrides": {')],
            [("simulate", {"program": "parent", "overrides": {"window": [0, 30]}})])
    with ScriptedServer() as server:
        install_research(server, plan)
        out = Researcher(client_for(server), ROUTING, Prompts(), tools=tools(pool),
                         experiments=4).propose(snapshot())
    assert out.status == "ok"
    first, second = out.experiments
    assert not first["ok"] and "not valid JSON" in first["error"] and second["ok"]
    reply = [m for m in server.by_role("researcher")[1]["messages"] if m["role"] == "tool"][0]
    assert "not valid JSON" in json.loads(reply["content"])["error"]
    assert out.work["errors"] == 1 and out.work["calls"] == 1


def test_the_experiment_budget_closes_the_turn(pool):
    with ScriptedServer() as server:
        install_research(server)
        out = Researcher(client_for(server), ROUTING, Prompts(), tools=tools(pool, calls=2),
                         experiments=2).propose(snapshot())
    assert out.status == "ok" and len(out.experiments) == 2
    closing = server.by_role("researcher")[-1]["messages"][-1]["content"]
    assert closing.startswith("No more experiments") and "2 experiment calls" in closing


def test_an_endpoint_without_tools_gets_the_text_protocol(pool):
    plan = ([("simulate", {"program": "parent", "overrides": {"window": [0, 30]}})],
            [("request_log", "{not json")],
            [("request_log", {"query": {"kind": "histogram", "column": "e2e_s"}})])
    with ScriptedServer(tools=False) as server:
        install_research(server, plan)
        r = Researcher(client_for(server), ROUTING, Prompts(), tools=tools(pool),
                       experiments=4)
        out = r.propose(snapshot())
        out2 = r.propose(snapshot(index=2))
    assert out.status == "ok" and r.native is False and out.protocol == "text"
    assert [e["ok"] for e in out.experiments] == [True, False, True]
    assert "not valid JSON" in out.experiments[1]["error"]
    assert all(e["via"] == "text" for e in out.experiments)
    assert "tools_refused" in out.work
    reqs = server.by_role("researcher")
    assert reqs[0]["status"] == 400 and "tools" not in reqs[1]["body"]
    assert "EXPERIMENT RESULTS:" in reqs[2]["messages"][-1]["content"]
    assert out2.status == "ok" and "tools_refused" not in out2.work      # not tried again


def test_experiments_zero_is_todays_proposal(pool):
    with ScriptedServer() as server:
        install_defaults(server)
        out = Researcher(client_for(server), ROUTING, Prompts(), tools=tools(pool),
                         experiments=0).propose(snapshot())
        body = server.by_role("researcher")[0]["body"]
    assert out.status == "ok" and out.experiments == [] and out.conclusion == ""
    assert "tools" not in body and "EXPERIMENT" not in body["messages"][1]["content"]


def test_the_supervisor_reads_conclusions_and_writes_insights():
    c = Candidate(id="c000009", source=LLQ, fitness=1.1, status="ok", island=1,
                  parents=["c000001"], extra={"hypothesis": "H", "conclusion":
                                              "queueing at replica 2 dominates",
                                              "experiments": [{}, {}]})
    snap = SupervisorSnapshot(review=1, evaluations=5, leaderboard=[c], island_best=[(1, c)],
                              recent=[c], previous="", model="m")
    msgs = Supervisor(None, ROUTING, Prompts()).messages(snap)
    assert "Experiments (2), conclusion: queueing at replica 2 dominates" in msgs[1]["content"]
    assert "INSIGHTS:" in msgs[0]["content"]
    notes = "Island 1 works.\n\nINSIGHTS:\n- long prompts wait\n- \x1b[2Jbursts\n\nEnd."
    assert split_insights(notes) == ["long prompts wait", "\\x1b[2Jbursts"]


def test_a_whole_run_with_research_turns(tmp_path):
    """A real search (glia_evo.api.search) with `[llm] experiments = 4`: the Crew builds the
    tools, every tool is called through function calling, a malformed call is answered with an
    error, and the run goes on to its budget, the experiments' work charged to it (the whole
    wiring is tests/test_research_run.py)."""
    from glia_evo import api
    from llm_scripts import DEFAULT_PLAN

    plan = ([("simulate", '{"program": "parent", ')],) + DEFAULT_PLAN
    with ScriptedServer() as server:
        install_research(server, plan)
        run = api.search({
            "name": "research", "seed": 0, "out": str(tmp_path / "run"),
            "search": {"islands": 1, "island_capacity": 4, "seeds": ["llq"],
                       "validate_top": 0},
            "budget": {"minutes": 5.0, "max_evaluations": 5},
            "evaluation": {"workers": 1, "split": "quick", "cascade": False, "timeout_s": 120.0},
            "tuning": {"enabled": False}, "report": {"at_end": False},
            "tracking": {"enabled": False},
            "llm": {"mode": "openai", "base_url": server.url, "models": {"m": 1.0},
                    "timeout_s": 30.0, "max_retries": 0, "supervisor_interval": 0,
                    "experiments": 4}},
            report=False)
        reqs = server.by_role("researcher")
    status = run.status()
    assert status["llm"]["children"] >= 1 and status["experiments"]["turns"] >= 1
    assert status["evaluations"] < 5 <= status["evaluations"] + status["experiments"][
        "evaluations"]
    assert status["llm"]["by_role"]["researcher"]["calls"] == len(reqs)
    last = max(reqs, key=lambda r: r["tool_results"])["messages"]
    names = [c["function"]["name"] for m in last if m.get("tool_calls") for c in m["tool_calls"]]
    assert names == ["simulate", "workload_stats", "simulate", "request_log", "compare"]
    replies = [json.loads(m["content"]) for m in last if m.get("role") == "tool"]
    assert "not valid JSON" in replies[0]["error"] and "error" not in replies[2]


def test_hostile_tool_calls_never_reach_records_or_prompts_raw(pool):
    plan = ([("\x1b[31msimulate", {}), ("simulate", {"scenario": "\x1b]0;pwn\x07",
                                                       "program": "parent"})],)
    with ScriptedServer() as server:
        install_research(server, plan)
        out = Researcher(client_for(server), ROUTING, Prompts(), tools=tools(pool),
                         experiments=2).propose(snapshot())
        sent = json.dumps(server.by_role("researcher")[-1]["messages"])
    assert out.status == "ok" and [e["ok"] for e in out.experiments] == [False, False]
    assert "unknown tool" in out.experiments[0]["error"]
    assert "unknown scenario" in out.experiments[1]["error"]
    for text in (json.dumps(out.experiments), out.experiments_md):
        assert "\x1b" not in text and "\x07" not in text
    tool_replies = [m["content"] for m in json.loads(sent) if m.get("role") == "tool"]
    assert tool_replies and all("\x1b" not in t and "\x07" not in t for t in tool_replies)
