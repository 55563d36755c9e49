"""Problems, by name: the built-in ones (a contract: routing, scheduling, autoscaling), installed
plug-ins (entry points in the `glia_evo.problems` group) and files (`my_problem.py:PROBLEM`).
See `registry` and docs/problems.md."""
from __future__ import annotations

from sim import PolicyInvalid as InvalidAnswer

from .base import Instance, Problem, Scenario
from .registry import BUILTIN as PROBLEMS
from .registry import ENTRY_POINT_GROUP, ProblemNotFound, available, get_problem

__all__ = ["Instance", "Problem", "Scenario", "InvalidAnswer", "PROBLEMS", "ENTRY_POINT_GROUP",
           "ProblemNotFound", "available", "get_problem"]
