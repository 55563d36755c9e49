"""A run's state outside the population: the counters kept in the store (so budgets and seeds
survive restarts), the budgets, the LLM usage counters, and the status view `glia-evo status`
prints."""
from __future__ import annotations

import math
from dataclasses import dataclass

from population import STATUSES, Islands, Store

from .config import RunConfig
from .lineage import lineage_record
from .tuning_runs import STATS_KEY, TRIALS_KEY, new_stats, tuning_summary

ELAPSED_KEY = "elapsed_s"
PROPOSALS_KEY = "proposals"
EVALUATIONS_KEY = "evaluations"
LAST_MIGRATION_KEY = "last_migration"
REFERENCE_KEY = "reference"
LLM_KEY = "llm"                    # token / cost / outcome counters of the LLM agents
SUPERVISOR_KEY = "supervisor"      # the latest review: number, evaluations, notes
EXPERIMENTS_KEY = "experiments"    # research turns' tool calls and the work they cost
INSIGHTS_KEY = "insights"          # the Supervisor's insights: [{review, evaluations, text}]


@dataclass
class Budget:
    minutes: float
    max_evaluations: int
    max_tokens: int = 0              # 0 = no limit
    max_cost_usd: float = 0.0        # 0 = no limit

    @classmethod
    def of(cls, cfg: RunConfig) -> "Budget":
        b = cfg.budget
        return cls(b.minutes, b.max_evaluations, b.max_tokens, b.max_cost_usd)

    def left(self, evaluations: int, elapsed_s: float, tokens: int = 0,
             cost_usd: float = 0.0) -> dict:
        # (evaluations may hold a fraction: the experiments' work, in evaluations)
        out = {"evaluations": max(0, self.max_evaluations - math.ceil(evaluations)),
               "minutes": max(0.0, self.minutes - elapsed_s / 60)}
        if self.max_tokens:
            out["tokens"] = max(0, self.max_tokens - tokens)
        if self.max_cost_usd:
            out["cost_usd"] = round(max(0.0, self.max_cost_usd - cost_usd), 6)
        return out

    def llm_exhausted(self, tokens: int, cost_usd: float) -> str | None:
        """`tokens` and `cost_usd`: used so far plus what the calls in flight are expected to
        use (see Engine._llm_projection)."""
        if self.max_tokens and tokens >= self.max_tokens:
            return f"token budget of {self.max_tokens} reached"
        if self.max_cost_usd and cost_usd >= self.max_cost_usd:
            return f"cost budget of ${self.max_cost_usd:g} reached"
        return None

    def exhausted(self, evaluations: int, elapsed_s: float, tokens: int = 0,
                  cost_usd: float = 0.0) -> str | None:
        if evaluations >= self.max_evaluations:
            return f"evaluation budget of {self.max_evaluations} reached"
        if elapsed_s >= self.minutes * 60:
            return f"time budget of {self.minutes:g} min reached"
        return self.llm_exhausted(tokens, cost_usd)


def new_usage() -> dict:
    return {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "tokens": 0,
            "cost_usd": 0.0, "retries": 0, "by_role": {}, "by_model": {},
            "proposals": 0, "children": 0, "repaired": 0, "discarded": 0, "duplicates": 0,
            "unavailable": 0, "errors": 0, "fallbacks": 0, "abandoned": 0,
            "summaries": 0, "summary_failures": 0, "reviews": 0, "review_failures": 0}


def new_experiment_stats() -> dict:
    """Research turns (issue 18): tool calls (answered, malformed, over a budget, failed
    runs), simulations, simulated requests, seconds, tokens, and `evaluations`: the work
    charged to the evaluation budget (requests / the requests of one evaluation)."""
    return {"turns": 0, "calls": 0, "answered": 0, "malformed": 0, "over_budget": 0,
            "failed": 0, "simulations": 0, "requests": 0, "seconds": 0.0, "tokens": 0,
            "evaluations": 0.0}


def experiment_evaluations(store: Store) -> float:
    """Evaluations' worth of work the research turns' experiments have used so far."""
    stats = store.get_meta(EXPERIMENTS_KEY) or {}
    return float(stats.get("evaluations", 0.0) or 0.0)


def run_status(store: Store, islands: Islands, budget: Budget, elapsed_s: float) -> dict:
    evaluations = int(store.get_meta(EVALUATIONS_KEY, 0))
    trials = int(store.get_meta(TRIALS_KEY, 0))
    experiments = store.get_meta(EXPERIMENTS_KEY)
    charged = float(experiments.get("evaluations", 0.0)) if experiments else 0.0
    best = islands.best()
    per_island = []
    for i in range(islands.num_islands):
        b = islands.best(i)
        per_island.append({"island": i, "members": len(islands.members(i)),
                           "best_id": b.id if b else None,
                           "best_fitness": b.fitness if b else None})
    usage = store.get_meta(LLM_KEY)
    tokens = int(usage["tokens"]) if usage else 0
    cost = float(usage["cost_usd"]) if usage else 0.0
    out = {
        "evaluations": evaluations,
        "tuning_trials": trials,
        "candidates": len(store),
        "best": {"id": best.id, "fitness": best.fitness, "operator": best.operator,
                 "island": best.island} if best else None,
        "islands": per_island,
        "elapsed_s": round(elapsed_s, 1),
        "budget_left": budget.left(evaluations + trials + charged, elapsed_s, tokens, cost),
        "rate_per_min": round(evaluations / (elapsed_s / 60), 2) if elapsed_s > 1 else 0.0,
        "statuses": {s: store.count(s) for s in STATUSES[1:] + STATUSES[:1]},   # pending last
    }
    tuning = store.get_meta(STATS_KEY)
    if tuning:
        out["tuning"] = tuning_summary({**new_stats(), **tuning})
    if usage:
        out["llm"] = {k: usage.get(k, 0) for k in new_usage() if k not in ("by_role",)}
        out["llm"]["by_role"] = usage.get("by_role", {})
        sup = store.get_meta(SUPERVISOR_KEY)
        out["llm"]["supervisor_review"] = sup.get("review", 0) if sup else 0
    if experiments:
        out["experiments"] = {**new_experiment_stats(), **experiments}
    insights = store.get_meta(INSIGHTS_KEY)
    if insights:
        out["insights"] = len(insights)
    return out


def lineage_view(store: Store, islands: Islands) -> tuple[list, list]:
    """(leaderboard, every finished candidate's lineage record): what the tracker logs."""
    return ([{"id": c.id, "fitness": c.fitness, "operator": c.operator, "island": c.island}
             for c in islands.leaderboard(20)],
            [lineage_record(c) for c in store.all() if c.status != "pending"])
