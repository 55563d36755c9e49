"""Operators turn a parent (and inspirations) into a child program.

Every operator has the same interface, `propose(parent, inspirations, context) -> Proposal | None`,
so the engine does not care whether a child comes from an AST mutation or an LLM.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass
class Proposal:
    source: str
    operator: str          # e.g. "perturb_constant", "crossover", "llm"
    rationale: str         # why this change (shown in the lineage)
    hypothesis: str = ""
    model: str | None = None


class Operator(Protocol):
    def propose(self, parent, inspirations: list, context: dict) -> Proposal | None:
        """A child of `parent`, or None when no valid child could be made."""
