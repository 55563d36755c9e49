"""events.jsonl: one JSON line per proposal, evaluation, migration, start and stop.

An append-only log for people and tools (the SQLite state is the source of truth): each line is
flushed as it is written, so `tail -f` shows the search live.
"""
from __future__ import annotations

import json
import time
from pathlib import Path


class EventLog:
    def __init__(self, path: Path):
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")

    def write(self, event: str, **fields) -> None:
        record = {"t": round(time.time(), 3), "event": event, **fields}
        self._fh.write(json.dumps(record, default=str) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_events(path: Path) -> list[dict]:
    """All complete events (a line cut by a crash is skipped)."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
