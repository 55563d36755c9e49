"""Routing on your own trace: the built-in routing problem with scenarios cut from a CSV trace.

    glia-evo baselines --problem examples/custom_trace/chat_routing.py:PROBLEM
    glia-evo run examples/custom_trace/chat_routing.toml

Everything but the scenarios is the built-in routing problem's: the `route` entry point, its
baselines (llq is the reference), the Analyst's advice, the offline building blocks. The
scenarios are 5-minute slices of chat_trace.csv (seed = slice number) on two clusters you might
run it on; the slices are split so that the search never sees the test slices.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from glia_evo.problems import PROBLEMS, Scenario
from sim import ClusterSpec, ReplicaSpec, load_trace
from sim.policies import POLICY_DIR
from sim.workload import scale_rate, window

TRACE = Path(__file__).with_name("chat_trace.csv")
SLICE_S = 300.0
A10 = ReplicaSpec("llama3-8b/a10", chunk_size=8192)
ROUTING = PROBLEMS["routing"]


def chat_slice(rate_scale: float, seed: int):
    """Slice number `seed` of the trace, its arrival rate multiplied by `rate_scale`."""
    start = seed * SLICE_S
    return scale_rate(window(load_trace(TRACE), start, start + SLICE_S), rate_scale)


SCENARIOS = {
    "chat": Scenario("chat", "chat_trace.csv in 5-minute slices on 2 x A10",
                     ClusterSpec(replicas=(A10,) * 2), lambda seed: chat_slice(1.0, seed),
                     seeds=(0, 1, 2, 3)),
    "chat_peak": Scenario("chat_peak", "the same slices at 1.5x the rate on 3 x A10",
                          ClusterSpec(replicas=(A10,) * 3), lambda seed: chat_slice(1.5, seed),
                          seeds=(0, 1, 2, 3)),
    "chat_quick": Scenario("chat_quick", "the first minute of slice 0: a cheap first stage",
                           ClusterSpec(replicas=(A10,) * 2),
                           lambda seed: window(load_trace(TRACE), 0.0, 60.0), seeds=(0,)),
}

PROBLEM = replace(
    ROUTING,
    name="chat_routing",
    scenarios=SCENARIOS,
    splits={"train": (("chat", 0), ("chat_peak", 1)),
            "validation": (("chat", 1), ("chat_peak", 0)),
            "test": (("chat", 2), ("chat", 3), ("chat_peak", 2), ("chat_peak", 3)),
            "quick": (("chat_quick", 0),)},
    default_scenario="chat",
    description=ROUTING.description + "\nThe workload is one team's chat service trace.",
    baselines=POLICY_DIR / "routing",            # the built-in routing baselines, in their order
    baseline_order=tuple(ROUTING.baseline_names()),
)
