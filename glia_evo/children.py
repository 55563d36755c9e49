"""The one place a proposal becomes a stored child: lineage (parents, generation, the parent's
fitness for the cascade's bar) and dedup (a program already stored, by its normalised-AST hash,
is not stored again). The offline mutator's and the Researcher's proposals both come here."""
from __future__ import annotations

from population import Candidate, Store, code_hash

from .operators import Proposal


class Children:
    def __init__(self, store: Store, bus):
        self.store = store
        self.bus = bus

    def add(self, proposal: Proposal, *, island: int, parent: Candidate,
            parents: list[str] | None = None, extra: dict | None = None) -> Candidate | None:
        """Store the child as pending (inside the caller's transaction); None for a duplicate,
        which is published as a `duplicate` event."""
        child = Candidate(source=proposal.source, island=island,
                          parents=parents or [parent.id], generation=parent.generation + 1,
                          operator=proposal.operator, model=proposal.model,
                          rationale=proposal.rationale,
                          extra={"parent_fitness": parent.fitness,
                                 "parent_stage1": parent.extra.get("stage1_fitness"),
                                 **proposal.extra, **(extra or {})})
        if self.store.has_hash(code_hash(child.source)):
            self.bus.emit("duplicate", island=island, parent=parent.id,
                          operator=proposal.operator,
                          **({"model": proposal.model} if proposal.operator == "llm" else {}))
            return None
        return self.store.add(child)
