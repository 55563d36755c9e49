"""A chat client for any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp server).

Built on the `openai` package with the package's own retries switched off (`max_retries=0`), so
the retry policy is ours and testable: retry on 408 / 409 / 429 / 5xx, timeouts and connection
errors, waiting `backoff_base_s * 2**attempt` with jitter (a factor in [0.5, 1]) or what the
server's `Retry-After` / `retry-after-ms` header asks, capped at `backoff_max_s`. 401 / 403 / 404
are configuration mistakes (key, model name, URL): `LLMFatal`, no retry. Other 4xx (a prompt too
long, say) fail the one call: `LLMError`.

The API key is read from the environment variable named in the configuration and held only by
the openai client. Every message this module raises has the key scrubbed out of it.
"""
from __future__ import annotations

import email.utils
import os
import random
import threading
import time
from dataclasses import dataclass, field

from ..hygiene import clean, register_secret

RETRY_STATUSES = (408, 409, 429)
FATAL_STATUSES = (401, 403, 404)
NO_KEY = "not-needed"       # sent when the key variable is unset (local servers ignore the key)


class LLMError(Exception):
    """One call failed for a reason that retrying will not fix (e.g. 400 Bad Request)."""

    def __init__(self, message: str, usage: list | None = None):
        super().__init__(message)
        self.usage = usage or []


class LLMUnavailable(LLMError):
    """The endpoint kept failing (429 / 5xx / timeouts / connection errors) through all retries."""


class LLMFatal(LLMError):
    """The endpoint refused us (401 / 403 / 404): a wrong key, model name or URL. Stops the run."""


class LLMCancelled(LLMError):
    """The run is stopping; the call was given up."""


@dataclass
class ChatResult:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    seconds: float
    attempts: int = 1
    retries: list = field(default_factory=list)     # why each failed attempt failed
    estimated: bool = False                           # the server sent no `usage`
    abandoned_tokens: int = 0         # estimated tokens of attempts that timed out (included)
    finish_reason: str = ""                           # "stop", "length" (cut off at max_tokens)
    # function calls the model asked for (chat API `tools`): {"id", "name", "arguments"}, the
    # arguments as the raw JSON text the model wrote (hostile: parse, then clean)
    tool_calls: list = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def usage(self, role: str) -> dict:
        return {"role": role, "model": self.model, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost_usd": self.cost_usd,
                "retries": len(self.retries)}


def api_key_from_env(name: str) -> str | None:
    """The key in $name; registered as a secret, so `glia_evo.hygiene.clean` redacts it from
    everything a candidate or a model writes."""
    value = os.environ.get(name, "").strip()
    register_secret(value)
    return value or None


def price(prices: dict, model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """Cost in USD from a table model -> [input, output] USD per million tokens (0 if absent)."""
    p = prices.get(model)
    if not p:
        return 0.0
    return (prompt_tokens * p[0] + completion_tokens * p[1]) / 1e6


def retry_after_s(headers) -> float | None:
    """The wait a response asks for: `retry-after-ms`, or `Retry-After` in seconds or as a date."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000)
    except (TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


class LLMClient:
    """`chat(messages, model)` -> ChatResult, with retries; thread-safe (one shared client)."""

    def __init__(self, cfg, api_key: str | None, *, seed: int = 0, cancel: threading.Event | None
                 = None, on_retry=None, max_in_flight: int | None = None):
        import openai

        self.cfg = cfg
        self._key = api_key or ""
        register_secret(self._key)
        self._openai = openai
        # No retries inside the openai client: ours honour the config and the run's cancel event.
        self._client = openai.OpenAI(base_url=cfg.base_url or None, api_key=api_key or NO_KEY,
                                     max_retries=0, timeout=cfg.timeout_s)
        self._jitter = random.Random(seed)
        self._lock = threading.Lock()
        self.cancel = cancel or threading.Event()
        self.on_retry = on_retry
        # At most this many calls at the endpoint at once (all agents together); the others wait
        # here, before their timeout starts, instead of queueing at a server that answers one
        # call at a time and timing out there while it still works on them.
        self._slots = _Gate(max_in_flight) if max_in_flight else None

    def limit_in_flight(self, n: int | None) -> None:
        """From now on at most `n` calls at the endpoint at once (None: no limit); set before
        the first call."""
        self._slots = _Gate(n) if n else None

    def __repr__(self) -> str:
        return f"LLMClient(base_url={self.cfg.base_url or '(openai default)'!r})"

    def scrub(self, text: str) -> str:
        """`text` with the API key replaced by ***."""
        text = str(text)
        if self._key and len(self._key) >= 4:
            text = text.replace(self._key, "***")
        return text

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:   # noqa: BLE001 - closing is best effort
            pass

    def _backoff(self, attempt: int) -> float:
        with self._lock:
            jitter = 0.5 + 0.5 * self._jitter.random()
        return min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * (2 ** attempt)) * jitter

    def chat(self, messages: list[dict], model: str, *, max_tokens: int | None = None,
             temperature: float | None = None, call_id: str | None = None,
             priority: int = 0, on_admit=None, give_up: threading.Event | None = None,
             tools: list | None = None, tool_choice: str | None = None) -> ChatResult:
        """One chat completion. `call_id` is sent as the X-Glia-Call header, the same on every
        retry of this call (for the server's logs; OpenAI-compatible servers ignore it). With
        `max_in_flight`, a call waits for a free slot; a `priority` 1 call (the Analyst's) only
        takes one when no priority 0 call (Researcher, Supervisor) is waiting. `on_admit()` is
        called when the call gets its slot; `give_up` set while it waits abandons it.
        `tools` (OpenAI function schemas) and `tool_choice` are sent as given; the calls the
        model makes come back in `ChatResult.tool_calls`."""
        cfg = self.cfg
        kwargs = {}
        if call_id:
            kwargs["extra_headers"] = {"X-Glia-Call": call_id}
        temperature = cfg.temperature if temperature is None else temperature
        if temperature >= 0:
            kwargs["temperature"] = temperature
        max_tokens = cfg.max_output_tokens if max_tokens is None else max_tokens
        if max_tokens:
            kwargs["max_tokens"] = max_tokens
        if tools:
            kwargs["tools"] = tools
            if tool_choice:
                kwargs["tool_choice"] = tool_choice
        if self._slots is None:
            if on_admit:
                on_admit()
            return self._chat(messages, model, kwargs)
        if not self._slots.acquire(priority, self.cancel, give_up):
            raise LLMCancelled("given up while waiting for a free endpoint slot")
        if on_admit:          # the call got a slot: it is being answered, not queued
            on_admit()
        try:
            return self._chat(messages, model, kwargs)
        finally:
            self._slots.release()

    def _chat(self, messages, model, kwargs) -> ChatResult:
        cfg = self.cfg
        openai = self._openai
        retries: list[str] = []
        abandoned = [0, 0]          # (prompt, completion) tokens of attempts that timed out
        started = time.monotonic()
        for attempt in range(cfg.max_retries + 1):
            if self.cancel.is_set():
                raise LLMCancelled("the run is stopping")
            wait = None
            try:
                resp = self._client.chat.completions.create(model=model, messages=messages,
                                                            **kwargs)
            except openai.APIStatusError as exc:
                status = exc.status_code
                why = f"HTTP {status}: {self._detail(exc)}"
                if status in FATAL_STATUSES:
                    raise LLMFatal(self.scrub(f"the endpoint refused the request ({why}); check "
                                              f"llm.base_url, the model name and the key in "
                                              f"${cfg.api_key_env}")) from None
                if status not in RETRY_STATUSES and status < 500:
                    raise LLMError(self.scrub(why)) from None
                wait = retry_after_s(getattr(exc.response, "headers", None))
            except openai.APITimeoutError:
                why = f"timeout after {cfg.timeout_s:g} s"
                # the server may still be working on it (most do not stop when the client
                # goes): count what it may use -- the prompt and up to max_tokens -- so
                # token budgets bind on the work the endpoint really does
                abandoned[0] += _estimate_prompt(messages)
                abandoned[1] += int(kwargs.get("max_tokens") or 0)
            except openai.APIConnectionError as exc:
                why = f"connection error: {self._detail(exc)}"
            except openai.OpenAIError as exc:       # e.g. a body that is not a chat completion
                raise LLMError(self.scrub(f"unusable response: {self._detail(exc)}")) from None
            else:
                result = self._result(resp, model, messages, started, attempt + 1, retries)
                return self._with_abandoned(result, abandoned) if any(abandoned) else result
            retries.append(self.scrub(why))
            if attempt == cfg.max_retries:
                break
            delay = min(cfg.backoff_max_s, wait) if wait is not None else self._backoff(attempt)
            if self.on_retry:
                self.on_retry(model, attempt + 1, retries[-1], delay)
            if self.cancel.wait(delay):
                raise LLMCancelled("the run is stopping")
        lost = ([self._with_abandoned(ChatResult("", model, 0, 0, 0.0, time.monotonic() - started,
                                                 cfg.max_retries + 1, list(retries)), abandoned)]
                if any(abandoned) else [])
        raise LLMUnavailable(f"{model}: no answer after {cfg.max_retries + 1} attempts (last: "
                             f"{retries[-1]})", usage=lost)

    def _with_abandoned(self, result: ChatResult, abandoned: list[int]) -> ChatResult:
        """`result` with the estimated tokens (and cost) of timed-out attempts added."""
        prompt, completion = abandoned
        result.prompt_tokens += prompt
        result.completion_tokens += completion
        result.abandoned_tokens = prompt + completion
        result.cost_usd += price(self.cfg.prices, result.model, prompt, completion)
        result.estimated = True
        return result

    def server_props(self) -> dict:
        """What a llama.cpp-style server says about itself (`GET /props`): `slots` (calls it
        answers at once) and `context` (tokens per slot), each None when it does not say.
        Best effort, a short timeout; never raises."""
        out = {"slots": None, "context": None}
        base = (self.cfg.base_url or "").rstrip("/")
        if not base:
            return out
        root = base[:-3] if base.endswith("/v1") else base
        if not root.startswith(("http://", "https://")):
            return out
        try:
            import json
            import urllib.request
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(f"{root}/props", timeout=3.0) as resp:
                data = json.loads(resp.read(1 << 20))
        except Exception:   # noqa: BLE001 - a server without /props, or none at all
            return out
        if not isinstance(data, dict):
            return out
        slots = data.get("total_slots")
        settings = data.get("default_generation_settings")
        ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
        if type(slots) is int and 1 <= slots <= 1024:
            out["slots"] = slots
        if type(ctx) is int and 64 <= ctx <= 10_000_000:
            out["context"] = ctx
        return out

    def _detail(self, exc) -> str:
        msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        cause = exc.__cause__ or exc.__context__
        if cause is not None and str(cause) and str(cause) not in msg:
            msg = f"{msg.rstrip('.')} ({type(cause).__name__}: {cause})"
        msg = " ".join(str(msg).split())
        return self.scrub(msg[:300])

    def _result(self, resp, model, messages, started, attempts, retries) -> ChatResult:
        text = finish = ""
        try:
            text = resp.choices[0].message.content or ""
        except (AttributeError, IndexError, TypeError):
            text = ""
        try:
            finish = resp.choices[0].finish_reason or ""
        except (AttributeError, IndexError, TypeError):
            finish = ""
        finish = clean(str(finish), None)[:40] if finish else ""
        calls = _tool_calls(resp)
        if not isinstance(text, str):
            text = ""
        # hostile text: no terminal escapes, no secret, wherever it goes next (prompts, state,
        # events, MLflow, file headers); newlines and tabs stay (it may hold a program)
        text = clean(self.scrub(text.replace("\r\n", "\n")), None, multiline=True)
        usage = getattr(resp, "usage", None)
        estimated = usage is None or getattr(usage, "prompt_tokens", None) is None
        if estimated:      # ~4 characters per token, so budgets still bind
            prompt = _estimate_prompt(messages)
            completion = (len(text) + sum(len(c["arguments"]) for c in calls)) // 4 + 1
        else:
            prompt = int(usage.prompt_tokens or 0)
            completion = int(getattr(usage, "completion_tokens", 0) or 0)
        used = getattr(resp, "model", None) or model
        name = model if model in self.cfg.prices or used not in self.cfg.prices else used
        return ChatResult(text=text, model=model, prompt_tokens=prompt,
                          completion_tokens=completion,
                          cost_usd=price(self.cfg.prices, name, prompt, completion),
                          seconds=time.monotonic() - started, attempts=attempts,
                          retries=list(retries), estimated=estimated, finish_reason=finish,
                          tool_calls=calls)


def _estimate_prompt(messages: list[dict]) -> int:
    """A prompt's tokens at ~4 characters per token (for a server that sends no usage)."""
    return sum(len(str(m.get("content") or "")) + len(str(m.get("tool_calls") or ""))
               for m in messages) // 4 + 1


MAX_TOOL_CALLS = 16
MAX_TOOL_ARGUMENTS = 200_000


def _tool_calls(resp) -> list[dict]:
    """`choices[0].message.tool_calls` as plain dicts; names and ids cleaned and bounded, the
    arguments kept as the model's raw JSON text (bounded; secrets redacted)."""
    try:
        raw = resp.choices[0].message.tool_calls or []
    except (AttributeError, IndexError, TypeError):
        return []
    out = []
    for i, tc in enumerate(list(raw)[:MAX_TOOL_CALLS]):
        fn = getattr(tc, "function", None)
        name = getattr(fn, "name", None)
        args = getattr(fn, "arguments", None)
        cid = getattr(tc, "id", None)
        out.append({"id": clean(str(cid), 64) if cid else f"call_{i}",
                    "name": clean(str(name), 64) if name is not None else "",
                    "arguments": (redact_text(args)[:MAX_TOOL_ARGUMENTS]
                                  if isinstance(args, str) else "")})
    return out


def redact_text(text: str) -> str:
    from ..hygiene import redact
    return redact(text)


class _Gate:
    """At most `n` holders; waiting priority-0 callers go before priority-1 ones."""

    def __init__(self, n: int):
        self.free = n
        self.waiting = [0, 0]
        self.cond = threading.Condition()

    def acquire(self, priority: int, cancel: threading.Event,
                give_up: threading.Event | None = None) -> bool:
        priority = 1 if priority else 0
        with self.cond:
            self.waiting[priority] += 1
            try:
                while not (self.free > 0 and (priority == 0 or not self.waiting[0])):
                    if cancel.is_set() or (give_up is not None and give_up.is_set()):
                        return False
                    self.cond.wait(0.2)
                self.free -= 1
                return True
            finally:
                self.waiting[priority] -= 1

    def release(self) -> None:
        with self.cond:
            self.free += 1
            self.cond.notify_all()


def pick_model(weights: dict[str, float], rng: random.Random) -> str:
    names = list(weights)
    if len(names) == 1:
        return names[0]
    return rng.choices(names, weights=[weights[n] for n in names])[0]
