"""The scheduling problem: in which order each replica admits its waiting requests (DESIGN §3).

Routing is fixed to `llq`, which dispatches every request at once, so the queues (and the
decisions) are inside the replicas.
"""
from __future__ import annotations

from functools import partial

from sim import ClusterSpec
from sim.workload import glia_workload, heavy_tail_workload

from ..analyst import changes, kv_pressure, slowest_request
from .base import Problem, Scenario
from .routing import A10, _azure

SCENARIOS = {
    "heavy_tail": Scenario(
        "heavy_tail", "2 x A10; Poisson arrivals at 11 req/s for 600 s; heavy-tailed prompts "
        "(Pareto, alpha 1.1, 64 tokens up to 7000), log-normal outputs (median 128): close to "
        "saturation, where a long prompt at the head of the line holds many short ones back.",
        ClusterSpec(replicas=(A10,) * 2, starvation_s=120.0), heavy_tail_workload,
        seeds=(0, 1, 2, 3, 4)),
    "heavy_tail_short": Scenario(
        "heavy_tail_short", "The heavy_tail rule at 12 req/s for 180 s: a cheap first stage.",
        ClusterSpec(replicas=(A10,) * 2, starvation_s=120.0),
        partial(heavy_tail_workload, rate=12.0, duration_s=180.0), seeds=(101, 102)),
    "azure_code": Scenario(
        "azure_code", "Azure code-completion trace, 20-minute slices (seed = slice), rate x1.5, "
        "on 4 x A10: long prompts, short outputs, bursts; prefill-bound.",
        ClusterSpec(replicas=(A10,) * 4, starvation_s=120.0), partial(_azure, "code", 1.5),
        seeds=(0, 1, 2)),
    "azure_conv": Scenario(
        "azure_conv", "Azure conversation trace, 20-minute slices (seed = slice), rate x1.5, "
        "on 4 x A10: memory-bound at the peaks.",
        ClusterSpec(replicas=(A10,) * 4, starvation_s=120.0), partial(_azure, "conv", 1.5),
        seeds=(0, 1, 2)),
    "glia": Scenario(
        "glia", "The Glia paper's routing workload (4 x A10, ShareGPT with 5 % of prompts and "
        "outputs x10, log-normal arrivals sigma 2 at 7.5 req/s, 1000 s) with llq routing: "
        "heavily overloaded bursts, long queues at every replica.",
        ClusterSpec(replicas=(A10,) * 4, starvation_s=300.0), glia_workload,
        seeds=tuple(range(10))),
}

DESCRIPTION = """\
Order the admissions inside each replica of an LLM-serving cluster. Routing is fixed (`llq`:
every request goes at once to the replica with the fewest pending + active requests), so each
replica holds a list of pending requests that wait for KV-cache memory and the per-iteration token
budget. `schedule(pending, active, replica, now, knobs)` returns the ids of pending requests in
the order they should be admitted; ids left out wait. Whatever the order, the simulator enforces
the limits: it admits your requests one by one while the batch limit, the token budget (chunk_size
prompt tokens per iteration, shared with running prefills and one token per decoding request) and
the KV blocks (the whole prompt, plus a 1 % watermark) allow, and stops at the first one that does
not fit (put smaller requests first if you want them in). schedule is called only at iterations
where at least one pending request could be admitted (some pending prompt fits in the free
blocks, the batch is not full and the token budget is not used up), so holding requests costs
nothing extra, but when `active` is empty you must admit at least one request (else it would wait
forever). Returning an id twice, an id that is not in `pending`, or anything but a list of ints is
invalid. When KV memory runs out, the most recently admitted request is evicted and put back at
the front of `pending` (it restarts: it must prefill prompt + generated tokens again).
`pending` is in the order requests reached the replica, evicted ones first (that order is `fcfs`,
the reference). The output length of a request is unknown. Fitness: mean end-to-end latency of
`fcfs` / yours (higher is better), geometric mean over scenarios; p99 latency, the longest wait
for admission (`max_wait_s`) and the number of requests waiting longer than the scenario's
starvation threshold (`starved`) are reported too: starving long prompts shows up there.
Request view: id, arrival_time, prompt_tokens, processed_tokens, generated_tokens, restarts.
Replica view: id, gpu, state, num_blocks, block_size, free_blocks, used_blocks, chunk_size,
max_batch, num_pending, num_active.
"""

def advice(scenarios: dict, diagnostics: dict, parent: dict | None) -> list[str]:
    """Scheduling evidence: memory pressure, starvation, a tail paid for the mean."""
    out = kv_pressure(scenarios, "admit less while free blocks are short, leaving room for "
                                 "growing outputs")
    starved = {n: m["starved"] for n, m in scenarios.items() if m.get("starved")}
    if starved:
        worst = max(starved, key=lambda n: scenarios[n].get("max_wait_s", 0))
        out.append(f"{sum(starved.values())} requests starved (waited past the scenario's "
                   f"threshold; longest wait {scenarios[worst].get('max_wait_s', 0):.0f} s on "
                   f"{worst}): the order passes some requests over again and again, likely long "
                   f"prompts; age waiting requests so that none waits forever.")
    mean, tail = changes(scenarios, parent, "mean_e2e_s"), changes(scenarios, parent, "p99_e2e_s")
    paid = [f"{n} {tail[n]:+.0%}" for n in tail if tail[n] > 0.1 and mean.get(n, 0) < -0.02]
    if paid:
        out.append("The tail paid for the mean: p99 latency worse on " + ", ".join(paid) +
                   " while the mean improved; bound how long a request can be passed over.")
    return out + slowest_request(diagnostics)


def _blocks():
    from ..operators.filters import SCHEDULING_OPERATORS, SCHEDULING_WEIGHTS
    return SCHEDULING_OPERATORS, SCHEDULING_WEIGHTS


SCHEDULING = Problem(
    name="scheduling",
    entrypoints=("schedule",),
    reference="fcfs",
    metric="mean_e2e_s",
    scenarios=SCENARIOS,
    splits={
        "train": (("heavy_tail", 0), ("azure_code", 0), ("azure_conv", 0), ("glia", 0)),
        "validation": (("heavy_tail", 1), ("azure_code", 1), ("azure_conv", 1), ("glia", 1),
                       ("glia", 2)),
        "test": (("heavy_tail", 2), ("heavy_tail", 3), ("heavy_tail", 4), ("azure_code", 2),
                 ("azure_conv", 2)) + tuple(("glia", s) for s in range(3, 10)),
        "quick": (("heavy_tail_short", 101),),
    },
    default_scenario="heavy_tail",
    description=DESCRIPTION,
    fixed=(("route", "routing", "llq"),),
    valid_answer="return a list of distinct ids taken from `pending`, with at least one when "
                 "`active` is empty",
    advice=advice,
    default_seeds=("fcfs", "shortest_prompt_first", "aging"),
    columns=(("mean_e2e_s", "mean e2e s", "{:.2f}"), ("p50_e2e_s", "p50 e2e s", "{:.2f}"),
             ("p99_e2e_s", "p99 e2e s", "{:.1f}"), ("mean_ttft_s", "mean TTFT s", "{:.2f}"),
             ("mean_wait_s", "mean wait s", "{:.2f}"), ("max_wait_s", "max wait s", "{:.1f}"),
             ("starved", "starved", "{:.1f}"), ("restarts", "restarts", "{:.0f}")),
    metric_keys=(("mean_wait_s", "mean wait {:.3g} s"), ("p99_wait_s", "p99 wait {:.3g} s"),
                 ("starved", "starved {:g}")),
    blocks=_blocks,
)
