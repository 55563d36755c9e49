"""Reading Researcher answers (diffs, full programs, malformed ones), the Researcher's repair
round, prompt templates, and the LLM configuration keys."""
from pathlib import Path

import pytest

from glia_evo.config import LLMConfig

from glia_evo.config import ConfigError, from_dict
from glia_evo.llm import (AnswerError, ChatResult, LLMUnavailable, Prompts, Researcher,
                          ResearchSnapshot, apply_diff, parse_answer)
from glia_evo.llm.prompts import NAMES
from glia_evo.problems import get_problem
from population import Candidate
from sim.policies import baseline_source

LLQ = baseline_source("routing", "llq")
HRA = baseline_source("routing", "hra")
ROUTE = ("route",)


def diff(search, replace):
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def test_diff_answer_with_hypothesis_and_rationale():
    text = ("HYPOTHESIS: shortest prompt first lowers the mean.\n"
            "RATIONALE: long prompts block short ones.\n\n```\n"
            + diff("    for req in queue:",
                   "    for req in sorted(queue, key=lambda q: q.prompt_tokens):") + "```\n")
    a = parse_answer(text, LLQ, ROUTE)
    assert a.form == "diff" and a.blocks == 1
    assert "sorted(queue" in a.source and "for req in queue:" not in a.source
    assert a.hypothesis == "shortest prompt first lowers the mean."
    assert a.rationale == "long prompts block short ones."


def test_markdown_headings_and_full_program():
    text = f"## Hypothesis\nHead-room admission.\n\n## Rationale\nFewer restarts.\n\n```python\n{HRA}```"
    a = parse_answer(text, LLQ, ROUTE)
    assert a.form == "full" and a.source == HRA
    assert a.hypothesis == "Head-room admission." and a.rationale == "Fewer restarts."


def test_several_blocks_apply_in_order_and_trailing_spaces_are_tolerated():
    text = (diff("    out = []   ", "    out = []\n    seen = 0") +
            diff("        out.append((req.id, best))", "        out.append((req.id, best))\n"
                 "        seen = seen + 1"))
    a = parse_answer(text, LLQ, ROUTE)
    assert "seen = 0" in a.source and "seen = seen + 1" in a.source and a.blocks == 2


@pytest.mark.parametrize("text, fragment", [
    ("I would sort the queue.", "no code found"),
    ("", "empty"),
    (diff("    for request in queue:", "    pass"), "does not match"),
    (diff("    out = []", "    out = list()"), "matches 2 places"),
    ("<<<<<<< SEARCH\n    for req in queue:\n", "incomplete"),
    ("```python\nimport os\n\ndef route(queue, replicas, now, knobs):\n    return []\n```",
     "does not compile"),
    ("```python\ndef router(queue, replicas, now, knobs):\n    return []\n```", "no code found"),
    (f"```python\n{LLQ}```", "identical to the parent"),
    (diff("    for req in queue:", "    for req in queue"), "does not compile: line"),
])
def test_malformed_answers_say_exactly_why(text, fragment):
    parent = LLQ + "\n\ndef helper():\n    out = []\n    return out\n"
    with pytest.raises(AnswerError, match=fragment):
        parse_answer(text, parent if "matches 2" in fragment else LLQ, ROUTE)


def test_apply_diff_empty_search():
    with pytest.raises(AnswerError, match="empty SEARCH"):
        apply_diff(LLQ, [("\n", "x")])


class FakeClient:
    """Answers from a list (text, (text, finish_reason) or an exception to raise); records the
    conversations it was sent."""
    cfg = LLMConfig()

    def __init__(self, answers):
        self.answers = list(answers)
        self.sent = []

    def chat(self, messages, model, **kw):  # noqa: ARG002
        self.sent.append(messages)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        text, finish = answer if isinstance(answer, tuple) else (answer, "stop")
        return ChatResult(text, model, 100, 10, 0.0, 0.01, finish_reason=finish)


def snapshot(**kw):
    parent = Candidate(id="c000007", source=LLQ, fitness=1.0, status="ok",
                       reasoning="PARENT-REASONING", metrics={"glia_short#101": {
                           "mean_e2e_s": 30.0, "p99_e2e_s": 200.0, "restarts": 12}})
    insp = Candidate(id="c000003", source=HRA, fitness=1.4, status="ok", reasoning="INSP-WHY")
    opts = dict(index=5, island=0, parent=parent, inspirations=[insp], notes="NOTES-HERE",
                model="m")
    opts.update(kw)
    return ResearchSnapshot(**opts)


def test_researcher_prompt_holds_everything_the_design_asks_for():
    r = Researcher(FakeClient([]), get_problem("routing"), Prompts())
    system, user = (m["content"] for m in r.messages(snapshot()))
    assert "SEARCH" in system and "```python" in system and "math, statistics" in system
    for part in ("Route requests of an LLM-serving cluster", "NOTES-HERE", "c000007",
                 "PARENT-REASONING", "mean e2e 30 s", "for req in queue:", "c000003",
                 "INSP-WHY", "Head-Room Admission", "Request view"):
        assert part in user, part


def test_researcher_repairs_once_with_the_exact_error_then_discards():
    bad = diff("    for request in queue:", "    pass")
    fixed = diff("    for req in queue:", "    for req in sorted(queue, key=lambda q: q.id):")
    client = FakeClient([bad, fixed])
    out = Researcher(client, get_problem("routing"), Prompts()).propose(snapshot())
    assert out.status == "ok" and out.repaired and len(out.calls) == 2
    repair = client.sent[1]
    assert [m["role"] for m in repair] == ["system", "user", "assistant", "user"]
    assert repair[2]["content"] == bad
    assert "does not match" in repair[3]["content"] and "'for request in queue:'" in \
        repair[3]["content"]

    client = FakeClient(["no code", "still no code"])
    out = Researcher(client, get_problem("routing"), Prompts()).propose(snapshot())
    assert out.status == "discarded" and len(out.errors) == 2 and len(out.calls) == 2


def test_researcher_reports_an_unavailable_endpoint():
    client = FakeClient([LLMUnavailable("down")])
    out = Researcher(client, get_problem("routing"), Prompts()).propose(snapshot())
    assert out.status == "unavailable" and out.message == "down" and not out.calls


def test_attempts_abandoned_after_timeouts_are_counted_on_the_outcome():
    lost = ChatResult("", "m", 300, 4096, 0.0, 1.0, estimated=True, abandoned_tokens=4396)
    client = FakeClient([LLMUnavailable("timeouts", usage=[lost])])
    out = Researcher(client, get_problem("routing"), Prompts()).propose(snapshot())
    assert out.status == "unavailable" and out.calls == [lost]      # the engine counts them


def test_researcher_waits_for_a_pending_analyst_summary():
    import concurrent.futures
    fut = concurrent.futures.Future()
    fut.set_result(("FRESH-LLM-SUMMARY", None))
    r = Researcher(FakeClient([]), get_problem("routing"), Prompts())
    user = r.messages(snapshot(summaries={"c000007": fut}))[1]["content"]
    assert "Analyst's reasoning about it:\nFRESH-LLM-SUMMARY\n" in user
    assert "PARENT-REASONING" not in user


def test_every_template_renders_and_overrides_win(tmp_path):
    prompts = Prompts()
    for name in NAMES:
        assert "$" in prompts.text(name) or name == "researcher_system"
    (tmp_path / "supervisor_system.md").write_text("You are the Supervisor. $problem only.")
    assert Prompts(tmp_path).render("supervisor_system", problem="routing",
                                    max_words=1) == "You are the Supervisor. routing only."
    with pytest.raises(KeyError):
        Prompts().render("researcher_repair", error="x")      # parent_id missing


def test_prompt_files_are_package_data():
    text = Path("pyproject.toml").read_text()
    assert 'glia_evo = ["prompts/*.md"]' in text


@pytest.mark.parametrize("data, fragment", [
    ({"llm": {"mode": "openai"}}, "'llm.models'"),
    ({"llm": {"mode": "openai", "models": {"m": 0}}}, "'llm.models'"),
    ({"llm": {"models": {"m": "heavy"}}}, "'llm.models.m'"),
    ({"llm": {"api_key_env": "sk-abc-123"}}, "'llm.api_key_env'"),
    ({"llm": {"offline_fraction": 1.5}}, "'llm.offline_fraction'"),
    ({"llm": {"prices": {"m": [1.0]}}}, "'llm.prices'"),
    ({"llm": {"mode": "openai", "models": {"m": 1}}, "budget": {"max_cost_usd": 1.0}},
     "'llm.prices'"),
    ({"budget": {"max_tokens": -1}}, "'budget.max_tokens'"),
])
def test_llm_config_errors_name_the_key(data, fragment):
    with pytest.raises(ConfigError, match=fragment):
        from_dict(data)


def test_llm_config_roundtrip(tmp_path):
    cfg = from_dict({"llm": {"mode": "openai", "models": {"big": 3, "small": 1},
                             "prices": {"big": [2, 8], "small": [0.1, 0.4]},
                             "analyst_model": "small"},
                     "budget": {"max_tokens": 1000, "max_cost_usd": 0.5}})
    assert cfg.llm.weights() == {"big": 3.0, "small": 1.0} and cfg.llm.first_model() == "big"
    cfg.dump(tmp_path / "c.toml")
    from glia_evo.config import load
    assert load(tmp_path / "c.toml").to_dict() == cfg.to_dict()


def test_a_short_context_gets_the_short_prompt_that_fits_it():
    """With the model's context known, the prompt keeps room for the answer: inspirations go
    first, then notes and summaries are shortened; unknown context: the full prompt."""
    from glia_evo.llm.agents import _tokens
    snap = snapshot(inspirations=[snapshot().inspirations[0]] * 3, notes="N" * 5000)
    full = Researcher(FakeClient([]), get_problem("routing"), Prompts()).messages(snap)
    assert full[1]["content"].count("INSP-WHY") == 3 and "N" * 5000 in full[1]["content"]
    client = FakeClient([])
    client.cfg = LLMConfig(max_output_tokens=1024)
    for context in (_tokens(full) + 1024 - 900, _tokens(full) // 2 + 1024):
        short = Researcher(client, get_problem("routing"), Prompts(),
                           context_tokens=context).messages(snap)
        assert _tokens(short) <= context - min(1024, context // 2) - 64   # room for the answer
        assert short[1]["content"].count("INSP-WHY") < 3
        for part in ("c000007", "for req in queue:", "def route(queue, replicas, now, knobs)"):
            assert part in short[0]["content"] + short[1]["content"], part   # what it must see
    roomy = Researcher(client, get_problem("routing"), Prompts(),
                       context_tokens=_tokens(full) + 2000).messages(snap)
    assert roomy == full
