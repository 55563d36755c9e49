"""Online bin packing, as a glia-evo problem: a worked example of a problem of your own.

Items arrive one at a time; `pack(item, bins, knobs)` chooses the bin each goes into (its
index in `bins`, the free space of every open bin) or opens a new one (return -1). Fewer bins is
better: fitness = bins used by `first_fit` / bins used by the candidate. This is not an
LLM-serving policy, so the problem brings its own `evaluate`; glia-evo compiles and runs the
candidate in its sandbox and hands `evaluate` the candidate's functions.
"""
from __future__ import annotations

import math
import random
from pathlib import Path

from glia_evo.problems import InvalidAnswer, Problem, Scenario

CAPACITY = 1.0


def _items(low: float, high: float, count: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [round(rng.uniform(low, high), 3) for _ in range(count)]


def _bimodal(count: int, seed: int) -> list[float]:
    """Mostly small items with a share of large ones: a bad first choice strands space."""
    rng = random.Random(seed)
    return [round(rng.uniform(0.5, 0.7) if rng.random() < 0.3 else rng.uniform(0.05, 0.3), 3)
            for _ in range(count)]


def _triplets(count: int, seed: int) -> list[float]:
    """Triples that fill a bin exactly, shuffled: an optimal packing has count / 3 bins."""
    rng = random.Random(seed)
    items = []
    for _ in range(count // 3):
        a = rng.uniform(0.25, 0.5)
        b = rng.uniform(0.25, min(0.5, 0.75 - a))
        items += [round(a, 3), round(b, 3), round(CAPACITY - round(a, 3) - round(b, 3), 3)]
    rng.shuffle(items)
    return items


SCENARIOS = {
    "uniform": Scenario("uniform", "400 items uniform in [0.1, 0.7]",
                        workload=lambda seed: _items(0.1, 0.7, 400, seed), seeds=(0, 1, 2, 3)),
    "bimodal": Scenario("bimodal", "400 items: 70 % small (0.05-0.3), 30 % large (0.5-0.7)",
                        workload=lambda seed: _bimodal(400, seed), seeds=(0, 1, 2, 3)),
    "triplets": Scenario("triplets", "399 items in triples that fill a bin exactly, shuffled",
                         workload=lambda seed: _triplets(399, seed), seeds=(0, 1, 2, 3)),
    "small": Scenario("small", "60 items uniform in [0.1, 0.7]: a cheap first stage",
                      workload=lambda seed: _items(0.1, 0.7, 60, seed), seeds=(100,)),
}


def evaluate(policy, instance, knobs) -> tuple[dict, dict]:
    """Pack the instance's items with the candidate's `pack`; metrics and diagnostics."""
    items = instance.workload()
    bins: list[float] = []        # free space per open bin
    for i, item in enumerate(items):
        choice = policy["pack"](item, list(bins), knobs)
        if isinstance(choice, bool) or not isinstance(choice, int):
            raise InvalidAnswer(f"item {i}: pack returned {type(choice).__name__}, not an int")
        if choice == -1:
            bins.append(CAPACITY - item)
        elif 0 <= choice < len(bins) and bins[choice] >= item - 1e-9:
            bins[choice] -= item
        else:
            raise InvalidAnswer(f"item {i} (size {item}): bin {choice} does not exist or has "
                                f"too little room")
    lower_bound = math.ceil(sum(items) / CAPACITY - 1e-9)
    metrics = {"bins": len(bins), "lower_bound": lower_bound,
               "excess": len(bins) / lower_bound - 1.0,
               "fill": sum(items) / (len(bins) * CAPACITY)}
    return metrics, {"emptiest_bins": sorted(bins, reverse=True)[:5]}


def _split(*pairs):
    return tuple(pairs)


PROBLEM = Problem(
    name="binpack",
    entrypoints=("pack",),
    reference="first_fit",
    metric="bins",
    scenarios=SCENARIOS,
    splits={
        "train": _split(("uniform", 0), ("bimodal", 0), ("triplets", 0)),
        "validation": _split(("uniform", 1), ("bimodal", 1), ("triplets", 1)),
        "test": _split(("uniform", 2), ("uniform", 3), ("bimodal", 2), ("bimodal", 3),
                       ("triplets", 2), ("triplets", 3)),
        "quick": _split(("small", 100)),
    },
    default_scenario="uniform",
    description="""\
Online bin packing: items of size in (0, 1] arrive one at a time and each must go into a bin of
capacity 1 at once. `pack(item, bins, knobs)` gets the item's size and the free space of every
open bin (a list of floats, in the order the bins were opened) and returns the index of the bin
to put it in (it must fit) or -1 to open a new bin. Fewer bins is better: fitness = bins used by
first_fit / bins used by yours, geometric mean over scenarios.""",
    evaluate=evaluate,
    baselines=Path(__file__).parent / "baselines",
    baseline_order=("next_fit", "first_fit", "best_fit"),
    default_seeds=("first_fit", "best_fit", "next_fit"),
    valid_answer="return the index of an open bin with room for the item, or -1",
    columns=(("bins", "bins", "{:.0f}"), ("lower_bound", "lower bound", "{:.0f}"),
             ("excess", "excess", "{:.1%}"), ("fill", "fill", "{:.1%}")),
    metric_keys=(("bins", "bins {:g}"), ("excess", "excess over the lower bound {:.1%}")),
)
