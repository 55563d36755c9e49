"""What small local models got wrong against glia-evo (issue 20), each reproduced and refused
before it costs an evaluation: a wrong entry-point signature, a docstring-only copy of the parent,
an answer cut off at max_tokens (finish_reason "length"), template text echoed as the hypothesis,
a Supervisor note that is a program, an Analyst summary that contradicts its facts; and the
endpoint awareness: one call at a time for a local server, proposals spread over islands and
parents, mixed mode keeping the workers busy."""
import pytest

from test_llm_answers import FakeClient

from glia_evo.config import LLMConfig
from glia_evo.llm import (AnswerError, ChatResult, LLMClient, Prompts, Researcher,
                          ResearchSnapshot, parse_answer)
from glia_evo.llm.answers import example_program, signatures
from glia_evo.problems import get_problem
from llm_server import PROXY_VARS, Reply, ScriptedServer
from population import Candidate
from sim.policies import baseline_source

LLQ = baseline_source("routing", "llq")
ROUTING = get_problem("routing")
SIGS = signatures(ROUTING)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def snapshot():
    parent = Candidate(id="c000007", source=LLQ, fitness=1.0, status="ok", reasoning="R")
    return ResearchSnapshot(index=1, island=0, parent=parent, inspirations=[], notes="",
                            model="m")


def full(source, hypothesis="a focused change"):
    return f"HYPOTHESIS: {hypothesis}\nRATIONALE: evidence.\n\n```python\n{source}```\n"


GOOD = ("HYPOTHESIS: sorting by id spreads load.\nRATIONALE: evidence.\n"
        "<<<<<<< SEARCH\n    for req in queue:\n=======\n"
        "    for req in sorted(queue, key=lambda q: q.id):\n>>>>>>> REPLACE\n")


# ------------------------------------------------------------------------------ signatures

def test_signatures_come_from_each_problems_reference_baseline():
    assert SIGS == {"route": ["queue", "replicas", "now", "knobs"]}
    assert signatures(get_problem("scheduling")) == {
        "schedule": ["pending", "active", "replica", "now", "knobs"]}
    assert signatures(get_problem("autoscaling")) == {"scale": ["cluster", "now", "knobs"]}


@pytest.mark.parametrize("header, fragment", [
    ("def route(queue, replicas, now):", "takes 3 parameters, the simulator passes 4"),
    ("def route(requests, replicas, now, knobs):", "other names"),
    ("def route(queue, replicas, now, knobs, *, extra):", "keyword-only"),
])
def test_a_wrong_signature_is_refused_with_the_real_one(header, fragment):
    src = LLQ.replace("def route(queue, replicas, now, knobs):", header)
    with pytest.raises(AnswerError) as err:
        parse_answer(full(src), LLQ, ("route",), sigs=SIGS)
    assert err.value.kind == "signature" and fragment in str(err.value)
    assert "def route(queue, replicas, now, knobs):" in str(err.value)
    assert "(...)" not in str(err.value)


def test_the_researcher_repairs_a_wrong_signature_showing_the_real_one():
    bad = full(LLQ.replace("def route(queue, replicas, now, knobs):",
                           "def route(queue, replicas, now):").replace(
                               "for req in queue:", "for req in list(queue):"))
    client = FakeClient([bad, GOOD])
    out = Researcher(client, ROUTING, Prompts()).propose(snapshot())
    assert out.status == "ok" and out.repaired and out.reasons == ["signature"]
    repair = client.sent[1][-1]["content"]
    assert "def route(queue, replicas, now, knobs):" in repair and "(...)" not in repair


# ------------------------------------------------------------------------------ no-op changes

def test_a_docstring_or_comment_only_change_is_sent_back_with_the_reason():
    only_doc = LLQ.replace("Least loaded queue", "The least loaded queue policy")
    assert only_doc != LLQ
    comments = LLQ.replace("    out = []", "    out = []   # the assignments")
    for src in (only_doc, comments, LLQ.replace("    ", "    ").replace("(load[i], i)",
                                                                        "( load[i],  i )")):
        with pytest.raises(AnswerError) as err:
            parse_answer(full(src), LLQ, ("route",), sigs=SIGS)
        assert err.value.kind == "noop"
    client = FakeClient([full(only_doc), GOOD])
    out = Researcher(client, ROUTING, Prompts()).propose(snapshot())
    assert out.status == "ok" and out.repaired and out.reasons == ["noop"]
    assert "only docstrings, comments or formatting differ" in client.sent[1][-1]["content"]


# ------------------------------------------------------------------------------ truncation

def test_an_answer_cut_off_at_max_tokens_asks_for_a_shorter_one():
    cut = "HYPOTHESIS: x.\nRATIONALE: y.\n```python\n" + LLQ[:len(LLQ) // 2]
    with pytest.raises(AnswerError) as err:
        parse_answer(cut, LLQ, ("route",), sigs=SIGS)
    assert err.value.kind == "no_code"                   # without the server's word
    assert "def route(queue, replicas, now, knobs):" in str(err.value)
    with pytest.raises(AnswerError) as err:
        parse_answer(cut, LLQ, ("route",), sigs=SIGS, finish_reason="length")
    assert err.value.kind == "truncated" and "cut off" in str(err.value)
    assert "SEARCH/REPLACE blocks" in str(err.value) and "shorter" in str(err.value)
    client = FakeClient([(cut, "length"), GOOD])
    out = Researcher(client, ROUTING, Prompts()).propose(snapshot())
    assert out.status == "ok" and out.reasons == ["truncated"]


def test_the_client_exposes_finish_reason():
    with ScriptedServer() as server:
        server.script("unknown", [Reply("cut", finish_reason="length"), Reply("whole")])
        cfg = LLMConfig(mode="openai", base_url=server.url, models={"m": 1.0}, timeout_s=2.0,
                        max_retries=0)
        client = LLMClient(cfg, None)
        msgs = [{"role": "user", "content": "hi"}]
        assert client.chat(msgs, "m").finish_reason == "length"
        assert client.chat(msgs, "m").finish_reason == "stop"


# ------------------------------------------------------------------------------ prompts

@pytest.mark.parametrize("name", ["routing", "scheduling", "autoscaling"])
def test_the_system_prompt_states_the_signatures_and_a_complete_example(name):
    problem = get_problem(name)
    r = Researcher(FakeClient([]), problem, Prompts())
    system = r.messages(snapshot())[0]["content"]
    for entry, params in signatures(problem).items():
        assert f"def {entry}({', '.join(params)}):" in system
    example = example_program(problem)
    assert example.strip() in system
    from sandbox.compile import check_source
    check_source(example, problem.entrypoints)                 # the example is valid
    for placeholder in ("One or two sentences", "(...)", "lines copied from the parent"):
        assert placeholder not in system


def test_a_hypothesis_echoing_the_template_is_refused():
    echo = GOOD.replace("sorting by id spreads load.",
                        "One or two sentences: what limits the parent program.")
    with pytest.raises(AnswerError) as err:
        parse_answer(echo, LLQ, ("route",), sigs=SIGS)
    assert err.value.kind == "echo"
    client = FakeClient([echo, GOOD])
    out = Researcher(client, ROUTING, Prompts()).propose(snapshot())
    assert out.status == "ok" and out.reasons == ["echo"]
    assert out.answer.hypothesis == "sorting by id spreads load."


# ------------------------------------------------------------------------------ Supervisor, Analyst

def _supervisor_snap(previous=""):
    from glia_evo.llm import SupervisorSnapshot
    best = Candidate(id="c000002", source=LLQ, fitness=1.2, status="ok", island=0,
                     operator="llm")
    rejected = Candidate(id="c000009", source=LLQ, fitness=0.0, status="rejected", island=0,
                         operator="llm", parents=["c000002"],
                         extra={"stage1_fitness": 0.834,
                                "diagnostics": {"cascade": {"bar": 0.9}}})
    return SupervisorSnapshot(review=1, evaluations=5, leaderboard=[best],
                              island_best=[(0, best)], recent=[rejected], previous=previous,
                              model="m")


def test_a_supervisor_note_that_is_a_program_or_an_echo_never_reaches_a_prompt():
    from glia_evo.llm import LLMError, Supervisor
    import llm_scripts
    program = llm_scripts.small_supervisor({}).text
    sup = Supervisor(FakeClient([program]), ROUTING, Prompts())
    with pytest.raises(LLMError) as err:
        sup.review(_supervisor_snap())
    assert "code block" in str(err.value) and err.value.usage        # tokens still counted
    bare = "Use this:\ndef route(queue, replicas, now, knobs):\n    return []\n"
    with pytest.raises(LLMError, match="program text"):
        Supervisor(FakeClient([bare]), ROUTING, Prompts()).review(_supervisor_snap())
    snap = _supervisor_snap()
    echo = Supervisor(FakeClient([]), ROUTING, Prompts()).messages(snap)[0]["content"]
    with pytest.raises(LLMError, match="repeats the prompt"):
        Supervisor(FakeClient([echo]), ROUTING, Prompts()).review(snap)
    with pytest.raises(LLMError, match="words long"):
        Supervisor(FakeClient(["word " * 1000]), ROUTING, Prompts()).review(snap)
    good = "c000002 leads: least-loaded routing with head-room works; try a larger bar."
    notes, _ = Supervisor(FakeClient([good]), ROUTING, Prompts()).review(
        _supervisor_snap(previous=good))                      # repeating itself is fine
    assert notes == good


def test_the_supervisor_sees_the_quick_stages_real_fitness():
    from glia_evo.llm import Supervisor
    user = Supervisor(FakeClient([]), ROUTING, Prompts()).messages(_supervisor_snap())[1]
    assert "0.8340 on the quick first stage, below its bar of 0.9000" in user["content"]
    assert "fitness 0.0000" not in user["content"]


def _analyst_snap(cand):
    from glia_evo.llm import AnalystSnapshot
    parent = Candidate(id="c000002", source=LLQ, fitness=1.2, status="ok")
    return AnalystSnapshot(candidate=cand, parent=parent, model="m")


def test_the_analyst_is_given_the_real_first_stage_fitness_and_kept_to_the_facts():
    from glia_evo.llm import LLMAnalyst, LLMError
    rejected = Candidate(id="c000009", source=LLQ.replace("out = []", "out = list()"),
                         fitness=0.0, status="rejected", parents=["c000002"],
                         extra={"stage1_fitness": 0.834,
                                "diagnostics": {"cascade": {"bar": 0.9}}})
    a = LLMAnalyst(FakeClient([]), ROUTING, Prompts())
    user = a.messages(_analyst_snap(rejected))[1]["content"]
    assert "fitness 0.8340 on the quick first stage" in user and "fitness 0.0000" not in user
    with pytest.raises(LLMError, match="states fitness 0.0000"):
        LLMAnalyst(FakeClient(["It reached fitness 0.0000 and failed."]), ROUTING,
                   Prompts()).summarize(_analyst_snap(rejected))
    text, _ = LLMAnalyst(FakeClient(["Quick-stage fitness 0.834 was below the bar of 0.9; the "
                                     "list() change slowed nothing, so the variance decided."]),
                         ROUTING, Prompts()).summarize(_analyst_snap(rejected))
    assert "0.834" in text

    failed = Candidate(id="c000010", source=LLQ, fitness=0.0, status="error",
                       parents=["c000002"],
                       error="TypeError: route() takes 3 positional arguments but 4 were given")
    with pytest.raises(LLMError, match=r"does not name the candidate's error \(TypeError\)"):
        LLMAnalyst(FakeClient(["The change did not help; try more head-room."]), ROUTING,
                   Prompts()).summarize(_analyst_snap(failed))
    with pytest.raises(LLMError, match="code block"):
        LLMAnalyst(FakeClient(["TypeError. Fix:\n```python\ndef route(q):\n    pass\n```"]),
                   ROUTING, Prompts()).summarize(_analyst_snap(failed))
    text, _ = LLMAnalyst(FakeClient(["A TypeError: route takes four arguments, the program "
                                     "defined three."]), ROUTING,
                         Prompts()).summarize(_analyst_snap(failed))
    assert "TypeError" in text


# ------------------------------------------------------------------------------ whole runs

def _run(tmp_path, server, **kw):
    from test_llm_run import run
    return run(tmp_path, server, **kw)


def test_a_small_model_run_repairs_its_mistakes_and_keeps_bad_notes_out(tmp_path):
    import llm_scripts
    from test_llm_run import candidates, events
    with ScriptedServer() as server:
        llm_scripts.install_small_model(server)
        proc, out = _run(tmp_path, server, evals=8, supervise=3)
    assert proc.returncode == 0, proc.stderr
    cands, meta = candidates(out)
    reasons = [r for e in events(out, "proposal") + events(out, "discarded")
               for r in e.get("reasons", [])]
    for kind in ("signature", "noop", "truncated", "echo"):
        assert kind in reasons, reasons
    children = [c for c in cands if c.operator == "llm"]
    assert children and all("def route(queue, replicas, now, knobs):" in c.source
                            for c in children)
    assert not any("DOCSTRING-ONLY" in c.source for c in children)
    assert not events(out, "duplicate")
    # the repair messages show the real signature, never a placeholder
    repairs = [r for r in server.requests if r["repair"]]
    assert repairs and all("def route(queue, replicas, now, knobs):" in
                           r["messages"][-1]["content"] for r in repairs)
    assert not any("(...)" in r["messages"][-1]["content"] for r in repairs)
    truncated = [r for r in repairs if "TRUNCATED" in r["messages"][-2]["content"]]
    assert truncated and all("cut off" in r["messages"][-1]["content"] for r in truncated)
    # the Supervisor's program never reached a Researcher; the wrong Analyst summaries neither
    sup = events(out, "supervisor")
    assert sup and not any(e["ok"] for e in sup)
    assert all("code block" in e["error"] for e in sup)
    for r in server.by_role("researcher"):
        assert "SUPERVISOR-PROGRAM" not in r["messages"][1]["content"]
        assert "ANALYST-WRONG" not in r["messages"][1]["content"]
    assert not (out / "supervisor_notes.md").exists() or \
        "SUPERVISOR-PROGRAM" not in (out / "supervisor_notes.md").read_text()
    assert meta["llm"]["review_failures"] >= 1


def test_a_local_one_slot_server_gets_one_call_at_a_time(tmp_path):
    import llm_scripts
    from test_llm_run import candidates
    with ScriptedServer(slots=1) as server:
        llm_scripts.install_defaults(server)
        server.default("researcher", lambda req: Reply(llm_scripts.child_answer(req),
                                                       delay=0.3))
        proc, out = _run(tmp_path, server, evals=7, supervise=3)
    assert proc.returncode == 0, proc.stderr
    cands, meta = candidates(out)
    assert meta["evaluations"] == 7 and server.by_role("analyst")
    assert server.max_active == 1           # nothing ever queued at the server
    assert not [r for r in server.requests if r.get("status") not in (200, None)]


def test_a_server_that_says_it_has_two_slots_gets_two_calls_at_a_time(tmp_path):
    import llm_scripts
    from test_llm_run import candidates
    with ScriptedServer(slots=2, props=True) as server:
        llm_scripts.install_defaults(server)
        server.default("researcher", lambda req: Reply(llm_scripts.child_answer(req),
                                                       delay=0.5))
        proc, out = _run(tmp_path, server, evals=8)
    assert proc.returncode == 0, proc.stderr
    assert candidates(out)[1]["evaluations"] == 8
    assert server.max_active == 2              # its two slots used, nothing queued beyond them
    assert not [r for r in server.requests if r.get("status") not in (200, None)]


def test_first_concurrent_proposals_spread_over_islands_and_parents(tmp_path):
    import re
    import llm_scripts
    with ScriptedServer() as server:
        llm_scripts.install_defaults(server)
        server.default("researcher", lambda req: Reply(llm_scripts.child_answer(req),
                                                       delay=0.5))
        proc, out = _run(tmp_path, server, evals=10, islands=2,
                         extra="concurrency = 4")
    assert proc.returncode == 0, proc.stderr
    first = [r for r in server.by_role("researcher") if not r["repair"]][:4]
    where = [re.search(r"# Parent program (c\d+) \(island (\d+)", r["messages"][1]["content"])
             .groups() for r in first]
    assert {island for _, island in where} == {"0", "1"}, where
    assert len({parent for parent, _ in where}) >= 2, where


def test_mixed_mode_never_leaves_workers_waiting_for_the_model(tmp_path):
    import llm_scripts
    from test_llm_run import candidates, events
    with ScriptedServer() as server:
        llm_scripts.install_defaults(server)
        server.default("researcher", lambda req: Reply(llm_scripts.child_answer(req),
                                                       delay=0.7))
        proc, out = _run(tmp_path, server, evals=14, extra="offline_fraction = 0.5\n"
                         "concurrency = 1\nanalyst = false")
    assert proc.returncode == 0, proc.stderr
    cands, meta = candidates(out)
    assert meta["evaluations"] == 14
    busy = [e for e in events(out, "proposal") if e.get("llm_busy")]
    assert busy                              # offline proposals took the free worker slots
    ops = {c.operator for c in cands}
    assert "llm" in ops and ops - {"llm", "seed"}
    # the workers were busy most of the time, not waiting for the slow answers
    idle = _idle_share(out, workers=2)
    assert idle < 0.6, idle


def _idle_share(out, workers):
    from glia_evo.events import read_events
    evs = list(read_events(out / "events.jsonl"))
    # the search's window: first proposal to last result (not the validation choice and the
    # report that follow it, when no worker is meant to be busy)
    start = [e["t"] for e in evs if e["event"] in ("proposal", "evaluation")] or [0]
    end = [e["t"] for e in evs if e["event"] == "evaluation"] or [0]
    wall = max(end) - min(start)
    busy = sum(e.get("seconds") or 0 for e in evs if e["event"] == "evaluation")
    return max(0.0, 1 - busy / (workers * wall)) if wall else 0.0


def test_a_copy_of_a_stored_program_is_sent_back_not_dropped():
    from population.dedup import code_hash
    hra = baseline_source("routing", "hra")
    snap = snapshot()
    snap.known = {code_hash(LLQ): "c000007", code_hash(hra): "c000003"}
    client = FakeClient([full(hra.replace('"""', '"""Copied. ', 1)), GOOD])
    out = Researcher(client, ROUTING, Prompts()).propose(snap)
    assert out.status == "ok" and out.repaired and out.reasons == ["duplicate"]
    assert "the same as program c000003" in client.sent[1][-1]["content"]


def test_the_first_supervisor_review_comes_in_a_small_budget_and_not_on_seeds_only(tmp_path):
    import llm_scripts
    from test_llm_run import events
    with ScriptedServer() as server:
        llm_scripts.install_defaults(server)
        proc, out = _run(tmp_path, server, evals=9, supervise=20)
    assert proc.returncode == 0, proc.stderr
    reviews = events(out, "supervisor")
    assert reviews and reviews[0]["ok"] and reviews[0]["evaluations"] == 3
    recent = server.by_role("supervisor")[0]["messages"][1]["content"]
    assert "## Recent evaluations" in recent and "(none)" not in recent.split(
        "## Recent evaluations")[1].split("##")[0]


def test_the_slot_gate_serves_researchers_first_and_queued_summaries_are_not_waited_for():
    import concurrent.futures
    import threading
    import time
    from glia_evo.llm.client import _Gate
    gate, cancel, order = _Gate(1), threading.Event(), []
    assert gate.acquire(0, cancel)

    def take(priority, name):
        assert gate.acquire(priority, cancel)
        order.append(name)
        gate.release()
    low = threading.Thread(target=take, args=(1, "analyst"))
    low.start()
    time.sleep(0.1)
    high = threading.Thread(target=take, args=(0, "researcher"))
    high.start()
    time.sleep(0.1)
    gate.release()
    low.join(5)
    high.join(5)
    assert order == ["researcher", "analyst"]
    give_up = threading.Event()
    give_up.set()
    assert gate.acquire(1, cancel) and not gate.acquire(1, cancel, give_up)   # gave up
    gate.release()
    # a summary whose call still waits for a slot is not waited for: the stored one is used
    fut = concurrent.futures.Future()
    fut.started = threading.Event()
    snap = snapshot()
    snap.summaries = {"c000007": fut}
    r = Researcher(FakeClient([]), ROUTING, Prompts(), summary_wait_s=30)
    began = time.monotonic()
    assert "Analyst's reasoning about it:\nR\n" in r.messages(snap)[1]["content"]
    assert time.monotonic() - began < 5
