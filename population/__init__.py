"""Population: candidates, duplicate detection, the SQLite state store and the islands.

Imports only the standard library and numpy; never runs a candidate.
"""
from .candidate import DERIVED_OPERATORS, STATUSES, Candidate
from .dedup import code_hash
from .islands import Islands, source_distance
from .store import Store, StoreError

__all__ = ["Candidate", "DERIVED_OPERATORS", "STATUSES", "Store", "StoreError", "Islands", "code_hash",
           "source_distance"]
