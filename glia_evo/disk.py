"""The run folder's disk: a full disk reported in one line, and files a full disk (or a kill)
can leave half-written. A run stops on the first ENOSPC / EDQUOT / SQLITE_FULL (see runner)."""
from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import sys
from pathlib import Path

from population.store import SQLITE_FULL, StoreFull

from .run_folder import RunFolder

MIN_FREE_MB = 10           # `run` and `resume` refuse to start with less free on the run's disk
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskError(Exception):
    """Too little free space to start: one line for the user."""


def disk_full_reason(exc: BaseException | None) -> str | None:
    """The OS's or SQLite's words when `exc` (or the exception it came from) says the disk is
    full: ENOSPC / EDQUOT, SQLITE_FULL; None for anything else."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, StoreFull):
            return exc.reason
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return exc.strerror or os.strerror(exc.errno)
        if isinstance(exc, sqlite3.Error) and \
                (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == SQLITE_FULL:
            return str(exc)
        exc = exc.__cause__ or exc.__context__
    return None


def disk_full(run_dir: Path, reason: str) -> int:
    """One line on stderr; exit status 1."""
    then = (f"run `glia-evo resume {run_dir}`" if RunFolder(run_dir).holds_run()
            else "run the same command again")
    print(f"glia-evo: the disk holding {run_dir} is full ({reason}); free some space and "
          f"{then}", file=sys.stderr, flush=True)
    return 1


def trim_partial_line(path: Path) -> None:
    """Cut a last line left unfinished (a full disk or a kill mid-write) off an append-only
    JSON-lines file. Optuna's journal needs this: it ignores an unfinished last line, but the
    next append would be glued to it and the journal could no longer be read."""
    if not path.exists():
        return
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        keep, pos = 0, size
        while pos > 0:                       # find the last newline, 64 KiB at a time
            step = min(pos, 1 << 16)
            pos -= step
            fh.seek(pos)
            chunk = fh.read(step)
            k = chunk.rfind(b"\n")
            if k >= 0:
                keep = pos + k + 1
                break
        fh.truncate(keep)


def check_free_space(run_dir: Path, what: str) -> None:
    """Refuse to start or resume on a (nearly) full disk, before anything is written."""
    probe = run_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if free < MIN_FREE_MB * 2**20:
        then = f"then run `glia-evo resume {run_dir}`" if what == "resume" else "then start it"
        raise DiskError(f"the disk holding {run_dir} has only {free / 2**20:.1f} MiB free (a run "
                       f"needs at least {MIN_FREE_MB} MiB): free some space, {then}")
