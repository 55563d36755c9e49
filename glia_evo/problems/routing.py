"""The routing problem: which replica serves each request (DESIGN §3)."""
from __future__ import annotations

from functools import partial

from sim import ClusterSpec, ReplicaSpec
from sim.workload import glia_workload, packaged_trace, scale_rate, window

from ..analyst import kv_pressure, slowest_request
from .base import Problem, Scenario

AZURE_WINDOW_S = 1200.0


def _azure(trace: str, rate_scale: float, seed: int):
    """Twenty-minute slice number `seed` of an Azure trace, its rate scaled by `rate_scale`."""
    requests = packaged_trace(f"azure_llm_2023/{trace}.csv")
    start = seed * AZURE_WINDOW_S
    return scale_rate(window(requests, start, start + AZURE_WINDOW_S), rate_scale)


def _glia_short(seed: int):
    return glia_workload(seed, rate=10.0, duration_s=200.0)


A10 = ReplicaSpec("llama3-8b/a10", chunk_size=8192)
A100 = ReplicaSpec("llama3-8b/a100", chunk_size=8192)

# KV blocks per replica of the `glia` scenario, chosen from evidence (docs/fidelity.md): the Glia
# paper's table was made with Vidur, and Vidur's llq on these traces is 60.9 s at 3328 blocks and
# 47.9 s at 3584 (the Glia reproduction, ronyw7/glia-repro results/first_turn_kv3328, _kv3584);
# the paper's 54.6 s lies between, at 3456 by linear interpolation. `glia_paper` keeps the
# paper's literal 2240 blocks (much more congested with a realistic KV-read cost).
GLIA_KV_BLOCKS = 3456
PAPER_KV_BLOCKS = 2240
A10_GLIA = ReplicaSpec("llama3-8b/a10", chunk_size=8192, num_blocks=GLIA_KV_BLOCKS)
A10_PAPER = ReplicaSpec("llama3-8b/a10", chunk_size=8192, num_blocks=PAPER_KV_BLOCKS)

SCENARIOS = {
    "glia": Scenario(
        "glia", f"The Glia paper's setup: 4 x A10, Llama-3-8B, {GLIA_KV_BLOCKS} blocks of 16 "
        "tokens (the budget at which Vidur gives the paper's llq latency), chunk 8192; ShareGPT "
        "first turns with 5 % of prompts and outputs x10, log-normal arrivals (sigma 2) at "
        "7.5 req/s for 1000 s. Seeds 0-1 replay the paper's traces, 2-9 regenerate them by the "
        "same rule.",
        ClusterSpec(replicas=(A10_GLIA,) * 4), glia_workload, seeds=tuple(range(10))),
    "glia_paper": Scenario(
        "glia_paper", f"The glia scenario at the paper's literal {PAPER_KV_BLOCKS} blocks per "
        "replica: far more congested (long queues, many restarts).",
        ClusterSpec(replicas=(A10_PAPER,) * 4), glia_workload, seeds=tuple(range(10))),
    "glia_short": Scenario(
        "glia_short", f"The glia rule at 10 req/s for 200 s at the paper's {PAPER_KV_BLOCKS} "
        "blocks: a cheap first-stage check that still separates good routers from bad ones "
        "(at glia's budget 200 s are too short to build the queues that separate them).",
        ClusterSpec(replicas=(A10_PAPER,) * 4), _glia_short, seeds=(101, 102)),
    "azure_conv": Scenario(
        "azure_conv", "Azure conversation trace (Nov 2023), 20-minute slices (seed = slice), "
        "rate x1.5, on 4 x A10: moderate prompts, longer outputs, memory-bound.",
        ClusterSpec(replicas=(A10,) * 4), partial(_azure, "conv", 1.5), seeds=(0, 1, 2)),
    "azure_code": Scenario(
        "azure_code", "Azure code-completion trace (Nov 2023), 20-minute slices (seed = slice), "
        "on 4 x A10: long prompts, short outputs, prefill-bound.",
        ClusterSpec(replicas=(A10,) * 4), partial(_azure, "code", 1.0), seeds=(0, 1, 2)),
    "azure_conv_hetero": Scenario(
        "azure_conv_hetero", "Azure conversation trace, rate x2.5, on a mixed cluster of "
        "2 x A10 and 1 x A100: replicas differ in speed and memory.",
        ClusterSpec(replicas=(A10, A10, A100)), partial(_azure, "conv", 2.5), seeds=(0, 1, 2)),
}

DESCRIPTION = """\
Route requests of an LLM-serving cluster to GPU replicas. `route(queue, replicas, now, knobs)`
is called at every arrival and every completion while the global queue is not empty; it returns
a list of (request_id, replica_id) pairs. Requests left out stay in the queue for the next call.
Each replica batches its requests continuously (chunked prefill, paged KV cache of num_blocks
blocks of block_size tokens); when the KV cache runs out the most recently admitted request is
evicted and restarts from scratch, so overcommitting memory costs time. The output length of a
request is unknown to the policy. Fitness: mean end-to-end latency of `llq` / yours (higher is
better), geometric mean over scenarios.
Request view: id, arrival_time, prompt_tokens, processed_tokens, generated_tokens, restarts.
Replica view: id, gpu, state, num_blocks, block_size, free_blocks, used_blocks, chunk_size,
max_batch, num_pending, num_active, pending (list of requests), active (list of requests).
"""

def advice(scenarios: dict, diagnostics: dict, parent: dict | None) -> list[str]:
    """Routing evidence: memory pressure, load imbalance across replicas, the slowest request."""
    out = kv_pressure(scenarios, "dispatch less work to replicas short of memory, or reserve "
                                 "headroom for growing outputs")
    imbalance = [d.get("load_imbalance_cv_mean", 0) for d in diagnostics.values()]
    if imbalance and max(imbalance) > 0.5:
        out.append(f"Load imbalance across replicas is high (CV up to {max(imbalance):.3g}); "
                   f"balance by pending+active or by free blocks.")
    return out + slowest_request(diagnostics)


def _blocks():
    from ..operators.routing_blocks import ROUTING_OPERATORS, ROUTING_WEIGHTS
    return ROUTING_OPERATORS, ROUTING_WEIGHTS


ROUTING = Problem(
    name="routing",
    entrypoints=("route",),
    reference="llq",
    metric="mean_e2e_s",
    scenarios=SCENARIOS,
    splits={
        "train": (("glia", 0), ("glia", 1), ("azure_conv", 0), ("azure_code", 0)),
        "validation": (("glia", 2), ("glia", 3), ("azure_conv", 1), ("azure_code", 1),
                       ("azure_conv_hetero", 0)),
        "test": tuple(("glia", s) for s in range(4, 10)) + (
            ("azure_conv", 2), ("azure_code", 2), ("azure_conv_hetero", 1),
            ("azure_conv_hetero", 2)),
        "quick": (("glia_short", 101),),
        "glia_train": (("glia", 0), ("glia", 1)),
    },
    default_scenario="glia",
    description=DESCRIPTION,
    valid_answer="return (request_id, replica_id) pairs that dispatch each request at most once, "
                 "to a replica that exists",
    advice=advice,
    default_seeds=("llq", "round_robin", "least_kv"),
    blocks=_blocks,
)
