"""Making proposals: the seeds, then one child per proposal from the offline mutator or the
LLM crew's Researcher (both give a `Proposal`; `Children` stores it), round robin over the
islands. Every proposal's counter, parent draw and child commit in one transaction, so a killed
run resumes on exactly the same random sequence."""
from __future__ import annotations

import collections

from population import Candidate, Islands, Store

from .children import Children
from .config import RunConfig
from .crew import OFFLINE, turn
from .operators.offline import for_problem
from .run_state import PROPOSALS_KEY

STARTED = object()                 # propose() started a Researcher call (its child comes later)
FALLBACK_STRIDE = 1_000_000_007     # another mutation seed for a fallback that was a duplicate


class Proposals:
    def __init__(self, cfg: RunConfig, problem, store: Store, islands: Islands, bus, crew):
        self.cfg, self.problem, self.store, self.islands = cfg, problem, store, islands
        self.bus, self.crew = bus, crew
        self.children = Children(store, bus)
        self.mutator = for_problem(problem)
        self.ready: collections.deque = collections.deque()      # LLM children for a worker
        self.fatal: str | None = None      # an LLM endpoint that refuses us (key, model, URL)
        self.no_more: str | None = None    # why no more proposals can be made
        self._failures_in_row = 0

    def population_changed(self) -> None:
        self._failures_in_row = 0          # a fresh chance for the Researcher

    def seed_population(self) -> None:
        """The first time: every seed program on every island, as pending candidates."""
        if len(self.store):
            return
        with self.store.transaction():
            for island in range(self.cfg.search.islands):
                for name in self.cfg.search.seeds:
                    own = name.endswith(".py")      # a seed FILE.py of the user's, not a baseline
                    cand = Candidate(source=self.problem.seed_source(name),
                                     island=island, operator="seed",
                                     rationale=f"{'seed file' if own else 'baseline'} {name}",
                                     extra={"seed_file" if own else "baseline": name})
                    self.store.add(cand)
                    self.bus.emit("proposal", candidate=cand.id, island=island,
                                  operator="seed", parents=[])

    def may_propose(self) -> bool:
        return self.crew is None or self.crew.may_propose(
            int(self.store.get_meta(PROPOSALS_KEY, 0)))

    def propose(self):
        """Select a parent on the next island (round robin), then: offline, mutate, dedup and
        store the child as pending (returned); LLM, start a Researcher call (STARTED; the child
        is committed when it answers). None when no attempt gave a child."""
        n = self.cfg.search.islands
        # One transaction per attempt: the counter, the selection's rng draw and the child commit
        # together, so a kill at any point resumes on exactly the same random sequence. An LLM
        # proposal commits the counter and the draw here and its child later (see the module doc).
        for _ in range(self.cfg.search.max_attempts):
            index = int(self.store.get_meta(PROPOSALS_KEY, 0))
            island = index % n
            who = turn(self.cfg, index, self.crew is None)
            busy = who != OFFLINE and self.crew.busy()
            if busy:
                who = OFFLINE
            snap = None
            with self.store.transaction():
                self.store.set_meta(PROPOSALS_KEY, index + 1)
                try:
                    parent = self.islands.select_parent(island)
                    if who != OFFLINE:
                        parent = self.crew.spread_parent(island, parent)
                except LookupError:
                    continue          # the island has no members yet (all seeds failed)
                inspirations = self.islands.inspirations(island, parent,
                                                         self.cfg.search.inspirations)
                if who != OFFLINE:
                    snap = self.crew.snapshot(index, island, parent, inspirations, who)
                else:
                    child = self.offline_child(index, island, parent, inspirations,
                                                extra={"llm_busy": True} if busy else None)
                    if child is None:
                        continue
            if snap is not None:
                self.crew.start_research(snap)
                return STARTED
            self.bus.emit("proposal", candidate=child.id, island=island,
                          operator=child.operator, parents=child.parents,
                          rationale=child.rationale, **({"llm_busy": True} if busy else {}))
            return child
        return None

    def offline_child(self, index, island, parent, inspirations, extra=None) -> Candidate | None:
        """The offline mutator's child, stored as pending (inside the caller's transaction)."""
        proposal = self.mutator.propose(parent, inspirations,
                                        {"seed": self.cfg.seed * 1_000_003 + index})
        if proposal is None:
            return None
        parents = [parent.id] + [c.id for c in inspirations
                                 if proposal.operator in ("crossover", "rule_crossover")][:1]
        return self.children.add(proposal, island=island, parent=parent, parents=parents,
                                 extra=extra)

    def collect(self) -> None:
        """Take in every LLM call that has finished; a Researcher's answer becomes a child."""
        if self.crew is None:
            return
        for snap, out in self.crew.finished_research():
            self._finish_research(snap, out)

    def _finish_research(self, snap, out) -> None:
        child = None
        with self.store.transaction():
            spent = self.crew.record_research(snap, out)
            if out.status == "ok":
                child = self.children.add(self.crew.proposal(snap, out), island=snap.island,
                                          parent=snap.parent, extra=spent)
                self.crew.count_child(out, child, snap)
            elif out.status == "fatal":
                self.fatal = out.message
            elif out.status == "unavailable" and self.cfg.llm.fallback_offline:
                for attempt in range(self.cfg.search.max_attempts):   # not a duplicate
                    child = self.offline_child(snap.index + attempt * FALLBACK_STRIDE,
                                                snap.island, snap.parent, snap.inspirations,
                                                extra={"llm_fallback": out.message})
                    if child is not None:
                        break
                self.crew.usage["fallbacks"] += int(child is not None)
            self.crew.save_usage()
        if out.status == "ok" and child is not None:
            self.bus.emit("proposal", candidate=child.id, island=child.island,
                          operator="llm", parents=child.parents, model=out.model,
                          hypothesis=child.extra["hypothesis"], rationale=child.rationale,
                          form=child.extra["form"], repaired=out.repaired,
                          first_errors=out.errors, reasons=getattr(out, "reasons", []),
                          **spent)
        elif child is not None:
            self.bus.emit("proposal", candidate=child.id, island=child.island,
                          operator=child.operator, parents=child.parents,
                          rationale=child.rationale, llm_fallback=True)
        if self.fatal:
            return
        if child is not None:
            self.ready.append(child)
            self._failures_in_row = 0
        elif out.status != "cancelled":
            self._failures_in_row += 1
            if self._failures_in_row >= self.cfg.search.max_attempts:
                self.no_more = (f"no new candidate could be proposed ({self._failures_in_row} "
                                 f"LLM proposals in a row gave no usable program)")
                self.bus.emit("llm_giving_up", failures=self._failures_in_row)
