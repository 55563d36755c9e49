"""Glia's research loop (issue 18): experiment tools a Researcher calls before it proposes.

    tools = make_tools(pool, problem, cfg.llm, store, instances=train_instances)
    researcher = Researcher(client, problem, prompts, tools=tools,
                            experiments=cfg.llm.experiments)

`tools.py` holds the tools (simulate, request_log, compare, workload_stats), their budgets and
records; `protocol.py` the OpenAI function-calling schemas and the text fallback
(`EXPERIMENT: {...}` lines); `jobs.py` the sandboxed jobs they run. See docs/research.md.
"""
from __future__ import annotations

from .protocol import TOOL_SCHEMAS, ToolCall, native_calls, text_calls
from .tools import (ResearchSession, ResearchTools, ToolError, check_run,
                    experiments_markdown)


def make_tools(pool, problem, llm_cfg, store=None, *, instances=None, seed: int = 0,
               timeout_s: float | None = None, native: bool | None = None) -> ResearchTools | None:
    """The run's experiment tools, or None when `llm_cfg.experiments` is 0 (today's behaviour).

    pool: the run's sandbox WorkerPool (experiments are jobs like evaluations);
    store: the population store (`store.get(id)` resolves program ids the model names);
    instances: the instances experiments may use -- the search's evaluation split (default: the
        problem's "train" split); never a held-out split;
    timeout_s: wall-clock seconds per simulation (default: the pool's own limit).
    """
    k = int(getattr(llm_cfg, "experiments", 0) or 0)
    if k <= 0:
        return None
    if instances is None:
        instances = problem.split("train")
    return ResearchTools(
        pool, problem, instances=list(instances),
        lookup=getattr(store, "get", None), calls=k,
        max_requests=int(getattr(llm_cfg, "experiment_requests", 50_000) or 0),
        max_tokens=int(getattr(llm_cfg, "experiment_tokens", 0) or 0), seed=seed,
        timeout_s=timeout_s, native=native)


__all__ = ["ResearchSession", "ResearchTools", "TOOL_SCHEMAS", "ToolCall", "ToolError",
           "check_run", "experiments_markdown", "make_tools", "native_calls", "text_calls"]
