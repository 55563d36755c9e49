"""How a model calls the experiment tools: OpenAI function calling, or a text protocol.

Function calling (the chat API's `tools`): `TOOL_SCHEMAS` are sent with the request; the answer's
`message.tool_calls` (id, function name, JSON arguments) are run and answered with one
`{"role": "tool", "tool_call_id": ..., "content": ...}` message each, after the assistant message
that holds the calls (`assistant_message`), as the OpenAI wire format asks.

The text protocol (for endpoints without tool support, e.g. a llama.cpp server started without
`--jinja`): the model writes lines

    EXPERIMENT: {"tool": "simulate", "args": {"program": "parent", "scenario": "glia_short#101"}}

and gets the answers in the next user message, one `RESULT n (tool):` line each
(`text_results`). A line that is not valid JSON, or names no tool, is answered with an error.
"""
from __future__ import annotations

import json
import re

from ..hygiene import clean, clean_tree

EXPERIMENT_RE = re.compile(r"^[ \t>*`_-]*EXPERIMENT[ \t*_`]*:[ \t]*(.*)$", re.M | re.I)
RESULTS_HEADER = "EXPERIMENT RESULTS"
MAX_CALLS_PER_MESSAGE = 8
MAX_ARGUMENTS = 120_000

_PROGRAM = {"type": "string", "description": "\"parent\", a program id such as c000012, or a "
                                             "complete program's source text"}
_SCENARIO = {"type": "string", "description": "an instance of the search, e.g. glia_short#101 "
                                              "(default: the first)"}
_OVERRIDES = {"type": "object", "description": "optional: rate_scale (number), replicas "
                                               "(integer), kv_blocks (integer), window "
                                               "([start_s, end_s] of the trace)",
              "properties": {"rate_scale": {"type": "number"}, "replicas": {"type": "integer"},
                             "kv_blocks": {"type": "integer"},
                             "window": {"type": "array", "items": {"type": "number"}}}}


def _fn(name: str, description: str, properties: dict, required=()) -> dict:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties,
                       "required": list(required)}}}


TOOL_SCHEMAS = [
    _fn("simulate", "Simulate a program on one instance (in the sandbox) with optional "
                    "overrides; returns its metrics, diagnostics and a run_id for request_log.",
        {"program": _PROGRAM, "scenario": _SCENARIO, "overrides": _OVERRIDES}),
    _fn("request_log", "Query the per-request records of a simulate run: kind slowest / fastest "
                       "(n rows, sort_by a column), histogram (column, bins), replica (one "
                       "replica's timeline of load and free KV blocks), summary.",
        {"run_id": {"type": "string"},
         "query": {"type": "object", "properties": {
             "kind": {"type": "string",
                      "enum": ["slowest", "fastest", "histogram", "replica", "summary"]},
             "n": {"type": "integer"}, "column": {"type": "string"},
             "sort_by": {"type": "string"}, "bins": {"type": "integer"},
             "replica": {"type": "integer"}}}},
        ["run_id"]),
    _fn("compare", "Simulate two programs on the same instance; returns the per-metric "
                   "differences (b - a).",
        {"a": _PROGRAM, "b": _PROGRAM, "scenario": _SCENARIO, "overrides": _OVERRIDES}, ["b"]),
    _fn("workload_stats", "The workload of an instance: prompt and output length "
                          "distributions, arrival rate and burstiness.",
        {"scenario": _SCENARIO, "overrides": _OVERRIDES}),
]


class ToolCall:
    """One call the model asked for: `id` (native calls), `name`, `arguments` (raw JSON text or
    an already parsed object), `error` when the call itself is malformed."""

    def __init__(self, name, arguments, id: str = "", error: str = ""):
        self.name, self.arguments, self.id, self.error = name, arguments, id, error

    def __repr__(self) -> str:
        return f"ToolCall({self.name!r}, id={self.id!r}, error={self.error!r})"


def native_calls(tool_calls) -> list[ToolCall]:
    """The client's `ChatResult.tool_calls` ({id, name, arguments}) as ToolCalls."""
    out = []
    for i, tc in enumerate((tool_calls or [])[:MAX_CALLS_PER_MESSAGE]):
        args = tc.get("arguments")
        err = ""
        if isinstance(args, str) and len(args) > MAX_ARGUMENTS:
            args, err = "{}", f"the arguments are longer than {MAX_ARGUMENTS} characters"
        out.append(ToolCall(tc.get("name"), args if args is not None else "{}",
                            id=str(tc.get("id") or f"call_{i}"), error=err))
    return out


def assistant_message(text: str, tool_calls) -> dict:
    """The assistant message that carried `tool_calls`, to put back into the conversation."""
    return {"role": "assistant", "content": text or None, "tool_calls": [
        {"id": tc.get("id") or f"call_{i}", "type": "function",
         "function": {"name": clean(tc.get("name"), 64),
                      "arguments": clean(tc.get("arguments") if isinstance(
                          tc.get("arguments"), str) else json.dumps(tc.get("arguments")),
                          MAX_ARGUMENTS, multiline=True)}}
        for i, tc in enumerate((tool_calls or [])[:MAX_CALLS_PER_MESSAGE])]}


def tool_message(call: ToolCall, content: str) -> dict:
    return {"role": "tool", "tool_call_id": call.id, "content": content}


def text_calls(text: str) -> list[ToolCall]:
    """The EXPERIMENT: lines of an answer (the text protocol)."""
    out = []
    for m in EXPERIMENT_RE.finditer(text or ""):
        body = m.group(1).strip().strip("`").strip()
        if len(out) >= MAX_CALLS_PER_MESSAGE:
            break
        try:
            obj = json.loads(body)
        except json.JSONDecodeError as exc:
            out.append(ToolCall(None, None, error=(
                f"EXPERIMENT line {len(out) + 1} is not valid JSON ({exc.msg} at character "
                f"{exc.pos}): write EXPERIMENT: {{\"tool\": \"simulate\", \"args\": "
                f"{{\"program\": \"parent\"}}}} on one line")))
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("tool"), str):
            out.append(ToolCall(None, None, error=(
                f"EXPERIMENT line {len(out) + 1} must be a JSON object with \"tool\" (one of "
                f"simulate, request_log, compare, workload_stats) and \"args\"")))
            continue
        args = obj.get("args", {k: v for k, v in obj.items() if k != "tool"})
        out.append(ToolCall(obj["tool"], args))
    return out


def text_results(pairs) -> str:
    """The user message answering EXPERIMENT lines: [(ToolCall, answer text)]."""
    lines = [f"{RESULTS_HEADER}:"]
    for i, (call, answer) in enumerate(pairs, 1):
        lines.append(f"RESULT {i} ({clean(call.name or 'malformed', 40)}): {answer}")
    return "\n".join(lines)


def error_answer(message: str) -> str:
    return json.dumps({"error": clean(message, 600)})


def safe_args(arguments):
    """Parsed arguments with every string cleaned, for records (None when unparsable)."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    return clean_tree(arguments, 200)
