"""MLflow tracking off the search's critical path, with a persisted backlog (DESIGN §6).

One parent run per search and one nested run per candidate. The engine only *enqueues*: each
record is first written as a JSON file in `<run>/tracking_backlog/` and then logged by a separate
process (`python -m glia_evo.tracking`), which deletes the file once MLflow has it. A process, not
a thread: the engine forks sandbox workers, and a fork taken while a thread is inside MLflow's
imports or locks can leave the child waiting forever on a lock nobody will release. If the
tracking server is unreachable the process retries with back-off while the search goes on; files
left behind by a crash or an outage are logged on the next start, so nothing is lost. Resume
continues the same parent run.

Off the search's CPU budget (issue 13): the logging process runs at the lowest scheduling
priority (nice 19), so it only gets the CPU the search leaves; a new run's SQLite store is a copy
of an empty, already migrated template kept in the user cache (`glia_evo.evaluation.baseline_cache.cache_dir`,
`mlflow/empty-<mlflow version>.db`, made once per MLflow version) instead of MLflow creating its
schema again (3 s of CPU); MLflow's own telemetry is off. At exit the engine waits for the backlog
at most `GLIA_EVO_TRACKING_DRAIN_S` seconds (default 2): what is left stays in
`tracking_backlog/` and is logged by the next session, or now by `glia-evo track DIR`
(`drain()`).
"""
from __future__ import annotations

import difflib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .lineage import lineage_html, lineage_json
from .run_folder import RunFolder

log = logging.getLogger("glia_evo.tracking")
EXPERIMENT = "glia-evo"
PARENT_RUN_FILE = "mlflow_parent_run_id"
SEARCH_ID_FILE = "mlflow_search_id"
EXPERIMENT_KIND = "mlflow.experimentKind"     # MLflow 3's experiment tag: GenAI or model training


def run_route(experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI, relative to the UI's address (MLflow 3's routes), in its
    "Model training" view (MLflow 3 otherwise shows a new browser its GenAI pages)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def default_uri(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


def metric_key(name: str) -> str:
    """MLflow keys allow [A-Za-z0-9_-. :/]; 'glia#3' becomes 'glia/3'."""
    return "".join(ch if ch.isalnum() or ch in "_-. :/" else "/" for ch in name)


LINEAGE_EVERY = 10        # evaluations between the lineage page's updates during a run
DRAIN_ENV = "GLIA_EVO_TRACKING_DRAIN_S"    # the most the engine waits for the backlog at exit
DEFAULT_DRAIN_S = 2.0
NICE = 19                                 # the logging process's scheduling priority
STOP_FILE = "STOP"
LOCK_FILE = ".lock"
STATUS_FILE = "tracking_status.json"
DIRECT_ENV = "GLIA_EVO_TRACKING_DIRECT"   # 0: every candidate through MLflow's client


class Tracker:
    """The engine's side: writes records to the backlog and runs the logging process."""

    def __init__(self, run_dir: Path, tracking_uri: str | None = None, run_name: str = "search",
                 retry_s: float = 2.0):
        self.run_dir = run_dir
        self.uri = tracking_uri or default_uri(run_dir)
        self.backlog = RunFolder(run_dir).backlog
        self.backlog.mkdir(exist_ok=True)
        (self.backlog / STOP_FILE).unlink(missing_ok=True)
        (run_dir / STATUS_FILE).unlink(missing_ok=True)     # a previous session's verdict
        self._seq = max((int(p.stem) for p in self.backlog.glob("*.json")), default=0)
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "glia_evo.tracking", str(run_dir), self.uri, run_name,
             str(retry_s)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(RunFolder(run_dir).tracking_log, "a"), start_new_session=False)
        try:      # at once, before its imports run (main() lowers it too, for other callers)
            os.setpriority(os.PRIO_PROCESS, self.proc.pid, NICE)
        except OSError:
            pass

    def enqueue(self, kind: str, **payload) -> None:
        with self._lock:
            self._seq += 1
            path = self.backlog / f"{self._seq:09d}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"kind": kind, **payload}, default=str))
            os.replace(tmp, path)

    def start_search(self, config: dict) -> None:
        self.enqueue("start", config=config)
        self.enqueue("sync")        # candidates a kill left unlogged (committed, not enqueued)

    def candidate(self, cand: dict, parent_source: str | None) -> None:
        self.enqueue("candidate", candidate=cand, parent_source=parent_source)

    def lineage(self, leaderboard: list[dict], candidates: list[dict]) -> None:
        """The leaderboard and lineage page as the run stands (logged every LINEAGE_EVERY
        evaluations, so the UI shows them during the run, not only when a session ends)."""
        self.enqueue("lineage", leaderboard=leaderboard, candidates=candidates)

    def finish_search(self, leaderboard: list[dict], candidates: list[dict], best: dict | None,
                      status: str = "FINISHED") -> None:
        self.enqueue("finish", leaderboard=leaderboard, candidates=candidates, best=best,
                     status=status)

    def files(self, paths: list[Path], folder: str) -> None:
        self.enqueue("files", paths=[str(p.resolve()) for p in paths], folder=folder)

    def pending(self) -> int:
        return len(list(self.backlog.glob("*.json")))

    def status(self) -> dict:
        try:
            return json.loads((self.run_dir / STATUS_FILE).read_text())
        except (OSError, ValueError):
            return {}

    @property
    def last_error(self) -> str | None:
        return self.status().get("last_error")

    def close(self, timeout_s: float = 60.0) -> None:
        """Let the process drain the backlog for up to `timeout_s`, and never more than
        `drain_seconds()` (less if the server is unreachable); whatever is left is logged on
        the next start, or by `glia-evo track DIR`."""
        (self.backlog / STOP_FILE).write_text("stop")
        deadline = time.monotonic() + min(timeout_s, drain_seconds())
        while self.proc.poll() is None and time.monotonic() < deadline:
            if self.status().get("failing"):
                break
            time.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        left = self.pending()
        if left:
            print(f"glia-evo: tracking: {left} record(s) not logged to MLflow yet; the next "
                  f"session logs them, or now: `glia-evo track {self.run_dir}`",
                  file=sys.stderr, flush=True)


def drain_seconds() -> float:
    """How long the engine waits for the backlog at exit (GLIA_EVO_TRACKING_DRAIN_S)."""
    text = os.environ.get(DRAIN_ENV, "").strip()
    try:
        value = float(text) if text else DEFAULT_DRAIN_S
    except ValueError:
        value = DEFAULT_DRAIN_S
    return value if value >= 0 else DEFAULT_DRAIN_S


def backlog_size(run_dir: Path) -> int:
    return len(list(RunFolder(run_dir).backlog.glob("*.json")))


def drain(run_dir: Path, tracking_uri: str | None = None, run_name: str = "search",
          retry_s: float = 2.0, attempts: int = 3) -> int:
    """Log a run's backlog now, in this process (`glia-evo track DIR`): waits for a logging
    process still draining it (the backlog's lock), stops after `attempts` failed rounds.
    Returns how many records are left (0: all logged)."""
    run_dir = Path(run_dir)
    backlog = RunFolder(run_dir).backlog
    if not backlog.is_dir():
        return 0
    proc = TrackerProcess(run_dir, tracking_uri or default_uri(run_dir), run_name, retry_s,
                          max_failures=attempts)
    (backlog / STOP_FILE).write_text("stop")
    try:
        proc.loop()
    finally:
        (backlog / STOP_FILE).unlink(missing_ok=True)
    return backlog_size(run_dir)


_FAST_SQLITE = False


def _fast_sqlite() -> None:
    """SQLite without an fsync per commit (synchronous=OFF): a killed process still leaves a
    consistent database; only an OS crash could lose the last records, which the backlog and
    the `sync` record replay anyway."""
    global _FAST_SQLITE
    if _FAST_SQLITE:
        return
    try:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
    except ImportError:
        return
    _FAST_SQLITE = True

    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_connection, _record):
        if type(dbapi_connection).__module__.startswith("sqlite3"):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.close()


def _template_path() -> Path | None:
    """The empty, migrated MLflow store of this MLflow version in the user cache."""
    from .evaluation.baseline_cache import cache_dir
    base = cache_dir()
    if base is None:
        return None
    try:
        from importlib.metadata import version
        tag = version("mlflow")
    except Exception:
        return None
    return base / "mlflow" / f"empty-{''.join(c if c.isalnum() or c in '.-' else '_' for c in tag)}.db"


class TrackerProcess:
    """The logging process: replays the backlog into MLflow, in order, until told to stop."""

    def __init__(self, run_dir: Path, uri: str, run_name: str, retry_s: float,
                 max_failures: int | None = None):
        self.max_failures = max_failures      # None: retry for ever (the engine's process)
        self.run_dir = run_dir
        self.uri = uri
        self.run_name = run_name
        self.retry_s = retry_s
        self.backlog = RunFolder(run_dir).backlog
        self._client = None
        self._known: dict | None = None
        self._direct = None       # DirectRuns, False (not possible), None (not decided yet)
        self.parent_run_id: str | None = None
        self.errors = 0

    def _status(self, failing: bool, error: str | None) -> None:
        path = self.run_dir / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"failing": failing, "last_error": error,
                                   "errors": self.errors}))
        os.replace(tmp, path)

    def loop(self) -> None:
        parent = os.getppid()
        self._one_at_a_time()
        delay = self.retry_s
        while True:
            files = sorted(self.backlog.glob("*.json"))
            stop = (self.backlog / STOP_FILE).exists() or os.getppid() != parent
            if not files:
                if stop:
                    return
                time.sleep(0.2)
                continue
            try:
                self._ensure_client()
                for path in files:
                    self._log(json.loads(path.read_text()))
                    path.unlink()
                delay = self.retry_s
                self._status(False, None)
            except Exception as exc:   # unreachable server, locked db...: retry later
                self.errors += 1
                self._client = None
                if self._direct:
                    self._direct.close()
                self._direct = None
                error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("MLflow tracking failed (%s); will retry", error)
                self._status(True, error)
                if stop or (self.max_failures is not None and self.errors >= self.max_failures):
                    return
                time.sleep(delay)
                delay = min(delay * 2, 60.0)

    def _one_at_a_time(self) -> None:
        """Hold the backlog's lock for life (the kernel drops it when the process dies). A
        tracker orphaned by a killed run keeps draining until it is done; the next session's
        waits, so no record is logged twice at once."""
        import fcntl
        self._lock_file = open(self.backlog / LOCK_FILE, "a")
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)

    def _init_sqlite_store(self) -> None:
        """Give the run folder its MLflow database: a copy of the empty, migrated template in
        the user cache (made here the first time), else one MLflow creates. Either way it is
        made under a temporary name and renamed when complete: a kill halfway through MLflow's
        schema migrations would leave a database MLflow can never open again ("duplicate
        column name")."""
        db = RunFolder(self.run_dir).mlflow_db
        if not self.uri.startswith("sqlite:") or self.uri != default_uri(self.run_dir) \
                or db.exists():
            return
        tmp = RunFolder(self.run_dir).path / (RunFolder.MLFLOW_DB + ".init")
        tmp.unlink(missing_ok=True)
        template = _template_path()
        if template is not None:
            try:
                if not template.exists():
                    template.parent.mkdir(parents=True, exist_ok=True)
                    part = template.with_name(f".{template.name}.{os.getpid()}.tmp")
                    part.unlink(missing_ok=True)
                    from mlflow.tracking import MlflowClient
                    MlflowClient(tracking_uri=f"sqlite:///{part.resolve()}").search_experiments()
                    os.replace(part, template)
                import shutil
                shutil.copyfile(template, tmp)
                os.replace(tmp, db)
                return
            except OSError as exc:      # an unwritable cache: MLflow makes the store here
                log.warning("no MLflow store template (%s); creating the schema", exc)
                tmp.unlink(missing_ok=True)
        from mlflow.tracking import MlflowClient
        MlflowClient(tracking_uri=f"sqlite:///{tmp.resolve()}").search_experiments()
        os.replace(tmp, db)

    def _ensure_client(self) -> None:
        if self._client is not None:
            return
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        # this thread retries with its own back-off: MLflow's (minutes per call) would only
        # delay noticing an outage
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        _fast_sqlite()
        from mlflow.tracking import MlflowClient
        self._init_sqlite_store()
        client = MlflowClient(tracking_uri=self.uri)
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            location = None
            if self.uri.startswith("sqlite:"):
                location = RunFolder(self.run_dir).mlflow_artifacts.resolve().as_uri()
            # a model-training experiment: MLflow 3 opens it on its runs, not the GenAI pages
            exp_id = client.create_experiment(EXPERIMENT, artifact_location=location,
                                              tags={EXPERIMENT_KIND: "custom_model_development"})
        else:
            exp_id = exp.experiment_id
        self._client = client
        self._experiment_id = exp_id
        marker = self.run_dir / PARENT_RUN_FILE
        if marker.exists():
            self.parent_run_id = marker.read_text().strip()

    def _parent(self) -> str:
        """The search's parent run. Its id is written after MLflow creates it, so a kill in
        between is covered by a search id written first and tagged on the run: the next
        attempt finds that run instead of creating a second parent."""
        if self.parent_run_id is None:
            search_id = self._search_id()
            found = self._client.search_runs(
                [self._experiment_id], filter_string=f"tags.`glia.search_id` = '{search_id}'",
                max_results=1)
            run = found[0] if found else self._client.create_run(
                self._experiment_id, run_name=self.run_name,
                tags={"glia.kind": "search", "glia.search_id": search_id})
            self.parent_run_id = run.info.run_id
            _write_atomically(self.run_dir / PARENT_RUN_FILE, self.parent_run_id)
        return self.parent_run_id

    def _search_id(self) -> str:
        path = self.run_dir / SEARCH_ID_FILE
        if not path.exists():
            import uuid
            _write_atomically(path, uuid.uuid4().hex)
        return path.read_text().strip()

    def _log(self, item: dict) -> None:
        kind = item["kind"]
        if kind == "start":
            self._log_start(item["config"])
        elif kind == "candidate":
            self._log_candidate(item["candidate"], item.get("parent_source"))
        elif kind == "finish":
            self._log_finish(item)
        elif kind == "lineage":
            self._log_lineage(item)
        elif kind == "sync":
            self._log_sync()
        elif kind == "files":
            for path in item["paths"]:
                if Path(path).exists():
                    self._client.log_artifact(self._parent(), path, item.get("folder"))

    def _log_start(self, config: dict) -> None:
        from mlflow.entities import Param
        client, parent = self._client, self._parent()
        run = client.get_run(parent)
        if run.info.status != "RUNNING":          # a resumed search continues its parent run
            client.update_run(parent, status="RUNNING")
        existing = run.data.params
        params = [Param(k, str(v)[:6000]) for k, v in _flatten(config).items()
                  if k not in existing]
        for i in range(0, len(params), 100):
            client.log_batch(parent, params=params[i:i + 100])
        client.log_text(parent, json.dumps(config, indent=2, default=str), "config.json")

    def _log_candidate(self, cand: dict, parent_source: str | None) -> None:
        from mlflow.entities import Metric, Param, RunTag
        client = self._client
        # idempotent: a record replayed after a crash finds its run instead of adding one
        known = self._candidate_runs()
        found = [client.get_run(known[cand["id"]])] if cand["id"] in known else []
        parents = cand.get("parents") or []
        glia_tags = {"glia.parent": parents[0] if parents else "",
                     "glia.parents": ",".join(parents), "glia.status": cand["status"],
                     "glia.operator": cand["operator"]}
        new_tags = {"mlflow.parentRunId": self._parent(), "glia.candidate": cand["id"],
                    "glia.kind": "candidate", **glia_tags}
        params = {"island": str(cand["island"]), "generation": str(cand["generation"]),
                  "operator": cand["operator"], "parents": ",".join(parents),
                  "model": str(cand.get("model") or "offline")}
        metrics = {"fitness": float(cand["fitness"])}
        for scen, values in (cand.get("metrics") or {}).items():
            for k, v in values.items():
                if isinstance(v, (int, float)) and len(metrics) < 900:
                    metrics.setdefault(metric_key(f"{scen}/{k}"), float(v))
        status = "FINISHED" if cand["status"] == "ok" else "FAILED"
        files = self._candidate_files(cand, parent_source)
        direct = None if found else self._direct_store()
        if direct is not None:      # the run folder's own SQLite store: one transaction
            known[cand["id"]] = direct.add_run(cand["id"], {**new_tags}, params, metrics,
                                               status, files)
            return
        info = found[0].info if found else client.create_run(
            self._experiment_id, run_name=cand["id"], tags=new_tags).info
        run_id = info.run_id
        known[cand["id"]] = run_id
        now = int(time.time() * 1000)
        # a new run got its tags as it was created; a replayed record's run is tagged again
        tags = [RunTag(k, v) for k, v in glia_tags.items()] if found else []
        params_ = [Param(k, v) for k, v in params.items()
                   if not found or k not in found[0].data.params]
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                         params=params_, tags=tags)
        local = _local_artifact_dir(info.artifact_uri)
        if local is not None:       # a local store: the files go where MLflow would put them,
            _write_files(local, files)                     # without its repository lookups
        else:
            with tempfile.TemporaryDirectory() as tmp:     # one upload instead of five
                for name, text in files.items():
                    Path(tmp, name).write_text(text, encoding="utf-8")
                client.log_artifacts(run_id, tmp)
        client.set_terminated(run_id, status)

    def _candidate_files(self, cand: dict, parent_source: str | None) -> dict[str, str]:
        report = {k: cand.get(k) for k in ("id", "status", "fitness", "error", "metrics",
                                           "parents", "operator", "island", "generation")}
        report["diagnostics"] = (cand.get("extra") or {}).get("diagnostics")
        diff = "".join(difflib.unified_diff((parent_source or "").splitlines(True),
                                            cand["source"].splitlines(True),
                                            "parent/program.py", "program.py"))
        files = {"program.py": cand["source"], "reasoning.md": cand.get("reasoning") or "",
                 "rationale.md": cand.get("rationale") or "", "diff.txt": diff,
                 "report.json": json.dumps(report, indent=2, default=str)}
        research = _experiments_text(self.run_dir, cand)
        if research:                # a child of a research turn: its experiments (issue 18)
            files["experiments.md"] = research
        return files

    def _direct_store(self) -> "DirectRuns | None":
        """The run folder's own MLflow SQLite store, written directly (None: use MLflow's
        client): only the default store (`<run>/mlflow.db`), only with MLflow's schema as
        this module knows it, only with local artifacts."""
        if self._direct is False:
            return None
        if self._direct is None:
            self._direct = False
            if self.uri == default_uri(self.run_dir) and os.environ.get(DIRECT_ENV) != "0":
                location = self._client.get_experiment(self._experiment_id).artifact_location
                if _local_artifact_dir(location) is not None:
                    direct = DirectRuns(RunFolder(self.run_dir).mlflow_db,
                                        self._experiment_id, location)
                    if direct.schema_known():
                        self._direct = direct
                    else:
                        direct.close()
                        log.warning("MLflow's store schema is not the one known here; "
                                    "logging candidates through MLflow's client")
        return self._direct or None

    def _log_sync(self) -> None:
        """Log every finished candidate of the state file that has no nested run yet: the
        engine commits a result before it enqueues its record, so a kill in between (or a disk
        that filled up) leaves one out. Logging is idempotent, so a record that arrives later
        for the same candidate does no harm."""
        from population import Store
        known = self._candidate_runs()
        store = Store(RunFolder(self.run_dir).state, create=False)
        try:
            missing = [c for c in store.all() if c.status != "pending" and c.id not in known]
            for cand in missing:
                parent = store.get(cand.parents[0]) if cand.parents else None
                self._log_candidate(cand.to_dict(), parent.source if parent else None)
        finally:
            store.close()
        if missing:
            log.warning("logged %d candidate(s) a previous session had left unlogged",
                        len(missing))

    def _candidate_runs(self) -> dict:
        """candidate id -> MLflow run id of the runs already logged (read once per process)."""
        if self._known is None:
            self._known = {}
            token = None
            while True:
                page = self._client.search_runs([self._experiment_id],
                                                filter_string="tags.`glia.kind` = 'candidate'",
                                                max_results=1000, page_token=token)
                for run in page:
                    self._known[run.data.tags["glia.candidate"]] = run.info.run_id
                token = page.token
                if not token:
                    break
        return self._known

    def _log_finish(self, item: dict) -> None:
        from mlflow.entities import Metric
        client, parent = self._client, self._parent()
        now = int(time.time() * 1000)
        best = item.get("best")
        if best:
            client.log_batch(parent, metrics=[Metric("best_fitness", float(best["fitness"]),
                                                     now, 0)])
            client.log_text(parent, best["source"], "best.py")
        self._log_lineage(item)
        client.set_terminated(parent, item.get("status", "FINISHED"))

    def _log_lineage(self, item: dict) -> None:
        client, parent = self._client, self._parent()
        client.log_text(parent, json.dumps(item["leaderboard"], indent=2), "leaderboard.json")
        client.log_text(parent, lineage_json(item["candidates"]), "lineage.json")
        client.log_text(parent, lineage_html(item["candidates"], links=self._run_routes()),
                        "lineage.html")

    def _run_routes(self) -> dict[str, str]:
        """candidate id -> its run page as a route of the MLflow UI (the lineage page's links)."""
        exp = self._experiment_id
        return {cid: run_route(exp, run_id) for cid, run_id in self._candidate_runs().items()}


RUN_COLUMNS = {"run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id",
               "status", "start_time", "end_time", "source_version", "lifecycle_stage",
               "artifact_uri", "experiment_id", "deleted_time"}
TABLE_COLUMNS = {"runs": RUN_COLUMNS, "tags": {"key", "value", "run_uuid"},
                 "params": {"key", "value", "run_uuid"},
                 "metrics": {"key", "value", "timestamp", "run_uuid", "step", "is_nan"},
                 "latest_metrics": {"key", "value", "timestamp", "step", "is_nan", "run_uuid"}}


class DirectRuns:
    """A candidate's nested run written straight into the run folder's MLflow SQLite store, in
    one transaction, as MLflow's SqlAlchemyStore writes it (create_run + log_batch +
    set_terminated: the same rows in runs, tags, params, metrics and latest_metrics, the same
    artifact folder). MLflow's client spends about 35 SQLAlchemy sessions on that per
    candidate; this is one commit (issue 13). Used only when the tables have exactly the
    columns below (else the client logs, as before)."""

    def __init__(self, db: Path, experiment_id: str, artifact_location: str):
        import sqlite3
        self.experiment_id = int(experiment_id)
        self.location = artifact_location.rstrip("/")
        self.conn = sqlite3.connect(str(db), timeout=60, isolation_level=None)
        self.conn.execute("PRAGMA synchronous=OFF")    # as _fast_sqlite: the backlog replays

    def schema_known(self) -> bool:
        for table, columns in TABLE_COLUMNS.items():
            found = {row[1] for row in self.conn.execute(f'PRAGMA table_info("{table}")')}
            if found != columns:
                return False
        return True

    def add_run(self, name: str, tags: dict, params: dict, metrics: dict, status: str,
                files: dict[str, str]) -> str:
        import math
        import uuid
        run_id = uuid.uuid4().hex
        artifact_uri = f"{self.location}/{run_id}/artifacts"
        _write_files(_local_artifact_dir(artifact_uri), files)   # first: a run never lacks them
        now = int(time.time() * 1000)
        tags = {**tags, "mlflow.runName": name}
        rows = []
        for key, value in metrics.items():
            is_nan = math.isnan(value)
            value = 0.0 if is_nan else (max(-sys.float_info.max, min(sys.float_info.max, value)))
            rows.append((key, value, now, run_id, 0, int(is_nan)))
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("INSERT INTO runs (run_uuid, name, source_type, source_name, "
                      "entry_point_name, user_id, status, start_time, end_time, source_version, "
                      "lifecycle_stage, artifact_uri, experiment_id, deleted_time) "
                      "VALUES (?, ?, 'UNKNOWN', '', '', 'unknown', ?, ?, ?, '', 'active', ?, ?, "
                      "NULL)", (run_id, name, status, now, now, artifact_uri, self.experiment_id))
            c.executemany('INSERT INTO tags ("key", value, run_uuid) VALUES (?, ?, ?)',
                          [(k, v, run_id) for k, v in tags.items()])
            c.executemany('INSERT INTO params ("key", value, run_uuid) VALUES (?, ?, ?)',
                          [(k, v, run_id) for k, v in params.items()])
            c.executemany('INSERT INTO metrics ("key", value, timestamp, run_uuid, step, is_nan) '
                          "VALUES (?, ?, ?, ?, ?, ?)", rows)
            c.executemany('INSERT INTO latest_metrics ("key", value, timestamp, step, is_nan, '
                          "run_uuid) VALUES (?, ?, ?, ?, ?, ?)",
                          [(k, v, t, step, nan, r) for k, v, t, r, step, nan in rows])
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return run_id

    def close(self) -> None:
        self.conn.close()


def _write_files(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, folder / name)


def _experiments_text(run_dir: Path, cand: dict) -> str | None:
    """A research turn's child's experiments.md: the file the engine wrote
    (<run>/experiments/<id>.md), else rebuilt from the records in the child's extra; None for
    any other candidate. (Every string in it was cleaned when it was recorded.)"""
    extra = cand.get("extra") or {}
    if not (extra.get("experiments") or extra.get("conclusion")):
        return None
    cid = str(cand.get("id", ""))
    if cid.isalnum():
        try:
            return RunFolder(run_dir).experiment_record(cid).read_text(encoding="utf-8")
        except OSError:
            pass
    from .research import experiments_markdown
    return experiments_markdown(extra.get("experiments") or [], extra.get("conclusion") or "",
                                extra.get("hypothesis") or "", child=cid)


def _local_artifact_dir(uri: str | None) -> Path | None:
    """The folder of a file:// artifact URI (a local store's), else None."""
    if not uri or not uri.startswith("file://"):
        return None
    from urllib.parse import unquote, urlsplit
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        return None
    return Path(unquote(parts.path))


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _without_pandas() -> None:
    """Keep pandas out of the logging process: MLflow's tracking client works without it (as
    `mlflow-skinny`, which has no pandas, does; MLflow imports it only for its dataset
    constructors, and skips those when the import fails), and importing it is about 40 % of
    the CPU importing MLflow costs (issue 13: 1.9 s -> 1.1 s). Only in the logging process,
    which logs runs, parameters, metrics, tags and files and nothing else."""
    if "pandas" not in sys.modules:
        sys.modules["pandas"] = None        # `import pandas` raises ImportError here


def main(argv: list[str]) -> int:
    run_dir, uri, run_name, retry_s = argv
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the engine decides when tracking stops
    try:                        # the sandbox workers come first; the backlog waits if it must
        os.nice(max(0, NICE - os.nice(0)))
    except OSError:
        pass
    _without_pandas()
    TrackerProcess(Path(run_dir), uri, run_name, float(retry_s)).loop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
