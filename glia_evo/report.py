"""Human-readable tables for `simulate` and `baselines` (rich, plain text when piped)."""
from __future__ import annotations

from collections import defaultdict

from rich.console import Console
from rich.table import Table

from .evaluation.result import EvalResult
from .problems import Problem, Scenario

def columns(problem: Problem) -> list[tuple[str, str, str]]:
    return list(problem.report_columns())


def _fitness(value: float) -> str:
    return f"{value:.3f}" if value >= 0.001 or value == 0 else f"{value:.1e}"


def family_means(scenarios: dict[str, dict]) -> dict[str, dict]:
    """Mean of every metric over the seeds of each scenario ('glia#3' belongs to 'glia')."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for name, metrics in scenarios.items():
        groups[name.split("#")[0]].append(metrics)
    return {fam: {k: sum(m[k] for m in ms) / len(ms) for k in ms[0]} for fam, ms in groups.items()}


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False, width=160)


def print_simulation(problem: Problem, policy: str, result: EvalResult) -> None:
    cols = columns(problem)
    table = Table(title=f"{problem.name}: {policy} (fitness {_fitness(result.fitness)} vs "
                        f"{problem.reference})")
    table.add_column("scenario")
    for _, title, _ in cols:
        table.add_column(title, justify="right")
    table.add_column(f"{problem.reference} / this", justify="right")
    for name, m in result.scenarios.items():
        ratio = result.reference[name] / m[problem.metric] if m[problem.metric] else 0.0
        table.add_row(name, *[fmt.format(m[k]) for k, _, fmt in cols], f"{ratio:.3g}x")
    _console().print(table)


def print_baselines(problem: Problem, scenario: Scenario, names: list[str],
                    results: list[EvalResult]) -> None:
    seeds = len(next(iter(results)).scenarios) if results else 0
    table = Table(title=f"{problem.name} baselines on {scenario.name} "
                        f"(mean over {seeds} seed(s); fitness = geometric mean of "
                        f"{problem.reference} / baseline)")
    cols = columns(problem)
    table.add_column("baseline")
    table.add_column("fitness", justify="right")
    for _, title, _ in cols:
        table.add_column(title, justify="right")
    for name, result in zip(names, results):
        if result.status != "ok":
            table.add_row(name, result.status, *["-"] * len(cols))
            continue
        [means] = family_means(result.scenarios).values()
        table.add_row(name, _fitness(result.fitness),
                      *[fmt.format(means[k]) for k, _, fmt in cols])
    _console().print(table)
