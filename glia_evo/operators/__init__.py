"""Operators turn a parent (and inspirations) into a child program.

Every operator has the same interface, `propose(parent, inspirations, context) -> Proposal | None`,
so the engine does not care whether a child comes from an AST mutation or an LLM (the
Researcher's answers become Proposals in `glia_evo.crew`); `glia_evo.children` stores them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Proposal:
    source: str
    operator: str          # e.g. "perturb_constant", "crossover", "llm"
    rationale: str         # why this change (shown in the lineage)
    hypothesis: str = ""
    model: str | None = None
    extra: dict = field(default_factory=dict)   # stored with the child (e.g. an LLM's form)


class Operator(Protocol):
    def propose(self, parent, inspirations: list, context: dict) -> Proposal | None:
        """A child of `parent`, or None when no valid child could be made."""
