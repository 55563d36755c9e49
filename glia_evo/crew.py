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
from .hygiene import clean, clean_tree
from .operators import Proposal
from .run_state import (EVALUATIONS_KEY, EXPERIMENTS_KEY, INSIGHTS_KEY, LLM_KEY, REFERENCE_KEY,
                        SUPERVISOR_KEY, TRIALS_KEY, Budget, new_experiment_stats, new_usage)
from .run_folder import RunFolder

OFFLINE = "offline"
NOTES_FILE = "supervisor_notes.md"
RECENT_FOR_SUPERVISOR = 12
CONCLUSIONS_PER_ISLAND = 3         # research conclusions per island the Supervisor reads
MAX_INSIGHTS = 30                  # Supervisor insights kept for the report
ANSWER_IN_EXTRA = 1000             # characters of a tool answer kept in the child's extra
ANSWER_IN_EVENT = 400              # ... and in its events.jsonl line


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
                 budget: Budget, run_dir: Path, workers: int, pool=None):
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
        # a llama.cpp-style server says how many calls it answers at once (GET /props)
        self.server = self.client.server_props() if local else {"slots": None, "context": None}
        if local and not c.concurrency and self.server["slots"]:
            self.concurrency = self.server["slots"]
            self.client.limit_in_flight(self.concurrency)
        prompts = Prompts(c.prompts_dir or None)
        # research turns (issue 18): the experiment tools run their simulations as jobs of the
        # run's sandbox pool, on the instances of the search's own split (never a held-out
        # one), with the policy rng seed 0 of every evaluation, so `simulate(parent)` gives the
        # parent's own metrics
        self.tools = None
        if c.experiments > 0 and pool is not None:
            from .research import make_tools
            self.tools = make_tools(pool, problem, c, store,
                                    instances=problem.split(cfg.evaluation.split), seed=0)
        self.researcher = Researcher(self.client, problem, prompts,
                                     summary_wait_s=c.timeout_s * (c.max_retries + 1) + 5,
                                     tools=self.tools,
                                     experiments=c.experiments if self.tools else 0,
                                     context_tokens=c.context_tokens or self.server["context"])
        self.analyst = LLMAnalyst(self.client, problem, prompts)
        self.supervisor = Supervisor(self.client, problem, prompts)
        self.research: list[Task] = []
        self.side: list[Task] = []
        self.summaries: dict[str, concurrent.futures.Future] = {}
        self.usage = new_usage()
        self.usage.update(store.get_meta(LLM_KEY, {}) or {})
        self.supervision = dict(store.get_meta(SUPERVISOR_KEY, {}) or {})
        self.experiment_stats = {**new_experiment_stats(),
                                 **(store.get_meta(EXPERIMENTS_KEY, {}) or {})}
        self.insights: list[dict] = list(store.get_meta(INSIGHTS_KEY, []) or [])
        self._per_evaluation: tuple[int, int] | None = None

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

    def per_evaluation(self) -> tuple[int, int]:
        """(simulated requests, instances) of one evaluation on the search's split: what an
        experiment's work is measured against (from the reference's trace lengths)."""
        if self._per_evaluation is None or not self._per_evaluation[0]:
            names = [i.name for i in self.problem.split(self.cfg.evaluation.split)]
            completed = (self.store.get_meta(REFERENCE_KEY) or {}).get("completed") or {}
            self._per_evaluation = (sum(int(completed.get(n) or 0) for n in names),
                                    max(1, len(names)))
        return self._per_evaluation

    def charge(self, work: dict) -> float:
        """A research turn's experiments in evaluations: the requests they simulated over the
        requests of one evaluation (for a problem without requests: simulations over the
        split's instances)."""
        requests, instances = self.per_evaluation()
        if requests:
            return float(work.get("requests", 0) or 0) / requests
        return float(work.get("simulations", 0) or 0) / instances

    def experiment_work(self) -> float:
        """Evaluations' worth of work the experiments used, plus what the research turns still
        running will probably use (the mean per turn so far): charged to the evaluation
        budget like evaluations and tuning trials."""
        s = self.experiment_stats
        done = float(s["evaluations"])
        running = len(self.research) if self.tools is not None else 0
        if running and s["turns"]:
            done += running * done / s["turns"]
        return done

    def turn_requests(self) -> int | None:
        """The simulated requests a research turn starting now may use: the per-proposal
        budget, lowered to what is left of the run's evaluation budget after the evaluations,
        trials, experiments and research turns already counted (and this turn's own child)."""
        if self.tools is None:
            return None
        requests, _ = self.per_evaluation()
        if not requests:
            return None
        used = (int(self.store.get_meta(EVALUATIONS_KEY, 0)) +
                int(self.store.get_meta(TRIALS_KEY, 0)) + self.experiment_work() +
                len(self.research) + 1)
        left = max(1, int((self.budget.max_evaluations - used) * requests))
        return min(self.tools.max_requests, left) if self.tools.max_requests else left

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
        known = self.store.code_hashes()
        return ResearchSnapshot(index=index, island=island, parent=parent,
                                inspirations=list(inspirations),
                                notes=self.supervision.get("notes", ""), model=model,
                                summaries=waits, known=known,
                                experiment_requests=self.turn_requests())

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
        if self._researched(out):
            self._charge_experiments(out)
            if out.status != "ok":         # no child: the experiments are published here
                self.publish_experiments(snap, out, None)
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
        """A Researcher's usable answer as a Proposal (what the offline mutator returns too);
        a research turn's child also keeps its conclusion and experiments (tool, arguments,
        outcome, a bounded answer; every string already cleaned, cleaned again)."""
        ans = out.answer
        extra = {"hypothesis": ans.hypothesis, "form": ans.form,
                 "repaired": out.repaired, "proposal": snap.index,
                 "inspirations": [c.id for c in snap.inspirations]}
        if Crew._researched(out):
            extra.update(conclusion=clean(out.conclusion, 2000),
                         experiments=experiment_records(out.experiments, ANSWER_IN_EXTRA),
                         experiment_work=clean_tree(out.work, 200),
                         protocol=clean(out.protocol, 20))
        return Proposal(source=ans.source, operator="llm", rationale=ans.rationale,
                        hypothesis=ans.hypothesis, model=out.model, extra=extra)

    def count_child(self, out, child: Candidate | None, snap=None) -> None:
        if child is None:
            self.usage["duplicates"] += 1
        else:
            self.usage["children"] += 1
            self.usage["repaired"] += int(out.repaired)
        if snap is not None and self._researched(out):
            self.publish_experiments(snap, out, child)

    # --- research turns' experiments ------------------------------------------------------------
    @staticmethod
    def _researched(out) -> bool:
        """A research turn's outcome (a plain proposal has neither experiments nor work)."""
        return bool(out.experiments or out.work)

    def _charge_experiments(self, out) -> None:
        """Count a research turn's experiments and charge their work to the evaluation budget
        (inside the engine's transaction)."""
        s = self.experiment_stats
        w = out.work or {}
        records = out.experiments or []
        s["turns"] += 1
        s["calls"] += len(records)
        s["answered"] += sum(1 for r in records if r.get("ok"))
        for key, kind in (("malformed", "call"), ("over_budget", "budget"), ("failed", "run")):
            s[key] += sum(1 for r in records if not r.get("ok") and r.get("refused") == kind)
        for key in ("simulations", "requests"):
            s[key] += int(w.get(key, 0) or 0)
        s["seconds"] = round(s["seconds"] + float(w.get("seconds", 0) or 0), 3)
        s["tokens"] += sum(r.tokens for r in out.calls)
        s["evaluations"] = round(s["evaluations"] + self.charge(w), 6)
        self.store.set_meta(EXPERIMENTS_KEY, s)

    def publish_experiments(self, snap, out, child: Candidate | None) -> None:
        """The turn's `experiments` event (every tool call, with a bounded answer) and, for a
        child, its experiments.md (<run>/experiments/<id>.md, logged to the child's MLflow run
        as experiments.md)."""
        from .research import experiments_markdown
        hypothesis = out.answer.hypothesis if out.answer is not None else ""
        if child is not None:
            text = experiments_markdown(out.experiments, out.conclusion, hypothesis,
                                        child=child.id)
            try:
                folder = RunFolder(self.run_dir).experiments
                folder.mkdir(exist_ok=True)
                tmp = folder / f".{child.id}.md.tmp"
                tmp.write_text(text, encoding="utf-8")
                tmp.replace(folder / f"{child.id}.md")
            except OSError:     # e.g. a full disk: the records stay in the child's extra
                pass
        w = out.work or {}
        self.bus.emit("experiments", candidate=child.id if child is not None else None,
                      island=snap.island, parent=snap.parent.id, model=out.model,
                      status=out.status, protocol=clean(out.protocol, 20),
                      conclusion=clean(out.conclusion, 600),
                      work={k: w[k] for k in ("calls", "errors", "malformed", "over_budget",
                                              "simulations", "requests", "seconds", "tokens")
                            if k in w},
                      charged_evaluations=round(self.charge(w), 4),
                      calls=experiment_records(out.experiments, ANSWER_IN_EVENT))

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
        conclusions: dict[int, list] = {}
        for x in recent:
            if (x.extra or {}).get("conclusion"):
                conclusions.setdefault(x.island, []).append(x)
        snap = SupervisorSnapshot(
            review=int(self.supervision.get("review", 0)) + 1, evaluations=evaluations,
            leaderboard=self.islands.leaderboard(10),
            island_best=[(i, self.islands.best(i)) for i in range(self.islands.num_islands)],
            recent=recent[-RECENT_FOR_SUPERVISOR:], previous=self.supervision.get("notes", ""),
            model=c.supervisor_model or c.first_model(),
            conclusions=[x for xs in conclusions.values()
                         for x in xs[-CONCLUSIONS_PER_ISLAND:]])
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
            new = []
            if notes:
                self.supervision = {"review": snap.review, "evaluations": snap.evaluations,
                                    "notes": notes, "model": snap.model}
                self.usage["reviews"] += 1
                new = self._add_insights(notes, snap)
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
        if new:
            self.bus.emit("insights", review=snap.review, evaluations=snap.evaluations,
                          insights=[i["text"] for i in new])

    def _add_insights(self, notes: str, snap) -> list[dict]:
        """The review's INSIGHTS (what was learnt about the workload) not already kept, added
        to the run's list (inside the caller's transaction); the report lists them."""
        from .llm import split_insights
        known = {i["text"] for i in self.insights}
        new = [{"review": snap.review, "evaluations": snap.evaluations, "text": text}
               for text in dict.fromkeys(split_insights(notes)) if text not in known]
        if new:
            self.insights = (self.insights + new)[-MAX_INSIGHTS:]
            self.store.set_meta(INSIGHTS_KEY, self.insights)
        return new

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

    def finish(self, interrupted: bool, stopping, request_stop) -> None:
        """`finish_side_tasks`; a Ctrl-C while waiting for them requests the stop
        (`request_stop("interrupted")`) and gives up on every call at once."""
        try:
            self.finish_side_tasks(interrupted, stopping)
        except KeyboardInterrupt:
            request_stop("interrupted")
            self.abandon(side_too=True)

    def close(self) -> None:
        self.cancel.set()
        self.client.close()


def experiment_records(records: list, answer_chars: int) -> list[dict]:
    """A research turn's experiment records for the child's extra or an event: the tool, its
    arguments (program texts already replaced by a hash), the outcome and the answer cut to
    `answer_chars` (every string cleaned again)."""
    out = []
    for r in records or []:
        if not isinstance(r, dict):
            continue
        keep = {k: r[k] for k in ("n", "tool", "via", "ok", "refused", "error", "requests",
                                  "seconds", "run_id", "args") if k in r}
        keep = clean_tree(keep, 600)
        keep["answer"] = clean(r.get("answer"), answer_chars)
        out.append(keep)
    return out
