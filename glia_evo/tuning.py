"""Optuna knob tuning: a local search around the program's own knobs first, then TPE; seeded,
ask-and-tell so trials run on the worker pool in parallel.

A `Tuner` holds one study per program (journal storage in the run folder, resumable). The engine
asks for trials, evaluates each trial's knobs as an ordinary job, and tells the results back in
order, so the study is as deterministic as the search. The best trial becomes a new child program
whose KNOBS carry the tuned values (`with_knob_values`), so every program stays self-contained.

Where the trials land (`local_move`): a program's knobs are usually roughly right, and knob sets
drawn from each knob's whole range (TPE's random start-up trials) are mostly far worse, so worse
that the cascade's first stage cuts them and tuning never gains. So the first trials search
near the incumbent (the best trial told so far; the program's own knobs at first): a pair of
opposite moves along a random direction (every knob scaled up or down by `h`, a knob at 0 moved
by `h` x a quarter of its range; clipped to the range, integers rounded and moved by at least
1), so that unless the incumbent is at an optimum one of the two goes uphill; a move that beats
the incumbent becomes the incumbent and is repeated with twice the step (a pattern move); a pair
that changed nothing widens the step, a pair that made both worse narrows it. Each local trial
is an `enqueue_trial` of the move with its plan in the trial's user attributes, so the journal
alone says what comes next (a study resumed after a kill asks what an uninterrupted one
would). Once the step is below `H_MIN`, TPE takes over (with every local trial as its history).
"""
from __future__ import annotations

import ast
import json
import logging
import random
import zlib
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger("glia_evo.tuning")


def study_seed(seed: int, study_name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(study_name.encode())) % 2**31


def storage(journal: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(journal)))


def knob_spec_of(source: str, entrypoints) -> dict:
    """The program's KNOBS (name -> (default, low, high)); {} if it does not compile."""
    from sandbox import PolicyCompileError
    from sandbox.compile import check_source
    try:
        return check_source(source, entrypoints)
    except PolicyCompileError:
        return {}


H0, H_MIN, H_MAX = 0.2, 0.02, 1.0   # the local search's first, smallest and largest step
LOCAL = "local"                      # user attribute of a local trial: its plan (`local_move`)


def distributions(knob_spec: dict) -> dict:
    out = {}
    for name, (value, low, high) in knob_spec.items():
        if low == high:
            continue
        if isinstance(value, int) and isinstance(low, int) and isinstance(high, int):
            out[name] = optuna.distributions.IntDistribution(low, high)
        else:
            out[name] = optuna.distributions.FloatDistribution(float(low), float(high))
    return out


def _moved(value, low, high, sign: int, h: float, is_int: bool):
    """One knob moved by the relative step `h` in direction `sign` (see the module docstring)."""
    if sign == 0:
        return value
    scale = abs(value) if value else (high - low) / 4
    x = value + sign * h * scale
    if is_int:
        x = int(round(x))
        if x == value:
            x = value + sign
        return int(min(high, max(low, x)))
    return min(float(high), max(float(low), float(f"{x:.6g}")))


def direction(seed: int, index: int, names: list[str]) -> dict:
    """The `index`-th random direction of a study: +1 or -1 per knob."""
    rng = random.Random(seed * 1_000_003 + index)
    return {k: rng.choice((-1, 1)) for k in names}


def move(space: dict, center: dict, signs: dict, h: float) -> dict:
    return {k: _moved(center[k], d.low, d.high, signs[k], h,
                      isinstance(d, optuna.distributions.IntDistribution))
            for k, d in space.items()}


def local_move(space: dict, trials: list, seed: int) -> tuple[dict, dict] | None:
    """The next local trial (params, plan), or None once the step is below `H_MIN`.

    `trials`: every trial of the study asked so far (FrozenTrials: trial 0 is the program's own
    knobs). The incumbent is the best completed trial (ties: the earliest; trial 0 while none
    is completed). Its moves, in order: the pattern move (the move that made it the incumbent,
    again with twice the step) if it came from one; then pairs: a move along a new random
    direction, then its mirror image. A new pair's step is that of the incumbent's last pair,
    doubled if both its trials were told equal to the incumbent (flat), halved if both were
    told worse (or failed); kept while they are in flight. Moves that change nothing (every
    knob clipped at its bound) or were asked before are passed over. Plans: {"center": trial
    number, "kind": "pattern" | "pair", "dir": direction index, "sign": +1 | -1, "h": step}."""
    names = list(space)
    states = optuna.trial.TrialState
    done = [t for t in trials if t.state == states.COMPLETE]
    center = max(done, key=lambda t: (t.value, -t.number)) if done else \
        min(trials, key=lambda t: t.number)
    cvalues = {k: center.params.get(k) for k in names}
    if any(v is None for v in cvalues.values()):
        return None
    fc = center.value if center.state == states.COMPLETE else None
    asked = [json_key(t.params) for t in trials]
    around = [t for t in trials if (t.user_attrs.get(LOCAL) or {}).get("center") == center.number]
    mine = center.user_attrs.get(LOCAL)
    started = sum(1 for t in trials if (t.user_attrs.get(LOCAL) or {}).get("kind") == "pair"
                  and t.user_attrs[LOCAL]["sign"] == 1)

    def fresh(params: dict) -> bool:
        return params != cvalues and json_key(params) not in asked

    if mine and not around:                        # the pattern move: the same, twice as far
        h = min(H_MAX, 2 * mine["h"])
        params = move(space, cvalues, {k: s * mine["sign"] for k, s in
                                       direction(seed, mine["dir"], names).items()}, h)
        if fresh(params):
            return params, {"center": center.number, "kind": "pattern", "dir": mine["dir"],
                            "sign": mine["sign"], "h": h}
    pairs = [t for t in around if t.user_attrs[LOCAL]["kind"] == "pair"]
    h = mine["h"] if mine else H0
    if pairs:
        last = pairs[-1].user_attrs[LOCAL]
        h = last["h"]
        if last["sign"] == 1:                      # its mirror image, not asked yet
            params = move(space, cvalues, {k: -s for k, s in
                                           direction(seed, last["dir"], names).items()}, h)
            if fresh(params):
                return params, {"center": center.number, "kind": "pair", "dir": last["dir"],
                                "sign": -1, "h": h}
        pair = [t for t in pairs if t.user_attrs[LOCAL]["dir"] == last["dir"]]
        told = [t for t in pair if t.state in (states.COMPLETE, states.FAIL)]
        if fc is not None and told and len(told) == len(pair):
            values = [t.value if t.state == states.COMPLETE else None for t in told]
            if all(v is not None and abs(v - fc) <= 1e-12 * abs(fc) for v in values):
                h = min(H_MAX, 2 * h)              # flat: the knobs need a larger move
            elif all(v is None or v < fc for v in values):
                h = h / 2                          # both worse: closer
    if h < H_MIN:
        return None
    for index in range(started, started + 64):     # a new direction (one that moves something)
        signs = direction(seed, index, names)
        params = move(space, cvalues, signs, h)
        if fresh(params):
            return params, {"center": center.number, "kind": "pair", "dir": index, "sign": 1,
                            "h": h}
    return None


def json_key(params: dict) -> str:
    return json.dumps(sorted(params.items()))


class Tuner:
    """One Optuna study over a program's knobs; trials are asked and told by the caller.

    `own_fitness`: the program's fitness with its own knobs, when already known (it was
    evaluated on the tuning split), recorded as a completed trial instead of evaluated again;
    otherwise trial 0 evaluates it. `warm`: knob sets worth trying first (the best of related
    studies), enqueued after it. The sampler's seed is the run's seed mixed with the study's
    name, so two studies do not start from the same random knob sets."""

    def __init__(self, study_name: str, knob_spec: dict, journal: Path, seed: int,
                 trials: int, known: dict | None = None, own_fitness: float | None = None,
                 warm: list | None = None, rerun_running: bool = False):
        self.knob_spec = knob_spec
        self.space = distributions(knob_spec)
        self.trials = trials
        self.stopped = False
        self.seed = study_seed(seed, study_name)
        self.study = optuna.create_study(
            study_name=study_name, storage=storage(journal), direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=self.seed), load_if_exists=True)
        self.running: list[tuple[int, dict]] = []   # asked, never told, kept to run again
        if not self.study.trials:      # trial 0: the program as it is, the baseline to beat
            own = {k: knob_spec[k][0] for k in self.space}
            if own_fitness is not None and own_fitness > 0:
                self.study.add_trial(optuna.trial.create_trial(
                    params=own, distributions=self.space, value=own_fitness))
            else:
                self.study.enqueue_trial(own)
            for values in warm or []:
                params = {k: values[k] for k in self.space if k in values}
                if params != own and all(self.knob_spec[k][1] <= v <= self.knob_spec[k][2]
                                         for k, v in params.items()):
                    self.study.enqueue_trial(params, skip_if_exists=True)
        known = known or {}
        for t in self.study.trials:     # trials asked but never told (a killed run): the
            if t.state == optuna.trial.TrialState.RUNNING:   # result the caller kept; else
                if t.number in known:      # run again with the same knobs (`rerun_running`,
                    self.tell(t.number, known[t.number])    # `self.running`) or failed
                elif rerun_running:
                    self.running.append((t.number, self._values(t.params)))
                else:
                    self.study.tell(t.number, state=optuna.trial.TrialState.FAIL)

    def finished(self) -> int:
        return sum(1 for t in self.study.trials
                   if t.state in (optuna.trial.TrialState.COMPLETE,
                                  optuna.trial.TrialState.FAIL))

    def remaining(self) -> int:
        return 0 if self.stopped else max(0, self.trials - self.finished())

    def told_values(self) -> list[float | None]:
        """Each finished trial's fitness (None: failed), in trial order."""
        return [t.value if t.state == optuna.trial.TrialState.COMPLETE else None
                for t in sorted(self.study.trials, key=lambda t: t.number)
                if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)]

    def _values(self, params: dict) -> dict:
        values = {k: spec[0] for k, spec in self.knob_spec.items()}
        values.update(params)
        return values

    def ask(self) -> tuple[int, dict]:
        """(trial number, full knob values) for the next trial: one enqueued (a related
        study's winner, or a local move enqueued by an ask a kill cut short), else the next
        local move around the incumbent (`local_move`, enqueued with its plan), else TPE's.
        What it asks depends only on the trials in the journal, never on how many sessions
        asked them (TPE is seeded afresh for each trial, by the study's seed and the trial's
        number): a study resumed after a kill asks what an uninterrupted one would."""
        trials = self.study.get_trials(deepcopy=False)
        if not any(t.state == optuna.trial.TrialState.WAITING for t in trials):
            local = local_move(self.space, trials, self.seed)
            if local is not None:
                params, plan = local
                self.study.enqueue_trial(params, user_attrs={LOCAL: plan})
        number = len(self.study.get_trials(deepcopy=False))
        self.study.sampler = optuna.samplers.TPESampler(
            seed=(self.seed + 7919 * number) % 2**31)
        trial = self.study.ask(self.space)
        return trial.number, self._values(trial.params)

    def tell(self, number: int, fitness: float | None) -> None:
        if fitness is None or fitness <= 0:
            self.study.tell(number, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(number, fitness)

    def best(self) -> tuple[dict, float] | None:
        done = [t for t in self.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not done:
            return None
        best = max(done, key=lambda t: (t.value, -t.number))
        return self._values(best.params), best.value


def with_knob_values(source: str, values: dict) -> str:
    """The program with the first element of each KNOBS tuple replaced by `values[name]`."""
    tree = ast.parse(source)
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(isinstance(t, ast.Name) and t.id == "KNOBS" for t in node.targets)):
            for key, val in zip(node.value.keys, node.value.values):
                if (isinstance(key, ast.Constant) and key.value in values
                        and isinstance(val, ast.Tuple) and len(val.elts) == 3):
                    v = values[key.value]
                    val.elts[0] = ast.Constant(v)   # repr round-trips: exact values
    return ast.unparse(tree) + "\n"


def tune_program(source: str, knob_spec: dict, problem: str, split: str, pool, *, trials: int,
                 journal: Path, seed: int = 0, study_name: str = "tune") -> dict:
    """Run a whole study on `pool` (batches of the pool's size, told in order).

    Returns {"knobs", "fitness", "start_fitness", "source", "trials"}; the tuned source's KNOBS
    hold the best values, so evaluating it reproduces "fitness" exactly.
    """
    from .evaluation.jobs import EvalJob, evaluate_job
    from .evaluation.reference import run_reference
    from .evaluation.wire import outcome_to_result
    from .problems import get_problem
    spec = get_problem(problem)
    metric = spec.metric
    reference, completed = run_reference(pool, spec, (split,))   # trusted, in its own job
    tuner = Tuner(study_name, knob_spec, journal, seed, trials)
    width = max(1, getattr(pool, "workers", 1))
    while tuner.remaining():
        batch = [tuner.ask() for _ in range(min(width, tuner.remaining()))]
        futures = [pool.submit(evaluate_job, EvalJob(
            source=source, problem=problem, split=split, knobs=tuple(sorted(values.items())),
            reference=tuple(sorted(reference.items())))) for _, values in batch]
        for (number, _), future in zip(batch, futures):
            result = outcome_to_result(future.result(), split, pool, metric=metric,
                                       reference=reference, completed=completed,
                                       expected={"ok": list(reference)})
            tuner.tell(number, result.fitness if result.status == "ok" else None)
    values, fitness = tuner.best() or ({k: v[0] for k, v in knob_spec.items()}, 0.0)
    start = tuner.study.trials[0].value if tuner.study.trials[0].value is not None else 0.0
    return {"knobs": values, "fitness": fitness, "start_fitness": start,
            "source": with_knob_values(source, values), "trials": len(tuner.study.trials)}
