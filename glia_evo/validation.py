"""The run's best, chosen on the validation split (issue 17).

Selection during the search sees only the training split, so the fittest program there is the
one that fits those few instances best, not the one that generalises best: the train-best of an
autoscaling run scored 1.06-1.20 on its 4 training instances and 0.79-1.00 on validation. When a
run stops, the `search.validate_top` fittest *distinct* programs on the training split (distinct
by normalised code and knob values, migration copies left out) are evaluated on
`search.validation_split`, and the one with the highest validation fitness is the run's best
(ties: the fitter on train, then the older). That choice is what `best.py`, `glia-evo report`,
`export` and `status` use, and each says which split chose it.

The choice is stored in the state (meta `validation`) with the number of evaluations it covers;
a later session that evaluated more (a resume) chooses again, re-using the validation results of
programs already scored. The validation evaluations are not counted in the evaluation budget
(at most `validate_top` of them per session, each on the validation split's instances) and never
change the population, so the search itself stays a deterministic function of the seed, and so
does the choice (the simulator is deterministic).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from population import Candidate, Store

VALIDATION_KEY = "validation"


def contenders(store: Store, k: int) -> list[Candidate]:
    """The `k` fittest viable programs on the training split, distinct by (code hash, knobs),
    fittest first (ties: the older), migration copies left out."""
    if k <= 0:
        return []
    seen, out = set(), []
    for cand in store._top(max(4 * k, 50), exclude_operator="migration"):
        key = (cand.code_hash, json.dumps(cand.knobs, sort_keys=True))
        if key in seen or not cand.viable:
            continue
        seen.add(key)
        out.append(cand)
        if len(out) == k:
            break
    return out


def current(store: Store) -> dict | None:
    """The stored choice when it covers every evaluation the run has made, else None."""
    choice = store.get_meta(VALIDATION_KEY)
    if not isinstance(choice, dict) or not choice.get("best"):
        return None
    if int(choice.get("evaluations", -1)) != int(store.get_meta("evaluations", 0)):
        return None
    if store.get(choice["best"]) is None:
        return None
    return choice


def best_candidate(store: Store) -> tuple[Candidate | None, dict | None]:
    """(the run's best, the validation choice or None). With a current validation choice its
    winner; else the fittest on the training split (ties: the older)."""
    choice = current(store)
    if choice is not None:
        return store.get(choice["best"]), choice
    viable = [c for c in store.all() if c.viable and c.operator != "migration"]
    if not viable:
        return None, None
    return max(viable, key=lambda c: (c.fitness, -int(c.id.lstrip("c") or 0))), None


def choose(store: Store, problem, k: int, split: str, workers: int | None = None,
           progress=None) -> dict | None:
    """Evaluate the contenders on `split` (those not scored there yet), store and return the
    choice: {"split", "top", "evaluations", "best", "train_best", "scores": {id: {"fitness",
    "status", "train_fitness"}}}. None when there is nothing to choose from or the problem has
    no such split."""
    if k <= 0 or split not in problem.splits:
        return None
    cands = contenders(store, k)
    if not cands:
        return None
    old = store.get_meta(VALIDATION_KEY) or {}
    scores = dict(old.get("scores") or {}) if old.get("split") == split else {}
    todo = [c for c in cands if c.id not in scores]
    if todo:
        from .evaluation.parallel import evaluate_many
        results = evaluate_many([c.source for c in todo], problem, problem.split(split),
                                knobs=[c.knobs or None for c in todo], workers=workers,
                                progress=progress)     # one pool for all: no idle rounds
        for c, res in zip(todo, results):
            scores[c.id] = {"fitness": res.fitness if res.status == "ok" else 0.0,
                            "status": res.status, "train_fitness": c.fitness,
                            "instances": {n: res.reference[n] / m[problem.metric]
                                          for n, m in res.scenarios.items()
                                          if m.get(problem.metric) and n in res.reference}}
    order = {c.id: i for i, c in enumerate(cands)}       # fittest on train first
    best = max(cands, key=lambda c: (scores[c.id]["fitness"], -order[c.id]))
    choice = {"split": split, "top": k, "evaluations": int(store.get_meta("evaluations", 0)),
              "best": best.id, "train_best": cands[0].id,
              "contenders": [c.id for c in cands], "scores": scores}
    store.set_meta(VALIDATION_KEY, choice)
    return choice


def header(cand: Candidate, choice: dict | None, train_split: str) -> str:
    """The comment that opens `best.py`: which split chose this program."""
    if choice is not None and choice.get("best") == cand.id:
        s = choice["scores"][cand.id]
        return (f"# glia-evo: the run's best, {cand.id}, chosen on the '{choice['split']}' split "
                f"(fitness {s['fitness']:.4f}) among the {len(choice['contenders'])} fittest "
                f"distinct programs on '{train_split}' (its '{train_split}' fitness "
                f"{cand.fitness:.4f}; the fittest there was {choice['train_best']})\n")
    return (f"# glia-evo: the best so far, {cand.id}, chosen on the '{train_split}' split alone "
            f"(fitness {cand.fitness:.4f}); when the run stops the best is chosen on "
            f"validation\n")


def write_best(path: Path, cand: Candidate, choice: dict | None, train_split: str) -> None:
    tmp = path.with_suffix(".py.tmp")
    tmp.write_text(header(cand, choice, train_split) + cand.source)
    os.replace(tmp, path)


def line(choice: dict, train_split: str) -> str:
    """One line for the end of a run and `glia-evo status`."""
    s = choice["scores"]
    best, top = choice["best"], choice["train_best"]
    text = (f"validation: the '{choice['split']}' split chose {best} (fitness {s[best]['fitness']:.4f}, "
            f"'{train_split}' {s[best]['train_fitness']:.4f}) among the "
            f"{len(choice['contenders'])} fittest distinct programs on '{train_split}'")
    if best != top:
        text += (f"; the fittest on '{train_split}', {top}, scores {s[top]['fitness']:.4f} "
                 f"there")
    return text
