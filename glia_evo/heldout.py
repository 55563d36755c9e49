"""The held-out report: the best candidate and every baseline on the test split.

The test split's scenarios are never used for selection, so this is the honest number to quote.
`glia-evo report DIR` writes `report/heldout.json`, `report/heldout.md` (the table) and two PNGs
to the run folder: fitness over time per island, and the best candidate against the baselines
per scenario. The files are also handed to MLflow when tracking is on.
"""
from __future__ import annotations

import json
from pathlib import Path

from population import Store, StoreError

from .evaluation.parallel import evaluate_many
from .problems import get_problem
from .run_folder import RunFolder


class ReportError(Exception):
    """Nothing to report on: one line for the user."""


FILES = RunFolder.REPORT_FILES


def heldout(run_dir: Path, problem_name: str, split: str = "test", workers: int | None = None,
            include_baselines: bool = True, progress=None) -> dict:
    """Evaluate, write `run_dir/report/` (FILES) and return the report. `progress(done, total)`
    is called as simulations finish."""
    problem = get_problem(problem_name)
    try:
        store = Store(RunFolder(run_dir).state, create=False)
    except StoreError as exc:
        raise ReportError(str(exc)) from None
    try:
        cands = [c for c in store.all() if c.status == "ok" and c.operator != "migration"]
        if not cands:
            raise ReportError(f"{run_dir} has no evaluated candidate yet")
        from .validation import best_candidate
        best, choice = best_candidate(store)
        history = sorted([(c.evaluated_at or c.created_at, c.island, c.fitness) for c in cands]
                         + [(c.created_at, c.island, c.fitness) for c in store.all()   # migrants
                            if c.status == "ok" and c.operator == "migration"])
    finally:
        store.close()
    try:
        instances = problem.split(split)
    except KeyError as exc:
        raise ReportError(exc.args[0]) from None
    names = problem.baseline_names() if include_baselines else [problem.reference]
    sources = [best.source] + [problem.baseline_source(n) for n in names]
    results = _evaluate(sources, names, problem, split, instances, workers, progress)
    chosen_on = choice["split"] if choice else "train"
    rows = [{"policy": f"best ({best.id}, chosen on {chosen_on})", "status": results[0].status,
             "fitness": results[0].fitness, "error": results[0].error,
             "scenarios": {k: v.get(problem.metric) for k, v in results[0].scenarios.items()}}]
    for name, res in zip(names, results[1:]):
        rows.append({"policy": name, "status": res.status, "fitness": res.fitness,
                     "error": res.error,
                     "scenarios": {k: v.get(problem.metric) for k, v in res.scenarios.items()}})
    report = {"problem": problem.name, "split": split, "baselines": include_baselines,
              "metric": problem.metric,
              "reference": problem.reference,
              "best": {"id": best.id, "train_fitness": best.fitness,
                       "chosen_on": choice["split"] if choice else "training split",
                       **({"validation_fitness": choice["scores"][best.id]["fitness"],
                           "train_best": choice["train_best"],
                           "contenders": len(choice["contenders"])} if choice else {})},
              "rows": rows, "instances": [i.name for i in instances]}
    from .verdict import verdict
    report["warnings"] = verdict(report)["warnings"]
    report["insights"] = run_insights(run_dir)
    out = RunFolder(run_dir).report
    try:
        out.mkdir(exist_ok=True)
        (out / RunFolder.HELDOUT_JSON).write_text(json.dumps(report, indent=2))
        (out / RunFolder.HELDOUT_MD).write_text(markdown(report))
        _plots(out, report, history)
    except OSError as exc:      # e.g. a full disk: one line, not a traceback
        raise ReportError(f"cannot write the report to {out}: {exc.strerror or exc}") from exc
    return report


def _evaluate(sources: list[str], names: list[str], problem, split: str, instances,
              workers, progress) -> list:
    """evaluate_many of [best] + baselines, each baseline taken from the baseline cache
    (`glia_evo.evaluation.baseline_cache`) when this split was simulated with the same code
    before, and put there when it was not. The reference baseline's cached metrics also spare
    the reference's own simulations, which the best candidate's fitness needs."""
    from .evaluation import reference
    from .evaluation.baseline_cache import BaselineCache
    cache = BaselineCache()
    cached: dict[int, object] = {}
    if cache.enabled and problem.reference in names:
        k = names.index(problem.reference)
        ref = cache.get(problem, split, instances, names[k], sources[1 + k])
        if ref is not None:
            cached[k] = ref
            values = {n: m[problem.metric] for n, m in ref.scenarios.items()}
            for inst in instances:
                reference.remember(problem, inst, ref.scenarios[inst.name])
            for j, name in enumerate(names):
                if j != k:
                    hit = cache.get(problem, split, instances, name, sources[1 + j],
                                    reference=values)
                    if hit is not None:
                        cached[j] = hit
    todo = [0] + [1 + j for j in range(len(names)) if j not in cached]
    fresh = evaluate_many([sources[i] for i in todo], problem, instances, workers=workers,
                          progress=progress)
    results = [None] * len(sources)
    for i, res in zip(todo, fresh):
        results[i] = res
        if i > 0:
            cache.put(problem, split, instances, names[i - 1], sources[i], res)
    for j, res in cached.items():
        results[1 + j] = res
    return results


def summary(report: dict) -> str:
    """One line: the held-out fitness of the best candidate and of each baseline."""
    parts = [f"{row['policy']} {row['fitness']:.4f}" if row["status"] == "ok"
             else f"{row['policy']} {row['status']}" for row in report["rows"]]
    n = len(report["instances"])
    return (f"held-out fitness on '{report['split']}' ({n} scenario instance"
            f"{'s' if n != 1 else ''}, vs {report['reference']}): " + ", ".join(parts))


def markdown(report: dict) -> str:
    inst = report["instances"]
    head = ["policy", "fitness"] + inst
    lines = [f"# Held-out report: {report['problem']}, split '{report['split']}'", "",
             f"Fitness = geometric mean over the split of {report['reference']} / policy "
             f"({report['metric']}, lower is better in the scenario columns).", "",
             _chosen(report.get("best") or {}), "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in report["rows"]:
        cells = [row["policy"], f"{row['fitness']:.4f}" if row["status"] == "ok" else
                 row["status"]]
        cells += [f"{row['scenarios'].get(i, float('nan')):.3f}" if i in row["scenarios"]
                  else "-" for i in inst]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [f"**Warning:** {w}" for w in report.get("warnings", [])]
    lines += insights_markdown(report.get("insights") or [])
    return "\n".join(lines) + "\n"


def _chosen(best: dict) -> str:
    """Which split chose the best candidate the report is about."""
    if "validation_fitness" in best:
        return (f"The best ({best['id']}) was chosen on the '{best['chosen_on']}' split (fitness "
                f"{best['validation_fitness']:.4f}) among the {best['contenders']} fittest "
                f"distinct programs on the training split (its training fitness "
                f"{best['train_fitness']:.4f}; the fittest there was {best['train_best']}).")
    return (f"The best ({best.get('id', '?')}) was chosen on the training split alone (fitness "
            f"{best.get('train_fitness', 0):.4f}): no validation choice covers the whole run.")


def run_insights(run_dir: Path) -> list[dict]:
    """The Supervisor's insights of the run (what it learnt about the workload, issue 18):
    [{review, evaluations, text}], oldest first; [] without an LLM Supervisor."""
    from .hygiene import clean
    from .run_state import INSIGHTS_KEY
    try:
        store = Store(RunFolder(run_dir).state, create=False)
    except StoreError:
        return []
    try:
        kept = store.get_meta(INSIGHTS_KEY) or []
    finally:
        store.close()
    return [{"review": int(i.get("review", 0)), "evaluations": int(i.get("evaluations", 0)),
             "text": clean(i.get("text"), 300)} for i in kept if isinstance(i, dict)]


def insights_markdown(insights: list[dict]) -> list[str]:
    if not insights:
        return []
    lines = ["", "## What the search learnt about the workload (the Supervisor's insights)", ""]
    for i in insights:
        text = i["text"].replace("\n", " ").replace("|", "\\|")
        lines.append(f"- {text} (review {i['review']}, after {i['evaluations']} evaluations)")
    return lines


def _plots(out: Path, report: dict, history: list[tuple]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    t0 = history[0][0]
    for island in sorted({h[1] for h in history}):
        best, xs, ys = 0.0, [], []
        for t, isl, fit in history:
            if isl == island:
                best = max(best, fit)
                xs.append((t - t0) / 60)
                ys.append(best)
        ax.step(xs, ys, where="post", label=f"island {island}")
    ax.set_xlabel("minutes since the first evaluation")
    ax.set_ylabel("best fitness (training split, migrants included)")
    ax.set_title("Best fitness over time per island")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / RunFolder.FITNESS_PNG, dpi=100)
    plt.close(fig)

    rows = [r for r in report["rows"] if r["status"] == "ok"]
    inst = report["instances"]
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(inst)), 4))
    width = 0.8 / max(1, len(rows))
    for k, row in enumerate(rows):
        ax.bar([i + k * width for i in range(len(inst))],
               [row["scenarios"].get(name, 0) for name in inst], width, label=row["policy"])
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(inst))], inst, rotation=30,
                  ha="right")
    values = [v for row in rows for v in row["scenarios"].values()
              if isinstance(v, (int, float)) and v > 0]
    if values and max(values) / min(values) > 30:      # spans orders of magnitude
        ax.set_yscale("log")
    ax.set_ylabel(report["metric"] + (" (log scale)" if ax.get_yscale() == "log" else ""))
    ax.set_title(f"Best candidate vs baselines on the '{report['split']}' split")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(out / RunFolder.HELDOUT_PNG, dpi=100)
    plt.close(fig)
