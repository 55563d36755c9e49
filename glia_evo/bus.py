"""Events, published once: the engine emits each event on a bus, and whoever records or shows
a run subscribes — the event log (`events.jsonl`), the MLflow tracker, `best.py`, the progress
display. The engine never calls them by hand.

An event is a name, JSON fields (what `events.jsonl` gets) and optionally the candidates it is
about (what the tracker logs): `emit("evaluation", cand, island=0, ...)`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

# events about candidates the tracker logs as MLflow runs
TRACKED = ("evaluation", "migration", "tuning_done")
NOT_LOGGED = ("best",)     # a new best is in the evaluation's line already

Subscriber = Callable[[str, dict, tuple], None]


class Bus:
    def __init__(self):
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def emit(self, name: str, *candidates, **fields) -> None:
        for subscriber in self._subscribers:
            subscriber(name, fields, candidates)


def event_log(log) -> Subscriber:
    """Every event, as one line of `events.jsonl`."""
    def write(name: str, fields: dict, candidates: tuple) -> None:
        if name not in NOT_LOGGED:
            log.write(name, **fields)
    return write


def tracker(tracker_, store) -> Subscriber:
    """Candidates evaluated, migrated or tuned, as nested MLflow runs (with their parent's
    source, for the diff)."""
    def track(name: str, fields: dict, candidates: tuple) -> None:
        if name not in TRACKED:
            return
        for cand in candidates:
            parent = store.get(cand.parents[0]) if cand.parents else None
            tracker_.candidate(cand.to_dict(), parent.source if parent else None)
    return track


def best_file(path: Path, train_split: str = "train") -> Subscriber:
    """`best.py`, rewritten (atomically) whenever a `best` event names a new best (on the
    training split; when the run stops, `glia_evo.validation` rewrites it with the program
    chosen on validation). Its first line says which split chose it."""
    from .validation import write_best

    def write(name: str, fields: dict, candidates: tuple) -> None:
        if name != "best" or not candidates:
            return
        write_best(path, candidates[0], None, train_split)
    return write


def progress(show: Callable[[dict], None], status: Callable[[], dict]) -> Subscriber:
    """The progress display, after every evaluation."""
    def update(name: str, fields: dict, candidates: tuple) -> None:
        if name == "evaluation" and not fields.get("recovered"):
            show(status())
    return update


def for_run(events, tracker_, store, best_path: Path, train_split: str,
            show: Callable[[dict], None] | None, status: Callable[[], dict]) -> Bus:
    """A run's bus: the event log, the tracker (if any), `best.py` and the display (if any)."""
    bus = Bus()
    bus.subscribe(event_log(events))
    if tracker_ is not None:
        bus.subscribe(tracker(tracker_, store))
    bus.subscribe(best_file(best_path, train_split))
    if show:
        bus.subscribe(progress(show, status))
    return bus


def close_tracker(tracker_, bus: Bus, timeout_s: float) -> list[Exception]:
    """Close the tracker, waiting at most `timeout_s` for its backlog (what is left is logged on
    the next start: a `tracking_backlog` event says how much); returns the error, if any (its
    process is then terminated)."""
    try:
        tracker_.close(timeout_s=timeout_s)
        if tracker_.pending():
            bus.emit("tracking_backlog", pending=tracker_.pending(), error=tracker_.last_error)
    except Exception as exc:   # noqa: BLE001
        if tracker_.proc.poll() is None:
            tracker_.proc.terminate()
        return [exc]
    return []
