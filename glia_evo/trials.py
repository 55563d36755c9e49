"""Tuning trials inside the search loop: they share the workers with candidates (never two in
a row, and within the share of the work `TuningRuns` allows), go through the same cascade, and
a finished study's tuned child joins its island like any evaluated candidate. Trials that were
in flight at a kill run again first, each in its place among the pending candidates, so a
resumed run processes results in the order an uninterrupted one would."""
from __future__ import annotations

import time

from population import Candidate, Islands, Store

from . import analyst
from .config import RunConfig
from .evaluation.result import EvalResult
from .evaluation.evaluator import Evaluator
from .evaluation.jobs import EvalJob, evaluate_job
from .tuning_runs import Trial, TuningRuns, trial_job


class Trials:
    def __init__(self, cfg: RunConfig, problem, tuning: TuningRuns, evaluator: Evaluator,
                 store: Store, islands: Islands, bus):
        self.cfg, self.problem, self.tuning, self.evaluator = cfg, problem, tuning, evaluator
        self.store, self.islands, self.bus = store, islands, bus
        self.submitted = 0        # trials sent to a worker in this session
        self._trial_at = -1       # evaluator.submitted just after the latest trial was sent
        tuning.attach(problem, lambda: evaluator.completed, self.probe)

    def turn(self, stopping: bool) -> bool:
        """A trial may start: one in flight at a kill is due (`TuningRuns.resume_due`), or a
        study wants one, the newest evaluation in flight is not a trial (so at most every other
        slot), and trials have taken no more than their share of the work
        (`TuningRuns.share`). A function of the state and the queue, never of timing."""
        study = self.tuning.study
        if study is None or stopping:
            return False
        if study.resume:
            return self.tuning.resume_due(self.evaluator.submitted - self.submitted)
        inflight = self.evaluator.inflight
        last_was_trial = (self.evaluator.submitted == self._trial_at or
                          bool(inflight and isinstance(inflight[-1][0], Trial)))
        return study.wants_trial() and not last_was_trial and self.tuning.within_share()

    def cascade(self) -> tuple[str, dict]:
        """(the tuning split, the cascade fields of a trial's job)."""
        e = self.cfg.evaluation
        split = self.cfg.tuning.split or e.split
        return split, {"cascade": e.cascade and split == e.split,
                       "cascade_split": e.cascade_split, "threshold": e.cascade_threshold,
                       "cascade_timeout_s": e.cascade_timeout_s}

    def submit(self) -> None:
        split, cascade = self.cascade()
        after = next((item.id for item, _ in reversed(self.evaluator.inflight)
                      if not isinstance(item, Trial)), "")
        trial, job, cached = self.tuning.next_job(self.problem.key, split,
                                                  self.evaluator.reference_items(),
                                                  cascade=cascade, after=after)
        if cached is not None:       # the same knobs on the same code: told, never run again
            result = EvalResult(status=cached["status"], fitness=cached["fitness"] or 0.0,
                                scenarios=cached["scenarios"], duration_s=cached["duration_s"])
            self._told(trial, result, reused=True)
            return
        self.evaluator.submit(trial, job)
        self.submitted += 1
        self._trial_at = self.evaluator.submitted

    def probe(self, cand: Candidate, knob_sets: list[dict]) -> list[EvalResult]:
        """The sensitivity probe's jobs: `cand` with each knob set on the cascade's first split
        only, under its timeout (a stage-1 job with a bar nothing clears), in parallel on the
        pool; their results in order (`rejected` with its quick-stage fitness when it ran)."""
        e = self.cfg.evaluation
        jobs = [EvalJob(source=cand.source, problem=self.problem.key, split=e.cascade_split,
                        knobs=tuple(sorted(values.items())), cascade=True,
                        cascade_split=e.cascade_split, threshold=1.0,
                        bar_fitness=float("inf"), reference=self.evaluator.reference_items(),
                        cascade_timeout_s=e.cascade_timeout_s)
                for values in knob_sets]
        futures = [self.evaluator.pool.submit(evaluate_job, job) for job in jobs]
        return [self.evaluator.read(f.result(), e.cascade_split, e.cascade_split)
                for f in futures]

    def process(self, trial: Trial, outcome) -> None:
        e = self.cfg.evaluation
        split = self.cfg.tuning.split or e.split
        result = self.evaluator.read(outcome, split, e.cascade_split
                                     if e.cascade and split == e.split else None)
        stage = (result.diagnostics or {}).get("cascade", {})
        self._told(trial, result, cut=stage.get("stage") == 1 and not stage.get("passed"))

    def _told(self, trial: Trial, result, *, cut: bool = False, reused: bool = False):
        study = self.tuning.study
        self.bus.emit("trial", candidate=study.cand.id, trial=trial.number,
                      knobs=trial.knobs, status=result.status, fitness=result.fitness,
                      seconds=round(result.duration_s, 3), cut=cut, reused=reused)
        child = self.tuning.told(trial, result, cut=cut, reused=reused)
        if self.tuning.study is None:
            self._concluded(study, child, result)
            stats = self.tuning.stats()     # the share trials may take from now on
            self.bus.emit("tuning_share", share=round(self.tuning.share(stats), 3),
                          studies=stats["studies"], improved=stats["improved"],
                          used=round(stats["trial_work"] / max(1, stats["trial_work"] +
                                                               stats["candidate_work"]), 3))

    def conclude_reopened(self) -> None:
        """A study whose last trials were told (or lost) just before a kill: close it now; a
        candidate whose tuning check a kill cut short: check it now (where it would have been)."""
        study = self.tuning.study
        if study is not None and study.done():
            self._concluded(study, self.tuning.conclude(), None)
        cand = self.tuning.pending_consideration()
        if cand is not None and self.tuning.consider(cand) is not None:
            self.bus.emit("tuning_start", candidate=cand.id, trials=self.cfg.tuning.trials)

    def _concluded(self, study, child: Candidate | None, result) -> None:
        """Store a finished study's tuned child (closing the study in the same transaction)."""
        parent = study.cand
        if child is None:
            self.bus.emit("tuning_done", candidate=parent.id, improved=False,
                          stopped_early=study.tuner.stopped)
            return
        best = self.islands.best()
        if best is None or child.fitness > best.fitness:   # its best trial, in a fresh process
            split, cascade = self.cascade()
            job = trial_job(parent, study.best["knobs"], self.problem.key, split,
                            self.evaluator.reference_items(), cascade)
            why = self.evaluator.irreproducible(child, job, as_result(child))
            if why:
                child.status, child.fitness, child.error = "crashed", 0.0, why
                result = None
        ok = result is not None and result.status == "ok" and result.fitness == child.fitness
        child.reasoning = analyst.summarize(result if ok else as_result(child), parent.fitness,
                                            parent.metrics, child.rationale, self.problem)
        child.evaluated_at = time.time()
        with self.store.transaction():
            member = self.islands.insert(child)
            self.tuning.settle()
        self.bus.emit("tuning_done", child, candidate=parent.id, improved=True, child=child.id,
                      fitness=child.fitness, member=member)
        best = self.islands.best()
        if best is not None and best.id == child.id:
            self.bus.emit("best", best)


def as_result(cand: Candidate):
    """A minimal EvalResult-like view of a stored candidate, for the rule-based analyst."""
    return EvalResult(status=cand.status, fitness=cand.fitness, scenarios=cand.metrics)
