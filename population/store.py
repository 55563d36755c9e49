"""All search state in one SQLite file (`runs/<name>/state.sqlite`).

Tables:
- `candidates`: one row per candidate. The full record is the JSON in `data`; the other columns
  are copies for indexing and queries (`island`, `status`, `code_hash`, `fitness`, ...), plus
  `member`, the island-membership flag owned by `population.islands.Islands`, and `seq`, the
  insertion order (the meaning of "older").
- `meta`: key -> JSON value (run config, counters, rng state, budget used, ...).

Durability: every public write method commits before it returns, unless it runs inside
`transaction()`, in which case everything commits (or nothing does) when the outermost
`transaction()` block exits. A committed write survives the process being SIGKILLed: the database
is in WAL mode, and a commit appends the transaction to the `-wal` file with write(2) before
`COMMIT` returns, so the data is in the OS page cache, which outlives the process; the next open
replays the WAL. That holds for `synchronous=NORMAL` already. We default to `synchronous=FULL`,
which also fsyncs the WAL on every commit, so a committed write survives an OS crash or power
loss too (NORMAL may lose the last commits then, though the file stays consistent). The price is
one fsync per commit (~0.25 ms measured here, a few ms on slow disks), nothing next to an
evaluation that takes seconds.

A full disk (SQLITE_FULL, or an I/O error while the file system has no space left) raises
`StoreFull`, a StoreError: the transaction that failed is rolled back, so the file stays
consistent and holds everything committed before it.

A Store is safe to share between threads (one connection behind a re-entrant lock, and a
`transaction()` holds the lock until it ends). It must not be used across `fork()`: open a new
one in the child. Several processes may open the same file; writers wait up to `busy_timeout_s`.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .candidate import Candidate
from .dedup import code_hash

APPLICATION_ID = 0x676C6961          # "glia": marks the file as ours (PRAGMA application_id)
SCHEMA_VERSION = 1
ID_COUNTER_KEY = "store.id_counter"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS candidates (
    seq          INTEGER PRIMARY KEY,
    id           TEXT    NOT NULL UNIQUE,
    island       INTEGER NOT NULL,
    generation   INTEGER NOT NULL,
    operator     TEXT    NOT NULL,
    model        TEXT,
    status       TEXT    NOT NULL,
    fitness      REAL    NOT NULL,
    code_hash    TEXT    NOT NULL,
    created_at   REAL    NOT NULL,
    evaluated_at REAL,
    member       INTEGER NOT NULL DEFAULT 0,
    data         TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS candidates_island ON candidates(island, member);
CREATE INDEX IF NOT EXISTS candidates_hash ON candidates(code_hash);
CREATE INDEX IF NOT EXISTS candidates_status ON candidates(status);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class StoreError(RuntimeError):
    """The state file cannot be opened, read or written; the message names the file."""


class StoreFull(StoreError):
    """A write failed because the disk (or quota) holding the state file is full. The failed
    transaction was rolled back; everything committed before it is intact. `reason` is SQLite's
    or the OS's wording (e.g. "database or disk is full")."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


SQLITE_FULL = 13
SQLITE_IOERR = 10
LOW_SPACE_BYTES = 1 << 20   # an I/O error with less than this free is taken for a full disk


def disk_is_full(error: BaseException, path: str | os.PathLike) -> bool:
    """Whether an sqlite3 error means the disk holding `path` is full: SQLITE_FULL, or an I/O
    error (SQLite reports some failed writes, e.g. of the -shm file, that way) at a moment the
    file system has (almost) no space left."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:
        return "database or disk is full" in str(error)
    if code & 0xFF == SQLITE_FULL:
        return True
    if code & 0xFF == SQLITE_IOERR:
        try:
            return shutil.disk_usage(Path(path).parent).free < LOW_SPACE_BYTES
        except OSError:
            return False
    return False


def _num(x: float) -> float:
    """SQLite turns NaN into NULL; the indexed fitness column holds 0 for non-finite values
    (the JSON record keeps the original)."""
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else 0.0


class Store:
    """One SQLite state file. See the module docstring for durability and threading.

    `create=False` refuses to create a missing file (for `status`, `resume`, `export`).
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = True,
                 synchronous: str = "FULL", busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}")
        self._lock = threading.RLock()
        self._depth = 0
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = None
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a directory, not a state file")
        if not self.path.exists():
            if not create:
                raise StoreError(f"{self.path}: no such state file")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"{self.path}: cannot create its folder: {e}") from e
        try:
            conn = sqlite3.connect(str(self.path), isolation_level=None,
                                   check_same_thread=False, timeout=busy_timeout_s)
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot open state file: {e}") from e
        self._conn = conn
        try:
            self._open(synchronous.upper())
        except StoreError:
            conn.close()
            self._conn = None
            raise
        except sqlite3.DatabaseError as e:
            conn.close()
            self._conn = None
            if disk_is_full(e, self.path):
                raise StoreFull(f"{self.path}: the disk is full ({e})", str(e)) from e
            raise StoreError(f"{self.path}: not a readable glia-evo state file "
                             f"(corrupted or not SQLite): {e}") from e

    def _open(self, synchronous: str) -> None:
        c = self._conn
        assert c is not None
        # The first read of the header: raises DatabaseError("file is not a database") for junk.
        app_id = c.execute("PRAGMA application_id").fetchone()[0]
        version = c.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and app_id != APPLICATION_ID:
            raise StoreError(f"{self.path}: an SQLite file, but not a glia-evo state file "
                             f"(tables: {', '.join(sorted(tables))})")
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: written by a newer glia-evo (schema {version}, "
                             f"this one reads up to {SCHEMA_VERSION})")
        mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: cannot switch to WAL mode (got {mode!r})")
        c.execute(f"PRAGMA synchronous={synchronous}")
        if tables:
            problems = [r[0] for r in c.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise StoreError(f"{self.path}: state file is corrupted: "
                                 + "; ".join(problems[:5]))
        if {"candidates", "meta"} <= tables and version == SCHEMA_VERSION:
            return             # up to date: opening writes nothing (works on a full disk too)
        c.execute("BEGIN IMMEDIATE")   # (not executescript: it would COMMIT on its own)
        try:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            c.execute(f"PRAGMA application_id={APPLICATION_ID}")
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            c.execute("COMMIT")
        except BaseException:
            try:
                c.execute("ROLLBACK")
            except sqlite3.Error:
                pass           # SQLite already rolled back (e.g. a COMMIT on a full disk)
            raise

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, with sqlite errors turned into StoreError."""
        with self._lock:
            if self._conn is None:
                raise StoreError(f"{self.path}: store is closed")
            if os.getpid() != self._pid:
                raise StoreError(f"{self.path}: store opened in process {self._pid} used in "
                                 f"forked process {os.getpid()}; open a new Store there")
            try:
                yield self._conn
            except sqlite3.Error as e:
                raise self._error(e) from e

    def _error(self, e: sqlite3.Error) -> StoreError:
        if disk_is_full(e, self.path):
            return StoreFull(f"{self.path}: the disk is full ({e})", str(e))
        return StoreError(f"{self.path}: {type(e).__name__}: {e}")

    @contextmanager
    def transaction(self) -> Iterator["Store"]:
        """Group writes: all of them commit when the outermost block exits, or none do if it
        raises. Nested blocks are savepoints (an inner block that raises is undone on its own).
        Holds the store's lock for the whole block."""
        with self._db() as c:
            depth = self._depth
            if depth == 0:
                c.execute("BEGIN IMMEDIATE")
            else:
                c.execute(f"SAVEPOINT sp{depth}")
            self._depth += 1
            try:
                yield self
            except BaseException:
                self._depth -= 1
                try:
                    if depth == 0:
                        c.execute("ROLLBACK")
                    else:
                        c.execute(f"ROLLBACK TO sp{depth}")
                        c.execute(f"RELEASE sp{depth}")
                except sqlite3.Error:
                    pass
                raise
            self._depth -= 1
            try:
                if depth == 0:
                    c.execute("COMMIT")
                else:
                    c.execute(f"RELEASE sp{depth}")
            except sqlite3.Error:
                if depth == 0:
                    try:
                        c.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise

    def close(self) -> None:
        """Close the connection (idempotent). Raises StoreError inside an open transaction."""
        with self._lock:
            if self._conn is None:
                return
            if self._depth:
                raise StoreError(f"{self.path}: close() inside a transaction")
            try:
                self._conn.close()
            finally:
                self._conn = None

    @property
    def closed(self) -> bool:
        return self._conn is None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}{', closed' if self.closed else ''})"

    # ------------------------------------------------------------------ candidates

    @staticmethod
    def _row(cand: Candidate) -> tuple:
        return (cand.island, int(cand.generation), cand.operator, cand.model, cand.status,
                _num(cand.fitness), cand.code_hash, float(cand.created_at),
                None if cand.evaluated_at is None else float(cand.evaluated_at),
                json.dumps(cand.to_dict()))

    def add(self, candidate: Candidate) -> Candidate:
        """Insert a new candidate (its status as given; `pending` by default) and commit.

        Fills in, on the object itself, an empty `id` (from `next_id()`) and an empty
        `code_hash` (from `code_hash(source)`). Returns the same object.
        StoreError if the id already exists.
        """
        candidate.validate()
        with self.transaction() as _, self._db() as c:
            if not candidate.id:
                candidate.id = self.next_id()
            if not candidate.code_hash:
                candidate.code_hash = code_hash(candidate.source)
            try:
                c.execute("INSERT INTO candidates (id, island, generation, operator, model, "
                          "status, fitness, code_hash, created_at, evaluated_at, data) "
                          "VALUES (?,?,?,?,?,?,?,?,?,?,?)", (candidate.id, *self._row(candidate)))
            except sqlite3.IntegrityError as e:
                raise StoreError(f"{self.path}: candidate {candidate.id} already exists") from e
        return candidate

    def update(self, candidate: Candidate) -> None:
        """Overwrite a stored candidate's record and commit (the island-membership flag is not
        touched: evaluated results should go through `Islands.insert`). StoreError if absent."""
        candidate.validate()
        if not candidate.code_hash:
            candidate.code_hash = code_hash(candidate.source)
        with self.transaction() as _, self._db() as c:
            cur = c.execute("UPDATE candidates SET island=?, generation=?, operator=?, model=?, "
                            "status=?, fitness=?, code_hash=?, created_at=?, evaluated_at=?, "
                            "data=? WHERE id=?", (*self._row(candidate), candidate.id))
            if cur.rowcount != 1:
                raise StoreError(f"{self.path}: no candidate {candidate.id!r} to update")

    def _select(self, where: str = "", args: tuple = (), order: str = "seq",
                limit: int | None = None) -> list[Candidate]:
        sql = "SELECT data FROM candidates" + (f" WHERE {where}" if where else "")
        sql += f" ORDER BY {order}" + (f" LIMIT {int(limit)}" if limit is not None else "")
        with self._db() as c:
            rows = c.execute(sql, args).fetchall()
        return [Candidate.from_dict(json.loads(r[0]), copy_values=False) for r in rows]

    def get(self, id: str) -> Candidate | None:
        """The candidate with this id, or None."""
        found = self._select("id=?", (id,))
        return found[0] if found else None

    def all(self) -> list[Candidate]:
        """Every candidate, in insertion order."""
        return self._select()

    def code_hashes(self) -> dict[str, str]:
        """Code hash -> id of the latest candidate with that hash (what `all()` would give,
        without decoding every candidate: a Researcher's prompt asks this once per proposal)."""
        with self._db() as c:
            rows = c.execute("SELECT code_hash, id FROM candidates WHERE code_hash != '' "
                             "ORDER BY seq").fetchall()
        return {h: i for h, i in rows}

    def by_island(self, island: int) -> list[Candidate]:
        """Every candidate on an island (any status, member or not), in insertion order."""
        return self._select("island=?", (int(island),))

    def by_status(self, status: str) -> list[Candidate]:
        """Every candidate with this status, in insertion order (e.g. `pending` on resume)."""
        return self._select("status=?", (status,))

    def members(self, island: int | None = None) -> list[Candidate]:
        """Current island members (of one island, or all), in insertion order."""
        if island is None:
            return self._select("member=1")
        return self._select("island=? AND member=1", (int(island),))

    def count(self, status: str | None = None) -> int:
        with self._db() as c:
            if status is None:
                return c.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
            return c.execute("SELECT COUNT(*) FROM candidates WHERE status=?",
                             (status,)).fetchone()[0]

    def __len__(self) -> int:
        return self.count()

    def has_hash(self, h: str, island: int | None = None) -> bool:
        """Whether any stored candidate (any status; on `island` if given) has code hash `h`."""
        with self._db() as c:
            if island is None:
                row = c.execute("SELECT 1 FROM candidates WHERE code_hash=? LIMIT 1",
                                (h,)).fetchone()
            else:
                row = c.execute("SELECT 1 FROM candidates WHERE code_hash=? AND island=? "
                                "LIMIT 1", (h, int(island))).fetchone()
        return row is not None

    def next_id(self) -> str:
        """A fresh id "c000001", "c000002", ...; the counter is persisted (committed, or part of
        the enclosing transaction), so ids are never reused, even after a crash. Ids already
        taken by candidates added with explicit ids are skipped."""
        with self.transaction() as _, self._db() as c:
            n = int(self.get_meta(ID_COUNTER_KEY, 0))
            while True:
                n += 1
                cid = f"c{n:06d}"
                if c.execute("SELECT 1 FROM candidates WHERE id=?", (cid,)).fetchone() is None:
                    break
            self.set_meta(ID_COUNTER_KEY, n)
        return cid

    # Used by Islands: light rows and the membership flag.

    def _member_rows(self, island: int) -> list[tuple[int, str, float, str]]:
        """(seq, id, fitness, code_hash) of an island's members, in insertion order."""
        with self._db() as c:
            return c.execute("SELECT seq, id, fitness, code_hash FROM candidates "
                             "WHERE island=? AND member=1 ORDER BY seq", (int(island),)).fetchall()

    def _seq(self, id: str) -> int | None:
        with self._db() as c:
            row = c.execute("SELECT seq FROM candidates WHERE id=?", (id,)).fetchone()
        return None if row is None else row[0]

    def _is_member(self, id: str) -> bool:
        with self._db() as c:
            row = c.execute("SELECT member FROM candidates WHERE id=?", (id,)).fetchone()
        return bool(row and row[0])

    def _set_member(self, id: str, member: bool) -> None:
        with self.transaction() as _, self._db() as c:
            c.execute("UPDATE candidates SET member=? WHERE id=?", (1 if member else 0, id))

    def _top(self, n: int, exclude_operator: str | None = None) -> list[Candidate]:
        where = "status='ok' AND fitness > 0"
        args: tuple = ()
        if exclude_operator is not None:
            where += " AND operator != ?"
            args = (exclude_operator,)
        return self._select(where, args, order="fitness DESC, seq", limit=n)

    # ------------------------------------------------------------------ meta

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under `key` and commit (TypeError if not JSON)."""
        text = json.dumps(value)
        with self.transaction() as _, self._db() as c:
            c.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                      "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, text))

    def get_meta(self, key: str, default: Any = None) -> Any:
        with self._db() as c:
            row = c.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def meta(self) -> dict[str, Any]:
        """Every meta key and value."""
        with self._db() as c:
            rows = c.execute("SELECT key, value FROM meta ORDER BY key").fetchall()
        return {k: json.loads(v) for k, v in rows}
