"""`glia-evo run --llm openai` end to end against the scripted OpenAI-compatible server on
127.0.0.1 (tests/llm_server.py), with the real `openai` client: the Researcher improving on its
seed with full-program and diff answers, retries on 429 / 500 / a hung call, a malformed answer
repaired and one discarded, the Analyst's summaries and the Supervisor's notes reaching later
prompts, token and cost budgets, a refused key, and the API key never written anywhere. The
endpoint's outages are in tests/faults/test_outages.py."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import llm_scripts
from glia_evo.events import read_events
from llm_server import Hang, Reply, ScriptedServer, Status, loopback_env
from population import Store

KEY = "sk-SENTINEL-4d1f0e-glia-never-leak"
MODEL = "scripted-model"
CONFIG = """
name = "llm"
seed = 0
[search]
islands = {islands}
island_capacity = 4
tournament = {tournament}
seeds = ["llq"]
migration_interval = 100
validate_top = {validate_top}
[budget]
minutes = 10.0
max_evaluations = {evals}
{budget}
[evaluation]
workers = 2
split = "quick"
cascade = false
timeout_s = 120.0
[tuning]
enabled = false    # these tests count evaluations and scripted answers exactly
[report]
at_end = false
[llm]
mode = "openai"
base_url = "{url}"
models = {{"{model}" = 1.0}}
timeout_s = 1.0
max_retries = {retries}
backoff_base_s = 0.05
backoff_max_s = 1.0
supervisor_interval = {supervise}
{extra}
"""


@pytest.fixture
def server():
    with ScriptedServer() as srv:
        llm_scripts.install_defaults(srv)
        yield srv


def run(tmp_path, server, *, evals=8, islands=1, supervise=0, budget="", extra="",
        args=(), key=KEY, name="run", tournament=3, retries=6, validate_top=0):
    """`validate_top=0`: the best is the fittest on the training split (no validation choice,
    which these tests of the LLM path would spend most of their time on)."""
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(CONFIG.format(url=server.url, model=MODEL, evals=evals, islands=islands,
                                 supervise=supervise, budget=budget, extra=extra,
                                 tournament=tournament, retries=retries,
                                 validate_top=validate_top))
    out = tmp_path / name
    env = loopback_env({k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"})
    if key is not None:
        env["OPENAI_API_KEY"] = key
    proc = subprocess.run([sys.executable, "-m", "glia_evo.cli", "run", str(cfg), "--out",
                           str(out), "--quiet", *args], capture_output=True, text=True,
                          timeout=300, env=env)
    return proc, out


def candidates(out: Path):
    store = Store(out / "state.sqlite", create=False)
    try:
        return store.all(), store.meta()
    finally:
        store.close()


def events(out: Path, name: str) -> list[dict]:
    return [e for e in read_events(out / "events.jsonl") if e["event"] == name]


def assert_key_never_written(out: Path, proc) -> None:
    assert KEY not in proc.stdout and KEY not in proc.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path


def test_llm_search_improves_recovers_repairs_and_steers(tmp_path, server):
    full = llm_scripts.full_program(llm_scripts.HRA)
    server.script("researcher", [
        Status(429, retry_after=0.3),                       # retried after Retry-After
        lambda req: Reply(llm_scripts.child_answer(req)),   # a diff on the LLQ seed
        Status(500),
        Reply("I would hold requests back while memory is short. MALFORMED-ONCE"),
        Hang(3.0),                                          # the client times out, retries
        Reply(full),                                        # HRA as a full program
        Reply("<<<<<<< SEARCH\n    nothing like this\n=======\n    x = 1\n>>>>>>> REPLACE\n"
              "MALFORMED-TWICE"),
    ])

    def repair(req):
        first = req["messages"][-2]["content"]
        if "MALFORMED-TWICE" in first:
            return Reply("```python\nimport os\n\ndef route(queue, replicas, now, knobs):\n"
                         "    return []\n```")
        return Reply(llm_scripts.child_answer(req))
    server.default("researcher_repair", repair)

    proc, out = run(tmp_path, server, evals=14, supervise=4, validate_top=3)
    assert proc.returncode == 0, proc.stderr
    assert "evaluation budget of 14 reached" in proc.stdout and "LLM:" in proc.stdout
    cands, meta = candidates(out)

    # the search improved on its seed, with LLM children made from diffs and full programs
    seed = next(c for c in cands if c.operator == "seed")
    best = max(cands, key=lambda c: c.fitness)
    assert best.fitness > seed.fitness * 1.2 and best.operator == "llm"
    children = [c for c in cands if c.operator == "llm"]
    assert {c.extra["form"] for c in children} == {"diff", "full"}
    assert all(c.model == MODEL and c.extra["hypothesis"] and c.rationale for c in children)
    # best.py: the program the run chose (on validation, among the fittest on train), after
    # a header that names it
    import re
    text = (out / "best.py").read_text()
    chosen = re.match(r"# glia-evo: the run's best, (c\d+), chosen on the 'validation'", text)
    assert chosen, text.splitlines()[0]
    by_id = {c.id: c for c in cands}
    assert text.endswith("\n" + by_id[chosen.group(1)].source)
    assert meta["evaluations"] == 14 and len(cands) == 14

    # retries: 429 (after its Retry-After), 500 and the hung call were each tried again
    log = server.requests
    for i, r in enumerate(log):
        if r.get("status") in (429, 500) or r["action"] == "hang":
            again = next(q for q in log[i + 1:] if q["call"] == r["call"])
            wait = again["t"] - r["t"]
            assert wait >= {"status": 0.29 if r.get("status") == 429 else 0.025,
                            "hang": 0.99}[r["action"]], (r["action"], wait)
    retries = events(out, "llm_retry")
    assert any("429" in e["error"] for e in retries) and any("500" in e["error"] for e in retries)
    assert any("timeout" in e["error"] for e in retries)

    # one malformed answer repaired, one discarded after its repair failed too; both counted
    assert sum(c.extra.get("repaired", False) for c in children) == 1
    [discarded] = events(out, "discarded")
    assert "does not match" in discarded["errors"][0]
    assert "does not compile" in discarded["errors"][1]
    usage = meta["llm"]
    assert usage["discarded"] == 1 and usage["repaired"] == 1
    repairs = [r for r in log if r["repair"]]
    assert len(repairs) == 2 and all("could not be used" in r["messages"][-1]["content"]
                                     for r in repairs)

    # tokens: the run's counters are the sum of what the server reported, plus, for the call
    # the client gave up on (the hang), its estimated prompt and max_tokens (the server may
    # still be answering it)
    from glia_evo.llm.client import _estimate_prompt
    served = [r for r in log if r.get("usage")]
    abandoned = [r for r in log if r["action"] == "hang"]
    assert usage["calls"] == len(served) and abandoned
    assert usage["tokens"] == sum(sum(r["usage"]) for r in served) + sum(
        _estimate_prompt(r["messages"]) + r["body"]["max_tokens"] for r in abandoned)
    status = json.loads(subprocess.run([sys.executable, "-m", "glia_evo.cli", "status",
                                        str(out), "--json"], capture_output=True,
                                       text=True).stdout)
    assert status["llm"]["discarded"] == 1 and status["llm"]["tokens"] == usage["tokens"]

    # every Researcher prompt whose parent has an LLM Analyst summary shows that summary
    assert any(c.reasoning.startswith("ANALYST-SUMMARY-") for c in cands)
    assert_summaries_reach_children(cands, log)

    # the Supervisor's notes: in the run folder, and in later Researcher prompts. Not "every"
    # later prompt: a call prepared from a snapshot taken just before a review lands (and then
    # delayed by a retry) legitimately carries the older notes; test_llm_answers checks that a
    # snapshot's notes always reach its prompt.
    notes = (out / "supervisor_notes.md").read_text()
    assert notes.count("## Review ") >= 2 and "SUPERVISOR-NOTES-1" in notes
    reviews = [r for r in log if r["role"] == "supervisor"]
    assert "Leaderboard" in reviews[0]["messages"][1]["content"]
    researcher = [r for r in log if r["role"] == "researcher"]
    with_notes = [r for r in researcher if "SUPERVISOR-NOTES-" in r["messages"][1]["content"]]
    assert with_notes and with_notes[0]["t"] > reviews[0]["t"]
    import re
    for r in with_notes:       # only notes the Supervisor really wrote
        for tag in re.findall(r"SUPERVISOR-NOTES-\d+", r["messages"][1]["content"]):
            assert tag in notes
    assert usage["reviews"] >= 2

    assert_key_never_written(out, proc)
    assert all(r["authorization"] == f"Bearer {KEY}" for r in log)


def assert_summaries_reach_children(cands, log) -> int:
    """Every Researcher request whose parent has an LLM Analyst summary carries that summary
    (the Analyst starts when the result is processed, before the candidate can be selected, and
    a Researcher waits for a summary still being written). Returns how many such requests."""
    summarised = {c.id: c.reasoning for c in cands
                  if c.reasoning.startswith(f"ANALYST-SUMMARY-{c.id}")}
    seen = 0
    for r in log:
        if r["role"] != "researcher" or r["repair"]:
            continue
        parent = re.search(r"# Parent program (c\d+)", r["messages"][1]["content"]).group(1)
        if parent in summarised:
            assert f"reasoning about it:\n{summarised[parent]}\n" in r["messages"][1]["content"]
            seen += 1
    return seen


def test_analyst_summary_reaches_the_prompt_of_the_next_child(tmp_path, server):
    # Children that only add a no-op line tie with their parent, so each gets an LLM summary;
    # with tournament size 1 (uniform selection) children soon become parents themselves.
    def no_op(req):
        return Reply(llm_scripts.diff("def route(queue, replicas, now, knobs):",
                                      f"def route(queue, replicas, now, knobs):\n"
                                      f"    unused = {req['n']}", "a no-op"))
    server.default("researcher", no_op)
    proc, out = run(tmp_path, server, evals=10, tournament=1)
    assert proc.returncode == 0, proc.stderr
    cands, meta = candidates(out)
    summarised = [c for c in cands if c.reasoning.startswith("ANALYST-SUMMARY-")]
    assert len(summarised) == meta["llm"]["summaries"] >= 5
    assert all(c.extra["reasoning_by"] == MODEL for c in summarised)
    assert assert_summaries_reach_children(cands, server.requests) >= 1
    analyst_prompt = server.by_role("analyst")[0]["messages"][1]["content"]
    assert "```diff" in analyst_prompt and "unused =" in analyst_prompt


def test_token_budget_stops_the_run_and_resume_continues(tmp_path, server):
    proc, out = run(tmp_path, server, evals=40, budget="max_tokens = 5000")
    assert proc.returncode == 0, proc.stderr
    assert "token budget of 5000 reached" in proc.stdout
    _, meta = candidates(out)
    used = meta["llm"]["tokens"]
    assert used >= 5000 and meta["evaluations"] < 40
    # calls in flight are reserved at the mean cost of a call: the overshoot stays small
    per_call = max(sum(r["usage"]) for r in server.requests if r.get("usage"))
    assert used < 5000 + 2 * per_call
    assert [e["reason"] for e in events(out, "stop")] == ["token budget of 5000 reached"]
    before = meta["evaluations"]

    env = loopback_env(dict(os.environ, OPENAI_API_KEY=KEY))
    proc = subprocess.run([sys.executable, "-m", "glia_evo.cli", "resume", str(out),
                           "--max-tokens", str(used + 4000), "--quiet"], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    _, meta = candidates(out)
    assert meta["evaluations"] > before and meta["llm"]["tokens"] >= used + 4000
    assert "token budget" in proc.stdout
    assert_key_never_written(out, proc)


def test_cost_budget_and_mixed_mode(tmp_path, server):
    extra = (f'offline_fraction = 0.5\nanalyst_model = "cheap"\n'
             f'[llm.prices]\n"{MODEL}" = [1000.0, 4000.0]\n"cheap" = [1.0, 1.0]\n')
    proc, out = run(tmp_path, server, evals=40, budget="max_cost_usd = 6.0", extra=extra)
    assert proc.returncode == 0, proc.stderr
    assert "cost budget of $6 reached" in proc.stdout
    cands, meta = candidates(out)
    assert meta["llm"]["cost_usd"] >= 6.0 and meta["evaluations"] < 40
    ops = {c.operator for c in cands}
    assert "llm" in ops and ops - {"llm", "seed"}, ops      # offline proposals too
    expected = 0.0
    for r in server.requests:
        if r.get("usage"):
            p = [1000.0, 4000.0] if r["model"] == MODEL else [1.0, 1.0]
            expected += (r["usage"][0] * p[0] + r["usage"][1] * p[1]) / 1e6
    assert meta["llm"]["cost_usd"] == pytest.approx(expected)
    assert {r["model"] for r in server.by_role("analyst")} <= {"cheap"}


def test_refused_key_stops_the_run_with_one_line_and_no_leak(tmp_path, server):
    server.default("researcher", lambda req: Status(
        401, message=f"Incorrect API key provided: {KEY}. You can find your key at ..."))
    proc, out = run(tmp_path, server, evals=10)
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("glia-evo: error:")]
    assert len(errors) == 1 and "401" in errors[0] and "OPENAI_API_KEY" in errors[0]
    assert "Traceback" not in proc.stderr
    calls = [r["call"] for r in server.by_role("researcher")]
    assert calls and len(calls) == len(set(calls))               # no retries on a refusal
    assert_key_never_written(out, proc)


def test_without_key_a_local_server_is_called_without_one(tmp_path, server):
    proc, out = run(tmp_path, server, evals=3, key=None)
    assert proc.returncode == 0, proc.stderr
    assert "OPENAI_API_KEY is not set" in proc.stderr
    assert server.requests[0]["authorization"] == "Bearer not-needed"


def test_openai_without_base_url_needs_a_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    proc = subprocess.run([sys.executable, "-m", "glia_evo.cli", "run", "--llm", "openai",
                           "--model", "gpt-4.1", "--out", str(tmp_path / "x")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "OPENAI_API_KEY" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_cli_model_flag_takes_weights(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "glia_evo.cli", "run", "--llm", "openai",
                           "--model", "a=0", "--out", str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "weight of a must be > 0" in proc.stderr
    from glia_evo.cli import _models
    assert _models("gpt-4.1=0.7,llama3.1:8b") == {"gpt-4.1": 0.7, "llama3.1:8b": 1.0}
