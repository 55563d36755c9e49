"""The search loop: steady-state, asynchronous, resumable (DESIGN §6).

Every worker is kept busy with one evaluation. Results are *processed in submission order*, and a
new proposal is made only after a result is processed, so the search is a deterministic function of
the seed whatever the timing: a run killed and resumed ends exactly where an uninterrupted run
with the same seed would. Each proposal is committed to the SQLite state (as `pending`, with the
counters it consumed) before it is submitted, and each result is committed before the next step,
so a killed run loses nothing: pending candidates are evaluated again on resume, first.
"""
from __future__ import annotations

import collections
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from population import Candidate, Islands, Store, code_hash
from sim.policies import baseline_source

from . import analyst
from .config import RunConfig
from .events import EventLog
from .jobs import EvalJob, evaluate_job, reference_job, result_from_outcome
from .operators.offline import for_problem
from .problems import get_problem

ELAPSED_KEY = "elapsed_s"
PROPOSALS_KEY = "proposals"
EVALUATIONS_KEY = "evaluations"
LAST_MIGRATION_KEY = "last_migration"
REFERENCE_KEY = "reference"


@dataclass
class Budget:
    minutes: float
    max_evaluations: int

    def left(self, evaluations: int, elapsed_s: float) -> dict:
        return {"evaluations": max(0, self.max_evaluations - evaluations),
                "minutes": max(0.0, self.minutes - elapsed_s / 60)}

    def exhausted(self, evaluations: int, elapsed_s: float) -> str | None:
        if evaluations >= self.max_evaluations:
            return f"evaluation budget of {self.max_evaluations} reached"
        if elapsed_s >= self.minutes * 60:
            return f"time budget of {self.minutes:g} min reached"
        return None


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
        self.budget = Budget(cfg.budget.minutes, cfg.budget.max_evaluations)
        self.pool = pool
        self.progress = progress
        self.stopping: str | None = None
        self.inflight: collections.deque = collections.deque()   # (candidate, future), FIFO

    # --- counters kept in the store, so budgets and seeds survive restarts --------------------
    def _meta(self, key, default=0):
        return self.store.get_meta(key, default)

    @property
    def evaluations(self) -> int:
        return int(self._meta(EVALUATIONS_KEY))

    def elapsed(self) -> float:
        """Search time so far, over all sessions of this run (the time budget's clock)."""
        return self._elapsed_before + (time.monotonic() - self._started)

    # --- seeding, proposing ---------------------------------------------------------------------
    def _seed_population(self) -> None:
        """The first time: every seed baseline on every island, as pending candidates."""
        if len(self.store):
            return
        with self.store.transaction():
            for island in range(self.cfg.search.islands):
                for name in self.cfg.search.seeds:
                    cand = Candidate(source=baseline_source(self.problem.name, name),
                                     island=island, operator="seed", rationale=f"baseline {name}",
                                     extra={"baseline": name})
                    self.store.add(cand)
                    self.events.write("proposal", candidate=cand.id, island=island,
                                      operator="seed", parents=[])

    def _reference(self) -> dict:
        """The reference baseline's metric per instance, simulated once (in the sandbox pool)
        and kept in the state, so no evaluation simulates it again."""
        e = self.cfg.evaluation
        splits = (e.split, e.cascade_split) if e.cascade else (e.split,)
        saved = self.store.get_meta(REFERENCE_KEY)
        if saved and saved.get("splits") == list(splits):
            return saved["values"]
        outcome = self.pool.submit(reference_job, self.problem.name, splits).result()
        if outcome.status != "ok":
            raise RuntimeError(f"the reference baseline {self.problem.reference} failed: "
                               f"{outcome.error}")
        self.store.set_meta(REFERENCE_KEY, {"splits": list(splits), "values": outcome.value})
        return outcome.value

    def _propose(self) -> Candidate | None:
        """Select a parent on the next island (round robin), mutate, dedup, store as pending."""
        n = self.cfg.search.islands
        # One transaction per attempt: the counter, the selection's rng draw and the child commit
        # together, so a kill at any point resumes on exactly the same random sequence. (Offline
        # proposals take milliseconds; an LLM operator will snapshot, propose, then commit.)
        for _ in range(self.cfg.search.max_attempts):
            index = int(self._meta(PROPOSALS_KEY))
            island = index % n
            with self.store.transaction():
                self.store.set_meta(PROPOSALS_KEY, index + 1)
                try:
                    parent = self.islands.select_parent(island)
                except LookupError:
                    continue          # the island has no members yet (all seeds failed)
                inspirations = self.islands.inspirations(island, parent,
                                                         self.cfg.search.inspirations)
                proposal = self.mutator.propose(parent, inspirations,
                                                {"seed": self.cfg.seed * 1_000_003 + index})
                if proposal is None:
                    continue
                child = Candidate(source=proposal.source, island=island,
                                  parents=[parent.id] + [c.id for c in inspirations
                                                         if proposal.operator == "crossover"][:1],
                                  generation=parent.generation + 1, operator=proposal.operator,
                                  model=proposal.model, rationale=proposal.rationale,
                                  extra={"parent_fitness": parent.fitness,
                                         "parent_stage1": parent.extra.get("stage1_fitness")})
                if self.store.has_hash(code_hash(child.source)):
                    self.events.write("duplicate", island=island, parent=parent.id,
                                      operator=proposal.operator)
                    continue
                self.store.add(child)
            self.events.write("proposal", candidate=child.id, island=island,
                              operator=child.operator, parents=child.parents,
                              rationale=child.rationale)
            return child
        return None

    # --- evaluation -----------------------------------------------------------------------------
    def _submit(self, cand: Candidate) -> None:
        e = self.cfg.evaluation
        bar = cand.extra.get("parent_stage1") if cand.operator != "seed" else None
        job = EvalJob(source=cand.source, problem=self.problem.name, split=e.split,
                      seed=self.cfg.seed, cascade=e.cascade and cand.operator != "seed",
                      cascade_split=e.cascade_split, threshold=e.cascade_threshold,
                      bar_fitness=bar if bar is not None else 1.0,
                      reference=tuple(sorted(self.reference.items())))
        self.inflight.append((cand, self.pool.submit(evaluate_job, job)))

    def _process(self, cand: Candidate, outcome) -> None:
        result = result_from_outcome(outcome, self.cfg.evaluation)
        parent = self.store.get(cand.parents[0]) if cand.parents else None
        cand.status = result.status
        cand.fitness = result.fitness if result.status == "ok" else 0.0
        cand.metrics = result.scenarios
        cand.error = result.error
        cand.evaluated_at = time.time()
        cand.eval_seconds = result.duration_s
        cascade = result.diagnostics.get("cascade", {}) if result.diagnostics else {}
        if "stage1_fitness" in cascade:
            cand.extra["stage1_fitness"] = cascade["stage1_fitness"]
        cand.extra["diagnostics"] = _compact_diagnostics(result.diagnostics)
        cand.reasoning = analyst.summarize(result, parent.fitness if parent else None,
                                           parent.metrics if parent else None, cand.rationale,
                                           self.problem.metric)
        with self.store.transaction():
            member = self.islands.insert(cand)
            self.store.set_meta(EVALUATIONS_KEY, self.evaluations + 1)
            self.store.set_meta(ELAPSED_KEY, self.elapsed())
        self.events.write("evaluation", candidate=cand.id, island=cand.island,
                          status=cand.status, fitness=cand.fitness, member=member,
                          seconds=round(result.duration_s, 3), error=cand.error)
        self._maybe_migrate()
        best = self.islands.best()
        if best is not None and best.id in (cand.id,):
            self._write_best(best)
        if self.progress:
            self.progress(self.status())

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
        self.reference = self._reference()
        self._seed_population()
        backlog = collections.deque(self.store.by_status("pending"))   # seeds or a killed run's
        workers = self.cfg.evaluation.workers
        why = None
        try:
            while True:
                why = self.stopping or self.budget.exhausted(
                    self.evaluations + len(self.inflight), self.elapsed())
                while not why and len(self.inflight) < workers:
                    cand = backlog.popleft() if backlog else self._propose()
                    if cand is None:
                        why = "no new candidate could be proposed"
                        break
                    self._submit(cand)
                    why = self.stopping or self.budget.exhausted(
                        self.evaluations + len(self.inflight), self.elapsed())
                if not self.inflight:
                    break
                cand, future = self.inflight[0]
                outcome = _wait(future, self)
                self.inflight.popleft()
                self._process(cand, outcome)
        finally:
            self._checkpoint()
        why = why or self.stopping or "done"
        self.events.write("stop", reason=why, evaluations=self.evaluations)
        best = self.islands.best()
        if best is not None:
            self._write_best(best)
        return why

    def _checkpoint(self) -> None:
        self.store.set_meta(ELAPSED_KEY, self.elapsed())

    def status(self) -> dict:
        return run_status(self.store, self.islands, self.budget, self.elapsed())

    def close(self) -> None:
        self.events.close()
        self.store.close()


def _wait(future, engine: Engine):
    """Wait for one future; Ctrl-C while waiting asks the engine to stop but keeps waiting."""
    while True:
        try:
            return future.result(timeout=0.5)
        except TimeoutError:
            continue
        except KeyboardInterrupt:
            engine.request_stop("interrupted")


def _compact_diagnostics(diag: dict | None) -> dict:
    """What is worth storing per candidate: the summary numbers and slowest requests."""
    out = {}
    for name, d in (diag or {}).items():
        if isinstance(d, dict) and "router_calls" in d:
            out[name] = {k: d[k] for k in ("load_imbalance_cv_mean", "max_queue_len",
                                           "slowest_requests") if k in d}
        else:
            out[name] = d
    return out


def run_status(store: Store, islands: Islands, budget: Budget, elapsed_s: float) -> dict:
    evaluations = int(store.get_meta(EVALUATIONS_KEY, 0))
    best = islands.best()
    per_island = []
    for i in range(islands.num_islands):
        b = islands.best(i)
        per_island.append({"island": i, "members": len(islands.members(i)),
                           "best_id": b.id if b else None,
                           "best_fitness": b.fitness if b else None})
    return {
        "evaluations": evaluations,
        "candidates": len(store),
        "best": {"id": best.id, "fitness": best.fitness, "operator": best.operator,
                 "island": best.island} if best else None,
        "islands": per_island,
        "elapsed_s": round(elapsed_s, 1),
        "budget_left": budget.left(evaluations, elapsed_s),
        "rate_per_min": round(evaluations / (elapsed_s / 60), 2) if elapsed_s > 1 else 0.0,
        "statuses": {s: store.count(s) for s in ("ok", "error", "timeout", "crashed", "invalid",
                                                  "rejected", "pending")},
    }
