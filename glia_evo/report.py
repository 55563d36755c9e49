"""Human-readable tables for `simulate` and `baselines` (rich, plain text when piped)."""
from __future__ import annotations

from collections import defaultdict

from rich.console import Console
from rich.table import Table

from .evaluation import EvalResult
from .problems import Problem, Scenario

COLUMNS = [("mean_e2e_s", "mean e2e s", "{:.2f}"), ("p50_e2e_s", "p50 e2e s", "{:.2f}"),
           ("p99_e2e_s", "p99 e2e s", "{:.1f}"), ("mean_ttft_s", "mean TTFT s", "{:.2f}"),
           ("mean_tpot_s", "TPOT s", "{:.3f}"), ("throughput_rps", "req/s", "{:.2f}"),
           ("restarts", "restarts", "{:.0f}"), ("slo_attainment", "SLO", "{:.1%}")]
PROBLEM_COLUMNS = {
    "scheduling": [("mean_e2e_s", "mean e2e s", "{:.2f}"), ("p50_e2e_s", "p50 e2e s", "{:.2f}"),
                   ("p99_e2e_s", "p99 e2e s", "{:.1f}"), ("mean_ttft_s", "mean TTFT s", "{:.2f}"),
                   ("mean_wait_s", "mean wait s", "{:.2f}"),
                   ("max_wait_s", "max wait s", "{:.1f}"), ("starved", "starved", "{:.1f}"),
                   ("restarts", "restarts", "{:.0f}")],
    "autoscaling": [("penalized_gpu_seconds", "penalised cost", "{:,.0f}"),
                    ("gpu_seconds", "GPU s", "{:,.0f}"), ("mean_replicas", "mean replicas",
                                                          "{:.2f}"),
                    ("peak_replicas", "peak", "{:.1f}"), ("cold_starts", "cold starts", "{:.1f}"),
                    ("slo_attainment", "SLO", "{:.1%}"), ("p99_ttft_s", "p99 TTFT s", "{:.2f}"),
                    ("mean_e2e_s", "mean e2e s", "{:.2f}")],
}


def columns(problem: Problem) -> list[tuple[str, str, str]]:
    return PROBLEM_COLUMNS.get(problem.name, COLUMNS)


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
