"""What small local models got wrong against glia-evo (issue 20), each reproduced and refused
before it costs an evaluation: a wrong entry-point signature, a docstring-only copy of the parent,
an answer cut off at max_tokens (finish_reason "length"), template text echoed as the hypothesis,
a Supervisor note that is a program, an Analyst summary that contradicts its facts; and the
endpoint awareness: one call at a time for a local server, proposals spread over islands and
parents, mixed mode keeping the workers busy."""
import pytest

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


class FakeClient:
    def __init__(self, answers):
        self.answers = list(answers)
        self.sent = []

    def chat(self, messages, model, **kw):  # noqa: ARG002
        self.sent.append(messages)
        answer = self.answers.pop(0)
        text, finish = answer if isinstance(answer, tuple) else (answer, "stop")
        return ChatResult(text, model, 100, 10, 0.0, 0.01, finish_reason=finish)


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
