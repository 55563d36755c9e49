"""Scripted "models" for the LLM tests: answers that turn a parent routing program into a child.

The Researcher's default answer depends on the parent in its prompt: LLQ-like parents get a
SEARCH/REPLACE diff (shortest prompt first), HRA-like parents a diff that changes the head-room
factor, anything else HRA as a full program. Diffs carry a constant unique to the request, so
every answer is a new program (no duplicates).
"""
from __future__ import annotations

import json
import re

from llm_server import Reply, parent_source
from sim.policies import baseline_source

HRA = baseline_source("routing", "hra")


def full_program(source: str, note: str = "") -> str:
    return (f"HYPOTHESIS: holding requests while KV memory is short avoids evictions.{note}\n"
            f"RATIONALE: restarts dominate the parent's latency; head-room admission keeps "
            f"blocks free.\n\n```python\n{source}```\n")


def diff(search: str, replace: str, hypothesis: str = "a focused change") -> str:
    return (f"HYPOTHESIS: {hypothesis}\nRATIONALE: from the evidence in the prompt.\n\n"
            f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n")


def child_change(parent: str, n: int) -> tuple[str, str, str]:
    """The scripted mutation of `parent` as (search, replace, hypothesis): LLQ-like parents get
    shortest prompt first, HRA-like ones more head-room, anything else becomes HRA (the search is
    then the whole parent). One home for it, so the throughput benchmark can give OpenEvolve the
    same programs glia-evo gets."""
    if "    for req in queue:\n" in parent:
        return ("    for req in queue:",
                f"    for req in sorted(queue, key=lambda q: (q.prompt_tokens * "
                f"{1 + (n + 1) / 1000:.3f}, q.id)):",
                "shortest prompt first cuts the mean latency")
    m = re.search(r"^    grow = .*$", parent, re.M)
    if m:
        return (m.group(0), f"    grow = 1.0 + knobs[\"headroom\"] * {1 + (n + 1) / 1000:.3f}",
                "a little more head-room per request")
    return parent.rstrip("\n"), HRA.rstrip("\n"), "head-room admission avoids evictions"


def child_answer(record: dict) -> str:
    parent = parent_source(record["messages"])
    search, replace, hypothesis = child_change(parent, record["n"])
    if search == parent.rstrip("\n"):
        return full_program(HRA)
    return diff(search, replace, hypothesis)


def researcher(record: dict):
    return Reply(child_answer(record))


def analyst(record: dict):
    text = record["messages"][-1]["content"]
    m = re.search(r"# Candidate (c\d+)", text)
    cid = m.group(1) if m else "?"
    return Reply(f"ANALYST-SUMMARY-{cid}: it did not beat its parent; the evidence is in the "
                 f"metrics; try more head-room.")


def supervisor_factory():
    count = {"n": 0}

    def supervisor(record: dict):
        count["n"] += 1
        return Reply(f"SUPERVISOR-NOTES-{count['n']}: head-room admission works; combine it "
                     f"with shortest-prompt-first ordering.")
    return supervisor


def install_defaults(server) -> None:
    server.default("researcher", researcher)
    server.default("researcher_repair", researcher)
    server.default("analyst", analyst)
    server.default("supervisor", supervisor_factory())


# ----------------------------------------------------------------------------- "small model" mode
# The mistakes small local models made against glia-evo (issue 20), in turn: a program whose
# entry point has the wrong signature, a copy of the parent that changes only its docstring, an
# answer cut off at max_tokens (finish_reason "length", unclosed fence), a hypothesis echoing the
# template, and a usable diff. The repair round answers correctly (a diff on the parent). The
# Supervisor answers with a program in a code block; the Analyst states a wrong fitness and drops
# the error type.

def wrong_signature(record: dict) -> Reply:
    parent = parent_source(record["messages"])
    body = parent.replace("def route(queue, replicas, now, knobs):",
                          "def route(queue, replicas, now):")
    if body == parent:
        body = "def route(queue, replicas, now):\n    return []\n"
    return Reply(full_program(body, " WRONG-SIGNATURE"))


def docstring_only(record: dict) -> Reply:
    parent = parent_source(record["messages"])
    return Reply("HYPOTHESIS: documenting the policy makes it clearer.\nRATIONALE: a better "
                 "docstring.\n\n```python\n\"\"\"A clearer docstring (DOCSTRING-ONLY).\"\"\"\n"
                 + re.sub(r'^""".*?"""\n', "", parent, count=1, flags=re.S) + "```\n")


def truncated(record: dict) -> Reply:
    parent = parent_source(record["messages"])
    cut = parent[:max(20, len(parent) // 2)]
    return Reply("HYPOTHESIS: a longer rewrite. TRUNCATED\nRATIONALE: many changes.\n\n```python\n"
                 + cut, finish_reason="length")


def template_echo(record: dict) -> Reply:
    text = child_answer(record)
    return Reply(re.sub(r"^HYPOTHESIS: .*$", "HYPOTHESIS: One or two sentences: what limits the "
                        "parent program and what change should help.", text, count=1,
                        flags=re.M))


SMALL_MISTAKES = (wrong_signature, docstring_only, truncated, template_echo, researcher)


def small_researcher_factory():
    count = {"n": 0}

    def small(record: dict):
        count["n"] += 1
        return SMALL_MISTAKES[(count["n"] - 1) % len(SMALL_MISTAKES)](record)
    return small


def small_supervisor(record: dict) -> Reply:
    return Reply("SUPERVISOR-PROGRAM: use this program:\n\n```python\ndef route(queue, replicas, "
                 "now, knobs):\n    return [(r.id, replicas[0].id) for r in queue]\n```\n")


def small_analyst(record: dict) -> Reply:
    return Reply("ANALYST-WRONG: the candidate reached fitness 0.0000 and the change did not "
                 "help; try again.")


def install_small_model(server) -> None:
    server.default("researcher", small_researcher_factory())
    server.default("researcher_repair", researcher)
    server.default("analyst", small_analyst)
    server.default("supervisor", small_supervisor)


# ----------------------------------------------------------------------------- research turns
# A Researcher that runs experiments before it proposes (issue 18): each round of a research
# turn calls the tools of one step of `plan` (function calling when the request offers `tools`,
# else the EXPERIMENT: text protocol), then answers with a CONCLUSION quoting the first
# simulation's mean latency and the usual child diff.

def _rounds(messages: list[dict]) -> int:
    """Experiment rounds already answered in this conversation."""
    return sum(1 for m in messages if m.get("role") == "assistant" and (
        m.get("tool_calls") or "EXPERIMENT:" in str(m.get("content") or "")))


def _first_latency(messages: list[dict]) -> str:
    for m in messages:
        if m.get("role") in ("tool", "user"):
            hit = re.search(r'"mean_e2e_s":([0-9.]+)', str(m.get("content") or ""))
            if hit:
                return hit.group(1)
    return "?"


DEFAULT_PLAN = (
    [("workload_stats", {})],
    [("simulate", {"program": "parent"})],
    [("request_log", {"run_id": "r1", "query": {"kind": "slowest", "n": 5}})],
    [("compare", {"a": "parent", "b": HRA, "overrides": {"window": [0, 60]}})],
)


def research_factory(plan=DEFAULT_PLAN, text_protocol: bool | None = None):
    """A Researcher default: experiments by `plan` (a list of rounds, each a list of (tool,
    arguments) pairs; arguments a dict, or a str sent verbatim: malformed JSON), then the
    answer. `text_protocol=True` always writes EXPERIMENT: lines, even when tools are offered."""
    def researcher(record: dict):
        msgs = record["messages"]
        last = str(msgs[-1].get("content") or "") if msgs else ""
        done = _rounds(msgs)
        offered = bool(record["body"].get("tools")) and record["body"].get(
            "tool_choice") != "none"
        if last.startswith("No more experiments") or done >= len(plan) or \
                "EXPERIMENT" not in str(msgs[1].get("content") if len(msgs) > 1 else ""):
            return Reply(f"CONCLUSION: the parent's mean latency was {_first_latency(msgs)} s "
                         f"in the first simulation; the slowest requests waited at their "
                         f"replica, so ordering the queue should help.\n"
                         + child_answer(record))
        step = plan[done]
        hyp = "HYPOTHESIS: the slowest requests wait behind long prompts at busy replicas."
        if offered and not text_protocol:
            return Reply(hyp, tool_calls=list(step))
        lines = [hyp] + [f"EXPERIMENT: {args if isinstance(args, str) else json.dumps({'tool': name, 'args': args})}"
                         for name, args in step]
        return Reply("\n".join(lines))
    return researcher


def install_research(server, plan=DEFAULT_PLAN, text_protocol: bool | None = None) -> None:
    install_defaults(server)
    server.default("researcher", research_factory(plan, text_protocol))


def research_supervisor_factory():
    """A Supervisor that reads the research turns' conclusions (the prompt's "Conclusions of
    research turns, across islands" section) and ends its notes with INSIGHTS."""
    count = {"n": 0}

    def supervisor(record: dict):
        count["n"] += 1
        text = record["messages"][-1]["content"]
        section = text.split("## Conclusions of research turns", 1)
        seen = re.findall(r"^- island (\d+): (c\d+)", section[1], re.M) if len(section) > 1 \
            else []
        ids = ", ".join(c for _, c in seen) or "none"
        islands = len({i for i, _ in seen})
        return Reply(f"SUPERVISOR-NOTES-{count['n']}: read {len(seen)} research conclusions on "
                     f"{islands} islands ({ids}). The queueing conclusion is supported by the "
                     f"request logs; a single window is weak evidence.\n\nINSIGHTS:\n"
                     f"- INSIGHT-{count['n']}-A the slowest requests are long decodes on a "
                     f"replica that keeps evicting\n"
                     f"- INSIGHT-{count['n']}-B arrivals come in bursts, so queues build "
                     f"quickly\n")
    return supervisor


def install_research_run(server, plan=DEFAULT_PLAN) -> None:
    """`install_research` with the research Supervisor (for a whole run)."""
    install_research(server, plan)
    server.default("supervisor", research_supervisor_factory())
