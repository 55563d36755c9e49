"""The LLM crew: the Researcher, Analyst and Supervisor calls, run in threads beside the
evaluations, with their token / cost counters. The crew never calls back into the engine: the
engine asks it to start calls (with what they need), to hand over what has finished, and to
record outcomes; the crew publishes its own events on the bus.

A Researcher call starts from a snapshot (parent, inspirations, notes, the proposal index and the
selection's rng draw, committed by the engine in one short transaction) and runs without holding
the store; its answer becomes a `Proposal` the engine stores as a child (`glia_evo.children`).
"""
from __future__ import annotations

import concurrent.futures
import copy
import datetime
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from population import Candidate, Islands, Store

from .config import RunConfig
from .operators import Proposal
from .run_state import Budget, LLM_KEY, SUPERVISOR_KEY, new_usage

OFFLINE = "offline"
NOTES_FILE = "supervisor_notes.md"
RECENT_FOR_SUPERVISOR = 12


@dataclass
class Task:
    kind: str                        # research | analyst | supervisor
    future: concurrent.futures.Future
    snap: object
    started: float = field(default_factory=time.monotonic)


def spawn(fn, *args, name: str = "glia-llm") -> concurrent.futures.Future:
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


def turn(cfg: RunConfig, index: int, offline: bool) -> str:
    """Who makes proposal `index`: "offline" or the name of the model the Researcher uses
    (drawn by weight; mixed mode sends `offline_fraction` of the proposals offline)."""
    if offline:
        return OFFLINE
    from .llm import pick_model
    rng = random.Random(f"proposal-{cfg.seed}-{index}")
    if rng.random() < cfg.llm.offline_fraction:
        return OFFLINE
    return pick_model(cfg.llm.weights(), rng)


class Crew:
    def __init__(self, cfg: RunConfig, problem, store: Store, islands: Islands, bus,
                 budget: Budget, run_dir: Path, workers: int):
        from .llm import (LLMAnalyst, LLMClient, Prompts, Researcher, Supervisor,
                          api_key_from_env)
        self.cfg, self.problem, self.store, self.islands = cfg, problem, store, islands
        self.bus, self.budget, self.run_dir = bus, budget, run_dir
        c = cfg.llm
        local = is_local(c.base_url)
        self.concurrency = c.concurrency or (1 if local else 2 * workers)
        self.cancel = threading.Event()
        self._thread_events: list[tuple[str, dict]] = []
        self._thread_lock = threading.Lock()
        # a local server answers few calls at once: every agent's calls share its slots
        self.client = LLMClient(c, api_key_from_env(c.api_key_env), seed=cfg.seed,
                                cancel=self.cancel, on_retry=self._on_retry,
                                max_in_flight=self.concurrency if local else None)
        prompts = Prompts(c.prompts_dir or None)
        self.researcher = Researcher(self.client, problem, prompts,
                                     summary_wait_s=c.timeout_s * (c.max_retries + 1) + 5)
        self.analyst = LLMAnalyst(self.client, problem, prompts)
        self.supervisor = Supervisor(self.client, problem, prompts)
        self.research: list[Task] = []
        self.side: list[Task] = []
        self.summaries: dict[str, concurrent.futures.Future] = {}
        self.usage = new_usage()
        self.usage.update(store.get_meta(LLM_KEY, {}) or {})
        self.supervision = dict(store.get_meta(SUPERVISOR_KEY, {}) or {})

    # --- budget -------------------------------------------------------------------------------
    def projection(self) -> tuple[int, float]:
        """Tokens and cost used, plus what the calls still running will probably use (the mean
        so far per call), so a token or cost budget stops new calls early enough not to be
        overshot by the ones in flight."""
        u = self.usage
        running = len(self.research) + len(self.side)
        if not running or not u["calls"]:
            return u["tokens"], u["cost_usd"]
        return (u["tokens"] + running * u["tokens"] // u["calls"],
                u["cost_usd"] + running * u["cost_usd"] / u["calls"])

    def budget_out(self) -> bool:
        return self.budget.llm_exhausted(*self.projection()) is not None

    # --- the Researcher -----------------------------------------------------------------------
    def busy(self) -> bool:
        """Mixed mode with `concurrency` Researcher calls running: the next proposal is made
        offline, so the evaluation workers never sit idle waiting for a model."""
        return 0 < self.cfg.llm.offline_fraction and len(self.research) >= self.concurrency

    def may_propose(self, index: int) -> bool:
        """False while the next proposal is an LLM one and `concurrency` calls are running (in
        mixed mode an offline proposal takes the free slot instead), or while its island has no
        member that is not already a parent of a running call and seeds are still pending
        there (so the first proposals spread over islands and parents, not all island 0)."""
        if turn(self.cfg, index, False) == OFFLINE or self.busy():
            return True
        if len(self.research) >= self.concurrency:
            return False
        island = index % self.cfg.search.islands
        running = {t.snap.parent.id for t in self.research}
        if all(m.id in running for m in self.islands.members(island)) and any(
                c.island == island and c.operator == "seed"
                for c in self.store.by_status("pending")):
            return False
        return True

    def spread_parent(self, island: int, parent):
        """Another tournament (at most 3) when `parent` is already the parent of a running
        Researcher call and the island has other members."""
        running = {t.snap.parent.id for t in self.research}
        if parent.id not in running or len(self.islands.members(island)) < 2:
            return parent
        for _ in range(3):
            other = self.islands.select_parent(island)
            if other.id not in running:
                return other
        return parent

    def snapshot(self, index, island, parent, inspirations, model):
        from .llm import ResearchSnapshot
        waits = {c.id: self.summaries[c.id] for c in [parent, *inspirations]
                 if c.id in self.summaries}
        known = {c.code_hash: c.id for c in self.store.all() if c.code_hash}
        return ResearchSnapshot(index=index, island=island, parent=parent,
                                inspirations=list(inspirations),
                                notes=self.supervision.get("notes", ""), model=model,
                                summaries=waits, known=known)

    def start_research(self, snap) -> None:
        self.research.append(Task("research", spawn(self.researcher.propose, snap,
                                                    name=f"researcher-{snap.index}"), snap))

    def finished_research(self) -> list[tuple[object, object]]:
        """(snapshot, ResearchOutcome) of every Researcher call that has answered (main thread
        only); the Analyst's and Supervisor's finished calls are taken in on the way."""
        from .llm import ResearchOutcome
        done = []
        for task in [t for t in self.research if t.future.done()]:
            self.research.remove(task)
            try:
                out = task.future.result()
            except Exception as exc:   # noqa: BLE001 - a bug in an agent must not end the run
                out = ResearchOutcome(status="error", model=task.snap.model,
                                      message=f"{type(exc).__name__}: {exc}")
            done.append((task.snap, out))
        for task in [t for t in self.side if t.future.done()]:
            self.side.remove(task)
            if task.kind == "analyst":
                self._finish_analyst(task)
            else:
                self._finish_review(task)
        self.flush_thread_events()
        return done

    def record_research(self, snap, out) -> dict:
        """Count a Researcher outcome and publish what went wrong (inside the engine's
        transaction); returns the tokens and cost it spent."""
        u = self.usage
        u["proposals"] += 1
        spent = self.account("researcher", out.calls)
        if out.status == "discarded":
            u["discarded"] += 1
            self.bus.emit("discarded", island=snap.island, parent=snap.parent.id,
                          model=out.model, errors=out.errors,
                          reasons=getattr(out, "reasons", []), **spent)
        elif out.status == "cancelled":
            u["abandoned"] += 1
        elif out.status == "fatal":
            u["errors"] += 1
            self.bus.emit("llm_fatal", model=out.model, error=out.message)
        elif out.status != "ok":                  # unavailable (retries exhausted) or error
            u["unavailable" if out.status == "unavailable" else "errors"] += 1
            self.bus.emit("llm_error", island=snap.island, parent=snap.parent.id,
                          model=out.model, status=out.status, error=out.message, **spent)
        return spent

    @staticmethod
    def proposal(snap, out) -> Proposal:
        """A Researcher's usable answer as a Proposal (what the offline mutator returns too)."""
        ans = out.answer
        return Proposal(source=ans.source, operator="llm", rationale=ans.rationale,
                        hypothesis=ans.hypothesis, model=out.model,
                        extra={"hypothesis": ans.hypothesis, "form": ans.form,
                               "repaired": out.repaired, "proposal": snap.index,
                               "inspirations": [c.id for c in snap.inspirations]})

    def count_child(self, out, child: Candidate | None) -> None:
        if child is None:
            self.usage["duplicates"] += 1
        else:
            self.usage["children"] += 1
            self.usage["repaired"] += int(out.repaired)

    # --- the Analyst and the Supervisor ---------------------------------------------------------
    def maybe_analyse(self, cand: Candidate, parent: Candidate | None, stopping) -> None:
        """LLM Analyst after a failure or a result that does not beat the parent."""
        c = self.cfg.llm
        if not c.analyst or parent is None or stopping or self.budget_out():
            return
        if cand.status == "ok" and cand.fitness > (parent.fitness or 0.0):
            return
        from .llm import AnalystSnapshot
        snap = AnalystSnapshot(candidate=copy.deepcopy(cand), parent=parent,
                               model=c.analyst_model or c.first_model(),
                               started=threading.Event(), give_up=threading.Event())
        fut = spawn(self.analyst.summarize, snap, name=f"analyst-{cand.id}")
        fut.started = snap.started     # a Researcher waits for it only once it is answered
        self.summaries[cand.id] = fut
        self.side.append(Task("analyst", fut, snap))

    def _finish_analyst(self, task: Task) -> None:
        cid = task.snap.candidate.id
        self.summaries.pop(cid, None)
        try:
            text, result = task.future.result()
            calls, error = [result], None
        except Exception as exc:   # noqa: BLE001 - the rule-based summary stays
            text, calls, error = None, list(getattr(exc, "usage", []) or []), str(exc)
        with self.store.transaction():
            spent = self.account("analyst", calls)
            if text:
                cand = self.store.get(cid)
                cand.reasoning = text
                cand.extra["reasoning_by"] = task.snap.model
                self.store.update(cand)
                self.usage["summaries"] += 1
            else:
                self.usage["summary_failures"] += 1
            self.save_usage()
        self.bus.emit("analysis", candidate=cid, model=task.snap.model, ok=bool(text),
                      error=error, **spent)

    def maybe_supervise(self, evaluations: int, stop_reason: str | None) -> None:
        c = self.cfg.llm
        k = c.supervisor_interval
        if not k or stop_reason or any(t.kind == "supervisor" for t in self.side):
            return                 # (no review when no Researcher will read it)
        first = not self.supervision.get("review")
        if first:       # the first review also in a small budget (a third of it at the latest)
            k = min(k, max(1, self.budget.max_evaluations // 3))
        if evaluations - int(self.supervision.get("evaluations", 0)) < k:
            return
        from .llm import SupervisorSnapshot
        recent = [x for x in self.store.all()
                  if x.status != "pending" and x.operator not in ("seed", "migration")]
        if first and not recent:
            return      # a first review that sees only the seeds has nothing to say
        snap = SupervisorSnapshot(
            review=int(self.supervision.get("review", 0)) + 1, evaluations=evaluations,
            leaderboard=self.islands.leaderboard(10),
            island_best=[(i, self.islands.best(i)) for i in range(self.islands.num_islands)],
            recent=recent[-RECENT_FOR_SUPERVISOR:], previous=self.supervision.get("notes", ""),
            model=c.supervisor_model or c.first_model())
        self.side.append(Task("supervisor", spawn(self.supervisor.review, snap,
                                                  name="supervisor"), snap))

    def _finish_review(self, task: Task) -> None:
        snap = task.snap
        try:
            notes, result = task.future.result()
            calls, error = [result], None
        except Exception as exc:   # noqa: BLE001 - the previous notes stay
            notes, calls, error = None, list(getattr(exc, "usage", []) or []), str(exc)
        with self.store.transaction():
            spent = self.account("supervisor", calls)
            if notes:
                self.supervision = {"review": snap.review, "evaluations": snap.evaluations,
                                    "notes": notes, "model": snap.model}
                self.usage["reviews"] += 1
            else:
                self.supervision = {**self.supervision, "evaluations": snap.evaluations}
                self.usage["review_failures"] += 1
            self.store.set_meta(SUPERVISOR_KEY, self.supervision)
            self.save_usage()
        if notes:
            when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            with open(self.run_dir / NOTES_FILE, "a", encoding="utf-8") as fh:
                fh.write(f"## Review {snap.review} — after {snap.evaluations} evaluations "
                         f"({snap.model}, {when})\n\n{notes.strip()}\n\n")
        self.bus.emit("supervisor", review=snap.review, evaluations=snap.evaluations,
                      model=snap.model, ok=bool(notes), error=error, **spent)

    # --- counters, threads, the end -------------------------------------------------------------
    def _on_retry(self, model, attempt, why, delay) -> None:
        """Called from the agents' threads: queue an event for the main thread to publish."""
        with self._thread_lock:
            self._thread_events.append(("llm_retry", {"model": model, "attempt": attempt,
                                                      "error": why, "wait_s": round(delay, 3)}))

    def flush_thread_events(self) -> None:
        with self._thread_lock:
            queued, self._thread_events = self._thread_events, []
        for name, fields_ in queued:
            if name == "llm_retry":
                self.usage["retries"] += 1
            self.bus.emit(name, **fields_)

    def account(self, role: str, calls) -> dict:
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

    def save_usage(self) -> None:
        self.store.set_meta(LLM_KEY, self.usage)

    def futures(self) -> list:
        return [t.future for t in self.research] + [t.future for t in self.side]

    def abandon(self, side_too: bool) -> None:
        """Stop waiting for LLM calls (the run is being interrupted): their threads give up at
        their next retry; a child not committed yet is simply not made."""
        self.cancel.set()
        for task in self.research:
            self.usage["abandoned"] += 1
            self.bus.emit("abandoned", kind="research", island=task.snap.island,
                          parent=task.snap.parent.id, model=task.snap.model)
        self.research.clear()
        if side_too:
            self.side.clear()
            self.summaries.clear()

    def finish_side_tasks(self, interrupted: bool, stopping) -> None:
        """At the end: give the Analyst and Supervisor calls still running up to one call
        timeout to finish (their summaries and notes are stored), unless the run is being
        interrupted (`stopping()` becomes true, e.g. a Ctrl-C now); then give up on them (the
        rule-based summaries stay)."""
        deadline = time.monotonic() + self.cfg.llm.timeout_s
        if not interrupted:
            for t in self.side:     # summaries still queued for the endpoint's slots: no
                if t.kind == "analyst" and getattr(t.snap, "give_up", None) is not None \
                        and not t.snap.started.is_set():      # waiting for them at the end
                    t.snap.give_up.set()
            while self.side and time.monotonic() < deadline and not stopping():
                concurrent.futures.wait([t.future for t in self.side],
                                        timeout=min(0.5, max(0.0, deadline - time.monotonic())),
                                        return_when=concurrent.futures.FIRST_COMPLETED)
                self.finished_research()
        if self.side:
            self.abandon(side_too=True)

    def close(self) -> None:
        self.cancel.set()
        self.client.close()
