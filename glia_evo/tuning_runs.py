"""Tuning inside the search: which programs get a study, and turning its best trial into a child.

One study at a time. A program qualifies when it declares KNOBS, was evaluated ok, is in the top
`tuning.top_fraction` of its island and no program with the same code (knob values aside) was
tuned before. Its trials are ordinary jobs on the worker pool, interleaved with candidate
evaluations (every other slot); when the last trial is told, the best knobs become a child
(operator `tune`) whose fitness and metrics are those of the best trial, which evaluated exactly
that program, so nothing is simulated twice.

Kill-safe: a trial's result, the trials counter and the best trial so far (knobs, fitness,
metrics) are committed to the state in one transaction *before* Optuna is told, and the study is
closed in the transaction that stores its child. A study reopened after a kill tells Optuna the
results it missed, keeps its best trial, and is concluded at once if no trial is left to run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from population import DERIVED_OPERATORS, Candidate

from .jobs import EvalJob
from .tuning import Tuner, with_knob_values

ACTIVE_KEY = "tuning_active"
STUDY_KEY = "tuning_study"       # {"cand", "told": {number: fitness or None}, "best": {...}}
TUNED_KEY = "tuned_hashes"
TRIALS_KEY = "trials"


@dataclass
class Trial:
    """A trial in the engine's queue of evaluations (where candidates otherwise stand)."""
    number: int
    knobs: dict


@dataclass
class Study:
    cand: Candidate
    tuner: Tuner
    inflight: int = 0
    best: dict | None = None         # {"fitness", "knobs", "scenarios", "duration_s"}
    told: dict = field(default_factory=dict)    # trial number (str) -> fitness or None

    def wants_trial(self) -> bool:
        return self.tuner.remaining() - self.inflight > 0

    def done(self) -> bool:
        return self.tuner.remaining() == 0 and self.inflight == 0


class TuningRuns:
    def __init__(self, cfg, store, islands, run_dir, knob_spec_of):
        self.cfg = cfg
        self.store = store
        self.islands = islands
        self.journal = run_dir / "optuna.journal"
        self.knob_spec_of = knob_spec_of
        self.study: Study | None = None
        active = store.get_meta(ACTIVE_KEY)
        if active and cfg.tuning.enabled:
            cand = store.get(active)
            if cand is not None:
                self.study = self._open(cand)

    @property
    def trials(self) -> int:
        return int(self.store.get_meta(TRIALS_KEY, 0))

    def _open(self, cand: Candidate) -> Study:
        saved = self.store.get_meta(STUDY_KEY) or {}
        if saved.get("cand") != cand.id:
            saved = {}
        told = dict(saved.get("told") or {})
        spec = self.knob_spec_of(cand.source)
        tuner = Tuner(cand.id, spec, self.journal, self.cfg.seed, self.cfg.tuning.trials,
                      known={int(k): v for k, v in told.items()})
        return Study(cand, tuner, best=saved.get("best"), told=told)

    def consider(self, cand: Candidate) -> Candidate | None:
        """Start a study for `cand` if it qualifies; returns it when one starts."""
        t = self.cfg.tuning
        if not t.enabled or self.study is not None or cand.status != "ok" or \
                cand.operator in DERIVED_OPERATORS:
            return None
        spec = self.knob_spec_of(cand.source)
        tuned = set(self.store.get_meta(TUNED_KEY, []) or [])
        if not spec or cand.code_hash in tuned:
            return None
        members = sorted(self.islands.members(cand.island), key=lambda c: -c.fitness)
        top = members[:max(1, math.ceil(t.top_fraction * len(members)))]
        if cand.id not in {m.id for m in top}:
            return None
        with self.store.transaction():
            self.store.set_meta(ACTIVE_KEY, cand.id)
            self.store.set_meta(STUDY_KEY, {"cand": cand.id, "told": {}, "best": None})
            self.store.set_meta(TUNED_KEY, sorted(tuned | {cand.code_hash}))
        self.study = self._open(cand)
        return cand

    def next_job(self, problem: str, split: str, reference: tuple) -> tuple[Trial, EvalJob]:
        study = self.study
        number, values = study.tuner.ask()
        study.inflight += 1
        job = EvalJob(source=study.cand.source, problem=problem, split=split,
                      knobs=tuple(sorted(values.items())), reference=reference)
        return Trial(number, values), job

    def told(self, trial: Trial, result) -> Candidate | None:
        """Record a trial's result. When that completes the study, `self.study` becomes None
        and the tuned child is returned (not yet stored: store it with `settle()` in the same
        transaction), or None if no trial beat the program's own knobs (already settled)."""
        study = self.study
        ok = result.status == "ok" and result.fitness > 0
        fitness = result.fitness if ok else None
        study.inflight -= 1
        study.told[str(trial.number)] = fitness
        if ok and (study.best is None or result.fitness > study.best["fitness"]):
            study.best = {"fitness": result.fitness, "knobs": trial.knobs,
                          "scenarios": result.scenarios, "duration_s": result.duration_s}
        with self.store.transaction():      # first the state, then Optuna (see the docstring)
            self.store.set_meta(TRIALS_KEY, self.trials + 1)
            self.store.set_meta(STUDY_KEY, {"cand": study.cand.id, "told": study.told,
                                            "best": study.best})
        study.tuner.tell(trial.number, fitness)
        return self.conclude() if study.done() else None

    def conclude(self) -> Candidate | None:
        """Close the current study, which has no trial left: its tuned child, or None."""
        study, self.study = self.study, None
        best, parent = study.best, study.cand
        if best is None or best["fitness"] <= parent.fitness:
            self.settle()
            return None
        values = best["knobs"]
        own = {k: v[0] for k, v in self.knob_spec_of(parent.source).items()}
        changed = {k: v for k, v in values.items() if own.get(k) != v}
        return Candidate(
            source=with_knob_values(parent.source, values), island=parent.island,
            parents=[parent.id], generation=parent.generation + 1, operator="tune",
            status="ok", fitness=best["fitness"], metrics=best["scenarios"], error=None,
            rationale=(f"Optuna TPE over {study.tuner.finished()} trials of the knobs of "
                       f"{parent.id}: " + ", ".join(f"{k}={v:.4g}" for k, v in values.items())),
            eval_seconds=best["duration_s"],
            extra={"tuned_from": parent.id, "parent_fitness": parent.fitness,
                   "knobs_changed": sorted(changed)})

    def settle(self) -> None:
        """Mark the study closed in the state (inside the transaction storing its child)."""
        with self.store.transaction():
            self.store.set_meta(ACTIVE_KEY, None)
            self.store.set_meta(STUDY_KEY, None)
