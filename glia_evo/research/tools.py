"""The Researcher's experiment tools: simulate, request_log, compare, workload_stats.

`ResearchTools(pool, problem, instances=...)` is made once per run (see `make_tools`); each
research turn opens a `ResearchSession(parent, calls=K)` and sends it the model's tool calls
(`session.call(name, args)` -> the answer text for the model). The rules:

- every simulation of a program runs in the sandbox pool (`jobs.simulate_job`, one job per
  simulation, the pool's limits); nothing here executes candidate code;
- what a job sends back is hostile input: checked field by field (`check_run`), every string
  cleaned (`glia_evo.hygiene.clean`), the metrics checked against the simulator's invariants;
- the instances are the search's own (the evaluation split the tools were given), never a
  held-out split; overrides are bounded (rate scale, replicas, KV blocks when `Instance` has the
  field, a trace window);
- answers are small: at most MAX_ANSWER characters of JSON, tables of at most 20 rows;
- each session is budgeted: `calls` tool calls, `max_requests` simulated requests, `max_tokens`
  LLM tokens (the Researcher adds its calls' tokens with `add_tokens`); a call past a budget is
  answered with an error saying which budget is spent;
- each call is recorded (`session.records`, JSON data for events.jsonl; `experiments_markdown`
  for the child's experiments.md artifact).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import threading
import time

from ..hygiene import clean, clean_tree
from ..problems import Instance, Problem
from ..evaluation.wire import metric_violation
from .jobs import COLUMNS, MAX_RECORDS, simulate_job, workload_job

MAX_ANSWER = 3000          # characters of one tool answer sent to the model
MAX_PROGRAM = 100_000      # characters of a program given to simulate / compare
MAX_ROWS = 20
MAX_BINS = 20
MAX_RUNS = 16              # runs kept per session for request_log
RATE_SCALE = (0.1, 10.0)
REPLICAS = (1, 64)
KV_BLOCKS = (16, 10**7)
ID_RE = re.compile(r"^[A-Za-z][\w.-]{0,63}$")
# derived per-request columns (seconds) the request log offers besides the raw ones
DERIVED = {"queued_s": ("dispatched_s", "arrival_s"), "waited_s": ("admitted_s", "dispatched_s"),
           "prefill_s": ("first_token_s", "admitted_s"), "decode_s": ("finish_s", "first_token_s"),
           "ttft_s": ("first_token_s", "arrival_s"), "e2e_s": ("finish_s", "arrival_s")}
LOG_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens", "replica", "restarts",
               *DERIVED)
SLOW_COLUMNS = ("id", "replica", "prompt_tokens", "output_tokens", "queued_s", "waited_s",
                "prefill_s", "decode_s", "e2e_s", "restarts")
SHOWN_METRICS = ("mean_e2e_s", "p50_e2e_s", "p99_e2e_s", "mean_ttft_s", "p99_ttft_s",
                 "mean_tpot_s", "mean_wait_s", "max_wait_s", "throughput_rps", "restarts",
                 "completed", "slo_attainment", "gpu_seconds", "mean_replicas", "cost")
TOOL_NAMES = ("simulate", "request_log", "compare", "workload_stats")


class ToolError(ValueError):
    """A tool call that cannot be run as asked; the message goes back to the model. `kind`:
    "call" (the call itself is wrong: unknown tool, bad arguments), "budget" (a budget of the
    turn is spent), "run" (the job's answer was unusable)."""

    def __init__(self, message: str, kind: str = "call"):
        super().__init__(message)
        self.kind = kind


def _json(obj, limit: int = MAX_ANSWER) -> str:
    text = json.dumps(obj, separators=(",", ":"), default=str, allow_nan=False)
    if len(text) > limit:
        text = text[:limit - 40] + '..."(answer cut at %d characters)"' % limit
    return text


def _r(x, digits: int = 4):
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return x
    if isinstance(x, int):
        return x
    return round(x, digits) if math.isfinite(x) else None


def _finite(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _pct(sorted_vals: list, q: float) -> float:
    if not sorted_vals:
        return 0.0
    k = (len(sorted_vals) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def program_label(source: str) -> str:
    return "draft-" + hashlib.sha256(source.encode()).hexdigest()[:8]


# --------------------------------------------------------------------------- hostile job output

def check_run(value) -> dict:
    """What a simulate job sent, checked and cleaned; ToolError when it is malformed."""
    if type(value) is not dict:
        raise ToolError("the simulation job sent an invalid result")
    status = value.get("status")
    if status not in ("ok", "error", "invalid", "timeout", "input"):
        raise ToolError("the simulation job sent an unknown status")
    out = {"status": status, "error": clean(value.get("error"), 600) or None}
    if status != "ok":
        return out
    metrics = value.get("metrics")
    if type(metrics) is not dict or len(metrics) > 200:
        raise ToolError("the simulation job sent invalid metrics")
    m = {}
    for k, v in metrics.items():
        if type(k) is not str or len(k) > 80 or not _finite(v) or v < 0:
            raise ToolError("the simulation job sent an invalid metric")
        m[clean(k, 80)] = float(v)
    why = metric_violation(m)
    if why:
        raise ToolError(f"the simulation job's metrics break an invariant: {why}")
    out["metrics"] = m
    cols = value.get("columns") or {}
    if type(cols) is not dict:
        raise ToolError("the simulation job sent invalid request records")
    checked, n = {}, None
    if cols:
        for c in COLUMNS:
            col = cols.get(c)
            if type(col) is not list or len(col) > MAX_RECORDS or \
                    not all(_finite(x) for x in col):
                raise ToolError(f"the simulation job sent an invalid request column {c}")
            if n is None:
                n = len(col)
            elif len(col) != n:
                raise ToolError("the simulation job sent request columns of unequal lengths")
            checked[c] = col
    out["columns"] = checked
    req = value.get("requests")
    out["requests"] = int(req) if _finite(req) and 0 <= req < 10**9 else (n or 0)
    out["truncated"] = value.get("truncated") is True
    reps = value.get("replicas") or []
    out["replicas"] = [{"id": int(r.get("id", i)) if _finite(r.get("id")) else i,
                        "gpu": clean(r.get("gpu"), 40),
                        "num_blocks": int(r["num_blocks"]) if _finite(r.get("num_blocks"))
                        else None}
                       for i, r in enumerate(reps[:64]) if type(r) is dict] \
        if type(reps) is list else []
    diag = value.get("diagnostics")
    diag = clean_tree(diag, 200) if type(diag) is dict else {}
    if len(json.dumps(diag, default=str)) > 200_000:
        diag = {}
    out["diagnostics"] = diag
    return out


# --------------------------------------------------------------------------- the tools

class ResearchTools:
    """The experiment tools of one run, shared by all its research turns (thread-safe)."""

    def __init__(self, pool, problem: Problem, *, instances: list[Instance], lookup=None,
                 calls: int = 4, max_requests: int = 50_000, max_tokens: int = 0,
                 seed: int = 0, timeout_s: float | None = 120.0, native: bool | None = None):
        if not instances:
            raise ValueError("the research tools need the search's instances")
        self.pool = pool
        self.problem = problem
        self.instances = list(instances)
        self.lookup = lookup          # candidate id -> Candidate | None (e.g. store.get)
        self.calls = calls
        self.max_requests = max_requests
        self.max_tokens = max_tokens
        self.seed = seed
        self.timeout_s = timeout_s
        self.native = native          # None: function calling first, text protocol on refusal
        self._sizes: dict = {}        # (instance name, window) -> requests
        self._lock = threading.Lock()
        self.has_kv = any(f.name == "kv_blocks" for f in dataclasses.fields(Instance))

    # --- what the prompt says about them ------------------------------------------------------
    def scenario_names(self) -> list[str]:
        return [i.name for i in self.instances]

    def overrides_text(self) -> str:
        if not self.problem.simulated:
            return "none (this problem brings its own evaluation)"
        parts = [f"rate_scale ({RATE_SCALE[0]:g}-{RATE_SCALE[1]:g}: arrival rate x this)",
                 f"replicas ({REPLICAS[0]}-{REPLICAS[1]})"]
        if self.has_kv:
            parts.append("kv_blocks (KV blocks per replica)")
        parts.append("window ([start_s, end_s] of the trace)")
        return ", ".join(parts)

    def session(self, parent=None, *, calls: int | None = None,
                max_requests: int | None = None) -> "ResearchSession":
        """A research turn's session: `calls` tool calls (default: the tools'), `max_requests`
        simulated requests (default: the tools'; the engine lowers it to what is left of the
        run's budget of evaluation work)."""
        return ResearchSession(self, parent, self.calls if calls is None else calls,
                               self.max_requests if max_requests is None else max_requests)

    # --- resolving arguments --------------------------------------------------------------------
    def instance(self, scenario, overrides: dict) -> tuple[Instance, tuple | None, dict]:
        allowed = self.instances
        if scenario in (None, ""):
            base = allowed[0]
        elif not isinstance(scenario, str):
            raise ToolError("scenario must be a string (e.g. " + allowed[0].name + ")")
        else:
            base = next((i for i in allowed if i.name == scenario), None) or \
                next((i for i in allowed if i.scenario.name == scenario), None)
            if base is None:
                raise ToolError(f"unknown scenario {clean(scenario, 60)!r}; the experiments may "
                                f"use: {', '.join(self.scenario_names())}")
        used = {}
        changes = {}
        if overrides and not self.problem.simulated:
            raise ToolError("this problem takes no overrides (it brings its own evaluation)")
        rs = overrides.get("rate_scale")
        if rs is not None:
            if not _finite(rs) or not RATE_SCALE[0] <= rs <= RATE_SCALE[1]:
                raise ToolError(f"rate_scale must be a number from {RATE_SCALE[0]:g} to "
                                f"{RATE_SCALE[1]:g}")
            changes["rate_scale"] = used["rate_scale"] = float(rs)
        rep = overrides.get("replicas")
        if rep is not None:
            if type(rep) is not int or not REPLICAS[0] <= rep <= REPLICAS[1]:
                raise ToolError(f"replicas must be an integer from {REPLICAS[0]} to "
                                f"{REPLICAS[1]}")
            changes["replicas"] = used["replicas"] = rep
        kv = overrides.get("kv_blocks")
        if kv is not None:
            if not self.has_kv:
                raise ToolError("kv_blocks is not supported by this version")
            if type(kv) is not int or not KV_BLOCKS[0] <= kv <= KV_BLOCKS[1]:
                raise ToolError(f"kv_blocks must be an integer from {KV_BLOCKS[0]} to "
                                f"{KV_BLOCKS[1]}")
            changes["kv_blocks"] = used["kv_blocks"] = kv
        win = overrides.get("window")
        window = None
        if win is not None:
            if type(win) is not list or len(win) != 2 or not all(_finite(x) for x in win) or \
                    not 0 <= win[0] < win[1] or win[1] - win[0] < 1:
                raise ToolError("window must be [start_s, end_s] with 0 <= start_s < end_s "
                                "(at least 1 s apart)")
            window = (float(win[0]), float(win[1]))
            used["window"] = list(window)
        unknown = set(overrides) - {"rate_scale", "replicas", "kv_blocks", "window"}
        if unknown:
            raise ToolError(f"unknown override {clean(sorted(unknown)[0], 40)!r}; known: "
                            f"rate_scale, replicas, {'kv_blocks, ' if self.has_kv else ''}"
                            f"window")
        return (dataclasses.replace(base, **changes) if changes else base), window, used

    def estimate(self, inst: Instance, window) -> int | None:
        with self._lock:
            return self._sizes.get((inst.name, window))

    def remember_size(self, inst: Instance, window, n: int) -> None:
        with self._lock:
            self._sizes[(inst.name, window)] = n

    # --- jobs -----------------------------------------------------------------------------------
    def submit_simulation(self, source: str, inst: Instance, window, knobs=None):
        return self.pool.submit(simulate_job, self.problem, inst, source, knobs, self.seed,
                                window, self.timeout_s)

    def run_outcome(self, future) -> dict:
        outcome = future.result()
        if outcome.status != "ok":
            what = {"timeout": "timed out", "memory": "ran out of memory",
                    "crashed": "crashed"}.get(outcome.status, "failed")
            return {"status": "timeout" if outcome.status == "timeout" else "crashed",
                    "error": f"the simulation {what}: "
                                                  f"{clean(outcome.error, 300)}"}
        return check_run(outcome.value)


class ResearchSession:
    """One research turn's tools, budget and records (used by one thread)."""

    def __init__(self, tools: ResearchTools, parent, calls: int,
                 max_requests: int | None = None):
        self.tools = tools
        self.parent = parent
        self.max_calls = calls
        self.max_requests = tools.max_requests if max_requests is None else max_requests
        self.calls = 0
        self.errors = 0               # malformed or refused calls
        self.requests = 0             # simulated requests
        self.simulations = 0
        self.tokens = 0
        self.seconds = 0.0
        self.records: list[dict] = []
        self.runs: dict[str, dict] = {}
        self._n = 0

    # --- budgets ----------------------------------------------------------------------------------
    def add_tokens(self, n: int) -> None:
        self.tokens += int(n)

    def exhausted(self) -> str | None:
        """Which budget is spent, or None."""
        t = self.tools
        if self.calls >= self.max_calls:
            return f"the {self.max_calls} experiment calls of this proposal are used"
        if self.max_requests and self.requests >= self.max_requests:
            return (f"the budget of {self.max_requests} simulated requests of this proposal "
                    f"is used ({self.requests})")
        if t.max_tokens and self.tokens >= t.max_tokens:
            return (f"the budget of {t.max_tokens} tokens of this research turn is used "
                    f"({self.tokens})")
        return None

    def work(self) -> dict:
        """What this turn's experiments cost (for the engine's accounting)."""
        refused = [r.get("refused") for r in self.records if not r.get("ok")]
        return {"calls": self.calls, "errors": self.errors,
                "malformed": refused.count("call"), "over_budget": refused.count("budget"),
                "simulations": self.simulations,
                "requests": self.requests, "seconds": round(self.seconds, 3),
                "tokens": self.tokens}

    # --- the entry point --------------------------------------------------------------------------
    def call(self, name, args, *, why: str = "", via: str = "tools") -> str:
        """Run one tool call; returns the answer text for the model (JSON, bounded). Never
        raises for anything the model sent."""
        started = time.monotonic()
        name_c = clean(name, 64) if name is not None else ""
        record = {"n": len(self.records) + 1, "tool": name_c, "via": via,
                  "why": clean(why, 300)}
        try:
            if not isinstance(name, str) or name not in TOOL_NAMES:
                raise ToolError(f"unknown tool {name_c!r}; the tools are "
                                f"{', '.join(TOOL_NAMES)}")
            if isinstance(args, str):
                try:
                    args = json.loads(args) if args.strip() else {}
                except json.JSONDecodeError as exc:
                    raise ToolError(f"the arguments of {name} are not valid JSON ({exc.msg} "
                                    f"at character {exc.pos}); send a JSON object such as "
                                    f"{{\"scenario\": \"{self.tools.instances[0].name}\"}}") \
                        from None
            if args is None:
                args = {}
            if not isinstance(args, dict):
                raise ToolError(f"the arguments of {name} must be a JSON object")
            record["args"] = self._args_record(args)
            spent = self.exhausted()
            if spent:
                raise ToolError(f"budget exhausted: {spent}. No more experiments: write "
                                f"CONCLUSION, then the code", "budget")
            answer = getattr(self, "_" + name)(args, record)
            self.calls += 1
            record["ok"] = True
        except ToolError as exc:
            self.errors += 1
            record["ok"] = False
            record["refused"] = exc.kind
            record["error"] = clean(str(exc), 600)
            answer = {"error": record["error"]}
        except Exception as exc:   # noqa: BLE001 - a bug here must not end the turn
            self.errors += 1
            record["ok"] = False
            record["refused"] = "run"
            record["error"] = clean(f"the tool failed: {type(exc).__name__}: {exc}", 600)
            answer = {"error": record["error"]}
        text = clean(_json(answer), MAX_ANSWER + 100)
        record["answer"] = text
        record["seconds"] = round(time.monotonic() - started, 3)
        self.seconds += time.monotonic() - started
        self.records.append(record)
        return text

    def reject(self, name, message: str, *, why: str = "", via: str = "text") -> str:
        """Record a malformed call (it could not even be read) and return its error answer."""
        error = clean(message, 600)
        self.errors += 1
        self.records.append({"n": len(self.records) + 1, "tool": clean(name, 64) if name
                             else "(malformed)", "via": via, "why": clean(why, 300),
                             "ok": False, "refused": "call", "error": error,
                             "answer": _json({"error": error}),
                             "seconds": 0.0})
        return _json({"error": error})

    def _args_record(self, args: dict) -> dict:
        out = {}
        for k, v in list(args.items())[:20]:
            if k in ("program", "a", "b") and isinstance(v, str) and "\n" in v:
                out[clean(k, 40)] = f"{program_label(v)} ({v.count(chr(10)) + 1} lines)"
            else:
                out[clean(k, 40)] = clean_tree(v, 200)
        return out

    # --- programs -------------------------------------------------------------------------------
    def _program(self, ref, what: str) -> tuple[str, str]:
        """(label, source) of a program argument: "parent", a candidate id, or program text."""
        if ref is None or ref == "" or ref == "parent":
            if self.parent is None:
                raise ToolError(f"{what}: no parent program in this turn; pass the program text")
            return self.parent.id, self.parent.source
        if not isinstance(ref, str):
            raise ToolError(f"{what} must be \"parent\", a program id (e.g. c000012) or the "
                            f"program's source text")
        if "\n" in ref or "def " in ref:
            if len(ref) > MAX_PROGRAM:
                raise ToolError(f"{what}: the program is longer than {MAX_PROGRAM} characters")
            from sandbox import PolicyCompileError
            from sandbox.compile import check_source
            try:
                check_source(ref, self.tools.problem.entrypoints)
            except PolicyCompileError as exc:
                raise ToolError(f"{what} does not compile: {clean(str(exc), 400)}") from None
            return program_label(ref), ref
        if not ID_RE.match(ref):
            raise ToolError(f"{what}: {clean(ref, 40)!r} is no program id")
        if self.parent is not None and ref == self.parent.id:
            return self.parent.id, self.parent.source
        cand = self.tools.lookup(ref) if self.tools.lookup else None
        if cand is None or not getattr(cand, "source", None):
            raise ToolError(f"{what}: there is no program {clean(ref, 40)!r} in this search")
        return cand.id, cand.source

    @staticmethod
    def _overrides(args: dict) -> dict:
        ov = args.get("overrides")
        if ov is None:
            ov = {}
        if not isinstance(ov, dict):
            raise ToolError("overrides must be a JSON object such as {\"rate_scale\": 1.5}")
        ov = dict(ov)
        for k in ("rate_scale", "replicas", "kv_blocks", "window"):   # also at the top level
            if k in args and k not in ov:
                ov[k] = args[k]
        return ov

    def _reserve(self, inst: Instance, window, runs: int) -> None:
        t = self.tools
        budget = self.max_requests
        if not budget:
            return
        est = t.estimate(inst, window)
        if est is None and self.parent is not None and not window:
            m = (self.parent.metrics or {}).get(inst.name) or {}
            est = int(m["completed"]) if _finite(m.get("completed")) else None
        if est is not None and self.requests + runs * est > budget:
            raise ToolError(f"budget exhausted: this needs about {runs * est} simulated "
                            f"requests but only {max(0, budget - self.requests)} of this "
                            f"proposal's {budget} are left; use a window of the trace "
                            f"or answer now", "budget")

    def _run(self, label: str, source: str, inst: Instance, window, used: dict, future) -> dict:
        res = self.tools.run_outcome(future)
        self.simulations += 1
        n = res.get("requests", 0) if res["status"] == "ok" else 0
        self.requests += n
        if res["status"] == "ok":
            self.tools.remember_size(inst, window, n)
        self._n += 1
        run_id = f"r{self._n}"
        res.update(run_id=run_id, program=label, instance=inst.name, overrides=used)
        self.runs[run_id] = res
        while len(self.runs) > MAX_RUNS:
            self.runs.pop(next(iter(self.runs)))
        return res

    @staticmethod
    def _metrics(res: dict) -> dict:
        m = res.get("metrics") or {}
        return {k: _r(m[k]) for k in SHOWN_METRICS if k in m}

    def _summary(self, res: dict) -> dict:
        out = {"run_id": res["run_id"], "program": res["program"], "scenario": res["instance"],
               "overrides": res["overrides"], "status": res["status"]}
        if res["status"] != "ok":
            out["error"] = res.get("error")
            return out
        out["metrics"] = self._metrics(res)
        d = res.get("diagnostics") or {}
        small = {k: _r(d[k]) for k in ("max_queue_len", "load_imbalance_cv_mean", "router_calls")
                 if k in d}
        per = d.get("per_replica")
        if isinstance(per, list):
            small["per_replica"] = [{k: r.get(k) for k in ("id", "requests", "evictions")}
                                    for r in per[:16] if isinstance(r, dict)]
        out["diagnostics"] = small
        out["requests"] = res.get("requests", 0)
        if res.get("columns"):
            out["next"] = (f"request_log(run_id=\"{res['run_id']}\", query={{\"kind\": "
                           f"\"slowest\"}}) for the slowest requests")
        return out

    # --- the four tools ---------------------------------------------------------------------------
    def _simulate(self, args: dict, record: dict) -> dict:
        ref = args.get("program", args.get("candidate", args.get("candidate_id")))
        label, source = self._program(ref, "program")
        inst, window, used = self.tools.instance(args.get("scenario"), self._overrides(args))
        self._reserve(inst, window, 1)
        res = self._run(label, source, inst, window, used,
                        self.tools.submit_simulation(source, inst, window))
        record["requests"] = res.get("requests", 0)
        record["run_id"] = res["run_id"]
        return self._summary(res)

    def _compare(self, args: dict, record: dict) -> dict:
        if args.get("b") in (None, ""):
            raise ToolError("compare needs b: \"parent\", a program id or the program's text")
        la, sa = self._program(args.get("a", "parent"), "a")
        lb, sb = self._program(args.get("b"), "b")
        inst, window, used = self.tools.instance(args.get("scenario"), self._overrides(args))
        self._reserve(inst, window, 2)
        fa = self.tools.submit_simulation(sa, inst, window)
        fb = self.tools.submit_simulation(sb, inst, window)
        ra = self._run(la, sa, inst, window, used, fa)
        rb = self._run(lb, sb, inst, window, used, fb)
        record["requests"] = ra.get("requests", 0) + rb.get("requests", 0)
        record["run_id"] = [ra["run_id"], rb["run_id"]]
        out = {"scenario": inst.name, "overrides": used,
               "a": {"program": la, "run_id": ra["run_id"], "status": ra["status"]},
               "b": {"program": lb, "run_id": rb["run_id"], "status": rb["status"]}}
        for side, r in (("a", ra), ("b", rb)):
            if r["status"] != "ok":
                out[side]["error"] = r.get("error")
        if ra["status"] == rb["status"] == "ok":
            ma, mb = ra["metrics"], rb["metrics"]
            rows = []
            for k in SHOWN_METRICS:
                if k in ma and k in mb:
                    diff = mb[k] - ma[k]
                    rel = diff / ma[k] if ma[k] else None
                    rows.append([k, _r(ma[k]), _r(mb[k]), _r(diff), _r(rel, 3)])
            out["table"] = {"columns": ["metric", "a", "b", "b-a", "(b-a)/a"], "rows": rows}
            metric = self.tools.problem.metric
            if ma.get(metric) and mb.get(metric):
                out["b_vs_a"] = (f"{metric}: b is {ma[metric] / mb[metric]:.3f}x a's fitness "
                                 f"(lower {metric} is better)")
        return out

    def _workload_stats(self, args: dict, record: dict) -> dict:
        inst, window, used = self.tools.instance(args.get("scenario"), self._overrides(args))
        outcome = self.tools.pool.submit(workload_job, self.tools.problem, inst,
                                         window).result()
        if outcome.status != "ok" or type(outcome.value) is not dict:
            raise ToolError(f"the workload could not be read ({outcome.status}: "
                            f"{clean(outcome.error, 200)})")
        v = clean_tree(outcome.value, 200)
        if v.get("status") != "ok":
            raise ToolError(str(v.get("error") or "no workload"))
        if _finite(v.get("requests")):
            self.tools.remember_size(inst, window, int(v["requests"]))
        v.pop("status", None)
        return {"scenario": inst.name, "overrides": used, **v}

    def _request_log(self, args: dict, record: dict) -> dict:
        run_id = args.get("run_id")
        if not self.runs:
            raise ToolError("no simulation in this turn yet: call simulate first")
        if run_id in (None, ""):
            run_id = next(reversed(self.runs))
        if not isinstance(run_id, str) or run_id not in self.runs:
            raise ToolError(f"unknown run_id {clean(run_id, 20)!r}; this turn's runs: "
                            f"{', '.join(self.runs)}")
        res = self.runs[run_id]
        if res["status"] != "ok":
            raise ToolError(f"run {run_id} did not finish ({res['status']}): no request log")
        cols = res.get("columns") or {}
        if not cols:
            raise ToolError("this problem's simulations keep no per-request records")
        q = args.get("query", {})
        if isinstance(q, str):        # "slowest 20", "histogram e2e_s", "replica 2"
            words = q.split()
            q = {"kind": words[0] if words else "slowest"}
            for w in words[1:]:
                if w.isdigit():
                    q["n" if q["kind"] in ("slowest", "fastest") else "replica"] = int(w)
                else:
                    q["column"] = w
        if not isinstance(q, dict):
            raise ToolError("query must be an object such as {\"kind\": \"slowest\", \"n\": 10}")
        q = {**{k: args[k] for k in ("kind", "n", "column", "bins", "replica", "sort_by")
                if k in args}, **q}
        kind = q.get("kind", "slowest")
        rows = self._rows(cols)
        head = {"run_id": run_id, "program": res["program"], "scenario": res["instance"],
                "requests": len(rows), "truncated": res.get("truncated", False)}
        if kind in ("slowest", "fastest"):
            n = q.get("n", 10)
            if type(n) is not int or not 1 <= n <= MAX_ROWS:
                raise ToolError(f"n must be an integer from 1 to {MAX_ROWS}")
            by = q.get("sort_by", q.get("column", "e2e_s"))
            if by not in LOG_COLUMNS:
                raise ToolError(f"unknown column {clean(by, 40)!r}; columns: "
                                f"{', '.join(LOG_COLUMNS)}")
            order = sorted(rows, key=lambda r: (r[by], r["id"]), reverse=kind == "slowest")[:n]
            return {**head, "kind": kind, "sort_by": by,
                    "table": {"columns": list(SLOW_COLUMNS),
                              "rows": [[_r(r[c], 3) for c in SLOW_COLUMNS] for r in order]},
                    "note": "times in seconds: queued_s = in the router's queue, waited_s = at "
                            "the replica before admission, prefill_s = admission to first "
                            "token, decode_s = first token to finish; restarts = evictions"}
        if kind == "histogram":
            col = q.get("column", "e2e_s")
            if col not in LOG_COLUMNS:
                raise ToolError(f"unknown column {clean(col, 40)!r}; columns: "
                                f"{', '.join(LOG_COLUMNS)}")
            bins = q.get("bins", 10)
            if type(bins) is not int or not 1 <= bins <= MAX_BINS:
                raise ToolError(f"bins must be an integer from 1 to {MAX_BINS}")
            vals = sorted(float(r[col]) for r in rows)
            lo, hi = vals[0], vals[-1]
            width = (hi - lo) / bins or 1.0
            counts = [0] * bins
            for v in vals:
                counts[min(bins - 1, int((v - lo) / width))] += 1
            return {**head, "kind": "histogram", "column": col,
                    "stats": {"mean": _r(sum(vals) / len(vals), 3), "p50": _r(_pct(vals, 50), 3),
                              "p90": _r(_pct(vals, 90), 3), "p99": _r(_pct(vals, 99), 3),
                              "max": _r(hi, 3)},
                    "table": {"columns": ["from", "to", "requests"],
                              "rows": [[_r(lo + i * width, 3), _r(lo + (i + 1) * width, 3), c]
                                       for i, c in enumerate(counts)]}}
        if kind == "replica":
            rep = q.get("replica", 0)
            reps = res.get("replicas") or []
            if type(rep) is not int or not 0 <= rep < max(1, len(reps)):
                raise ToolError(f"replica must be an integer from 0 to {max(1, len(reps)) - 1}")
            blocks = reps[rep]["num_blocks"] if rep < len(reps) else None
            mine = [r for r in rows if r["replica"] == rep]
            tl = (res.get("diagnostics") or {}).get("timeline") or []
            step = max(1, len(tl) // MAX_ROWS)
            trows = []
            for p in tl[::step][:MAX_ROWS]:
                try:
                    use = float(p["kv_use"][rep])
                    load = p["load"][rep]
                except (KeyError, IndexError, TypeError, ValueError):
                    continue
                free = round(blocks * (1 - use)) if blocks else None
                trows.append([_r(p.get("t_s"), 2), load, _r(use, 3), free, p.get("queue")])
            per = next((r for r in (res.get("diagnostics") or {}).get("per_replica", [])
                        if isinstance(r, dict) and r.get("id") == rep), {})
            e2e = sorted(r["e2e_s"] for r in mine)
            return {**head, "kind": "replica", "replica": rep, "num_blocks": blocks,
                    "served": len(mine), "evictions": per.get("evictions"),
                    "restarts": sum(r["restarts"] for r in mine),
                    "mean_e2e_s": _r(sum(e2e) / len(e2e), 3) if e2e else None,
                    "timeline": {"columns": ["t_s", "requests_on_replica", "kv_use",
                                             "free_blocks", "router_queue"], "rows": trows}}
        if kind == "summary":
            table = []
            for c in LOG_COLUMNS:
                vals = sorted(float(r[c]) for r in rows)
                table.append([c, _r(sum(vals) / len(vals), 3), _r(_pct(vals, 50), 3),
                              _r(_pct(vals, 99), 3), _r(vals[-1], 3)])
            return {**head, "kind": "summary",
                    "table": {"columns": ["column", "mean", "p50", "p99", "max"],
                              "rows": table}}
        raise ToolError(f"unknown query kind {clean(kind, 40)!r}; kinds: slowest, fastest, "
                        f"histogram, replica, summary")

    @staticmethod
    def _rows(cols: dict) -> list[dict]:
        n = len(cols["id"])
        rows = []
        for i in range(n):
            r = {c: cols[c][i] for c in COLUMNS}
            for name, (end, start) in DERIVED.items():
                r[name] = r[end] - r[start]
            r["id"] = int(r["id"])
            r["replica"] = int(r["replica"])
            rows.append(r)
        return rows


# --------------------------------------------------------------------------- experiments.md

def experiments_markdown(records: list[dict], conclusion: str = "", hypothesis: str = "",
                         child: str = "") -> str:
    """The experiments of one research turn, as the child's experiments.md artifact (every
    string in it was cleaned when it was recorded; cleaned again here, multiline)."""
    lines = [f"# Experiments{' of ' + clean(child, 40) if child else ''}", ""]
    if hypothesis:
        lines += [f"**Hypothesis:** {clean(hypothesis, 1200)}", ""]
    if not records:
        lines += ["(no experiments)", ""]
    for r in records:
        status = "ok" if r.get("ok") else "error"
        lines.append(f"## {r.get('n')}. {clean(r.get('tool'), 64)} ({status}, via "
                     f"{clean(r.get('via'), 20)}, {r.get('seconds', 0)} s"
                     f"{', %s requests' % r['requests'] if r.get('requests') else ''})")
        if r.get("why"):
            lines.append(f"Why: {clean(r['why'], 300)}")
        lines.append("")
        lines.append("Arguments: `" + clean(json.dumps(r.get("args", {}), default=str), 800)
                     .replace("`", "'") + "`")
        lines.append("")
        lines.append("```json")
        lines.append(clean(r.get("answer", ""), MAX_ANSWER + 100).replace("```", "'''"))
        lines.append("```")
        lines.append("")
    if conclusion:
        lines += ["## Conclusion", "", clean(conclusion, 2000, multiline=True), ""]
    return "\n".join(lines)
