"""events.jsonl: one JSON line per proposal, evaluation, migration, start and stop.

An append-only log for people and tools (the SQLite state is the source of truth): each line is
written with one unbuffered append as it happens, so `tail -f` shows the search live. A line cut
short (a crash, or a full disk mid-write) is skipped by `read_events`, and the next session starts
on a fresh line, so it never swallows the lines written after it.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path


class EventLog:
    def __init__(self, path: Path):
        self.path = path
        # unbuffered: a write that fails (e.g. ENOSPC) leaves nothing behind in a buffer to be
        # flushed again, half-written, at close or exit
        self._fh = open(path, "ab", buffering=0)
        self._fresh_line = self._ends_with_newline()

    def _ends_with_newline(self) -> bool:
        try:
            size = os.path.getsize(self.path)
            if size == 0:
                return True
            with open(self.path, "rb") as fh:
                fh.seek(size - 1)
                return fh.read(1) == b"\n"
        except OSError:
            return True

    def write(self, event: str, **fields) -> None:
        record = {"t": round(time.time(), 3), "event": event, **fields}
        data = (json.dumps(record, default=str) + "\n").encode("utf-8")
        if not self._fresh_line:          # a previous line was cut short: end it first
            data = b"\n" + data
        self._fresh_line = False          # until the whole line is written
        view = memoryview(data)
        while view:
            n = self._fh.write(view)
            view = view[n:]
        self._fresh_line = True

    def close(self) -> None:
        self._fh.close()


def read_events(path: Path) -> list[dict]:
    """All complete events (a line cut by a crash is skipped)."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def recover_evaluations(path: Path, store, bus) -> None:
    """Publish the evaluations a kill cut off from events.jsonl.

    The event is written after its result commits, so a SIGKILL between the two leaves a
    counted evaluation with no line; it is published now, once, marked `recovered`."""
    from population import DERIVED_OPERATORS
    logged = {e.get("candidate") for e in read_events(path) if e.get("event") == "evaluation"}
    members = None
    for cand in store.all():
        if cand.status == "pending" or cand.operator in DERIVED_OPERATORS or cand.id in logged:
            continue
        members = members if members is not None else {m.id for m in store.members()}
        bus.emit("evaluation", candidate=cand.id, island=cand.island, status=cand.status,
                 fitness=cand.fitness, member=cand.id in members,
                 seconds=round(cand.eval_seconds, 3), error=cand.error, recovered=True)
