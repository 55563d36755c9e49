"""Built-in problems, by name (a contract: routing, scheduling, autoscaling)."""
from __future__ import annotations

from .autoscaling import AUTOSCALING
from .base import Instance, Problem, Scenario
from .routing import ROUTING
from .scheduling import SCHEDULING

PROBLEMS: dict[str, Problem] = {"routing": ROUTING, "scheduling": SCHEDULING,
                                "autoscaling": AUTOSCALING}
PLANNED: tuple[str, ...] = ()


def get_problem(name: str) -> Problem:
    if name in PROBLEMS:
        return PROBLEMS[name]
    if name in PLANNED:
        raise KeyError(f"problem {name!r} is not available yet (available: {', '.join(PROBLEMS)})")
    raise KeyError(f"unknown problem {name!r} (available: {', '.join(PROBLEMS)})")


__all__ = ["Instance", "Problem", "Scenario", "PROBLEMS", "get_problem"]
