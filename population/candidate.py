"""One candidate program and everything the search knows about it."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, fields
from typing import Any

STATUSES = ("pending", "ok", "error", "timeout", "crashed", "invalid", "rejected")
"""Allowed values of `Candidate.status`. `pending` = stored, not evaluated yet; `ok` = evaluated
without error (fitness may still be poor); `error | timeout | crashed | invalid` mirror the
sandbox's EvalResult statuses; `rejected` = never evaluated (duplicate, failed a pre-check)."""

DERIVED_OPERATORS = ("migration", "tune")
"""Operators whose candidates are stored finished, with a result copied from others (a migrant's
from its original, a tuned child's from its study's best trial): never evaluated on their own."""


@dataclass
class Candidate:
    """A policy program plus its lineage and evaluation.

    JSON round trip: `Candidate.from_dict(json.loads(json.dumps(c.to_dict()))) == c`.
    `from_dict` ignores unknown keys and fills missing ones with the defaults below, so records
    written by an older or newer version of this class still load.
    """

    id: str = ""                      # "c000042"; Store.add assigns one when empty
    source: str = ""
    knobs: dict[str, Any] = field(default_factory=dict)
    parents: list[str] = field(default_factory=list)
    island: int = 0
    generation: int = 0
    operator: str = "seed"            # seed | perturb_constant | crossover | llm | tune | migration | ...
    model: str | None = None          # LLM that proposed it, None for offline operators
    fitness: float = 0.0              # 0 for failures
    status: str = "pending"
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)   # scenario -> metrics
    reasoning: str = ""               # the Analyst's summary
    rationale: str = ""               # the proposer's
    error: str | None = None
    code_hash: str = ""               # Store.add computes it when empty
    created_at: float = field(default_factory=time.time)
    evaluated_at: float | None = None
    eval_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError if a field has a value the store cannot hold faithfully."""
        if self.status not in STATUSES:
            raise ValueError(f"candidate {self.id or '?'}: unknown status {self.status!r} "
                             f"(expected one of {', '.join(STATUSES)})")
        if not isinstance(self.source, str):
            raise ValueError(f"candidate {self.id or '?'}: source must be str")
        if isinstance(self.island, bool) or not isinstance(self.island, int) or self.island < 0:
            raise ValueError(f"candidate {self.id or '?'}: island must be an int >= 0, "
                             f"got {self.island!r}")

    @property
    def viable(self) -> bool:
        """True when the candidate may be an island member: status ok and finite fitness > 0."""
        return (self.status == "ok" and isinstance(self.fitness, (int, float))
                and math.isfinite(self.fitness) and self.fitness > 0)

    def to_dict(self) -> dict[str, Any]:
        """A plain, deep-copied dict of every field (JSON-serialisable if metrics/extra are)."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, copy_values: bool = True) -> "Candidate":
        """copy_values=False: `data` is the caller's to give away (e.g. freshly parsed JSON),
        so its values are used as they are instead of deep-copied."""
        names = _field_names(cls)
        kwargs = {k: (copy.deepcopy(v) if copy_values else v) for k, v in data.items()
                  if k in names}
        if kwargs.get("parents") is not None:
            kwargs["parents"] = list(kwargs["parents"])
        for key in ("fitness", "eval_seconds", "created_at"):
            if kwargs.get(key) is not None:
                kwargs[key] = float(kwargs[key])
        return cls(**kwargs)


_FIELD_NAMES: dict = {}


def _field_names(cls) -> frozenset:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))
    return names
