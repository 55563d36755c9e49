"""The engine's side of evaluation: the run's reference (`reference.for_run`), the job a
candidate is sent as, the jobs in flight (processed in submission order), reading a job's
outcome into a checked result whose fitness the engine computes itself, the re-run a
would-be best must survive, and the result written onto the candidate (`conclude`)."""
from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Callable

from population import Candidate, Store

from .. import analyst
from ..run_state import REFERENCE_KEY
from . import reference
from .jobs import EvalJob, evaluate_job, warm as warm_job
from .result import EvalResult, compact_diagnostics
from .wire import outcome_to_result

if TYPE_CHECKING:
    from ..config import RunConfig


class EngineError(RuntimeError):
    """The search cannot go on (e.g. the reference baseline fails): one line for the user."""


class Evaluator:
    def __init__(self, cfg: RunConfig, problem, pool, store: Store, bus,
                 stopping: Callable[[], str | None]):
        self.cfg = cfg
        self.problem = problem
        self.pool = pool
        self.store = store
        self.bus = bus
        self.stopping = stopping
        self.inflight: collections.deque = collections.deque()   # (candidate | trial, future)
        self.submitted = 0
        self.reference: dict = {}          # instance -> the reference's metric
        self.completed: dict = {}          # instance -> requests in its trace

    def slots(self) -> int:
        """Evaluations to keep in flight: the executor's (a Dask cluster's may change)."""
        return getattr(self.pool, "workers", self.cfg.evaluation.workers)

    def reference_items(self) -> tuple:
        return tuple(sorted(self.reference.items()))

    def prepare(self) -> None:
        """The reference baseline's metric per instance, simulated once (in a sandbox job that
        runs no candidate) and kept in the state, so no evaluation simulates it again. Every
        candidate's fitness is computed from these values (`read`), never taken from its job;
        the trace lengths (`completed`) check that every request completed."""
        e = self.cfg.evaluation
        splits = (e.split, e.cascade_split) if e.cascade else (e.split,)
        warm = getattr(self.pool, "warm", None)     # a fork server: jobs start with these loaded
        if warm is not None:
            warm(warm_job, self.problem.key, splits)
        try:
            self.reference, self.completed = reference.for_run(
                self.pool, self.problem, splits, self.store, REFERENCE_KEY,
                on_killed=lambda attempt, error: self.bus.emit(
                    "reference_retry", attempt=attempt, error=error))
        except reference.ReferenceFailure as exc:
            raise EngineError(str(exc)) from None

    def job(self, cand: Candidate) -> EvalJob:
        """Evaluations use the policy rng seed base 0 whatever the run's seed (common random
        numbers; `glia-evo simulate` and tuning trials do the same, so fitness reproduces)."""
        e = self.cfg.evaluation
        bar = cand.extra.get("parent_stage1") if cand.operator != "seed" else None
        return EvalJob(source=cand.source, problem=self.problem.key, split=e.split,
                       seed=0, cascade=e.cascade and cand.operator != "seed",
                       cascade_split=e.cascade_split, threshold=e.cascade_threshold,
                       bar_fitness=bar if bar is not None else 1.0,
                       reference=self.reference_items(),
                       cascade_timeout_s=e.cascade_timeout_s)

    def submit(self, item, job: EvalJob) -> None:
        """Send `job` to a worker; `item` (a candidate or a tuning trial) is processed when it
        comes first in submission order."""
        self.inflight.append((item, self.pool.submit(evaluate_job, job)))
        self.submitted += 1

    def read(self, outcome, split: str, cascade_split: str | None = None):
        """A job's outcome as a checked EvalResult whose fitness the engine computed."""
        expected = {"ok": [i.name for i in self.problem.split(split)]}
        if cascade_split:
            expected["rejected"] = [i.name for i in self.problem.split(cascade_split)]
        return outcome_to_result(outcome, split, self.pool, metric=self.problem.metric,
                                 reference=self.reference, completed=self.completed,
                                 expected=expected)

    def conclude(self, cand: Candidate, outcome, parent: Candidate | None,
                 best: Callable[[], Candidate | None]) -> EvalResult:
        """Read a candidate's outcome (`read`; an ok result that would beat `best()`, the run's
        best so far, must reproduce first: `irreproducible`) and write it onto `cand`: status,
        fitness, metrics, error, timing, its first stage's fitness (the bar for its children),
        compact diagnostics and the Analyst's rule-based summary (vs `parent`)."""
        e = self.cfg.evaluation
        result = self.read(outcome, e.split, e.cascade_split if e.cascade else None)
        if result.status == "ok":
            top = best()
            why = self.irreproducible(cand, self.job(cand), result) \
                if top is None or result.fitness > top.fitness else None
            if why:
                result = EvalResult(status="crashed", error=why, duration_s=result.duration_s)
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
        cand.extra["diagnostics"] = compact_diagnostics(result.diagnostics)
        cand.reasoning = analyst.summarize(result, parent.fitness if parent else None,
                                           parent.metrics if parent else None,
                                           cand.extra.get("hypothesis") or cand.rationale,
                                           self.problem)
        return result

    def irreproducible(self, cand: Candidate, job: EvalJob, result) -> str | None:
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
            again = self.read(self.pool.submit(evaluate_job, job).result(), job.split,
                              cascade_split)
            if not (again.status == "crashed" and "SIGKILL" in (again.error or "")):
                break
        same = again.status == result.status and again.scenarios == result.scenarios
        self.bus.emit("reproduced", candidate=cand.id, status=again.status, same=same)
        if same or (self.stopping() and again.status == "crashed"):   # stopped mid-check
            return None
        return (f"did not reproduce its metrics in a fresh process (first {result.status} "
                f"{result.fitness:.4f}, then {again.status} {again.fitness:.4f})")

