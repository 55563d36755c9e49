"""A scripted OpenAI-compatible chat-completions server for the tests (stdlib only, loopback only).

    server = ScriptedServer().start()              # http://127.0.0.1:PORT/v1
    server.script("researcher", [Status(429, retry_after=0.2), Reply(PROGRAM)])
    server.default("analyst", lambda req: Reply("..."))
    ... point glia-evo (or the openai client) at server.url ...
    server.requests                                  # every request, with the action taken

It speaks the real wire format of `POST /v1/chat/completions` (an `id`, `object:
"chat.completion"`, `choices[0].message.content`, `finish_reason`, and `usage` with prompt,
completion and total tokens), so the real `openai` client is exercised. Each request is routed by
the agent role named in its system message (researcher / analyst / supervisor; a Researcher's
second request in one conversation, its repair, is the kind "researcher_repair"); a kind's
scripted actions are used first, in order (an action may be a function of the request record),
then its default. Actions: `Reply` (an answer), `Status` (an
HTTP error, optionally with Retry-After), `Hang` (answer nothing for a while: a client timeout),
`Drop` (close the connection without answering), `GoAway` (stop listening for a while: refused
connections, then come back on the same port).

With `Reply(text, tool_calls=[("simulate", {...})])` the answer is an assistant message with
`tool_calls` (ids `call_<request>_<i>`, `type: "function"`, `function: {name, arguments}` with
the arguments as a JSON string) and `finish_reason: "tool_calls"`, as OpenAI sends it; the
record's `tool_results` counts the `role: "tool"` messages (and text-protocol result messages)
its conversation holds. `ScriptedServer(tools=False)` is an endpoint without tool support: a
request with `tools` gets HTTP 400, like a llama.cpp server started without `--jinja`.

`ScriptedServer(slots=1)` answers one call at a time, like llama.cpp's server with one slot: the
others wait (queued) until the one being answered is done; `max_active` is the most requests
it was ever handling at once (queued ones included) and `max_serving` the most answered at once.
With `props=True` it answers `GET /props` with `total_slots` and
`default_generation_settings.n_ctx` (`context`), as llama.cpp's server does.
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Reply:
    text: str
    usage: bool = True                   # False: a server that sends no `usage`
    prompt_tokens: int | None = None     # default: characters / 4
    completion_tokens: int | None = None
    delay: float = 0.0                   # think this long before answering
    finish_reason: str = "stop"          # "length": cut off at max_tokens (as real servers say)
    # function calls in the OpenAI wire format: (name, arguments) pairs, arguments a dict (sent
    # as JSON text) or a str sent verbatim (e.g. malformed JSON); finish_reason "tool_calls"
    tool_calls: list | None = None


@dataclass
class Status:
    code: int
    retry_after: float | None = None     # seconds, sent as Retry-After
    message: str = "scripted error"


@dataclass
class Hang:
    seconds: float                       # hold the request this long, then drop it


@dataclass
class Drop:
    pass


@dataclass
class GoAway:
    seconds: float                       # stop listening this long (this request is dropped)


ROLES = ("researcher", "analyst", "supervisor")
REPAIR_START = "Your answer could not be used"     # glia_evo/prompts/researcher_repair.md
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def loopback_env(env: dict) -> dict:
    """`env` without proxy settings, so a client talks to 127.0.0.1 directly, never via a proxy."""
    out = {k: v for k, v in env.items() if k not in PROXY_VARS}
    out["NO_PROXY"] = out["no_proxy"] = "127.0.0.1,localhost"
    return out


def role_of(messages: list[dict]) -> str:
    system = next((m.get("content", "") for m in messages if m.get("role") == "system"), "")
    for role in ROLES:
        if f"the {role}" in system.lower()[:200]:
            return role
    return "unknown"


def user_text(messages: list[dict]) -> str:
    return "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")


def parent_source(messages: list[dict]) -> str:
    """The parent program in a Researcher prompt (the first ```python block after its heading)."""
    text = messages[1]["content"] if len(messages) > 1 else ""
    m = re.search(r"# Parent program.*?```python\n(.*?)\n```", text, re.S)
    return m.group(1) + "\n" if m else ""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "scripted-openai/1.0"

    def log_message(self, *args):       # quiet
        pass

    def do_GET(self):
        owner: ScriptedServer = self.server.owner
        if self.path.rstrip("/") == "/props" and owner.props:      # as llama.cpp's server
            self._json(200, {"total_slots": owner.slot_count,
                             "default_generation_settings": {"n_ctx": owner.context}})
        elif self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self):
        owner: ScriptedServer = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._json(400, {"error": {"message": "invalid JSON"}})
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, {"error": {"message": f"unknown path {self.path}"}})
            return
        record = owner._record(self.path, dict(self.headers), body)
        if body.get("tools") and not owner.tools:
            record["action"], record["status"] = "no_tools", 400
            self._json(400, {"error": {"message": "tools are not supported by this server",
                                       "type": "invalid_request_error", "code": 400}})
            return
        owner._enter()
        self._held = True
        try:
            self._answer(owner, record, body)
        finally:
            self._release()

    def _release(self):
        """The request stops counting as active once its answer starts going out: a client that
        waits for the answer before its next call must never be counted twice."""
        if getattr(self, "_held", False):
            self._held = False
            self.server.owner._leave()

    def _answer(self, owner, record, body):
        if owner._slots is not None:
            with owner._slots:
                owner._serving(+1)
                try:
                    self._act(owner, record, body)
                finally:
                    owner._serving(-1)
        else:
            self._act(owner, record, body)

    def _act(self, owner, record, body):
        record["started"] = time.time()
        action = owner._action(record)
        while callable(action):
            action = action(record)
        record["action"] = type(action).__name__.lower()
        if isinstance(action, Status):
            record["status"] = action.code
            headers = {}
            if action.retry_after is not None:
                headers["Retry-After"] = f"{action.retry_after:g}"
            self._json(action.code, {"error": {"message": action.message, "type": "scripted",
                                               "code": action.code}}, headers)
        elif isinstance(action, Hang):
            time.sleep(action.seconds)
            self.close_connection = True
        elif isinstance(action, Drop):
            self.close_connection = True
            self._abort()
        elif isinstance(action, GoAway):
            self._abort()
            owner._go_away(action.seconds)
        else:
            if action.delay:
                time.sleep(action.delay)
            record["status"] = 200
            self._json(200, owner._completion(body, action, record))

    def _abort(self):
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _json(self, code: int, obj: dict, headers: dict | None = None):
        data = json.dumps(obj).encode()
        self._release()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


class ScriptedServer:
    def __init__(self, port: int = 0, slots: int | None = None, tools: bool = True,
                 props: bool = False, context: int = 4096):
        self.port = port
        self.tools = tools
        # props: answer GET /props with the slot count and context size, as llama.cpp does
        self.props, self.slot_count, self.context = props, slots, context
        self._slots = threading.Semaphore(slots) if slots else None
        self.active = self.max_active = 0
        self.serving = self.max_serving = 0
        self.requests: list[dict] = []
        self.outages: list[tuple[float, float]] = []
        kinds = (*ROLES, "researcher_repair", "unknown")
        self._scripts: dict[str, list] = {k: [] for k in kinds}
        self._defaults: dict[str, Callable[[dict], object]] = {
            k: (lambda req: Reply("ok")) for k in kinds}
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- scripting ---------------------------------------------------------------------------
    def script(self, role: str, actions: list) -> "ScriptedServer":
        with self._lock:
            self._scripts[role].extend(actions)
        return self

    def default(self, role: str, fn: Callable[[dict], object]) -> "ScriptedServer":
        self._defaults[role] = fn
        return self

    def by_role(self, role: str) -> list[dict]:
        return [r for r in self.requests if r["role"] == role]

    # --- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "ScriptedServer":
        self._httpd = _Server(("127.0.0.1", self.port), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _go_away(self, seconds: float) -> None:
        def outage():
            began = time.time()
            self.stop()
            time.sleep(seconds)
            self.start()
            self.outages.append((began, time.time()))
        threading.Thread(target=outage, daemon=True).start()

    # --- request handling ----------------------------------------------------------------------
    def _enter(self) -> None:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)

    def _leave(self) -> None:
        with self._lock:
            self.active -= 1

    def _serving(self, step: int) -> None:
        with self._lock:
            self.serving += step
            self.max_serving = max(self.max_serving, self.serving)

    def _record(self, path: str, headers: dict, body: dict) -> dict:
        messages = body.get("messages") or []
        with self._lock:
            role = role_of(messages)
            record = {"n": len(self.requests), "t": time.time(), "path": path,
                      "model": body.get("model"), "role": role,
                      "repair": role == "researcher" and len(messages) > 2 and str(
                          messages[-1].get("content") or "").startswith(REPAIR_START),
                      "tool_results": sum(1 for m in messages if m.get("role") == "tool") + sum(
                          str(m.get("content") or "").count("\nRESULT ") for m in messages
                          if m.get("role") == "user"),
                      "messages": messages, "body": body,
                      "call": headers.get("X-Glia-Call") or headers.get("x-glia-call"),
                      "authorization": headers.get("Authorization") or headers.get(
                          "authorization")}
            self.requests.append(record)
        return record

    def _action(self, record: dict):
        """The next scripted action of the request's kind (a Researcher's repair request is the
        kind "researcher_repair"), else the kind's default (a function of the request)."""
        kind = "researcher_repair" if record["repair"] else record["role"]
        with self._lock:
            queue = self._scripts[kind]
            if queue:
                return queue.pop(0)
        return self._defaults[kind](record)

    def _completion(self, body: dict, reply: Reply, record: dict) -> dict:
        text = reply.text
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4
        completion = reply.completion_tokens if reply.completion_tokens is not None \
            else (len(text) + sum(len(str(a)) for _, a in reply.tool_calls or ())) // 4 + 1
        record["usage"] = (prompt, completion) if reply.usage else None
        out = {"id": f"chatcmpl-{record['n']}", "object": "chat.completion",
               "created": int(time.time()), "model": body.get("model", "scripted"),
               "system_fingerprint": "fp_scripted",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                            "logprobs": None, "finish_reason": reply.finish_reason}]}
        if reply.tool_calls:
            msg = out["choices"][0]["message"]
            msg["content"] = text or None
            msg["tool_calls"] = [
                {"id": f"call_{record['n']}_{i}", "type": "function",
                 "function": {"name": name, "arguments": args if isinstance(args, str)
                              else json.dumps(args)}}
                for i, (name, args) in enumerate(reply.tool_calls)]
            out["choices"][0]["finish_reason"] = "tool_calls"
        if reply.usage:
            out["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion,
                            "total_tokens": prompt + completion}
        return out
