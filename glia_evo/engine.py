"""The search loop: steady-state, asynchronous, resumable (DESIGN §6).

Every worker is kept busy with one evaluation. Results are *processed in submission order*, and a
new proposal is made only after a result is processed, so the search is a deterministic function of
the seed whatever the timing: a run killed and resumed ends exactly where an uninterrupted run
with the same seed would. Each proposal is committed to the SQLite state (as `pending`, with the
counters it consumed) before it is submitted, and each result is committed before the next step,
so a killed run loses nothing: pending candidates are evaluated again on resume, first.

With an LLM (`llm.mode = "openai"`) the Researcher, Analyst and Supervisor run in threads beside
the evaluations, so LLM calls overlap them: a Researcher call starts from a snapshot (parent,
inspirations, notes, the proposal index and the selection's rng draw, committed in one short
transaction), runs without holding the store, and its child is committed with the token and cost
counters in a second transaction when it answers. Up to `llm.concurrency` children are prepared
ahead while the workers are busy. A kill between the two transactions loses that one proposal
(and the tokens it used are not counted); nothing evaluated is lost. LLM answers are not
reproducible, so an LLM run is not a deterministic function of the seed; the offline path is.
"""
from __future__ import annotations

import collections
import concurrent.futures
import copy
import datetime
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from population import DERIVED_OPERATORS, Candidate, Islands, Store, code_hash

from . import analyst
from .config import RunConfig
from .evaluation import EvalResult
from .events import EventLog, read_events
from .jobs import EvalJob, evaluate_job, reference_job, warm as warm_job
from .parallel import outcome_to_result
from .operators.offline import for_problem
from .tracking import Tracker
from .tuning_runs import (STATS_KEY, Trial, TuningRuns, new_stats, trial_job,
                          tuning_summary)
from .problems import get_problem

ELAPSED_KEY = "elapsed_s"
PROPOSALS_KEY = "proposals"
EVALUATIONS_KEY = "evaluations"
LAST_MIGRATION_KEY = "last_migration"
REFERENCE_KEY = "reference"
REFERENCE_ATTEMPTS = 3
LLM_KEY = "llm"                    # token / cost / outcome counters of the LLM agents
SUPERVISOR_KEY = "supervisor"      # the latest review: number, evaluations, notes
NOTES_FILE = "supervisor_notes.md"
OFFLINE = "offline"
STARTED = object()                 # _propose started a Researcher call (its child comes later)
RECENT_FOR_SUPERVISOR = 12


class EngineError(RuntimeError):
    """The search cannot go on (e.g. the reference baseline fails): one line for the user."""


@dataclass
class Budget:
    minutes: float
    max_evaluations: int
    max_tokens: int = 0              # 0 = no limit
    max_cost_usd: float = 0.0        # 0 = no limit

    @classmethod
    def of(cls, cfg: RunConfig) -> "Budget":
        b = cfg.budget
        return cls(b.minutes, b.max_evaluations, b.max_tokens, b.max_cost_usd)

    def left(self, evaluations: int, elapsed_s: float, tokens: int = 0,
             cost_usd: float = 0.0) -> dict:
        out = {"evaluations": max(0, self.max_evaluations - evaluations),
               "minutes": max(0.0, self.minutes - elapsed_s / 60)}
        if self.max_tokens:
            out["tokens"] = max(0, self.max_tokens - tokens)
        if self.max_cost_usd:
            out["cost_usd"] = round(max(0.0, self.max_cost_usd - cost_usd), 6)
        return out

    def llm_exhausted(self, tokens: int, cost_usd: float) -> str | None:
        """`tokens` and `cost_usd`: used so far plus what the calls in flight are expected to
        use (see Engine._llm_projection)."""
        if self.max_tokens and tokens >= self.max_tokens:
            return f"token budget of {self.max_tokens} reached"
        if self.max_cost_usd and cost_usd >= self.max_cost_usd:
            return f"cost budget of ${self.max_cost_usd:g} reached"
        return None

    def exhausted(self, evaluations: int, elapsed_s: float, tokens: int = 0,
                  cost_usd: float = 0.0) -> str | None:
        if evaluations >= self.max_evaluations:
            return f"evaluation budget of {self.max_evaluations} reached"
        if elapsed_s >= self.minutes * 60:
            return f"time budget of {self.minutes:g} min reached"
        return self.llm_exhausted(tokens, cost_usd)


def new_usage() -> dict:
    return {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "tokens": 0,
            "cost_usd": 0.0, "retries": 0, "by_role": {}, "by_model": {},
            "proposals": 0, "children": 0, "repaired": 0, "discarded": 0, "duplicates": 0,
            "unavailable": 0, "errors": 0, "fallbacks": 0, "abandoned": 0,
            "summaries": 0, "summary_failures": 0, "reviews": 0, "review_failures": 0}


@dataclass
class _Task:
    kind: str                        # research | analyst | supervisor
    future: concurrent.futures.Future
    snap: object
    started: float = field(default_factory=time.monotonic)


def _spawn(fn, *args, name: str = "glia-llm") -> concurrent.futures.Future:
    """Run fn(*args) in a daemon thread (a stuck call never blocks the process from exiting)."""
    fut: concurrent.futures.Future = concurrent.futures.Future()

    def body():
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:   # noqa: BLE001 - handed to the main thread
            fut.set_exception(exc)
    threading.Thread(target=body, name=name, daemon=True).start()
    return fut


FALLBACK_STRIDE = 1_000_000_007     # another mutation seed for a fallback that was a duplicate


def is_local(base_url: str) -> bool:
    """A base URL on this machine (127.0.0.1, localhost, ::1): a local server (llama.cpp,
    Ollama, vLLM) that usually answers one call, or a few, at a time."""
    from urllib.parse import urlsplit
    try:
        host = (urlsplit(base_url).hostname or "").lower()
    except ValueError:
        return False
    return host in ("localhost", "::1") or host.startswith("127.") or host.endswith(
        ".localhost")


class Engine:
    def __init__(self, cfg: RunConfig, run_dir: Path, pool, progress=None):
        self.cfg = cfg
        self.run_dir = run_dir
        self.problem = get_problem(cfg.problem)
        self.store = Store(run_dir / "state.sqlite")
        s = cfg.search
        self.islands = Islands(self.store, s.islands, s.island_capacity, cfg.seed,
                               tournament_size=s.tournament)
        self.events = EventLog(run_dir / "events.jsonl")
        self.mutator = for_problem(self.problem)
        self.budget = Budget.of(cfg)
        self.pool = pool
        self.progress = progress
        self.stopping: str | None = None
        self.fatal: str | None = None      # an LLM endpoint that refuses us (key, model, URL)
        self.inflight: collections.deque = collections.deque()   # (candidate, future), FIFO
        self.reference: dict = {}          # instance -> the reference's metric (`_reference`)
        self.completed: dict = {}          # instance -> requests in its trace
        # LLM agents (None offline): tasks in threads, children waiting for a worker
        self.llm = None
        self.ready: collections.deque = collections.deque()
        self.research: list[_Task] = []
        self.side: list[_Task] = []
        self.summaries: dict[str, concurrent.futures.Future] = {}
        self._no_more: str | None = None
        self._failures_in_row = 0
        self._cancel = threading.Event()
        self._thread_events: list[tuple[str, dict]] = []
        self._thread_lock = threading.Lock()
        self.usage = new_usage()
        self.usage.update(self._meta(LLM_KEY, {}) or {})
        self.supervision = dict(self._meta(SUPERVISOR_KEY, {}) or {})
        self.tuning = TuningRuns(cfg, self.store, self.islands, run_dir, self._knob_spec)
        self._submitted = 0
        self.tracker = (Tracker(run_dir, cfg.tracking.uri or None, run_name=cfg.name)
                        if cfg.tracking.enabled else None)
        if cfg.llm.mode != OFFLINE:
            self._setup_llm()

    def _knob_spec(self, source: str) -> dict:
        from sandbox.compile import check_source
        from sandbox import PolicyCompileError
        try:
            return check_source(source, self.problem.entrypoints)
        except PolicyCompileError:
            return {}

    def _setup_llm(self) -> None:
        from .llm import LLMAnalyst, LLMClient, Prompts, Researcher, Supervisor, api_key_from_env
        c = self.cfg.llm
        local = is_local(c.base_url)
        self.concurrency = c.concurrency or (1 if local else 2 * self._slots())
        # a local server answers few calls at once: every agent's calls share its slots
        self.llm = LLMClient(c, api_key_from_env(c.api_key_env), seed=self.cfg.seed,
                             cancel=self._cancel, on_retry=self._on_retry,
                             max_in_flight=self.concurrency if local else None)
        prompts = Prompts(c.prompts_dir or None)
        self.researcher = Researcher(self.llm, self.problem, prompts,
                                     summary_wait_s=c.timeout_s * (c.max_retries + 1) + 5)
        self.analyst = LLMAnalyst(self.llm, self.problem, prompts)
        self.supervisor = Supervisor(self.llm, self.problem, prompts)

    # --- counters kept in the store, so budgets and seeds survive restarts --------------------
    def _meta(self, key, default=0):
        return self.store.get_meta(key, default)

    @property
    def evaluations(self) -> int:
        return int(self._meta(EVALUATIONS_KEY))

    def elapsed(self) -> float:
        """Search time so far, over all sessions of this run (the time budget's clock)."""
        return self._elapsed_before + (time.monotonic() - self._started)

    def _outstanding(self) -> int:
        """Evaluations already committed to: running, waiting for a worker, being proposed."""
        return len(self.inflight) + len(self.ready) + len(self.research)

    def _why_stop(self) -> str | None:
        """Tuning trials count against the evaluation budget like candidates."""
        return self.stopping or self._no_more or self.budget.exhausted(
            self.evaluations + self.tuning.trials + self._outstanding(), self.elapsed(),
            *self._llm_projection())

    def _llm_projection(self) -> tuple[int, float]:
        """Tokens and cost used, plus what the calls still running will probably use (the mean
        so far per call), so a token or cost budget stops new calls early enough not to be
        overshot by the ones in flight."""
        u = self.usage
        running = len(self.research) + len(self.side)
        if not running or not u["calls"]:
            return u["tokens"], u["cost_usd"]
        return (u["tokens"] + running * u["tokens"] // u["calls"],
                u["cost_usd"] + running * u["cost_usd"] / u["calls"])

    def _llm_budget_out(self) -> bool:
        return self.budget.llm_exhausted(*self._llm_projection()) is not None

    # --- seeding, proposing ---------------------------------------------------------------------
    def _seed_population(self) -> None:
        """The first time: every seed baseline on every island, as pending candidates."""
        if len(self.store):
            return
        with self.store.transaction():
            for island in range(self.cfg.search.islands):
                for name in self.cfg.search.seeds:
                    own = name.endswith(".py")      # a seed FILE.py of the user's, not a baseline
                    cand = Candidate(source=self.problem.seed_source(name),
                                     island=island, operator="seed",
                                     rationale=f"{'seed file' if own else 'baseline'} {name}",
                                     extra={"seed_file" if own else "baseline": name})
                    self.store.add(cand)
                    self.events.write("proposal", candidate=cand.id, island=island,
                                      operator="seed", parents=[])

    def _reference(self) -> dict:
        """The reference baseline's metric per instance, simulated once (in a sandbox job that
        runs no candidate) and kept in the state, so no evaluation simulates it again. Every
        candidate's fitness is computed here from these values (`_read`), never taken from its
        job; the trace lengths (`self.completed`) check that every request completed."""
        e = self.cfg.evaluation
        splits = (e.split, e.cascade_split) if e.cascade else (e.split,)
        warm = getattr(self.pool, "warm", None)     # a fork server: jobs start with these loaded
        if warm is not None:
            warm(warm_job, getattr(self.problem, "key", self.problem.name), splits)
        saved = self.store.get_meta(REFERENCE_KEY)
        if saved and saved.get("splits") == list(splits):
            self.completed = saved.get("completed") or {}
            return saved["values"]
        for attempt in range(REFERENCE_ATTEMPTS):   # a job killed from outside: run it again
            outcome = self.pool.submit(reference_job, self.problem.key, splits).result()
            if outcome.status not in ("crashed", "timeout"):
                break
            self.events.write("reference_retry", attempt=attempt + 1, error=outcome.error)
        if outcome.status != "ok":
            raise EngineError(f"the reference baseline {self.problem.reference} failed "
                              f"({outcome.status}): {outcome.error}")
        values, completed = _reference_values(outcome.value, self.problem.reference)
        self.store.set_meta(REFERENCE_KEY, {"splits": list(splits), "values": values,
                                            "completed": completed})
        self.completed = completed
        return values

    def _read(self, outcome, split: str, cascade_split: str | None = None):
        """A job's outcome as a checked EvalResult whose fitness the engine computed."""
        expected = {"ok": [i.name for i in self.problem.split(split)]}
        if cascade_split:
            expected["rejected"] = [i.name for i in self.problem.split(cascade_split)]
        return outcome_to_result(outcome, split, self.pool, metric=self.problem.metric,
                                 reference=self.reference, completed=self.completed,
                                 expected=expected)

    def _turn(self, index: int) -> str:
        """Who makes proposal `index`: "offline" or the name of the model the Researcher uses
        (drawn by weight; mixed mode sends `offline_fraction` of the proposals offline)."""
        if self.llm is None:
            return OFFLINE
        from .llm import pick_model
        rng = random.Random(f"proposal-{self.cfg.seed}-{index}")
        if rng.random() < self.cfg.llm.offline_fraction:
            return OFFLINE
        return pick_model(self.cfg.llm.weights(), rng)

    def _llm_busy(self) -> bool:
        """Mixed mode with `concurrency` Researcher calls running: the next proposal is made
        offline, so the evaluation workers never sit idle waiting for a model."""
        return 0 < self.cfg.llm.offline_fraction and len(self.research) >= self.concurrency

    def _may_propose(self) -> bool:
        """False while the next proposal is an LLM one and `concurrency` calls are running (in
        mixed mode an offline proposal takes the free slot instead), or while its island has no
        member that is not already a parent of a running call and seeds are still pending
        there (so the first proposals spread over islands and parents, not all island 0)."""
        if self.llm is None:
            return True
        index = int(self._meta(PROPOSALS_KEY))
        turn = self._turn(index)
        if turn == OFFLINE or self._llm_busy():
            return True
        if len(self.research) >= self.concurrency:
            return False
        island = index % self.cfg.search.islands
        busy = {t.snap.parent.id for t in self.research}
        if all(m.id in busy for m in self.islands.members(island)) and any(
                c.island == island and c.operator == "seed"
                for c in self.store.by_status("pending")):
            return False
        return True

    def _spread_parent(self, island: int, parent):
        """Another tournament (at most 3) when `parent` is already the parent of a running
        Researcher call and the island has other members."""
        busy = {t.snap.parent.id for t in self.research}
        if parent.id not in busy or len(self.islands.members(island)) < 2:
            return parent
        for _ in range(3):
            other = self.islands.select_parent(island)
            if other.id not in busy:
                return other
        return parent

    def _propose(self):
        """Select a parent on the next island (round robin), then: offline, mutate, dedup and
        store the child as pending (returned); LLM, start a Researcher call (STARTED; the child
        is committed when it answers). None when no attempt gave a child."""
        n = self.cfg.search.islands
        # One transaction per attempt: the counter, the selection's rng draw and the child commit
        # together, so a kill at any point resumes on exactly the same random sequence. An LLM
        # proposal commits the counter and the draw here and its child later (see the module doc).
        for _ in range(self.cfg.search.max_attempts):
            index = int(self._meta(PROPOSALS_KEY))
            island = index % n
            turn = self._turn(index)
            busy = turn != OFFLINE and self._llm_busy()
            if busy:
                turn = OFFLINE
            snap = None
            with self.store.transaction():
                self.store.set_meta(PROPOSALS_KEY, index + 1)
                try:
                    parent = self.islands.select_parent(island)
                    if turn != OFFLINE:
                        parent = self._spread_parent(island, parent)
                except LookupError:
                    continue          # the island has no members yet (all seeds failed)
                inspirations = self.islands.inspirations(island, parent,
                                                         self.cfg.search.inspirations)
                if turn != OFFLINE:
                    snap = self._research_snapshot(index, island, parent, inspirations, turn)
                else:
                    child = self._offline_child(index, island, parent, inspirations,
                                                extra={"llm_busy": True} if busy else None)
                    if child is None:
                        continue
            if snap is not None:
                self.research.append(_Task("research", _spawn(self.researcher.propose, snap,
                                                              name=f"researcher-{index}"), snap))
                return STARTED
            self.events.write("proposal", candidate=child.id, island=island,
                              operator=child.operator, parents=child.parents,
                              rationale=child.rationale, **({"llm_busy": True} if busy else {}))
            return child
        return None

    def _offline_child(self, index, island, parent, inspirations, extra=None) -> Candidate | None:
        """The offline mutator's child, stored as pending (inside the caller's transaction)."""
        proposal = self.mutator.propose(parent, inspirations,
                                        {"seed": self.cfg.seed * 1_000_003 + index})
        if proposal is None:
            return None
        child = Candidate(source=proposal.source, island=island,
                          parents=[parent.id] + [c.id for c in inspirations
                                                 if proposal.operator == "crossover"][:1],
                          generation=parent.generation + 1, operator=proposal.operator,
                          model=proposal.model, rationale=proposal.rationale,
                          extra={"parent_fitness": parent.fitness,
                                 "parent_stage1": parent.extra.get("stage1_fitness"),
                                 **(extra or {})})
        if self.store.has_hash(code_hash(child.source)):
            self.events.write("duplicate", island=island, parent=parent.id,
                              operator=proposal.operator)
            return None
        self.store.add(child)
        return child

    # --- the LLM agents' tasks ------------------------------------------------------------------
    def _research_snapshot(self, index, island, parent, inspirations, model):
        from .llm import ResearchSnapshot
        waits = {c.id: self.summaries[c.id] for c in [parent, *inspirations]
                 if c.id in self.summaries}
        known = {c.code_hash: c.id for c in self.store.all() if c.code_hash}
        return ResearchSnapshot(index=index, island=island, parent=parent,
                                inspirations=list(inspirations),
                                notes=self.supervision.get("notes", ""), model=model,
                                summaries=waits, known=known)

    def _on_retry(self, model, attempt, why, delay) -> None:
        """Called from the agents' threads: queue an event for the main thread to write."""
        with self._thread_lock:
            self._thread_events.append(("llm_retry", {"model": model, "attempt": attempt,
                                                      "error": why, "wait_s": round(delay, 3)}))

    def _flush_thread_events(self) -> None:
        with self._thread_lock:
            queued, self._thread_events = self._thread_events, []
        for name, fields_ in queued:
            if name == "llm_retry":
                self.usage["retries"] += 1
            self.events.write(name, **fields_)

    def _account(self, role: str, calls) -> dict:
        """Add calls' tokens and cost to the counters (the caller commits them to the store)."""
        u = self.usage
        tokens = cost = 0
        for r in calls:
            u["calls"] += 1
            u["prompt_tokens"] += r.prompt_tokens
            u["completion_tokens"] += r.completion_tokens
            u["tokens"] += r.tokens
            u["cost_usd"] = round(u["cost_usd"] + r.cost_usd, 8)
            for key, name in (("by_role", role), ("by_model", r.model)):
                d = u[key].setdefault(name, {"calls": 0, "tokens": 0, "cost_usd": 0.0})
                d["calls"] += 1
                d["tokens"] += r.tokens
                d["cost_usd"] = round(d["cost_usd"] + r.cost_usd, 8)
            tokens += r.tokens
            cost += r.cost_usd
        return {"tokens": tokens, "cost_usd": round(cost, 8)}

    def _save_usage(self) -> None:
        self.store.set_meta(LLM_KEY, self.usage)

    def _collect(self) -> None:
        """Take in every agent task that has finished (main thread only)."""
        for task in [t for t in self.research if t.future.done()]:
            self.research.remove(task)
            self._finish_research(task)
        for task in [t for t in self.side if t.future.done()]:
            self.side.remove(task)
            if task.kind == "analyst":
                self._finish_analyst(task)
            else:
                self._finish_review(task)
        self._flush_thread_events()

    def _finish_research(self, task: _Task) -> None:
        from .llm import ResearchOutcome
        snap = task.snap
        try:
            out = task.future.result()
        except Exception as exc:   # noqa: BLE001 - a bug in an agent must not end the run
            out = ResearchOutcome(status="error", model=snap.model,
                                  message=f"{type(exc).__name__}: {exc}")
        self._flush_thread_events()
        u = self.usage
        u["proposals"] += 1
        child = None
        with self.store.transaction():
            spent = self._account("researcher", out.calls)
            if out.status == "ok":
                ans = out.answer
                cand = Candidate(
                    source=ans.source, island=snap.island, parents=[snap.parent.id],
                    generation=snap.parent.generation + 1, operator="llm", model=out.model,
                    rationale=ans.rationale,
                    extra={"parent_fitness": snap.parent.fitness,
                           "parent_stage1": snap.parent.extra.get("stage1_fitness"),
                           "hypothesis": ans.hypothesis, "form": ans.form,
                           "repaired": out.repaired, "proposal": snap.index,
                           "inspirations": [c.id for c in snap.inspirations], **spent})
                if self.store.has_hash(code_hash(cand.source)):
                    u["duplicates"] += 1
                    self.events.write("duplicate", island=snap.island, parent=snap.parent.id,
                                      operator="llm", model=out.model)
                else:
                    child = self.store.add(cand)
                    u["children"] += 1
                    u["repaired"] += int(out.repaired)
            elif out.status == "discarded":
                u["discarded"] += 1
                self.events.write("discarded", island=snap.island, parent=snap.parent.id,
                                  model=out.model, errors=out.errors,
                                  reasons=getattr(out, "reasons", []), **spent)
            elif out.status == "cancelled":
                u["abandoned"] += 1
            elif out.status == "fatal":
                u["errors"] += 1
                self.fatal = out.message
                self.events.write("llm_fatal", model=out.model, error=out.message)
            else:                                 # unavailable (retries exhausted) or error
                u["unavailable" if out.status == "unavailable" else "errors"] += 1
                self.events.write("llm_error", island=snap.island, parent=snap.parent.id,
                                  model=out.model, status=out.status, error=out.message,
                                  **spent)
                if out.status == "unavailable" and self.cfg.llm.fallback_offline:
                    for attempt in range(self.cfg.search.max_attempts):   # not a duplicate
                        child = self._offline_child(snap.index + attempt * FALLBACK_STRIDE,
                                                    snap.island, snap.parent, snap.inspirations,
                                                    extra={"llm_fallback": out.message})
                        if child is not None:
                            break
                    u["fallbacks"] += int(child is not None)
            self._save_usage()
        if out.status == "ok" and child is not None:
            self.events.write("proposal", candidate=child.id, island=child.island,
                              operator="llm", parents=child.parents, model=out.model,
                              hypothesis=child.extra["hypothesis"], rationale=child.rationale,
                              form=child.extra["form"], repaired=out.repaired,
                              first_errors=out.errors, reasons=getattr(out, "reasons", []),
                              **spent)
        elif child is not None:
            self.events.write("proposal", candidate=child.id, island=child.island,
                              operator=child.operator, parents=child.parents,
                              rationale=child.rationale, llm_fallback=True)
        if self.fatal:
            self.request_stop(f"LLM endpoint error: {self.fatal}")
            return
        if child is not None:
            self.ready.append(child)
            self._failures_in_row = 0
        elif out.status != "cancelled":
            self._failures_in_row += 1
            if self._failures_in_row >= self.cfg.search.max_attempts:
                self._no_more = (f"no new candidate could be proposed ({self._failures_in_row} "
                                 f"LLM proposals in a row gave no usable program)")
                self.events.write("llm_giving_up", failures=self._failures_in_row)

    def _maybe_analyse(self, cand: Candidate, parent: Candidate | None) -> None:
        """LLM Analyst after a failure or a result that does not beat the parent."""
        c = self.cfg.llm
        if self.llm is None or not c.analyst or parent is None or self.stopping \
                or self._llm_budget_out():
            return
        if cand.status == "ok" and cand.fitness > (parent.fitness or 0.0):
            return
        from .llm import AnalystSnapshot
        snap = AnalystSnapshot(candidate=copy.deepcopy(cand), parent=parent,
                               model=c.analyst_model or c.first_model(),
                               started=threading.Event(), give_up=threading.Event())
        fut = _spawn(self.analyst.summarize, snap, name=f"analyst-{cand.id}")
        fut.started = snap.started     # a Researcher waits for it only once it is answered
        self.summaries[cand.id] = fut
        self.side.append(_Task("analyst", fut, snap))

    def _finish_analyst(self, task: _Task) -> None:
        cid = task.snap.candidate.id
        self.summaries.pop(cid, None)
        try:
            text, result = task.future.result()
            calls, error = [result], None
        except Exception as exc:   # noqa: BLE001 - the rule-based summary stays
            text, calls, error = None, list(getattr(exc, "usage", []) or []), str(exc)
        with self.store.transaction():
            spent = self._account("analyst", calls)
            if text:
                cand = self.store.get(cid)
                cand.reasoning = text
                cand.extra["reasoning_by"] = task.snap.model
                self.store.update(cand)
                self.usage["summaries"] += 1
            else:
                self.usage["summary_failures"] += 1
            self._save_usage()
        self.events.write("analysis", candidate=cid, model=task.snap.model, ok=bool(text),
                          error=error, **spent)

    def _maybe_supervise(self) -> None:
        c = self.cfg.llm
        k = c.supervisor_interval
        if self.llm is None or not k or self._why_stop() \
                or any(t.kind == "supervisor" for t in self.side):
            return                 # (no review when no Researcher will read it)
        done = self.evaluations
        first = not self.supervision.get("review")
        if first:       # the first review also in a small budget (a third of it at the latest)
            k = min(k, max(1, self.budget.max_evaluations // 3))
        if done - int(self.supervision.get("evaluations", 0)) < k:
            return
        from .llm import SupervisorSnapshot
        recent = [x for x in self.store.all()
                  if x.status != "pending" and x.operator not in ("seed", "migration")]
        if first and not recent:
            return      # a first review that sees only the seeds has nothing to say
        snap = SupervisorSnapshot(
            review=int(self.supervision.get("review", 0)) + 1, evaluations=done,
            leaderboard=self.islands.leaderboard(10),
            island_best=[(i, self.islands.best(i)) for i in range(self.islands.num_islands)],
            recent=recent[-RECENT_FOR_SUPERVISOR:], previous=self.supervision.get("notes", ""),
            model=c.supervisor_model or c.first_model())
        self.side.append(_Task("supervisor", _spawn(self.supervisor.review, snap,
                                                    name="supervisor"), snap))

    def _finish_review(self, task: _Task) -> None:
        snap = task.snap
        try:
            notes, result = task.future.result()
            calls, error = [result], None
        except Exception as exc:   # noqa: BLE001 - the previous notes stay
            notes, calls, error = None, list(getattr(exc, "usage", []) or []), str(exc)
        with self.store.transaction():
            spent = self._account("supervisor", calls)
            if notes:
                self.supervision = {"review": snap.review, "evaluations": snap.evaluations,
                                    "notes": notes, "model": snap.model}
                self.usage["reviews"] += 1
            else:
                self.supervision = {**self.supervision, "evaluations": snap.evaluations}
                self.usage["review_failures"] += 1
            self.store.set_meta(SUPERVISOR_KEY, self.supervision)
            self._save_usage()
        if notes:
            when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            with open(self.run_dir / NOTES_FILE, "a", encoding="utf-8") as fh:
                fh.write(f"## Review {snap.review} — after {snap.evaluations} evaluations "
                         f"({snap.model}, {when})\n\n{notes.strip()}\n\n")
        self.events.write("supervisor", review=snap.review, evaluations=snap.evaluations,
                          model=snap.model, ok=bool(notes), error=error, **spent)

    def _abandon_llm(self, side_too: bool) -> None:
        """Stop waiting for LLM calls (the run is being interrupted): their threads give up at
        their next retry; a child not committed yet is simply not made."""
        self._cancel.set()
        for task in self.research:
            self.usage["abandoned"] += 1
            self.events.write("abandoned", kind="research", island=task.snap.island,
                              parent=task.snap.parent.id, model=task.snap.model)
        self.research.clear()
        if side_too:
            self.side.clear()
            self.summaries.clear()

    # --- evaluation -----------------------------------------------------------------------------
    def _job(self, cand: Candidate) -> EvalJob:
        """Evaluations use the policy rng seed base 0 whatever the run's seed (common random
        numbers; `glia-evo simulate` and tuning trials do the same, so fitness reproduces)."""
        e = self.cfg.evaluation
        bar = cand.extra.get("parent_stage1") if cand.operator != "seed" else None
        return EvalJob(source=cand.source, problem=self.problem.key, split=e.split,
                       seed=0, cascade=e.cascade and cand.operator != "seed",
                       cascade_split=e.cascade_split, threshold=e.cascade_threshold,
                       bar_fitness=bar if bar is not None else 1.0,
                       reference=tuple(sorted(self.reference.items())),
                       cascade_timeout_s=e.cascade_timeout_s)

    def _submit(self, cand: Candidate) -> None:
        self.inflight.append((cand, self.pool.submit(evaluate_job, self._job(cand))))
        self._submitted += 1

    def _would_be_best(self, fitness: float) -> bool:
        best = self.islands.best()
        return best is None or fitness > best.fitness

    def _irreproducible(self, cand: Candidate, job: EvalJob, result) -> str | None:
        """Before a candidate becomes the run's best (and so what `export` and `report` use), it
        is evaluated once more in a fresh job process and must reproduce its metrics exactly
        (the simulator is deterministic): a result forged by a program that got out of the
        language layer, or a lucky race, does not survive a second process. Shipped baselines
        are trusted code and skip this. Returns why it failed, or None."""
        if cand.operator == "seed" and cand.extra.get("baseline") in \
                self.problem.baseline_names() and \
                cand.source == self.problem.baseline_source(cand.extra["baseline"]):
            return None
        cascade_split = job.cascade_split if job.cascade else None
        for _ in range(2):      # a second job killed from outside (not by itself) runs again
            again = self._read(self.pool.submit(evaluate_job, job).result(), job.split,
                               cascade_split)
            if not (again.status == "crashed" and "SIGKILL" in (again.error or "")):
                break
        same = again.status == result.status and again.scenarios == result.scenarios
        self.events.write("reproduced", candidate=cand.id, status=again.status, same=same)
        if same or (self.stopping and again.status == "crashed"):   # stopped mid-check
            return None
        return (f"did not reproduce its metrics in a fresh process (first {result.status} "
                f"{result.fitness:.4f}, then {again.status} {again.fitness:.4f})")

    def _slots(self) -> int:
        """Evaluations to keep in flight: the executor's (a Dask cluster's may change)."""
        return getattr(self.pool, "workers", self.cfg.evaluation.workers)

    # --- tuning: trials share the workers with candidates, at most every other slot ----------
    def _trial_turn(self) -> bool:
        """A trial may start: a study wants one, at most every other slot, and trials have
        taken no more than their share of the worker time (`TuningRuns.share`)."""
        study = self.tuning.study
        return (study is not None and study.wants_trial() and not self.stopping
                and self._submitted % 2 == 0 and self.tuning.within_share())

    def _trial_cascade(self) -> tuple[str, dict]:
        """(the tuning split, the cascade fields of a trial's job)."""
        e = self.cfg.evaluation
        split = self.cfg.tuning.split or e.split
        return split, {"cascade": e.cascade and split == e.split,
                       "cascade_split": e.cascade_split, "threshold": e.cascade_threshold,
                       "cascade_timeout_s": e.cascade_timeout_s}

    def _submit_trial(self) -> None:
        split, cascade = self._trial_cascade()
        trial, job, cached = self.tuning.next_job(self.problem.key, split,
                                                  tuple(sorted(self.reference.items())),
                                                  cascade=cascade)
        if cached is not None:       # the same knobs on the same code: told, never run again
            result = EvalResult(status=cached["status"], fitness=cached["fitness"] or 0.0,
                                scenarios=cached["scenarios"], duration_s=cached["duration_s"])
            self._told_trial(trial, result, reused=True)
            return
        self.inflight.append((trial, self.pool.submit(evaluate_job, job)))
        self._submitted += 1

    def _process_trial(self, trial: Trial, outcome) -> None:
        e = self.cfg.evaluation
        split = self.cfg.tuning.split or e.split
        result = self._read(outcome, split, e.cascade_split if e.cascade and split == e.split
                            else None)
        stage = (result.diagnostics or {}).get("cascade", {})
        self._told_trial(trial, result, cut=stage.get("stage") == 1 and not stage.get("passed"))

    def _told_trial(self, trial: Trial, result, *, cut: bool = False, reused: bool = False):
        study = self.tuning.study
        share = self.tuning.share()
        self.events.write("trial", candidate=study.cand.id, trial=trial.number,
                          knobs=trial.knobs, status=result.status, fitness=result.fitness,
                          seconds=round(result.duration_s, 3), cut=cut, reused=reused)
        child = self.tuning.told(trial, result, cut=cut, reused=reused)
        if self.tuning.study is None:
            self._concluded(study, child, result)
            stats = self.tuning.stats()
            if self.tuning.share(stats) != share:
                self.events.write("tuning_share", share=round(self.tuning.share(stats), 3),
                                  studies=stats["studies"], improved=stats["improved"])

    def _conclude_reopened_study(self) -> None:
        """A study whose last trials were told (or lost) just before a kill: close it now."""
        study = self.tuning.study
        if study is not None and study.done():
            self._concluded(study, self.tuning.conclude(), None)

    def _concluded(self, study, child: Candidate | None, result) -> None:
        """Store a finished study's tuned child (closing the study in the same transaction)."""
        parent = study.cand
        if child is None:
            self.events.write("tuning_done", candidate=parent.id, improved=False,
                              stopped_early=study.tuner.stopped)
            return
        if self._would_be_best(child.fitness):     # its best trial, again, in a fresh process
            split, cascade = self._trial_cascade()
            job = trial_job(parent, study.best["knobs"], self.problem.key, split,
                            tuple(sorted(self.reference.items())), cascade)
            why = self._irreproducible(child, job, _as_result(child))
            if why:
                child.status, child.fitness, child.error = "crashed", 0.0, why
                result = None
        ok = result is not None and result.status == "ok" and result.fitness == child.fitness
        child.reasoning = analyst.summarize(result if ok else _as_result(child), parent.fitness,
                                            parent.metrics, child.rationale, self.problem)
        child.evaluated_at = time.time()
        with self.store.transaction():
            member = self.islands.insert(child)
            self.tuning.settle()
        self.events.write("tuning_done", candidate=parent.id, improved=True, child=child.id,
                          fitness=child.fitness, member=member)
        self._track(child)
        best = self.islands.best()
        if best is not None and best.id == child.id:
            self._write_best(best)

    def _track(self, cand: Candidate) -> None:
        if self.tracker is None:
            return
        parent = self.store.get(cand.parents[0]) if cand.parents else None
        self.tracker.candidate(cand.to_dict(), parent.source if parent else None)

    def _process(self, cand: Candidate, outcome) -> None:
        e = self.cfg.evaluation
        result = self._read(outcome, e.split, e.cascade_split if e.cascade else None)
        if result.status == "ok" and self._would_be_best(result.fitness):
            why = self._irreproducible(cand, self._job(cand), result)
            if why:
                result = EvalResult(status="crashed", error=why, duration_s=result.duration_s)
        parent = self.store.get(cand.parents[0]) if cand.parents else None
        cand.status = result.status
        cand.fitness = result.fitness if result.status == "ok" else 0.0
        cand.metrics = result.scenarios
        cand.error = result.error
        cand.evaluated_at = time.time()
        cand.eval_seconds = result.duration_s
        cascade = result.diagnostics.get("cascade", {}) if result.diagnostics else {}
        stage1 = cascade.get("stage1_fitness")
        if type(stage1) in (int, float) and 0 <= stage1 < float("inf"):
            cand.extra["stage1_fitness"] = stage1
        cand.extra["diagnostics"] = _compact_diagnostics(result.diagnostics)
        cand.reasoning = analyst.summarize(result, parent.fitness if parent else None,
                                           parent.metrics if parent else None,
                                           cand.extra.get("hypothesis") or cand.rationale,
                                           self.problem)
        with self.store.transaction():
            member = self.islands.insert(cand)
            self.tuning.count_candidate(result.duration_s)
            self.store.set_meta(EVALUATIONS_KEY, self.evaluations + 1)
            self.store.set_meta(ELAPSED_KEY, self.elapsed())
        self.events.write("evaluation", candidate=cand.id, island=cand.island,
                          status=cand.status, fitness=cand.fitness, member=member,
                          seconds=round(result.duration_s, 3), error=cand.error)
        self._failures_in_row = 0          # the population changed: a fresh chance
        self._track(cand)
        if member and self.tuning.consider(cand) is not None:
            self.events.write("tuning_start", candidate=cand.id,
                              trials=self.cfg.tuning.trials)
        self._maybe_analyse(cand, parent)
        self._maybe_migrate()
        self._maybe_supervise()
        best = self.islands.best()
        if best is not None and best.id in (cand.id,):
            self._write_best(best)
        if self.progress:
            self.progress(self.status())

    def _recover_evaluation_events(self) -> None:
        """Log the evaluations a kill cut off from events.jsonl.

        The event is written after its result commits, so a SIGKILL between the two leaves a
        counted evaluation with no line; it is written now, once, marked `recovered`."""
        logged = {e.get("candidate") for e in read_events(self.events.path)
                  if e.get("event") == "evaluation"}
        members = None
        for cand in self.store.all():
            if cand.status == "pending" or cand.operator in DERIVED_OPERATORS or \
                    cand.id in logged:
                continue
            members = members if members is not None else {m.id for m in self.store.members()}
            self.events.write("evaluation", candidate=cand.id, island=cand.island,
                              status=cand.status, fitness=cand.fitness,
                              member=cand.id in members,
                              seconds=round(cand.eval_seconds, 3), error=cand.error,
                              recovered=True)

    def _maybe_migrate(self) -> None:
        s = self.cfg.search
        done = self.evaluations
        last = int(self._meta(LAST_MIGRATION_KEY))
        if done - last >= s.migration_interval:
            with self.store.transaction():
                migrants = self.islands.migrate(s.migration_k)
                self.store.set_meta(LAST_MIGRATION_KEY, done)
            self.events.write("migration", migrants=[{"id": m.id, "from": m.parents[0],
                                                      "island": m.island} for m in migrants])
            for m in migrants:
                self._track(m)

    def _write_best(self, best: Candidate) -> None:
        path = self.run_dir / "best.py"
        tmp = path.with_suffix(".py.tmp")
        tmp.write_text(best.source)
        os.replace(tmp, path)

    # --- the loop -------------------------------------------------------------------------------
    def request_stop(self, why: str) -> None:
        if not self.stopping:
            self.stopping = why

    def run(self) -> str:
        """Search until a budget runs out or a stop is requested; returns why it stopped."""
        self._started = time.monotonic()
        self._elapsed_before = float(self._meta(ELAPSED_KEY, 0.0))
        self.events.write("start", config=self.cfg.to_dict(), evaluations=self.evaluations)
        self._recover_evaluation_events()
        if self.tracker is not None:
            self.tracker.start_search(self.cfg.to_dict())
        self.reference = self._reference()
        self._seed_population()
        self._conclude_reopened_study()
        backlog = collections.deque(self.store.by_status("pending"))   # seeds or a killed run's
        why = None
        try:
            while True:
                self._collect()
                why = self._why_stop()
                while len(self.inflight) < self._slots():
                    if not why and self._trial_turn():
                        self._submit_trial()
                        why = self._why_stop()
                        continue
                    if not why and backlog:
                        cand = backlog.popleft()
                    elif self.ready and not self.stopping:
                        cand = self.ready.popleft()     # an LLM child (counted in the budget)
                    elif not why and self._may_propose():
                        cand = self._propose()
                        if cand is None:
                            why = "no new candidate could be proposed"
                            break
                        if cand is STARTED:
                            why = self._why_stop()
                            continue
                    else:
                        break
                    self._submit(cand)
                    why = self._why_stop()
                # LLM: prepare up to `concurrency` children while the workers are busy
                while self.llm is not None and not why and self._may_propose() \
                        and len(self.ready) + len(self.research) < self.concurrency:
                    cand = self._propose()
                    if cand is None:
                        why = "no new candidate could be proposed"
                        break
                    if cand is not STARTED:
                        self.ready.append(cand)
                    why = self._why_stop()
                if self.stopping and self.research:
                    self._abandon_llm(side_too=False)
                if not self.inflight and not self.research and \
                        not (self.ready and not self.stopping):
                    break
                self._wait_any()
                if self.inflight and self.inflight[0][1].done():
                    cand, future = self.inflight.popleft()
                    if isinstance(cand, Trial):
                        self._process_trial(cand, future.result())
                    else:
                        self._process(cand, future.result())
            self._finish_side_tasks()
        except BaseException:
            try:
                self._checkpoint()
            except Exception:   # noqa: BLE001 - e.g. a full disk: the error that stopped the
                pass            # run is the one to report (elapsed time is also in each result)
            raise
        self._checkpoint()
        why = why or self.stopping or "done"
        self.events.write("stop", reason=why, evaluations=self.evaluations,
                          **({"llm": {k: self.usage[k] for k in ("calls", "tokens", "cost_usd")}}
                             if self.llm is not None else {}))
        best = self.islands.best()
        if best is not None:
            self._write_best(best)
        if self.tracker is not None:
            everything = [c.to_dict() for c in self.store.all() if c.status != "pending"]
            for c in everything:
                c.pop("extra", None)
            self.tracker.finish_search(
                [{"id": c.id, "fitness": c.fitness, "operator": c.operator, "island": c.island}
                 for c in self.islands.leaderboard(20)],
                everything, best.to_dict() if best else None,
                status="KILLED" if self.stopping in ("interrupted", "terminated") else "FINISHED")
        return why

    def _wait_any(self, deadline: float | None = None) -> None:
        """Wait until the oldest evaluation or any agent task is done (or, with no evaluation to
        wait for, a stop is requested or the deadline passes). Ctrl-C while waiting asks the
        engine to stop but keeps waiting; a second one (while stopping) aborts."""
        futures = [f for _, f in list(self.inflight)[:1]]
        futures += [t.future for t in self.research] + [t.future for t in self.side]
        while True:
            try:
                done, _ = concurrent.futures.wait(futures, timeout=0.5,
                                                  return_when=concurrent.futures.FIRST_COMPLETED)
            except KeyboardInterrupt:
                if self.stopping:
                    raise
                self.request_stop("interrupted")
                continue
            if done or (self.stopping and (self.research or not self.inflight)):
                return
            if deadline is not None and time.monotonic() >= deadline:
                return

    def _finish_side_tasks(self) -> None:
        """At the end: give the Analyst and Supervisor calls still running up to one call
        timeout to finish (their summaries and notes are stored), unless the run is being
        interrupted; then give up on them (the rule-based summaries stay)."""
        if self.llm is None:
            return
        deadline = time.monotonic() + self.cfg.llm.timeout_s
        if not (self.stopping in ("interrupted", "terminated") or self.fatal):
            for t in self.side:     # summaries still queued for the endpoint's slots: no
                if t.kind == "analyst" and getattr(t.snap, "give_up", None) is not None \
                        and not t.snap.started.is_set():      # waiting for them at the end
                    t.snap.give_up.set()
            while self.side and time.monotonic() < deadline and not self.stopping:
                self._wait_any(deadline)
                self._collect()
        if self.side:
            self._abandon_llm(side_too=True)

    def _checkpoint(self) -> None:
        self.store.set_meta(ELAPSED_KEY, self.elapsed())
        if self.llm is not None:
            self._save_usage()

    def status(self) -> dict:
        return run_status(self.store, self.islands, self.budget, self.elapsed())

    def close(self, tracking_timeout_s: float = 120.0) -> None:
        """Close everything, each part even if another one fails (e.g. on a full disk); the
        first error is raised at the end. Records the tracker could not log stay in the backlog
        and are logged on the next start."""
        errors = []
        if self.tracker is not None:
            try:
                self.tracker.close(timeout_s=tracking_timeout_s)
                if self.tracker.pending():
                    self.events.write("tracking_backlog", pending=self.tracker.pending(),
                                      error=self.tracker.last_error)
            except Exception as exc:   # noqa: BLE001
                errors.append(exc)
                if self.tracker.proc.poll() is None:
                    self.tracker.proc.terminate()
        if self.llm is not None:
            self._cancel.set()
            self.llm.close()
        for closer in (self.events.close, self.store.close):
            try:
                closer()
            except Exception as exc:   # noqa: BLE001
                errors.append(exc)
        if errors:
            raise errors[0]


def _compact_diagnostics(diag: dict | None) -> dict:
    """What is worth storing per candidate: the summary numbers and slowest requests."""
    out = {}
    for name, d in (diag or {}).items():
        if isinstance(d, dict) and "router_calls" in d:
            out[name] = {k: d[k] for k in ("load_imbalance_cv_mean", "max_queue_len",
                                           "slowest_requests", "starvation", "scale_calls")
                         if k in d}
            if isinstance(d.get("scale_events"), list):      # autoscaling: the first decisions
                out[name]["scale_events"] = d["scale_events"][:20]
        else:
            out[name] = d
    return out


def run_status(store: Store, islands: Islands, budget: Budget, elapsed_s: float) -> dict:
    evaluations = int(store.get_meta(EVALUATIONS_KEY, 0))
    trials = int(store.get_meta("trials", 0))
    best = islands.best()
    per_island = []
    for i in range(islands.num_islands):
        b = islands.best(i)
        per_island.append({"island": i, "members": len(islands.members(i)),
                           "best_id": b.id if b else None,
                           "best_fitness": b.fitness if b else None})
    usage = store.get_meta(LLM_KEY)
    tokens = int(usage["tokens"]) if usage else 0
    cost = float(usage["cost_usd"]) if usage else 0.0
    out = {
        "evaluations": evaluations,
        "tuning_trials": trials,
        "candidates": len(store),
        "best": {"id": best.id, "fitness": best.fitness, "operator": best.operator,
                 "island": best.island} if best else None,
        "islands": per_island,
        "elapsed_s": round(elapsed_s, 1),
        "budget_left": budget.left(evaluations + trials, elapsed_s, tokens, cost),
        "rate_per_min": round(evaluations / (elapsed_s / 60), 2) if elapsed_s > 1 else 0.0,
        "statuses": {s: store.count(s) for s in ("ok", "error", "timeout", "crashed", "invalid",
                                                  "rejected", "pending")},
    }
    tuning = store.get_meta(STATS_KEY)
    if tuning:
        out["tuning"] = tuning_summary({**new_stats(), **tuning})
    if usage:
        out["llm"] = {k: usage.get(k, 0) for k in new_usage() if k not in ("by_role",)}
        out["llm"]["by_role"] = usage.get("by_role", {})
        sup = store.get_meta(SUPERVISOR_KEY)
        out["llm"]["supervisor_review"] = sup.get("review", 0) if sup else 0
    return out


def _as_result(cand: Candidate):
    """A minimal EvalResult-like view of a stored candidate, for the rule-based analyst."""
    from .evaluation import EvalResult
    return EvalResult(status=cand.status, fitness=cand.fitness, scenarios=cand.metrics)


def _reference_values(value, name: str) -> tuple[dict, dict]:
    """The reference job's {"values", "completed"}, checked: positive finite metrics, whole
    request counts (it is trusted code, but its answer still crossed the job channel)."""
    try:
        values, completed = value["values"], value.get("completed") or {}
        ok = (all(type(v) in (int, float) and 0 < v < float("inf") for v in values.values())
              and all(type(c) is int and c >= 0 for c in completed.values()))
    except (TypeError, KeyError, AttributeError):
        ok = False
    if not ok:
        raise EngineError(f"the reference baseline {name} sent an unusable result")
    return values, completed
