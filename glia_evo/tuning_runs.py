"""Tuning inside the search: which programs get a study, and turning its best trial into a child.

One study at a time. A program qualifies when it declares KNOBS, was evaluated ok, is in the top
`tuning.top_fraction` of its island and no program with the same code (knob values aside) was
tuned before. Its trials are ordinary jobs on the worker pool, interleaved with candidate
evaluations (every other slot); when the last trial is told, the best knobs become a child
(operator `tune`) whose fitness and metrics are those of the best trial, which evaluated exactly
that program, so nothing is simulated twice.

What keeps tuning worth its cost (each figure is in `glia-evo status` and `events.jsonl`):
- a program whose code never reads its knobs is not tuned (a static look, costs nothing);
- trial 0, the program's own knobs, is not evaluated again when the program was evaluated on
  the tuning split: its fitness is known;
- trials go through the evaluation cascade like candidates (the quick stage first, with its
  timeout and its bar), so a knob set that makes the simulation crawl is cut within seconds;
- a knob set already evaluated for the same code (knob values aside) is never evaluated again,
  in this study or another (`trial_cache`); studies start from the best knob sets of earlier
  studies of programs with the same knobs, and each study's sampler has its own seed;
- a study stops once `PROBE_TRIALS` evaluated trials show no gain over the program's own knobs;
- trials take at most `share()` of the worker time, a share that grows as studies pay off
  (improve their program) and shrinks as they do not.

Kill-safe: a trial's result, the trials counter and the best trial so far (knobs, fitness,
metrics) are committed to the state in one transaction *before* Optuna is told, and the study is
closed in the transaction that stores its child. A study reopened after a kill tells Optuna the
results it missed, keeps its best trial, and is concluded at once if no trial is left to run.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from population import DERIVED_OPERATORS, Candidate

from .jobs import EvalJob
from .tuning import Tuner, with_knob_values

ACTIVE_KEY = "tuning_active"
STATS_KEY = "tuning_stats"       # what tuning cost and gained (see `new_stats`)
CACHE_KEY = "trial_cache"        # "<code hash> <knobs>" -> {"fitness", "scenarios", "duration_s"}
HISTORY_KEY = "tuning_history"   # best knob sets of studies that improved their program
PROBE_TRIALS = 3                 # evaluated trials after which a study without gain stops
MIN_GAIN = 1e-3                  # relative fitness gain that counts as one
SHARE_MIN, SHARE_MAX = 0.1, 0.5  # bounds of the share of worker time tuning may take
STUDY_KEY = "tuning_study"       # {"cand", "told": {number: fitness or None}, "best": {...}}
TUNED_KEY = "tuned_hashes"
TRIALS_KEY = "trials"


@dataclass
class Trial:
    """A trial in the engine's queue of evaluations (where candidates otherwise stand)."""
    number: int
    knobs: dict


def new_stats() -> dict:
    return {"studies": 0, "improved": 0, "stopped_early": 0, "not_tuned_unused_knobs": 0,
            "trials": 0, "cut_by_cascade": 0, "reused": 0, "own_known": 0,
            "trial_seconds": 0.0, "candidate_seconds": 0.0, "best_gain": 0.0,
            "gains": 0.0}


def tuning_summary(stats: dict) -> dict:
    """What tuning cost and what it gained, for `glia-evo status` (its --json too)."""
    seconds = stats["trial_seconds"] + stats["candidate_seconds"]
    return {"studies": stats["studies"], "improved": stats["improved"],
            "stopped_early": stats["stopped_early"],
            "not_tuned_unused_knobs": stats["not_tuned_unused_knobs"],
            "trials": stats["trials"], "cut_by_cascade": stats["cut_by_cascade"],
            "reused": stats["reused"], "own_known": stats["own_known"],
            "trial_seconds": round(stats["trial_seconds"], 1),
            "share_of_worker_time": round(stats["trial_seconds"] / seconds, 3) if seconds else 0.0,
            "best_gain": round(stats["best_gain"], 4),
            "mean_gain": round(stats["gains"] / stats["improved"], 4) if stats["improved"] else 0.0}


def used_knobs(source: str, names) -> set[str]:
    """The knob names the program's code mentions outside its KNOBS literal (`knobs["w"]`)."""
    import ast
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError):
        return set()
    skip = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "KNOBS"
                                                for t in node.targets):
            skip.update(id(n) for n in ast.walk(node))
    return {n.value for n in ast.walk(tree) if id(n) not in skip
            and isinstance(n, ast.Constant) and n.value in names}


def trial_job(cand: Candidate, values: dict, problem: str, split: str, reference: tuple,
              cascade: dict | None = None) -> EvalJob:
    """The job that evaluates `cand` with knob values `values` (a trial, or its check)."""
    bar = cand.extra.get("stage1_fitness")
    return EvalJob(source=cand.source, problem=problem, split=split,
                   knobs=tuple(sorted(values.items())), reference=reference,
                   **(dict(cascade, bar_fitness=bar if bar else 1.0)
                      if cascade and cascade.get("cascade") else {}))


def cache_key(code_hash: str, knobs: dict) -> str:
    return code_hash + " " + json.dumps(sorted(knobs.items()))


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

    def stats(self) -> dict:
        return {**new_stats(), **(self.store.get_meta(STATS_KEY) or {})}

    def _add(self, stats: dict, **deltas) -> dict:
        for k, v in deltas.items():
            stats[k] = stats.get(k, 0) + v
        self.store.set_meta(STATS_KEY, stats)
        return stats

    def share(self, stats: dict | None = None) -> float:
        """The share of worker time trials may take: 0.3 at first (a Laplace estimate of how
        often studies improve their program, times 0.6), within [SHARE_MIN, SHARE_MAX]."""
        stats = stats or self.stats()
        rate = (stats["improved"] + 1) / (stats["studies"] + 2)
        return min(SHARE_MAX, max(SHARE_MIN, 0.6 * rate))

    def within_share(self) -> bool:
        stats = self.stats()
        used = stats["trial_seconds"]
        return used <= self.share(stats) * (used + stats["candidate_seconds"])

    def count_candidate(self, seconds: float) -> None:
        """A candidate's evaluation time (call inside the transaction that stores it)."""
        self._add(self.stats(), candidate_seconds=max(0.0, seconds))

    def _open(self, cand: Candidate) -> Study:
        saved = self.store.get_meta(STUDY_KEY) or {}
        if saved.get("cand") != cand.id:
            saved = {}
        told = dict(saved.get("told") or {})
        spec = self.knob_spec_of(cand.source)
        own = cand.fitness if self._own_known(cand) else None
        history = [h["knobs"] for h in reversed(self.store.get_meta(HISTORY_KEY) or [])
                   if sorted(h["knobs"]) == sorted(spec)][:2]
        tuner = Tuner(cand.id, spec, self.journal, self.cfg.seed, self.cfg.tuning.trials,
                      known={int(k): v for k, v in told.items()}, own_fitness=own, warm=history)
        tuner.stopped = bool(saved.get("stopped"))
        return Study(cand, tuner, best=saved.get("best"), told=told)

    def _own_known(self, cand: Candidate) -> bool:
        """The program's fitness is that of its own knobs on the tuning split."""
        e = self.cfg.evaluation
        return (cand.status == "ok" and cand.fitness > 0
                and (self.cfg.tuning.split or e.split) == e.split)

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
        tunable = {k for k, (_, low, high) in spec.items() if low != high}
        if not used_knobs(cand.source, tunable):      # its knobs cannot change anything
            with self.store.transaction():
                self.store.set_meta(TUNED_KEY, sorted(tuned | {cand.code_hash}))
                self._add(self.stats(), not_tuned_unused_knobs=1)
            return None
        with self.store.transaction():
            self.store.set_meta(ACTIVE_KEY, cand.id)
            self.store.set_meta(STUDY_KEY, {"cand": cand.id, "told": {}, "best": None})
            self.store.set_meta(TUNED_KEY, sorted(tuned | {cand.code_hash}))
            self._add(self.stats(), studies=1, own_known=int(self._own_known(cand)))
        self.study = self._open(cand)
        return cand

    def next_job(self, problem: str, split: str, reference: tuple, *,
                 cascade: dict | None = None) -> tuple[Trial, EvalJob, dict | None]:
        """The next trial, its job, and the result of the same knob set for the same code if
        one was evaluated before (then the job need not run: tell that result).
        `cascade`: EvalJob fields (cascade, cascade_split, threshold, cascade_timeout_s)."""
        study = self.study
        number, values = study.tuner.ask()
        study.inflight += 1
        cand = study.cand
        job = trial_job(cand, values, problem, split, reference, cascade)
        cached = (self.store.get_meta(CACHE_KEY) or {}).get(cache_key(cand.code_hash, values))
        return Trial(number, values), job, cached

    def told(self, trial: Trial, result, *, cut: bool = False,
             reused: bool = False) -> Candidate | None:
        """Record a trial's result. When that completes the study, `self.study` becomes None
        and the tuned child is returned (not yet stored: store it with `settle()` in the same
        transaction), or None if no trial beat the program's own knobs (already settled).
        `cut`: the cascade stopped it; `reused`: its result came from `trial_cache`."""
        study = self.study
        ok = result.status == "ok" and result.fitness > 0
        fitness = result.fitness if ok else None
        study.inflight -= 1
        study.told[str(trial.number)] = fitness
        if ok and (study.best is None or result.fitness > study.best["fitness"]):
            study.best = {"fitness": result.fitness, "knobs": trial.knobs,
                          "scenarios": result.scenarios, "duration_s": result.duration_s}
        evaluated = [v for k, v in study.told.items()]
        own = study.cand.fitness
        no_gain = (len(evaluated) >= PROBE_TRIALS and not study.tuner.stopped and
                   (study.best is None or study.best["fitness"] <= own * (1 + MIN_GAIN)))
        with self.store.transaction():      # first the state, then Optuna (see the docstring)
            stats = self.stats()
            if not reused:
                self.store.set_meta(TRIALS_KEY, self.trials + 1)
                self._add(stats, trials=1, trial_seconds=max(0.0, result.duration_s),
                          cut_by_cascade=int(cut))
                if result.status in ("ok", "rejected", "invalid", "error", "timeout"):
                    cache = self.store.get_meta(CACHE_KEY) or {}
                    cache[cache_key(study.cand.code_hash, trial.knobs)] = {
                        "status": result.status, "fitness": fitness,
                        "scenarios": result.scenarios if ok else {},
                        "duration_s": result.duration_s}
                    self.store.set_meta(CACHE_KEY, cache)
            else:
                self._add(stats, reused=1)
            if no_gain:
                study.tuner.stopped = True
                self._add(stats, stopped_early=1)
            self.store.set_meta(STUDY_KEY, {"cand": study.cand.id, "told": study.told,
                                            "best": study.best,
                                            "stopped": study.tuner.stopped})
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
        gain = best["fitness"] / parent.fitness - 1 if parent.fitness > 0 else 0.0
        with self.store.transaction():     # counted once: the child is stored right after
            stats = self.stats()
            self._add(stats, improved=1, gains=gain)
            stats["best_gain"] = max(stats["best_gain"], gain)
            self.store.set_meta(STATS_KEY, stats)
            history = (self.store.get_meta(HISTORY_KEY) or [])[-19:]
            self.store.set_meta(HISTORY_KEY, history + [{"cand": parent.id, "knobs": values}])
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
