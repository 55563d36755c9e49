"""Tuning inside the search: which programs get a study, and turning its best trial into a child.

One study at a time. A program qualifies when it declares KNOBS, was evaluated ok, is in the top
`tuning.top_fraction` of its island and no program with the same code (knob values aside) was
tuned before. Its trials are ordinary jobs on the worker pool, interleaved with candidate
evaluations (every other slot); when the last trial is told, the best knobs become a child
(operator `tune`) whose fitness and metrics are those of the best trial, which evaluated exactly
that program, so nothing is simulated twice.

What keeps tuning worth its cost (each figure is in `glia-evo status` and `events.jsonl`):
- a program whose code never reads its knobs is not tuned (a static look, costs nothing);
- nor one whose knobs do not move its fitness: before a study starts, a sensitivity probe runs
  the quick stage (the cascade's first split, under its timeout) with every knob at a quarter
  and at three quarters of its range; if neither changes the quick-stage fitness by more than
  `PROBE_TOL` (and neither fails), the study does not start (`probe_sets`, `sensitive`);
- trial 0, the program's own knobs, is not evaluated again when the program was evaluated on
  the tuning split: its fitness is known;
- trials go through the evaluation cascade like candidates (the quick stage first, with its
  timeout and its bar), so a knob set that makes the simulation crawl is cut within seconds;
- a knob set already evaluated for the same code is never evaluated again, in this study or
  another (`trial_cache`, keyed by `knob_free_hash`: the code without its KNOBS literal, so
  programs that differ only in knob values or bounds share results); studies start from the
  best knob sets of earlier studies of programs with the same knobs, and each study's sampler
  has its own seed;
- a study stops once `PROBE_TRIALS` evaluated trials show no gain over the program's own knobs;
- trials take at most `share()` of the work, a share that grows as studies pay off (improve
  their program) and shrinks as they do not. Work is counted in simulated requests (each
  instance a result covers, by its trace's length; a stage-1 timeout as a whole evaluation),
  not in measured seconds, so when a trial may start is a function of the seed, like the rest
  of the offline search; `glia-evo status` also reports the measured worker-seconds.

Kill-safe, and a killed run resumes exactly like an uninterrupted one: a trial's result, the
trials counter and the best trial so far (knobs, fitness, metrics) are committed to the state in
one transaction *before* Optuna is told, and the study is closed in the transaction that stores
its child. Each asked trial is recorded with the newest candidate submitted before it; a study
reopened after a kill tells Optuna the results it missed, keeps its best trial, and runs the
trials that were in flight again with the same knobs, in their place among the pending
candidates (`resume_due`); the sampler is seeded per trial (`Tuner.ask`). A candidate whose
processing was cut by a kill before its tuning check (the probe takes seconds) is checked
first on resume (`CONSIDER_KEY`, set in the transaction that stores the candidate).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from population import DERIVED_OPERATORS, Candidate

from .evaluation.jobs import EvalJob
from .tuning import Tuner, with_knob_values
from .run_folder import RunFolder

ACTIVE_KEY = "tuning_active"
STATS_KEY = "tuning_stats"       # what tuning cost and gained (see `new_stats`)
CACHE_KEY = "trial_cache"        # "<code hash> <knobs>" -> {"fitness", "scenarios", "duration_s"}
HISTORY_KEY = "tuning_history"   # best knob sets of studies that improved their program
CONSIDER_KEY = "tuning_consider" # a candidate just stored whose tuning check is still to come
PROBE_TRIALS = 3                 # evaluated trials after which a study without gain stops
MIN_GAIN = 1e-3                  # relative fitness gain that counts as one
PROBE_TOL = 1e-4                 # relative change of the quick-stage fitness: the knobs matter
SHARE_MIN, SHARE_MAX = 0.1, 0.5  # bounds of the share of worker time tuning may take
STUDY_KEY = "tuning_study"       # {"cand", "told": {number: fitness or None}, "best": {...}}
TUNED_KEY = "tuned_hashes"       # code hashes and knob-free hashes of programs chosen
TRIALS_KEY = "trials"


@dataclass
class Trial:
    """A trial in the engine's queue of evaluations (where candidates otherwise stand)."""
    number: int
    knobs: dict
    before: int = 0      # a trial run again after a kill: pending candidates submitted first


def new_stats() -> dict:
    return {"studies": 0, "improved": 0, "stopped_early": 0, "not_tuned_unused_knobs": 0,
            "not_tuned_insensitive": 0, "probes": 0, "probe_seconds": 0.0,
            "trials": 0, "cut_by_cascade": 0, "reused": 0, "own_known": 0,
            "trial_seconds": 0.0, "candidate_seconds": 0.0, "trial_work": 0,
            "candidate_work": 0, "best_gain": 0.0, "gains": 0.0}


def tuning_summary(stats: dict) -> dict:
    """What tuning cost and what it gained, for `glia-evo status` (its --json too). Tuning's
    worker-seconds are its trials' and its sensitivity probes'."""
    tuning_s = stats["trial_seconds"] + stats["probe_seconds"]
    seconds = tuning_s + stats["candidate_seconds"]
    return {"studies": stats["studies"], "improved": stats["improved"],
            "stopped_early": stats["stopped_early"],
            "not_tuned_unused_knobs": stats["not_tuned_unused_knobs"],
            "not_tuned_insensitive": stats["not_tuned_insensitive"],
            "probes": stats["probes"], "probe_seconds": round(stats["probe_seconds"], 1),
            "trials": stats["trials"], "cut_by_cascade": stats["cut_by_cascade"],
            "reused": stats["reused"], "own_known": stats["own_known"],
            "trial_seconds": round(stats["trial_seconds"], 1),
            "tuning_seconds": round(tuning_s, 1),
            "candidate_seconds": round(stats["candidate_seconds"], 1),
            "share_of_worker_time": round(tuning_s / seconds, 3) if seconds else 0.0,
            "best_gain": round(stats["best_gain"], 4),
            "mean_gain": round(stats["gains"] / stats["improved"], 4) if stats["improved"] else 0.0}


def knob_free_hash(source: str) -> str:
    """The code hash of `source` without its top-level KNOBS literal: programs that differ only
    in knob values or bounds get the same one (a trial's result depends on the code and the
    knob values it is given, nothing else)."""
    import ast
    from population import code_hash
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return code_hash(source)
    tree.body = [n for n in tree.body if not (
        isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "KNOBS"
                                          for t in n.targets))]
    return code_hash(ast.unparse(tree))


def probe_sets(spec: dict) -> list[dict]:
    """The sensitivity probe's knob sets: every tunable knob at 1/4, then at 3/4 of its range
    (integers rounded), the others at their own values; sets equal to the own knobs dropped."""
    own = {k: v[0] for k, v in spec.items()}
    out = []
    for q in (0.25, 0.75):
        values = dict(own)
        for k, (v, low, high) in spec.items():
            if low == high:
                continue
            x = low + q * (high - low)
            if isinstance(v, int) and isinstance(low, int) and isinstance(high, int):
                x = int(round(x))
            values[k] = x
        if values != own and values not in out:
            out.append(values)
    return out


def sensitive(own_stage1: float | None, results: list) -> bool:
    """Do the knobs matter? `results`: the probe's quick-stage results (the own knobs' first
    when `own_stage1` is unknown). A probe that fails (timeout, crash, ...) changed something."""
    results = list(results)
    if own_stage1 is None:
        first = results.pop(0)
        if first.status not in ("ok", "rejected") or not first.fitness > 0:
            return True      # no baseline to compare with: let the study find out
        own_stage1 = first.fitness
    for r in results:
        if r.status not in ("ok", "rejected") or \
                abs(r.fitness - own_stage1) > PROBE_TOL * own_stage1:
            return True
    return False


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
    asked: dict = field(default_factory=dict)   # trial number (str) -> {"knobs", "after"}
    resume: list = field(default_factory=list)  # trials in flight at a kill, to run again
    key: str = ""                    # knob_free_hash of the program
    def wants_trial(self) -> bool:
        return self.tuner.remaining() - self.inflight > 0

    def done(self) -> bool:
        return self.tuner.remaining() == 0 and self.inflight == 0


class TuningRuns:
    def __init__(self, cfg, store, islands, run_dir, knob_spec_of):
        self.cfg = cfg
        self.store = store
        self.islands = islands
        self.journal = RunFolder(run_dir).tuning_journal
        self.knob_spec_of = knob_spec_of
        self.study: Study | None = None
        self.problem = None
        self.requests = dict          # () -> instance -> requests of its trace (`attach`)
        self.probe = None             # (cand, [knob values]) -> their quick-stage results
        self.pending_at_start = [c.id for c in store.by_status("pending")]
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

    def attach(self, problem, requests, probe) -> None:
        """What the work count and the sensitivity probe need from the evaluator: the problem,
        `requests()` (instance -> requests of its trace) and `probe(cand, knob sets)`."""
        self.problem, self.requests, self.probe = problem, requests, probe

    def share(self, stats: dict | None = None) -> float:
        """The share of the work trials may take: 0.3 at first (a Laplace estimate of how
        often studies improve their program, times 0.6), within [SHARE_MIN, SHARE_MAX]."""
        stats = stats or self.stats()
        rate = (stats["improved"] + 1) / (stats["studies"] + 2)
        return min(SHARE_MAX, max(SHARE_MIN, 0.6 * rate))

    def within_share(self) -> bool:
        stats = self.stats()
        used = stats["trial_work"]
        return used <= self.share(stats) * (used + stats["candidate_work"])

    def work(self, result, split: str) -> int:
        """What a result cost, in simulated requests (deterministic, unlike seconds): the
        instances of the stages it ran, each counted by its trace's length; a first stage cut
        by its timeout counts as a whole evaluation (it held a worker that long)."""
        if self.problem is None:
            return 0
        e = self.cfg.evaluation
        stage = ((getattr(result, "diagnostics", None) or {}).get("cascade") or {}).get("stage")
        splits = [split] if stage in (None, 2) else [e.cascade_split]
        if stage == 2 or (stage == 1 and result.status == "timeout"):
            splits = [e.cascade_split, split]
        requests = self.requests() or {}
        return sum(int(requests.get(i.name, 1)) for s in splits if s in self.problem.splits
                   for i in self.problem.split(s))

    def count_candidate(self, result, cand: Candidate | None = None) -> None:
        """A candidate's evaluation cost (call inside the transaction that stores it); `cand`:
        it became an island member, so its tuning check (`consider`) comes next."""
        seconds = result if isinstance(result, (int, float)) else result.duration_s
        work = 0 if isinstance(result, (int, float)) else self.work(result, self.cfg.evaluation.split)
        self._add(self.stats(), candidate_seconds=max(0.0, seconds), candidate_work=work)
        if cand is not None and self.cfg.tuning.enabled:
            self.store.set_meta(CONSIDER_KEY, cand.id)

    def resume_due(self, candidates_submitted: int) -> bool:
        """A trial in flight at a kill is next in the original submission order: the pending
        candidates submitted before it (this session counted `candidates_submitted`) are."""
        study = self.study
        return bool(study and study.resume and study.resume[0].before <= candidates_submitted)

    def _open(self, cand: Candidate) -> Study:
        saved = self.store.get_meta(STUDY_KEY) or {}
        if saved.get("cand") != cand.id:
            saved = {}
        told = dict(saved.get("told") or {})
        asked = dict(saved.get("asked") or {})
        spec = self.knob_spec_of(cand.source)
        own = cand.fitness if self._own_known(cand) else None
        history = [h["knobs"] for h in reversed(self.store.get_meta(HISTORY_KEY) or [])
                   if sorted(h["knobs"]) == sorted(spec)][:2]
        tuner = Tuner(cand.id, spec, self.journal, self.cfg.seed, self.cfg.tuning.trials,
                      known={int(k): v for k, v in told.items()}, own_fitness=own, warm=history,
                      rerun_running=True)
        tuner.stopped = bool(saved.get("stopped"))
        resume = []
        for number, values in tuner.running:    # in flight at a kill: run again, in place
            after = (asked.get(str(number)) or {}).get("after")
            before = (len(self.pending_at_start) if after is None else
                      sum(1 for cid in self.pending_at_start if cid <= after))
            resume.append(Trial(number, values, before))
        resume.sort(key=lambda t: (t.before, t.number))
        asked = {k: v for k, v in asked.items() if int(k) in {t.number for t in resume}}
        return Study(cand, tuner, inflight=len(resume), best=saved.get("best"), told=told,
                     asked=asked, resume=resume, key=knob_free_hash(cand.source))

    def _save(self, study: Study) -> None:
        self.store.set_meta(STUDY_KEY, {"cand": study.cand.id, "told": study.told,
                                        "best": study.best, "stopped": study.tuner.stopped,
                                        "asked": study.asked})

    def _own_known(self, cand: Candidate) -> bool:
        """The program's fitness is that of its own knobs on the tuning split."""
        e = self.cfg.evaluation
        return (cand.status == "ok" and cand.fitness > 0
                and (self.cfg.tuning.split or e.split) == e.split)

    def pending_consideration(self) -> Candidate | None:
        """The candidate whose tuning check a kill cut short (see `CONSIDER_KEY`), if any."""
        cid = self.store.get_meta(CONSIDER_KEY)
        return self.store.get(cid) if cid else None

    def _qualifies(self, cand: Candidate):
        """(knob spec, knob-free hash, tuned hashes) if `cand` may get a study, else None."""
        t = self.cfg.tuning
        if not t.enabled or self.study is not None or cand.status != "ok" or \
                cand.operator in DERIVED_OPERATORS:
            return None
        spec = self.knob_spec_of(cand.source)
        tuned = set(self.store.get_meta(TUNED_KEY, []) or [])
        key = knob_free_hash(cand.source) if spec else None
        if not spec or key in tuned:
            return None
        members = sorted(self.islands.members(cand.island), key=lambda c: -c.fitness)
        top = members[:max(1, math.ceil(t.top_fraction * len(members)))]
        return (spec, key, tuned) if cand.id in {m.id for m in top} else None

    def consider(self, cand: Candidate) -> Candidate | None:
        """Start a study for `cand` if it qualifies; returns it when one starts."""
        found = self._qualifies(cand)
        if found is None:
            if self.store.get_meta(CONSIDER_KEY) is not None:
                self.store.set_meta(CONSIDER_KEY, None)
            return None
        spec, key, tuned = found
        tuned |= {key, cand.code_hash}
        tunable = {k for k, (_, low, high) in spec.items() if low != high}
        if not used_knobs(cand.source, tunable):      # its knobs cannot change anything
            with self.store.transaction():
                self.store.set_meta(TUNED_KEY, sorted(tuned))
                self.store.set_meta(CONSIDER_KEY, None)
                self._add(self.stats(), not_tuned_unused_knobs=1)
            return None
        if self.probe is not None and self.problem is not None and \
                self.cfg.evaluation.cascade_split in self.problem.splits:   # else: no probe
            if self.store.get_meta(CONSIDER_KEY) != cand.id:   # until decided (the probe takes
                self.store.set_meta(CONSIDER_KEY, cand.id)     # seconds: a kill may cut it)
            if not self._knobs_matter(cand, spec):
                with self.store.transaction():
                    self.store.set_meta(TUNED_KEY, sorted(tuned))
                    self.store.set_meta(CONSIDER_KEY, None)
                    self._add(self.stats(), not_tuned_insensitive=1)
                return None
        with self.store.transaction():
            self.store.set_meta(ACTIVE_KEY, cand.id)
            self.store.set_meta(STUDY_KEY, {"cand": cand.id, "told": {}, "best": None})
            self.store.set_meta(TUNED_KEY, sorted(tuned))
            self.store.set_meta(CONSIDER_KEY, None)
            self._add(self.stats(), studies=1, own_known=int(self._own_known(cand)))
        self.study = self._open(cand)
        return cand

    def _knobs_matter(self, cand: Candidate, spec: dict) -> bool:
        """The sensitivity probe (see the module docstring); its cost counts as tuning's."""
        sets = probe_sets(spec)
        if not sets:
            return False
        own1 = cand.extra.get("stage1_fitness")
        own1 = own1 if type(own1) in (int, float) and own1 > 0 else None
        if own1 is None:
            sets = [{k: v[0] for k, v in spec.items()}] + sets
        results = self.probe(cand, sets)
        split = self.cfg.evaluation.cascade_split
        with self.store.transaction():
            self._add(self.stats(), probes=len(results),
                      probe_seconds=sum(max(0.0, r.duration_s) for r in results),
                      trial_work=sum(self.work(r, split) for r in results))
        return sensitive(own1, results)

    def next_job(self, problem: str, split: str, reference: tuple, *,
                 cascade: dict | None = None,
                 after: str = "") -> tuple[Trial, EvalJob, dict | None]:
        """The next trial (one in flight at a kill first, see `resume_due`), its job, and the
        result of the same knob set for the same code if one was evaluated before (then the
        job need not run: tell that result). `cascade`: EvalJob fields (cascade,
        cascade_split, threshold, cascade_timeout_s); `after`: the newest candidate in flight
        ("" if none), recorded with the trial so a resumed run runs it again in its place."""
        study = self.study
        if study.resume:
            trial = study.resume.pop(0)
            number, values = trial.number, trial.knobs
        else:
            number, values = study.tuner.ask()
            study.inflight += 1
            study.asked[str(number)] = {"knobs": values, "after": after}
            with self.store.transaction():
                self._save(study)
        cand = study.cand
        job = trial_job(cand, values, problem, split, reference, cascade)
        cached = (self.store.get_meta(CACHE_KEY) or {}).get(cache_key(study.key, values))
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
        study.asked.pop(str(trial.number), None)
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
                          cut_by_cascade=int(cut),
                          trial_work=self.work(result, self.cfg.tuning.split or
                                               self.cfg.evaluation.split))
                if result.status in ("ok", "rejected", "invalid", "error", "timeout"):
                    cache = self.store.get_meta(CACHE_KEY) or {}
                    cache[cache_key(study.key, trial.knobs)] = {
                        "status": result.status, "fitness": fitness,
                        "scenarios": result.scenarios if ok else {},
                        "duration_s": result.duration_s}
                    self.store.set_meta(CACHE_KEY, cache)
            else:
                self._add(stats, reused=1)
            if no_gain:
                study.tuner.stopped = True
                self._add(stats, stopped_early=1)
            self._save(study)
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
            rationale=(f"Optuna study (a local search around its knobs, then TPE) over "
                       f"{study.tuner.finished()} trials of the knobs of "
                       f"{parent.id}: " + ", ".join(f"{k}={v:.4g}" for k, v in values.items())),
            eval_seconds=best["duration_s"],
            extra={"tuned_from": parent.id, "parent_fitness": parent.fitness,
                   "knobs_changed": sorted(changed)})

    def settle(self) -> None:
        """Mark the study closed in the state (inside the transaction storing its child)."""
        with self.store.transaction():
            self.store.set_meta(ACTIVE_KEY, None)
            self.store.set_meta(STUDY_KEY, None)
