"""The soak test's machinery (tests/faults/test_soak.py).

- `Soak` drives `glia-evo run` / `glia-evo resume` sessions of one run folder as subprocesses and,
  while each runs, injects faults drawn by a seeded `random.Random`: SIGKILL a sandbox job, SIGKILL
  the MLflow tracking process, SIGTERM the run, Ctrl-C (SIGINT to its process group) once or
  twice, SIGKILL the whole process group, SIGKILL the run process alone (`kill -9 PID`). It
  resumes until the state says the evaluation budget is used, then runs one more (fault-free)
  resume so the tracker drains its backlog.
- After every session it checks the SQLite state (`check_state`) and that nothing finished was
  lost or changed; at the end it checks everything: state, events.jsonl, the Optuna journal and
  MLflow (`Soak.check_final`).

Processes are found under /proc (`/proc/<pid>/task/*/children`): the run's children are the
tracking process (`python -m glia_evo.tracking`) and the sandbox jobs (forks of the run, each the
leader of its own process group). Every wait is bounded by the soak's deadline, and every process
the soak has seen is SIGKILLed in `cleanup()`.
"""
from __future__ import annotations

import collections
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cli_helpers import small_run_toml

KINDS = ("job", "tracker", "sigterm", "sigint", "sigint2", "kill_group", "kill_pid")
ENDING = ("sigterm", "sigint", "sigint2", "kill_group", "kill_pid")   # the session ends
HARD = ("kill_group", "kill_pid")                                     # no chance to clean up
GRACEFUL = ("sigterm", "sigint", "sigint2")
FINISHED = ("ok", "error", "timeout", "crashed", "invalid", "rejected")
STATUSES = FINISHED + ("pending",)
DERIVED = ("migration", "tune")   # stored finished, without an evaluation of their own
# Optuna journal: op codes and trial states (optuna/storages/journal/_storage.py)
OP_CREATE_STUDY, OP_CREATE_TRIAL, OP_SET_TRIAL_STATE = 0, 4, 6
RUNNING, COMPLETE, FAIL, WAITING = 0, 1, 3, 4


class SoakFailure(AssertionError):
    pass


# --- processes --------------------------------------------------------------------------------
def children(pid: int) -> list[int]:
    out: set[int] = set()
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out.update(int(x) for x in path.read_text().split())
        except (OSError, ValueError):
            pass
    return sorted(out)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running (not a zombie) and still a glia-evo process (not a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and "glia_evo" in cmdline(pid)


def is_tracker(pid: int) -> bool:
    return alive(pid) and "glia_evo.tracking" in cmdline(pid)


def is_job(pid: int) -> bool:
    """A sandbox job: a fork of the run (same command line), not yet dead."""
    return alive(pid) and "glia_evo.cli" in cmdline(pid)


def _signal(send, target: int, sig: int) -> bool:
    """Send `sig` with `send` (os.kill or os.killpg); False when the target is already gone."""
    try:
        send(target, sig)
        return True
    except ProcessLookupError:
        return False


def kill(pid: int, sig: int) -> bool:
    return _signal(os.kill, pid, sig)


def killpg(pgid: int, sig: int) -> bool:
    return _signal(os.killpg, pgid, sig)


# --- events.jsonl -----------------------------------------------------------------------------
class EventTail:
    """Complete lines appended to events.jsonl since `offset` (a cut last line waits)."""

    def __init__(self, path: Path, offset: int):
        self.path = path
        self.pos = offset
        self.buf = b""

    def poll(self) -> list[dict]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.pos)
                data = fh.read()
        except OSError:
            return []
        self.pos += len(data)
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass          # a cut line: judged by check_events at the end
        return out


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --- sessions ---------------------------------------------------------------------------------
@dataclass
class Fault:
    kind: str
    after: int                  # evaluation/trial results in the session before it may fire
    delay_s: float              # then this long
    fire_at: float | None = None
    sent_at: float | None = None
    second_at: float | None = None      # sigint2: the second Ctrl-C
    detail: str = ""


@dataclass
class Session:
    number: int
    argv: list
    proc: subprocess.Popen
    offset: int                              # events.jsonl size at spawn
    pending_before: set
    tail: EventTail
    started: float = field(default_factory=time.time)
    faults: list = field(default_factory=list)
    results: int = 0                         # evaluation + trial events seen
    start_seen: bool = False
    stop_t: float | None = None
    ending: Fault | None = None
    tracker_killed: bool = False
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    events: list = field(default_factory=list)

    def describe(self) -> str:
        faults = ", ".join(f"{f.kind}@{f.sent_at - self.started:.2f}s"
                           + (f" ({f.detail})" if f.detail else "") for f in self.faults)
        return (f"session {self.number} `{' '.join(self.argv[3:5])}`: faults [{faults or '-'}], "
                f"rc {self.rc}, {self.results} results")


@dataclass
class Settings:
    evaluations: int = 40
    seed: int = 0
    faults: int = len(KINDS)
    kinds: tuple = KINDS
    cascade: bool = False
    deadline_s: float = 300.0
    workers: int = 2
    capacity: int = 4           # islands of 4 fill up early; the offline mutator finds no new
                                # program after ~130 evaluations there: 8 for long soaks


class Soak:
    def __init__(self, root: Path, settings: Settings, log=print):
        self.s = settings
        self.root = root
        self.dir = root / "run"
        self.cfg = root / "soak.toml"
        root.mkdir(parents=True, exist_ok=True)
        self.cfg.write_text(small_run_toml(
            "soak", settings.evaluations, settings.seed,
            search={"island_capacity": settings.capacity, "migration_interval": 5},
            budget={"minutes": 600.0},
            evaluation={"workers": settings.workers, "timeout_s": 120.0,
                        "split": "train" if settings.cascade else "quick",
                        "cascade": settings.cascade, "cascade_split": "quick",
                        "cascade_threshold": 0.95},
            tuning={"enabled": True, "trials": 3}, tracking={"enabled": True}))
        self.rng = random.Random(settings.seed)
        self.plan = self._plan(settings.faults)
        self.planned = list(self.plan)
        self.deadline = time.monotonic() + settings.deadline_s
        self.log = log
        self.sessions: list[Session] = []
        self.seen: set[int] = set()              # every descendant pid ever seen
        self.cut_offsets: list[int] = []          # events.jsonl ends mid-line here (hard kills)
        self.snapshot: dict = {}                  # finished candidates after the last session

    @classmethod
    def inspect(cls, run_dir: Path, evaluations: int) -> "Soak":
        """The checks alone, for a run folder made some other way (the reproductions)."""
        soak = cls.__new__(cls)
        soak.s = Settings(evaluations=evaluations, faults=0)
        soak.root, soak.dir = run_dir.parent, run_dir
        soak.plan, soak.planned, soak.sessions = [], [], []
        soak.seen, soak.cut_offsets, soak.snapshot = set(), [], {}
        soak.deadline = time.monotonic() + 300
        soak.log = print
        return soak

    # --- plan and bookkeeping ----------------------------------------------------------------
    def _plan(self, n: int) -> list[str]:
        """n fault kinds: shuffled blocks holding every kind once (so 7 faults = one of each)."""
        out: list[str] = []
        while len(out) < n:
            block = list(self.s.kinds)
            self.rng.shuffle(block)
            out += block
        return out[:n]

    def where(self) -> str:
        """Everything needed to understand (and replay) a failure."""
        env = (f"GLIA_EVO_SOAK_SEED={self.s.seed} GLIA_EVO_SOAK_EVALUATIONS={self.s.evaluations} "
               f"GLIA_EVO_SOAK_FAULTS={self.s.faults}")
        if self.s.kinds != KINDS:
            env += " GLIA_EVO_SOAK_KINDS=" + ",".join(self.s.kinds)
        if self.s.cascade:
            env += " GLIA_EVO_SOAK_CASCADE=1"
        lines = [f"soak seed {self.s.seed} ({env}), run folder {self.dir}",
                 f"planned faults: {self.planned}; not injected: {self.plan}"]
        lines += [s.describe() for s in self.sessions]
        return "\n".join(lines)

    def fail(self, message: str):
        raise SoakFailure(f"{message}\n{self.where()}")

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.fail(message)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    # --- driving sessions --------------------------------------------------------------------
    def run(self) -> None:
        """Start, inject faults, resume until the evaluation budget is used; then one clean
        resume that drains the tracking backlog."""
        max_sessions = len(self.plan) + 8
        while True:
            session = self._spawn()
            self._drive(session, inject=True)
            self._after(session)
            if self.used() >= self.s.evaluations:
                break
            stops = [e.get("reason") for e in session.events if e.get("event") == "stop"]
            self.check(session.ending is not None or "no new candidate" not in str(stops),
                       f"the search ran out of new programs at {self.used()} of "
                       f"{self.s.evaluations} (not a fault: the population is too small for "
                       f"this budget; Settings.capacity)")
            self.check(len(self.sessions) < max_sessions,
                       f"the budget of {self.s.evaluations} is still not used after "
                       f"{len(self.sessions)} sessions (used {self.used()})")
        session = self._spawn()
        self._drive(session, inject=False)
        self._after(session, final=True)

    def used(self) -> int:
        meta = read_meta(self.dir)
        return int(meta.get("evaluations", 0)) + int(meta.get("trials", 0))

    def _spawn(self) -> Session:
        if not (self.dir / "state.sqlite").exists():     # first, or killed before it had one
            args = ["run", str(self.cfg), "--out", str(self.dir), "--quiet"]
        else:
            args = ["resume", str(self.dir), "--quiet"]
        n = len(self.sessions) + 1
        out = open(self.root / f"session{n}.out", "w+")
        err = open(self.root / f"session{n}.err", "w+")
        events = self.dir / "events.jsonl"
        offset = size(events)
        pending = {c["id"] for c in read_candidates(self.dir).values()
                   if c["status"] == "pending"} if (self.dir / "state.sqlite").exists() else set()
        argv = [sys.executable, "-m", "glia_evo.cli", *args]
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        proc._soak_files = (out, err)        # closed in _after
        session = Session(n, argv, proc, offset, pending, EventTail(events, offset))
        self.sessions.append(session)
        return session

    def _arm(self, session: Session) -> Fault | None:
        """The next planned fault this session can take (its tracker dies only once)."""
        kinds = [k for k in self.plan if not (k == "tracker" and session.tracker_killed)]
        if not kinds:
            return None
        kind = kinds[0]
        # a sandbox job is killed only once a result is in: the first job of a fresh run is the
        # reference baseline, whose loss stops the run (test_reference_job_killed_...)
        lowest, highest = {"job": (1, 2), "tracker": (0, 2)}.get(
            kind, (0, 3) if kind in HARD else (1, 3))
        after = session.results + self.rng.randint(lowest, highest)
        delay = self.rng.uniform(0.2, 2.5) if after == 0 else self.rng.uniform(0.0, 0.6)
        return Fault(kind, after, delay)

    def _watch(self, session: Session) -> None:
        for e in session.tail.poll():
            session.events.append(e)
            kind = e.get("event")
            if kind == "start":
                session.start_seen = True
            elif kind in ("evaluation", "trial"):
                session.results += 1
            elif kind == "stop":
                session.stop_t = e.get("t")
        pid = session.proc.pid
        if session.proc.poll() is None:
            for child in children(pid):
                self.seen.add(child)

    def _drive(self, session: Session, inject: bool) -> None:
        proc = session.proc
        fault = self._arm(session) if inject else None
        while proc.poll() is None:
            if self.left() < 0:
                self.fail(f"deadline passed while session {session.number} was running")
            self._watch(session)
            if fault is not None and session.results >= fault.after:
                if fault.fire_at is None:
                    fault.fire_at = time.monotonic() + fault.delay_s
                if time.monotonic() >= fault.fire_at and self._inject(session, fault):
                    self.plan.remove(fault.kind)
                    session.faults.append(fault)
                    if fault.kind in ENDING:
                        session.ending = fault
                        fault = None
                        break
                    fault = self._arm(session)
            time.sleep(0.02)
        timeout = max(5.0, self.left())
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail(f"session {session.number} did not exit within {timeout:.0f} s "
                      f"(after {session.ending.kind if session.ending else 'no fault'})")
        self._watch(session)

    def _inject(self, session: Session, fault: Fault) -> bool:
        """Send the fault; False when it cannot be sent now (tried again at the next tick)."""
        pid = session.proc.pid
        kind = fault.kind
        if session.proc.poll() is not None:
            return False
        kids = children(pid)
        self.seen.update(kids)
        fault.sent_at = time.time()            # (before: a `stop` after it is not "late")
        if kind == "job":
            jobs = [k for k in kids if is_job(k)]
            if not jobs:
                return False
            victim = self.rng.choice(jobs)
            if not kill(victim, signal.SIGKILL):
                return False
            fault.detail = f"job {victim}"
        elif kind == "tracker":
            trackers = [k for k in kids if is_tracker(k)]
            if not trackers:
                return False
            if not kill(trackers[0], signal.SIGKILL):
                return False
            session.tracker_killed = True
            fault.detail = f"tracker {trackers[0]}"
        elif kind in GRACEFUL:
            # only while the engine runs (its handlers are installed once `start` is written);
            # a session already stopping on its own is left alone, the fault waits
            self._watch(session)
            if not session.start_seen or session.stop_t is not None:
                return False
            if kind == "sigterm":
                kill(pid, signal.SIGTERM)
            else:
                killpg(pid, signal.SIGINT)                # Ctrl-C: the whole foreground group
                if kind == "sigint2":
                    time.sleep(self.rng.uniform(0.05, 0.5))
                    fault.second_at = time.time()
                    killpg(pid, signal.SIGINT)
        elif kind == "kill_group":
            killpg(pid, signal.SIGKILL)
        elif kind == "kill_pid":
            orphans = [k for k in kids if is_tracker(k)]
            kill(pid, signal.SIGKILL)
            fault.detail = f"tracker {orphans} orphaned" if orphans else ""
        return True

    # --- after each session ------------------------------------------------------------------
    def _after(self, session: Session, final: bool = False) -> None:
        for fh in session.proc._soak_files:
            fh.seek(0)
        session.stdout = session.proc._soak_files[0].read()
        session.stderr = session.proc._soak_files[1].read()
        for fh in session.proc._soak_files:
            fh.close()
        session.rc = session.proc.returncode
        self.log(session.describe())
        ctx = f"session {session.number}: stdout:\n{session.stdout[-1500:]}\nstderr:\n" \
              f"{session.stderr[-3000:]}"
        self.check("Traceback" not in session.stderr, f"a traceback on stderr; {ctx}")
        self.check(session.rc in self._expected_rc(session),
                   f"exit status {session.rc}, expected one of "
                   f"{sorted(self._expected_rc(session))}; {ctx}")
        events = self.dir / "events.jsonl"
        hard = session.ending is not None and session.ending.kind in HARD
        self.check(hard or session.start_seen, f"session {session.number} wrote no `start` "
                   f"event; {ctx}")
        if hard and size(events) and not _ends_with_newline(events):
            self.cut_offsets.append(size(events) - 1)
        state = self.check_state(final=final)
        # nothing that finished is lost or changed, whatever happened
        for cid, before in self.snapshot.items():
            now = state["candidates"].get(cid)
            self.check(now is not None and _essence(now) == before,
                       f"candidate {cid} changed or vanished after session {session.number}: "
                       f"{before} -> {now and _essence(now)}")
        self.snapshot = {cid: _essence(c) for cid, c in state["candidates"].items()
                         if c["status"] != "pending"}
        pending = {cid for cid, c in state["candidates"].items() if c["status"] == "pending"}
        if session.rc == 0:
            # a graceful stop finishes what it started: no candidate proposed in this session
            # is left pending
            self.check(pending <= session.pending_before,
                       f"session {session.number} ended normally but left "
                       f"{sorted(pending - session.pending_before)} pending")
            self.check(session.stop_t is not None,
                       f"session {session.number} ended normally without a `stop` event")
            # the local MLflow store is always reachable: a session that closed normally with
            # its tracker alive has logged everything (nothing left in the backlog)
            if not session.tracker_killed:
                left = [e for e in session.events if e.get("event") == "tracking_backlog"]
                self.check(not left, f"session {session.number} closed normally with its "
                           f"tracker alive but left a tracking backlog: {left}; "
                           f"tracking.log:\n{_tail(self.dir / 'tracking.log', 1500)}")
        if final:
            self.check(session.rc == 0 and
                       f"evaluation budget of {self.s.evaluations} reached" in session.stdout,
                       f"the final resume should stop at once on the used budget; {ctx}")
            self.check(not session.results, "the final resume evaluated something")

    def _expected_rc(self, session: Session) -> set:
        f = session.ending
        if f is None:
            return {0}
        # A signal sent after the session's `stop` event is "late": the run is closing with the
        # default handlers back (tracker drain, interpreter exit). Then Ctrl-C is 130 (the
        # KeyboardInterrupt reaches the CLI) or -SIGINT (during the interpreter's own exit,
        # where Python has reset the handler), SIGTERM's default action is -SIGTERM, and a
        # SIGKILL may find the process already gone.
        def late(at):
            return session.stop_t is not None and at is not None and session.stop_t <= at
        if f.kind in HARD:
            return {-signal.SIGKILL} | ({0} if late(f.sent_at) else set())
        if f.kind == "sigterm":
            return {0} | ({-signal.SIGTERM} if late(f.sent_at) else set())
        if f.kind == "sigint":
            return {0} | ({130, -signal.SIGINT} if late(f.sent_at) else set())
        # sigint2: finished before the second Ctrl-C, or aborted by it
        return {0, 130} | ({-signal.SIGINT} if late(f.second_at) else set())

    # --- invariants --------------------------------------------------------------------------
    def check_state(self, final: bool = False) -> dict:
        """The SQLite state, read directly (read-only): counters, budget, population."""
        n = self.s.evaluations
        meta = read_meta(self.dir)
        cands = read_candidates(self.dir)
        c = self.check
        evaluations = int(meta.get("evaluations", 0))
        trials = int(meta.get("trials", 0))
        if not cands:                     # killed before the seeds were stored
            c(not final and evaluations == trials == 0, f"no candidate in the state; {meta}")
            return {"meta": meta, "candidates": cands, "counted": set()}
        counted = {cid for cid, x in cands.items()
                   if x["status"] != "pending" and x["operator"] not in DERIVED}
        # evaluations counted once: the counter is exactly the finished evaluated candidates
        c(evaluations == len(counted),
          f"meta evaluations {evaluations} != {len(counted)} finished evaluated candidates")
        # the budget: candidates and tuning trials together, never above it
        c(evaluations + trials <= n, f"{evaluations} evaluations + {trials} trials > budget {n}")
        if final:
            c(evaluations + trials == n,
              f"{evaluations} evaluations + {trials} trials != budget {n} at the end")
        cfg = meta.get("islands.config") or {}
        islands, capacity = cfg.get("num_islands"), cfg.get("capacity")
        c(islands == 2 and capacity == self.s.capacity, f"islands.config {cfg}")
        seq = {cid: x["_seq"] for cid, x in cands.items()}
        members = collections.defaultdict(list)
        for cid, x in cands.items():
            where = f"candidate {cid} ({x['operator']}, {x['status']})"
            c(x["status"] in STATUSES, f"{where}: unknown status")
            # the indexed columns mirror the JSON record
            c(x["_row"] == (x["island"], x["status"], x["operator"], _num(x["fitness"]),
                            x["code_hash"]), f"{where}: columns {x['_row']} != record")
            c(0 <= x["island"] < islands, f"{where}: island {x['island']}")
            for p in x["parents"]:
                c(p in cands and seq[p] < seq[cid], f"{where}: parent {p} missing or younger")
            if x["status"] == "pending":
                c(not x["_member"] and x["evaluated_at"] is None,
                  f"{where}: pending but a member or evaluated")
            else:
                c(x["evaluated_at"] is not None and isinstance(x["fitness"], (int, float)),
                  f"{where}: finished without evaluated_at / fitness")
            if x["status"] != "ok":
                c(x["fitness"] == 0.0, f"{where}: failed with fitness {x['fitness']}")
            if x["operator"] == "seed":
                c(not x["parents"], f"{where}: a seed with parents")
            elif x["operator"] == "migration":
                [p] = x["parents"]
                src = cands[p]
                c(x["status"] == "ok" and src["status"] == "ok"
                  and src["code_hash"] == x["code_hash"] and src["fitness"] == x["fitness"]
                  and x["island"] == (src["island"] + 1) % islands,
                  f"{where}: not a copy of {p} on the next island")
            elif x["operator"] == "tune":
                [p] = x["parents"]
                c(x["status"] == "ok" and cands[p]["status"] == "ok"
                  and cands[p]["code_hash"] == x["code_hash"]
                  and x["fitness"] > cands[p]["fitness"]
                  and x["code_hash"] in (meta.get("tuned_hashes") or []),
                  f"{where}: not a better tuned copy of {p}")
            else:
                c(x["parents"], f"{where}: a proposal without a parent")
            if x["_member"]:
                members[x["island"]].append(x)
        # duplicate rejection: a proposal's code is new to the whole store
        proposals = [x for x in cands.values() if x["operator"] not in DERIVED + ("seed",)]
        hashes = collections.Counter(x["code_hash"] for x in proposals)
        seed_hashes = {x["code_hash"] for x in cands.values() if x["operator"] == "seed"}
        dup = [h for h, k in hashes.items() if k > 1 or h in seed_hashes]
        c(not dup, f"proposals share a code hash: {dup}")
        c(int(meta.get("proposals", 0)) >= len(proposals),
          f"meta proposals {meta.get('proposals')} < {len(proposals)} proposals stored")
        for island in range(islands):
            got = members[island]
            where = f"island {island} members {[m['id'] for m in got]}"
            c(len(got) <= capacity, f"{where}: more than {capacity}")
            c(all(m["status"] == "ok" and math.isfinite(m["fitness"]) and m["fitness"] > 0
                  for m in got), f"{where}: a member is not viable")
            c(len({m["code_hash"] for m in got}) == len(got), f"{where}: two share a code hash")
            # elitism: the island's best candidate ever is (tied with) its best member
            viable = [x["fitness"] for x in cands.values() if x["island"] == island
                      and x["status"] == "ok" and x["fitness"] > 0]
            if viable:
                c(got and max(m["fitness"] for m in got) == max(viable),
                  f"{where}: best member below the island's best candidate {max(viable)}")
        ids = [int(cid[1:]) for cid in cands if cid[1:].isdigit()]
        c(int(meta.get("store.id_counter", 0)) >= max(ids, default=0),
          f"id counter {meta.get('store.id_counter')} behind the ids")
        return {"meta": meta, "candidates": cands, "counted": counted}

    def check_final(self) -> dict:
        """Every invariant, once the last session has drained the tracking backlog."""
        state = self.check_state(final=True)
        self.check_events(state)
        self.check_journal(state)
        self.check_processes()
        backlog = sorted(p.name for p in (self.dir / "tracking_backlog").glob("*.json"))
        self.check(not backlog, f"tracking backlog not drained: {backlog[:10]}")
        self.check_mlflow(state)
        return state

    def check_events(self, state: dict) -> None:
        """Every line of events.jsonl parses, except a line cut by a hard kill (at most one per
        hard kill, exactly where that session's output ended); results are recorded once."""
        path = self.dir / "events.jsonl"
        data = path.read_bytes()
        events, pos, bad = [], 0, []
        for line in data.split(b"\n"):
            end = pos + len(line)
            if line.strip():
                try:
                    events.append(json.loads(line))
                except ValueError:
                    if not any(pos <= off <= end for off in self.cut_offsets):
                        bad.append((pos, line[:120]))
            pos = end + 1
        self.check(not bad, f"events.jsonl has unreadable lines not cut by a hard kill: {bad}")
        hard = sum(1 for s in self.sessions if s.ending and s.ending.kind in HARD)
        cands, counted = state["candidates"], state["counted"]
        evals = [e for e in events if e.get("event") == "evaluation"]
        ids = [e["candidate"] for e in evals]
        twice = [k for k, v in collections.Counter(ids).items() if v > 1]
        self.check(not twice, f"candidates evaluated (recorded) twice: {twice}")
        for e in evals:
            x = cands.get(e["candidate"])
            self.check(x is not None and e["candidate"] in counted and x["status"] == e["status"]
                       and x["fitness"] == e["fitness"],
                       f"evaluation event {e} does not match the state: {x and _essence(x)}")
        # a result committed just before a hard kill misses its event (written after the
        # commit) until the next session writes it, marked `recovered`: one per hard kill at most
        silent = sorted(counted - set(ids))
        self.check(not silent, f"evaluated candidates without an evaluation event: {silent}")
        recovered = [e["candidate"] for e in evals if e.get("recovered")]
        self.check(len(recovered) <= hard, f"{len(recovered)} evaluation events recovered "
                   f"({recovered}) but only {hard} hard kills")
        trials = [(e["candidate"], e["trial"]) for e in events if e.get("event") == "trial"]
        twice = [k for k, v in collections.Counter(trials).items() if v > 1]
        self.check(not twice, f"tuning trials recorded twice: {twice}")

    def check_journal(self, state: dict) -> None:
        """The Optuna journal against the trials counter: every trial the engine told (asked
        and told by the same session) is counted in the budget, exactly once; the trials that
        were running when a session died are failed by the next one and not counted."""
        path = self.dir / "optuna.journal"
        meta, cands = state["meta"], state["candidates"]
        trials = int(meta.get("trials", 0))
        if not path.exists():
            self.check(trials == 0, f"{trials} trials counted but no optuna.journal")
            return
        # replayed as Optuna does (optuna/storages/journal/_storage.py): a second create of a
        # study (a resumed Tuner) is ignored, and so is an update of a finished trial
        studies, state, started, finished, study_of, value = [], {}, {}, {}, {}, {}
        lines = path.read_bytes().split(b"\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                op = json.loads(line)
            except ValueError:
                self.check(i == len(lines) - 1, f"optuna.journal line {i + 1} unreadable")
                continue
            code, worker = op["op_code"], op.get("worker_id")
            if code == OP_CREATE_STUDY:
                if op["study_name"] not in studies:
                    studies.append(op["study_name"])
            elif code == OP_CREATE_TRIAL:
                tid = len(study_of)
                study_of[tid] = studies[op["study_id"]]
                state[tid] = op.get("state", RUNNING)
                if state[tid] == RUNNING:
                    started[tid] = worker
            elif code == OP_SET_TRIAL_STATE:
                tid = op["trial_id"]
                if tid not in state or state[tid] in (COMPLETE, FAIL):
                    continue
                if op["state"] == RUNNING:
                    if state[tid] != RUNNING:
                        started[tid] = worker
                elif op["state"] in (COMPLETE, FAIL):
                    finished[tid] = worker
                    if op["state"] == COMPLETE:
                        value[tid] = op["values"][0]
                state[tid] = op["state"]
        # every finished trial was told by the engine: a trial running at a kill is run again
        # by the next session with the same knobs and told there (glia_evo/tuning_runs.py),
        # never failed unevaluated; a trial whose knob set was already evaluated for the same
        # code is told its known result without a job: told, not counted (tuning_stats.reused)
        told = list(finished)
        reused = int((meta.get("tuning_stats") or {}).get("reused", 0))
        self.check(len(told) == trials + reused,
                   f"{len(told)} trials told by the engine in optuna.journal, but {trials} "
                   f"counted in the state's budget and {reused} reused (a trial told but not "
                   f"counted was evaluated outside the budget)")
        tuned = set(meta.get("tuned_hashes") or [])
        per_study = collections.Counter(study_of[t] for t in finished)
        for name, k in per_study.items():
            self.check(name in cands and cands[name]["code_hash"] in tuned,
                       f"a study for {name}, which was not chosen for tuning")
            self.check(k <= 3, f"study {name} finished {k} trials, more than tuning.trials = 3")
        # a finished study whose best trial beats the program has given exactly one `tune`
        # child with that trial's fitness (README, Tuning); one that did not, none
        active = meta.get("tuning_active")
        self.check(not active or per_study[active] < 3,
                   f"study {active} is still the active one with all its trials finished: it "
                   f"can never close, and no other program is tuned for the rest of the run")
        for name in studies:
            if active == name or per_study[name] < 3:
                continue                         # still running when the budget ran out
            best = max((v for t, v in value.items() if study_of[t] == name), default=None)
            kids = [x for x in cands.values() if x["operator"] == "tune" and x["parents"] == [name]]
            if best is not None and best > cands[name]["fitness"]:
                self.check(len(kids) == 1 and kids[0]["fitness"] == best,
                           f"study {name}: best trial {best} beats the program "
                           f"({cands[name]['fitness']}) but the tune children are "
                           f"{[(k['id'], k['fitness']) for k in kids]}")
            else:
                self.check(not kids, f"study {name} improved nothing but has tune children "
                           f"{[k['id'] for k in kids]}")

    def check_processes(self, wait_s: float = 15.0) -> None:
        """No process of any session is left behind (sandbox jobs, trackers, orphans)."""
        end = time.monotonic() + min(wait_s, max(1.0, self.left()))
        left = [p for p in self.seen if alive(p)]
        while left and time.monotonic() < end:
            time.sleep(0.1)
            left = [p for p in left if alive(p)]
        self.check(not left, "processes left behind: " + "; ".join(
            f"{p} {cmdline(p)[:120]}" for p in left))

    def check_mlflow(self, state: dict) -> None:
        """One parent run; exactly one nested run per finished candidate, under it, with the
        state's fitness, status and parents; nothing else."""
        from mlflow.tracking import MlflowClient
        cands = state["candidates"]
        finished = {cid: x for cid, x in cands.items() if x["status"] != "pending"}
        client = MlflowClient(tracking_uri=f"sqlite:///{(self.dir / 'mlflow.db').resolve()}")
        exp = client.get_experiment_by_name("glia-evo")
        self.check(exp is not None, "no glia-evo experiment in MLflow")
        runs, token = [], None
        while True:
            page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                break
        parents = [r for r in runs if r.data.tags.get("glia.kind") == "search"]
        self.check(len(parents) == 1, f"{len(parents)} parent runs: "
                   f"{[(r.info.run_id, r.info.status) for r in parents]}")
        parent = parents[0]
        marker = (self.dir / "mlflow_parent_run_id").read_text().strip()
        self.check(parent.info.run_id == marker, f"parent run {parent.info.run_id} != {marker}")
        self.check(parent.info.status == "FINISHED", f"parent run {parent.info.status}")
        nested = [r for r in runs if r.data.tags.get("glia.kind") == "candidate"]
        other = [(r.info.run_id, r.info.run_name) for r in runs
                 if r.data.tags.get("glia.kind") not in ("search", "candidate")]
        self.check(not other, f"MLflow runs that are neither the search nor a candidate: {other}")
        by_id = collections.Counter(r.data.tags.get("glia.candidate") for r in nested)
        twice = sorted(k for k, v in by_id.items() if v > 1)
        self.check(not twice, f"candidates logged to MLflow more than once: {twice}")
        missing = sorted(set(finished) - set(by_id))
        extra = sorted(set(by_id) - set(finished))
        self.check(not missing and not extra, f"MLflow vs state: missing {missing}, "
                   f"not finished in the state {extra}")
        for r in nested:
            cid = r.data.tags["glia.candidate"]
            x = finished[cid]
            t, m, p = r.data.tags, r.data.metrics, r.data.params
            self.check(t.get("mlflow.parentRunId") == marker,
                       f"{cid}: nested under {t.get('mlflow.parentRunId')}, not {marker}")
            self.check(r.info.run_name == cid, f"{cid}: run name {r.info.run_name}")
            self.check(m.get("fitness") == x["fitness"],
                       f"{cid}: MLflow fitness {m.get('fitness')} != state {x['fitness']}")
            self.check(t.get("glia.status") == x["status"] and
                       t.get("glia.operator") == x["operator"] and
                       t.get("glia.parents") == ",".join(x["parents"]) and
                       p.get("island") == str(x["island"]) and
                       p.get("operator") == x["operator"],
                       f"{cid}: MLflow tags/params {t} {p} do not match the state "
                       f"{_essence(x)}")
            self.check(r.info.status == ("FINISHED" if x["status"] == "ok" else "FAILED"),
                       f"{cid}: MLflow run status {r.info.status} for a {x['status']} candidate")
        best = max((x["fitness"] for x in finished.values() if x["status"] == "ok"), default=None)
        if best is not None:
            self.check(parent.data.metrics.get("best_fitness") == best,
                       f"parent best_fitness {parent.data.metrics.get('best_fitness')} != "
                       f"state best {best}")

    def cleanup(self) -> None:
        """SIGKILL everything the soak started or saw (sessions, their groups, orphans)."""
        for s in self.sessions:
            if s.proc.poll() is None:
                killpg(s.proc.pid, signal.SIGKILL)
                try:
                    s.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            for fh in getattr(s.proc, "_soak_files", ()):
                if not fh.closed:
                    fh.close()
        for pid in self.seen:
            if alive(pid):
                kill(pid, signal.SIGKILL)


# --- reading the state ------------------------------------------------------------------------
def _connect(run_dir: Path) -> sqlite3.Connection:
    uri = f"file:{(run_dir / 'state.sqlite').resolve()}?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=30)


def read_meta(run_dir: Path) -> dict:
    if not (run_dir / "state.sqlite").exists():
        return {}
    conn = _connect(run_dir)
    try:
        return {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
    except sqlite3.OperationalError:          # a run killed before it created its tables
        return {}
    finally:
        conn.close()


def read_candidates(run_dir: Path) -> dict:
    """id -> the JSON record, plus `_seq`, `_member` and `_row` (the indexed columns)."""
    if not (run_dir / "state.sqlite").exists():
        return {}
    conn = _connect(run_dir)
    try:
        rows = conn.execute("SELECT seq, id, island, status, operator, fitness, code_hash, "
                            "member, data FROM candidates ORDER BY seq").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()
    out = {}
    for seq, cid, island, status, operator, fitness, h, member, data in rows:
        x = json.loads(data)
        assert x["id"] == cid, (x["id"], cid)
        x["_seq"], x["_member"] = seq, bool(member)
        x["_row"] = (island, status, operator, fitness, h)
        out[cid] = x
    return out


def _essence(x: dict) -> tuple:
    return (x["status"], x["fitness"], x["island"], x["operator"], tuple(x["parents"]),
            x["code_hash"])


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else 0.0


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _tail(path: Path, n: int) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# --- reproductions: a SIGKILL at an exact line --------------------------------------------------

DRIVER = """
import os, signal, sys
from glia_evo import cli

def die():
    # what a SIGKILL from outside at this very line does (the run and its tracker)
    os.killpg(0, signal.SIGKILL)

{patch}
sys.argv = ["glia-evo", "run", {cfg!r}, "--out", {out!r}, "--quiet"]
sys.exit(cli.main())
"""


def repro_config(root: Path, evaluations: int, seed: int = 0, tuning: bool = False,
                 tracking: bool = False, seeds: list | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "repro.toml"
    search = {"migration_interval": 5, **({"seeds": seeds} if seeds else {})}
    cfg.write_text(small_run_toml("repro", evaluations, seed, search=search,
                                  tuning={"enabled": tuning, "trials": 3},
                                  tracking={"enabled": tracking}))
    return cfg


def killed_at(root: Path, patch: str, evaluations: int, **config) -> Path:
    """`glia-evo run` in a driver process where `patch` (Python source, may call `die()`)
    SIGKILLs the run's process group at an exact line, then `glia-evo resume` to the end.
    Returns the run folder."""
    import textwrap
    cfg = repro_config(root, evaluations, **config)
    out = root / "run"
    driver = root / "driver.py"
    driver.write_text(DRIVER.format(patch=textwrap.dedent(patch), cfg=str(cfg), out=str(out)))
    proc = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True,
                          timeout=300, start_new_session=True)
    # (RuntimeError, not AssertionError: a reproduction that did not reproduce is no xfail)
    if proc.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the driver was not killed where planned (exit {proc.returncode})"
                           f": {proc.stdout[-500:]} {proc.stderr[-2000:]}")
    res = subprocess.run([sys.executable, "-m", "glia_evo.cli", "resume", str(out), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise RuntimeError(f"resume failed ({res.returncode}): {res.stderr[-2000:]}")
    return out


def state_of(run_dir: Path) -> dict:
    cands = read_candidates(run_dir)
    return {"meta": read_meta(run_dir), "candidates": cands,
            "counted": {cid for cid, x in cands.items()
                        if x["status"] != "pending" and x["operator"] not in DERIVED}}
