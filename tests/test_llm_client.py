"""The LLM client against the scripted OpenAI-compatible server (real `openai` package, loopback):
retries with back-off on 429 (Retry-After) / 500 / timeouts / dropped and refused connections,
fatal refusals, usage and cost, and the API key never in an error."""
import random
import time

import pytest

from glia_evo.config import LLMConfig
from glia_evo.llm import (LLMClient, LLMError, LLMFatal, LLMUnavailable, pick_model, price)
from glia_evo.llm.client import retry_after_s
from llm_server import PROXY_VARS, Drop, GoAway, Hang, Reply, ScriptedServer, Status

KEY = "sk-SENTINEL-7f3a9c-never-leak"
MSGS = [{"role": "user", "content": "hello there"}]


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server():
    with ScriptedServer() as srv:
        yield srv


def client_for(server, **kw) -> LLMClient:
    opts = dict(mode="openai", base_url=server.url, models={"m": 1.0}, timeout_s=0.5,
                max_retries=4, backoff_base_s=0.05, backoff_max_s=2.0,
                prices={"m": [2.0, 8.0]})
    opts.update(kw)
    return LLMClient(LLMConfig(**opts), KEY)


def test_answer_usage_and_cost(server):
    server.script("unknown", [Reply("the answer", prompt_tokens=1000, completion_tokens=500)])
    r = client_for(server).chat(MSGS, "m")
    assert r.text == "the answer" and r.attempts == 1 and not r.retries
    assert (r.prompt_tokens, r.completion_tokens, r.tokens) == (1000, 500, 1500)
    assert r.cost_usd == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6)
    req = server.requests[0]
    assert req["authorization"] == f"Bearer {KEY}"            # the key is sent, as a header
    assert req["model"] == "m" and req["messages"] == MSGS
    assert req["body"]["max_tokens"] == 4096 and req["body"]["temperature"] == 0.8


def test_missing_usage_is_estimated_so_budgets_still_bind(server):
    server.script("unknown", [Reply("x" * 400, usage=False)])
    r = client_for(server).chat(MSGS, "m")
    assert r.estimated and r.completion_tokens == 101 and r.prompt_tokens >= 1


def test_retries_429_with_retry_after_500_hang_and_drop(server):
    server.script("unknown", [Status(429, retry_after=0.4), Status(503), Hang(1.5), Drop(),
                              Reply("finally")])
    retries = []
    c = client_for(server, max_retries=5)
    c.on_retry = lambda model, attempt, why, delay: retries.append((attempt, why, delay))
    r = c.chat(MSGS, "m")
    assert r.text == "finally" and r.attempts == 5
    actions = [q["action"] for q in server.requests]
    assert actions == ["status", "status", "hang", "drop", "reply"]
    t = [q["t"] for q in server.requests]
    assert t[1] - t[0] >= 0.39                       # Retry-After honoured
    assert [w for _, _, w in retries][0] == pytest.approx(0.4)
    assert t[3] - t[2] >= 0.5                        # the hung call timed out, then a retry
    assert "429" in r.retries[0] and "503" in r.retries[1] and "timeout" in r.retries[2]
    assert "connection" in r.retries[3]
    # back-off without Retry-After: base * 2**attempt with jitter in [0.5, 1]
    assert 0.05 <= retries[1][2] <= 0.1 + 1e-9


def test_retry_after_is_capped_by_backoff_max(server):
    server.script("unknown", [Status(429, retry_after=30), Reply("ok")])
    started = time.monotonic()
    r = client_for(server, backoff_max_s=0.2).chat(MSGS, "m")
    assert r.text == "ok" and time.monotonic() - started < 5


def test_endpoint_going_away_and_coming_back(server):
    server.script("unknown", [GoAway(0.6)])
    server.default("unknown", lambda req: Reply("back"))
    c = client_for(server, max_retries=8, backoff_base_s=0.05, backoff_max_s=0.4)
    r = c.chat(MSGS, "m")
    assert r.text == "back"
    assert any("refused" in why for why in r.retries)          # it really was gone
    assert server.outages and server.requests[-1]["t"] >= server.outages[0][1]


def test_retries_exhausted_is_unavailable(server):
    server.default("unknown", lambda req: Status(500))
    with pytest.raises(LLMUnavailable, match="no answer after 3 attempts"):
        client_for(server, max_retries=2).chat(MSGS, "m")
    assert len(server.requests) == 3


@pytest.mark.parametrize("code", [401, 403, 404])
def test_refusals_are_fatal_and_never_show_the_key(server, code):
    server.script("unknown", [Status(code, message=f"Incorrect API key provided: {KEY}")])
    with pytest.raises(LLMFatal) as info:
        client_for(server).chat(MSGS, "m")
    assert len(server.requests) == 1                 # no retry
    assert KEY not in str(info.value) and str(code) in str(info.value)
    assert "***" in str(info.value)


def test_other_client_errors_fail_the_call_without_retry(server):
    server.script("unknown", [Status(400, message="context length exceeded")])
    with pytest.raises(LLMError, match="context length") as info:
        client_for(server).chat(MSGS, "m")
    assert not isinstance(info.value, (LLMFatal, LLMUnavailable))
    assert len(server.requests) == 1


def test_cancel_stops_retrying(server):
    server.default("unknown", lambda req: Status(500))
    c = client_for(server, max_retries=50, backoff_base_s=0.2)
    c.cancel.set()
    with pytest.raises(LLMError, match="stopping"):
        c.chat(MSGS, "m")


def test_retry_after_header_forms():
    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None


def test_model_weights_and_prices():
    rng = random.Random(1)
    picks = [pick_model({"big": 3.0, "small": 1.0}, rng) for _ in range(4000)]
    assert 0.72 < picks.count("big") / len(picks) < 0.78
    assert pick_model({"only": 1.0}, rng) == "only"
    assert price({"a": [1.0, 4.0]}, "a", 2_000_000, 500_000) == pytest.approx(4.0)
    assert price({}, "a", 10, 10) == 0.0


def test_a_call_abandoned_after_a_timeout_is_still_counted(server):
    """The server may go on answering a call the client gave up on: its prompt and up to
    max_tokens are counted (estimated), on the answer that came later or on the failure."""
    server.script("unknown", [Hang(1.5), Reply("late but here", prompt_tokens=10,
                                               completion_tokens=5)])
    r = client_for(server, max_output_tokens=300).chat(MSGS, "m")
    assert r.text == "late but here" and r.attempts == 2
    assert r.estimated and r.abandoned_tokens == (len("hello there") // 4 + 1) + 300
    assert r.tokens == 15 + r.abandoned_tokens
    assert r.cost_usd == pytest.approx(((10 + 3) * 2.0 + (5 + 300) * 8.0) / 1e6)
    server.default("unknown", lambda req: Hang(1.5))
    with pytest.raises(LLMUnavailable) as info:
        client_for(server, max_retries=1, max_output_tokens=100).chat(MSGS, "m")
    [lost] = info.value.usage
    assert lost.text == "" and lost.estimated and lost.tokens == lost.abandoned_tokens == 2 * 103


def test_a_llama_cpp_server_says_how_many_slots_and_how_much_context_it_has():
    with ScriptedServer(slots=3, props=True, context=2048) as srv:
        assert client_for(srv).server_props() == {"slots": 3, "context": 2048}
    with ScriptedServer() as srv:                       # no /props: nothing is assumed
        assert client_for(srv).server_props() == {"slots": None, "context": None}
    assert LLMClient(LLMConfig(mode="openai", base_url="http://127.0.0.1:9/v1",
                               models={"m": 1.0}), None).server_props() == {
        "slots": None, "context": None}
