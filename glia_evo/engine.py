"""The search loop: steady-state, asynchronous, resumable (DESIGN §6).

Every worker is kept busy with one evaluation. Results are *processed in submission order*, and a
new proposal is made only after a result is processed, so the search is a deterministic function of
the seed whatever the timing: a run killed and resumed ends exactly where an uninterrupted run
with the same seed would. Each proposal is committed to the SQLite state (as `pending`, with the
counters it consumed) before it is submitted, and each result is committed before the next step,
so a killed run loses nothing: pending candidates are evaluated again on resume, first.

With an LLM (`llm.mode = "openai"`) the crew (`glia_evo.crew`: Researcher, Analyst, Supervisor)
runs in threads beside the evaluations, so LLM calls overlap them: up to `llm.concurrency`
children are prepared ahead while the workers are busy. A kill between a Researcher call's two
transactions loses that one proposal (and the tokens it used are not counted); nothing evaluated
is lost. LLM answers are not reproducible, so an LLM run is not a deterministic function of the
seed; the offline path is.

The parts: `run_state` (counters, budgets), `evaluation.evaluator` (reference, jobs, reading
results onto their candidates), `children` (a proposal -> a stored child), `crew` (the LLM
agents), `trials` (tuning), `bus` (events, published once to the event log, the tracker,
`best.py` and the display).
"""
from __future__ import annotations

import collections
import concurrent.futures
import time
from pathlib import Path

from population import Candidate, Islands, Store

from . import bus as subscribers
from .config import RunConfig
from .crew import OFFLINE, Crew
from .evaluation.evaluator import EngineError, Evaluator
from .events import EventLog, recover_evaluations
from .problems import get_problem
from .proposals import STARTED, Proposals
from .run_folder import RunFolder
from .run_state import (ELAPSED_KEY, EVALUATIONS_KEY, LAST_MIGRATION_KEY, Budget, lineage_view,
                        run_status)
from .tracking import LINEAGE_EVERY, Tracker
from .trials import Trials
from .tuning import knob_spec_of
from .tuning_runs import Trial, TuningRuns


__all__ = ["Budget", "Engine", "EngineError", "run_status"]


class Engine:
    def __init__(self, cfg: RunConfig, run_dir: Path, pool, progress=None):
        self.cfg, self.run_dir, self.pool = cfg, run_dir, pool
        self.problem = get_problem(cfg.problem)
        self.store = Store(RunFolder(run_dir).state)
        s = cfg.search
        self.islands = Islands(self.store, s.islands, s.island_capacity, cfg.seed,
                               tournament_size=s.tournament, selection=s.selection,
                               metric=self.problem.metric)
        self.events = EventLog(RunFolder(run_dir).events)
        self.tracker = (Tracker(run_dir, cfg.tracking.uri or None, run_name=cfg.name)
                        if cfg.tracking.enabled else None)
        self.bus = subscribers.for_run(self.events, self.tracker, self.store,
                                       RunFolder(run_dir).best, cfg.evaluation.split,
                                       progress, self.status)
        self.budget = Budget.of(cfg)
        self.stopping: str | None = None
        self.evaluator = Evaluator(cfg, self.problem, pool, self.store, self.bus,
                                   lambda: self.stopping)
        self.tuning = TuningRuns(cfg, self.store, self.islands, run_dir,
                                 lambda source: knob_spec_of(source, self.problem.entrypoints))
        self.trials = Trials(cfg, self.problem, self.tuning, self.evaluator, self.store,
                             self.islands, self.bus)
        self.crew = (Crew(cfg, self.problem, self.store, self.islands, self.bus, self.budget,
                          run_dir, self.evaluator.slots(), pool=pool)
                     if cfg.llm.mode != OFFLINE else None)
        self.proposals = Proposals(cfg, self.problem, self.store, self.islands, self.bus,
                                   self.crew)
        self.ready = self.proposals.ready          # LLM children waiting for a worker

    # --- budgets ----------------------------------------------------------------------------------
    @property
    def evaluations(self) -> int:
        return int(self.store.get_meta(EVALUATIONS_KEY, 0))

    @property
    def inflight(self) -> collections.deque:
        return self.evaluator.inflight

    @property
    def fatal(self) -> str | None:
        """An LLM endpoint that refused us (key, model, URL), or None."""
        return self.proposals.fatal

    def elapsed(self) -> float:
        """Search time so far, over all sessions of this run (the time budget's clock)."""
        return self._elapsed_before + (time.monotonic() - self._started)

    def _why_stop(self) -> str | None:
        """Evaluations already committed to (running, waiting for a worker, being proposed) and
        tuning trials count against the evaluation budget like finished ones, and so does the
        research turns' experiments' work (in evaluations: simulated requests / an evaluation's)."""
        research = len(self.crew.research) if self.crew else 0
        outstanding = len(self.inflight) + len(self.ready) + research + (
            self.crew.experiment_work() if self.crew else 0.0)
        return self.stopping or self.proposals.no_more or self.budget.exhausted(
            self.evaluations + self.tuning.trials + outstanding, self.elapsed(),
            *(self.crew.projection() if self.crew else (0, 0.0)))

    def request_stop(self, why: str) -> None:
        if not self.stopping:
            self.stopping = why

    # --- processing results -----------------------------------------------------------------------
    def _process(self, cand: Candidate, outcome) -> None:
        parent = self.store.get(cand.parents[0]) if cand.parents else None
        result = self.evaluator.conclude(cand, outcome, parent, self.islands.best)
        with self.store.transaction():
            member = self.islands.insert(cand)
            self.tuning.count_candidate(result, cand if member else None)
            self.store.set_meta(EVALUATIONS_KEY, self.evaluations + 1)
            self.store.set_meta(ELAPSED_KEY, self.elapsed())
        self.bus.emit("evaluation", cand, candidate=cand.id, island=cand.island,
                      status=cand.status, fitness=cand.fitness, member=member,
                      seconds=round(result.duration_s, 3), error=cand.error)
        self.proposals.population_changed()
        if member and self.tuning.consider(cand) is not None:
            self.bus.emit("tuning_start", candidate=cand.id, trials=self.cfg.tuning.trials)
        if self.crew is not None:
            self.crew.maybe_analyse(cand, parent, self.stopping)
        self._maybe_migrate()
        if self.tracker is not None and self.evaluations % LINEAGE_EVERY == 0:
            self.tracker.lineage(*lineage_view(self.store, self.islands))   # the UI's page
        if self.crew is not None:
            self.crew.maybe_supervise(self.evaluations, self._why_stop())
        best = self.islands.best()
        if best is not None and best.id == cand.id:
            self.bus.emit("best", best)

    def _maybe_migrate(self) -> None:
        s = self.cfg.search
        done = self.evaluations
        if done - int(self.store.get_meta(LAST_MIGRATION_KEY, 0)) >= s.migration_interval:
            with self.store.transaction():
                migrants = self.islands.migrate(s.migration_k)
                self.store.set_meta(LAST_MIGRATION_KEY, done)
            self.bus.emit("migration", *migrants,
                          migrants=[{"id": m.id, "from": m.parents[0], "island": m.island}
                                    for m in migrants])

    # --- the loop ---------------------------------------------------------------------------------
    def run(self) -> str:
        """Search until a budget runs out or a stop is requested; returns why it stopped."""
        self._started = time.monotonic()
        self._elapsed_before = float(self.store.get_meta(ELAPSED_KEY, 0.0))
        self.bus.emit("start", config=self.cfg.to_dict(), evaluations=self.evaluations)
        recover_evaluations(self.events.path, self.store, self.bus)
        if self.tracker is not None:
            self.tracker.start_search(self.cfg.to_dict())
        self.evaluator.prepare()
        self.proposals.seed_population()
        self.trials.conclude_reopened()
        backlog = collections.deque(self.store.by_status("pending"))   # seeds or a killed run's
        why = None
        try:
            while True:
                self.proposals.collect()
                if self.proposals.fatal:
                    self.request_stop(f"LLM endpoint error: {self.proposals.fatal}")
                why = self._fill(backlog)
                if self.stopping and self.crew is not None and self.crew.research:
                    self.crew.abandon(side_too=False)
                if not self.inflight and not (self.crew and self.crew.research) and \
                        not (self.ready and not self.stopping):
                    break
                self._wait_any()
                if self.inflight and self.inflight[0][1].done():
                    item, future = self.inflight.popleft()
                    if isinstance(item, Trial):
                        self.trials.process(item, future.result())
                    else:
                        self._process(item, future.result())
            if self.crew is not None:
                self.crew.finish(self.stopping in ("interrupted", "terminated")
                                 or bool(self.proposals.fatal), lambda: self.stopping,
                                 self.request_stop)
        except BaseException:
            try:
                self._checkpoint()
            except Exception:   # noqa: BLE001 - e.g. a full disk: the error that stopped the
                pass            # run is the one to report (elapsed time is also in each result)
            raise
        self._checkpoint()
        return self._stopped(why or self.stopping or "done")

    def _fill(self, backlog: collections.deque) -> str | None:
        """Keep every worker busy (pending candidates first, then tuning trials and new
        proposals), and an LLM crew preparing up to `concurrency` children; returns why no
        more may be proposed, if so."""
        why = self._why_stop()
        while len(self.inflight) < self.evaluator.slots():
            if not why and self.trials.turn(bool(self.stopping)):
                self.trials.submit()
                why = self._why_stop()
                continue
            if not why and backlog:
                cand = backlog.popleft()
            elif self.ready and not self.stopping:
                cand = self.ready.popleft()     # an LLM child (counted in the budget)
            elif not why and self.proposals.may_propose():
                cand = self.proposals.propose()
                if cand is None:
                    return "no new candidate could be proposed"
                if cand is STARTED:
                    why = self._why_stop()
                    continue
            else:
                break
            self.evaluator.submit(cand, self.evaluator.job(cand))
            why = self._why_stop()
        while self.crew is not None and not why and self.proposals.may_propose() \
                and len(self.ready) + len(self.crew.research) < self.crew.concurrency:
            cand = self.proposals.propose()
            if cand is None:
                return "no new candidate could be proposed"
            if cand is not STARTED:
                self.ready.append(cand)
            why = self._why_stop()
        return why

    def _stopped(self, why: str) -> str:
        usage = self.crew.usage if self.crew is not None else None
        self.bus.emit("stop", reason=why, evaluations=self.evaluations,
                      **({"llm": {k: usage[k] for k in ("calls", "tokens", "cost_usd")}}
                         if usage is not None else {}))
        best = self.islands.best()
        if best is not None:
            self.bus.emit("best", best)
        if self.tracker is not None:
            self.tracker.finish_search(
                *lineage_view(self.store, self.islands), best.to_dict() if best else None,
                status="KILLED" if self.stopping in ("interrupted", "terminated") else "FINISHED")
        return why

    def _wait_any(self) -> None:
        """Wait until the oldest evaluation or any LLM call is done (or, with no evaluation to
        wait for, a stop is requested). Ctrl-C while waiting asks the engine to stop but keeps
        waiting; a second one (while stopping) aborts."""
        futures = [f for _, f in list(self.inflight)[:1]]
        research = self.crew.research if self.crew is not None else []
        futures += self.crew.futures() if self.crew is not None else []
        while True:
            try:
                done, _ = concurrent.futures.wait(futures, timeout=0.5,
                                                  return_when=concurrent.futures.FIRST_COMPLETED)
            except KeyboardInterrupt:
                if self.stopping:
                    raise
                self.request_stop("interrupted")
                continue
            if done or (self.stopping and (research or not self.inflight)):
                return

    def _checkpoint(self) -> None:
        self.store.set_meta(ELAPSED_KEY, self.elapsed())
        if self.crew is not None:
            self.crew.save_usage()

    def status(self) -> dict:
        return run_status(self.store, self.islands, self.budget, self.elapsed())

    def close(self, tracking_timeout_s: float = 120.0) -> None:
        """Close everything, each part even if another one fails (e.g. on a full disk); the
        first error is raised at the end. Records the tracker could not log stay in the backlog
        and are logged on the next start."""
        errors = []
        if self.tracker is not None:
            errors += subscribers.close_tracker(self.tracker, self.bus, tracking_timeout_s)
        if self.crew is not None:
            self.crew.close()
        for closer in (self.events.close, self.store.close):
            try:
                closer()
            except Exception as exc:   # noqa: BLE001
                errors.append(exc)
        if errors:
            raise errors[0]
