"""Islands: membership, tournament selection, inspirations and ring migration.

Membership lives in the store (`candidates.member`), written in the same transaction as the
candidate record it concerns, so after a crash the islands are exactly what the store says; this
object keeps no state of its own apart from the random generator, whose state is saved in the
store's meta (`islands.rng_state`) after every draw.

Rules:
- A member is a candidate with status `ok` and finite fitness > 0 (`Candidate.viable`). Failures
  are stored but never members.
- An island holds at most `capacity` members and at most one member per code hash. A newcomer
  whose code hash is already a member's (e.g. a tuned child: knob values do not change the hash)
  replaces that member only if strictly fitter. Otherwise, when the island is full, it replaces
  the worst member (lowest fitness; among equal fitness the newest goes) only if strictly fitter
  than it; on a tie the older one stays.
- Elitism: the island's best member (highest fitness, ties: the oldest) is never evicted, except
  by a strictly fitter candidate; an island's best fitness never decreases.
"Older" means inserted into the store earlier.

Parent selection is a tournament (`selection="tournament"`) or epsilon-lexicase over the
members' per-instance scores (`selection="lexicase"`, given the problem's `metric`, lower is
better): the instances are shuffled and each in turn keeps only the members within epsilon (the
median absolute deviation of that instance's scores) of the best there, until one is left. A
member that is the best on some instances but not on the mean (a specialist) is still chosen
as a parent, so the islands do not all converge to one program fitted to the mean of the
training instances. Scores are -log(metric): the reference's value is the same for every member
of an instance, so this ranks exactly as log(reference / metric), the per-instance fitness.
"""
from __future__ import annotations

import difflib
import math
from typing import Any, NamedTuple

import numpy as np

from .candidate import Candidate
from .store import Store

RNG_KEY = "islands.rng_state"
CONFIG_KEY = "islands.config"
SELECTIONS = ("tournament", "lexicase")


class _Row(NamedTuple):
    seq: int
    id: str
    fitness: float
    code_hash: str


def _fitter(row: _Row) -> tuple[float, int]:
    """Sort key: larger = better (higher fitness, then older)."""
    return (row.fitness, -row.seq)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.integer):
        return int(x)
    return x


def _as_generator(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer, np.random.SeedSequence)):
        return np.random.Generator(np.random.PCG64(rng))
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, not {type(rng).__name__}")


def _lines(source: str) -> list[str]:
    out = []
    for line in source.splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            out.append(s)
    return out


def source_distance(a: str, b: str) -> float:
    """0 (same code lines) .. 1 (nothing in common): 1 - difflib ratio over stripped non-blank,
    non-comment lines. A few hundred microseconds for typical ~100-line programs."""
    return 1.0 - difflib.SequenceMatcher(None, _lines(a), _lines(b), autojunk=False).ratio()


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


class Islands:
    """`num_islands` islands of at most `capacity` members each, over `store`.

    `rng`: a numpy Generator, an int seed or None (OS entropy). If the store already holds an rng
    state (a resumed run), that state wins over the argument, so the random sequence continues
    where it stopped. Reducing `capacity` on resume trims each island (worst first, never the
    best); reducing `num_islands` below an island that has members is a ValueError.
    """

    def __init__(self, store: Store, num_islands: int, capacity: int, rng: Any = None, *,
                 tournament_size: int = 3, selection: str = "tournament",
                 metric: str | None = None) -> None:
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got "
                             f"{selection!r}")
        if selection == "lexicase" and not metric:
            raise ValueError("lexicase selection needs the problem's metric")
        self.selection = selection
        self.metric = metric
        for name, v in (("num_islands", num_islands), ("capacity", capacity),
                        ("tournament_size", tournament_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        self.store = store
        self.num_islands = num_islands
        self.capacity = capacity
        self.tournament_size = tournament_size
        self._rng = _as_generator(rng)
        stray = sorted({m.island for m in store.members() if m.island >= num_islands})
        if stray:
            raise ValueError(f"{store.path}: islands {stray} have members but the run is "
                             f"configured with {num_islands} islands")
        saved = store.get_meta(RNG_KEY)
        if saved is not None:
            name = saved.get("bit_generator")
            if type(self._rng.bit_generator).__name__ != name:
                self._rng = np.random.Generator(getattr(np.random, name)())
            self._rng.bit_generator.state = saved
        # Write only what changed: a reader (`glia-evo status`) opening the islands of a live
        # run must not overwrite the run's rng state with an older copy.
        config = {"num_islands": num_islands, "capacity": capacity,
                  "tournament_size": tournament_size}
        if selection != "tournament":      # older runs' stored config stays as it was
            config.update(selection=selection, metric=metric)
        with store.transaction():
            if store.get_meta(CONFIG_KEY) != config:
                store.set_meta(CONFIG_KEY, config)
            for island in range(num_islands):
                rows = self._rows(island)
                while len(rows) > capacity:
                    victim = self._worst(rows)
                    store._set_member(victim.id, False)
                    rows.remove(victim)
            if saved is None:
                self.save_rng_state()

    @classmethod
    def from_store(cls, store: Store) -> "Islands":
        """The islands of an existing run, with the configuration it stored (for readers such
        as `status`, `export` or `ui`: nothing is written). LookupError if none was stored."""
        config = store.get_meta(CONFIG_KEY)
        if config is None:
            raise LookupError(f"{store.path}: no islands configuration stored")
        return cls(store, config["num_islands"], config["capacity"],
                   tournament_size=config["tournament_size"],
                   selection=config.get("selection", "tournament"),
                   metric=config.get("metric"))

    # ------------------------------------------------------------------ helpers

    @property
    def rng(self) -> np.random.Generator:
        """The generator used for selection. If you draw from it yourself, call
        `save_rng_state()` afterwards (or in the same transaction as what the draw decided)."""
        return self._rng

    def save_rng_state(self) -> None:
        self.store.set_meta(RNG_KEY, _jsonable(self._rng.bit_generator.state))

    def _check(self, island: int) -> int:
        if isinstance(island, bool) or not isinstance(island, (int, np.integer)) \
                or not 0 <= island < self.num_islands:
            raise ValueError(f"island must be in 0..{self.num_islands - 1}, got {island!r}")
        return int(island)

    def _rows(self, island: int) -> list[_Row]:
        return [_Row(*r) for r in self.store._member_rows(island)]

    @staticmethod
    def _worst(rows: list[_Row]) -> _Row:
        return min(rows, key=_fitter)

    def _admission(self, rows: list[_Row], fitness: float, h: str) -> tuple[bool, str | None]:
        """(admitted?, id of the member it evicts or None) for a viable newcomer."""
        same = [r for r in rows if r.code_hash == h]
        if same:
            twin = max(same, key=_fitter)
            return (True, twin.id) if fitness > twin.fitness else (False, None)
        if len(rows) < self.capacity:
            return True, None
        worst = self._worst(rows)
        return (True, worst.id) if fitness > worst.fitness else (False, None)

    # ------------------------------------------------------------------ API

    def members(self, island: int) -> list[Candidate]:
        """The island's members, oldest first."""
        return self.store.members(self._check(island))

    def sizes(self) -> list[int]:
        return [len(self._rows(i)) for i in range(self.num_islands)]

    def insert(self, candidate: Candidate) -> bool:
        """Store an evaluated candidate (add, or update if its id is stored) and decide its
        membership, all in one transaction. Returns whether it is a member afterwards.
        Failures and fitness <= 0 are stored and return False."""
        island = self._check(candidate.island)
        store = self.store
        with store.transaction():
            if candidate.id and store._seq(candidate.id) is not None:
                store.update(candidate)
            else:
                store.add(candidate)
            was_member = store._is_member(candidate.id)
            if not candidate.viable:
                if was_member:
                    store._set_member(candidate.id, False)
                return False
            if was_member:
                return True
            rows = self._rows(island)
            admit, evict = self._admission(rows, float(candidate.fitness), candidate.code_hash)
            if admit:
                if evict is not None:
                    store._set_member(evict, False)
                store._set_member(candidate.id, True)
            return admit

    def select_parent(self, island: int) -> Candidate:
        """Tournament selection: draw `tournament_size` distinct members uniformly (all of them
        if fewer) and return the fittest (ties: the oldest); or epsilon-lexicase (see the module
        doc), which falls back to the tournament when the members share fewer than two scored
        instances. Saves the rng state. LookupError if the island has no members."""
        island = self._check(island)
        rows = self._rows(island)
        if not rows:
            raise LookupError(f"island {island} has no members")
        if self.selection == "lexicase" and len(rows) > 1:
            found = self._lexicase(island)
            if found is not None:
                return found
        k = min(self.tournament_size, len(rows))
        picks = self._rng.choice(len(rows), size=k, replace=False)
        self.save_rng_state()
        winner = max((rows[int(i)] for i in picks), key=_fitter)
        found = self.store.get(winner.id)
        assert found is not None
        return found

    def instance_scores(self, members: list[Candidate]) -> tuple[list[str], np.ndarray] | None:
        """(instances, scores): one row per member, one column per instance every member was
        scored on, score = -log(metric) (higher is better); None if fewer than two."""
        if not self.metric:
            return None
        common = None
        for m in members:
            names = {n for n, v in (m.metrics or {}).items()
                     if isinstance(v, dict) and _positive(v.get(self.metric))}
            common = names if common is None else common & names
        cases = sorted(common or ())
        if len(cases) < 2:
            return None
        scores = np.array([[-math.log(m.metrics[c][self.metric]) for c in cases]
                           for m in members], dtype=float)
        return cases, scores

    def _lexicase(self, island: int) -> Candidate | None:
        members = self.store.members(island)          # oldest first
        scored = self.instance_scores(members)
        if scored is None:
            return None
        _, scores = scored
        order = self._rng.permutation(scores.shape[1])
        pool = np.arange(len(members))
        for case in order:
            column = scores[:, int(case)]
            eps = float(np.median(np.abs(column - np.median(column))))
            values = column[pool]
            pool = pool[values >= values.max() - eps]
            if len(pool) == 1:
                break
        pick = int(pool[int(self._rng.integers(len(pool)))]) if len(pool) > 1 else int(pool[0])
        self.save_rng_state()
        return members[pick]

    def inspirations(self, island: int, parent: Candidate | str | None = None,
                     n: int = 2) -> list[Candidate]:
        """Up to `n` members of `island` other than `parent`: first the best, then the ones
        most different from the parent's source (`source_distance`; ties: fitter, then older).
        Deterministic; uses no randomness."""
        island = self._check(island)
        if n <= 0:
            return []
        if isinstance(parent, str):
            parent = self.store.get(parent)
        pid = parent.id if parent is not None else None
        others = [m for m in self.store.members(island) if m.id != pid]
        if not others:
            return []
        order = {m.id: i for i, m in enumerate(others)}       # oldest first
        best = max(others, key=lambda m: (m.fitness, -order[m.id]))
        rest = [m for m in others if m.id != best.id]
        ref = parent.source if parent is not None else best.source
        rest.sort(key=lambda m: (-source_distance(ref, m.source), -m.fitness, order[m.id]))
        return [best] + rest[:n - 1]

    def migrate(self, k: int) -> list[Candidate]:
        """Copy the best `k` members of each island i to island (i+1) % num_islands, as new
        candidates (new id, parents=[original id], operator "migration", status ok, same source,
        knobs, fitness, metrics, reasoning, rationale; generation kept; eval_seconds 0;
        extra {"migrated_from": i}). The best k are taken before anything moves, so a migrant
        travels one step per call. A migrant whose code hash is already a member of the
        destination is skipped (unless strictly fitter, when it replaces that member: the
        one-member-per-hash rule of `insert`), and so is one that would not be admitted (full
        island, not fitter than its worst): only admitted migrants are stored. One transaction.
        Returns the migrants stored."""
        if k <= 0 or self.num_islands < 2:
            return []
        store = self.store
        top = {i: sorted(self._rows(i), key=_fitter, reverse=True)[:k]
               for i in range(self.num_islands)}
        migrants: list[Candidate] = []
        with store.transaction():
            for src in range(self.num_islands):
                dest = (src + 1) % self.num_islands
                for row in top[src]:
                    admit, evict = self._admission(self._rows(dest), row.fitness, row.code_hash)
                    if not admit:
                        continue
                    orig = store.get(row.id)
                    assert orig is not None
                    m = Candidate(source=orig.source, knobs=dict(orig.knobs), parents=[orig.id],
                                  island=dest, generation=orig.generation, operator="migration",
                                  model=None, fitness=orig.fitness, status="ok",
                                  metrics=orig.metrics, reasoning=orig.reasoning,
                                  rationale=orig.rationale, code_hash=orig.code_hash,
                                  evaluated_at=orig.evaluated_at, eval_seconds=0.0,
                                  extra={"migrated_from": src})
                    store.add(m)
                    if evict is not None:
                        store._set_member(evict, False)
                    store._set_member(m.id, True)
                    migrants.append(m)
        return migrants

    def best(self, island: int | None = None) -> Candidate | None:
        """The fittest member (ties: oldest) of `island`, or of all islands; None if empty.
        Thanks to elitism the best of all islands is also the best candidate ever evaluated."""
        if island is None:
            rows = [r for i in range(self.num_islands) for r in self._rows(i)]
        else:
            rows = self._rows(self._check(island))
        if not rows:
            return None
        return self.store.get(max(rows, key=_fitter).id)

    def leaderboard(self, n: int = 10) -> list[Candidate]:
        """The `n` fittest viable candidates ever stored (members or not, all islands), fittest
        first (ties: older first), without migration copies."""
        if n <= 0:
            return []
        return self.store._top(n, exclude_operator="migration")


__all__ = ["Islands", "source_distance", "RNG_KEY", "CONFIG_KEY", "SELECTIONS"]
