"""MLflow tracking off the search's critical path, with a persisted backlog (DESIGN §6).

One parent run per search and one nested run per candidate. The engine only *enqueues*: each
record is first written as a JSON file in `<run>/tracking_backlog/` and then logged by a background
thread, which deletes the file once MLflow has it. If the tracking server is unreachable the thread
retries with back-off while the search goes on; files left behind by a crash or an outage are
logged on the next start, so nothing is lost. Resume continues the same parent run.
"""
from __future__ import annotations

import difflib
import json
import logging
import os
import threading
import time
from pathlib import Path

from .lineage import lineage_html, lineage_json

log = logging.getLogger("glia_evo.tracking")
EXPERIMENT = "glia-evo"
PARENT_RUN_FILE = "mlflow_parent_run_id"


def default_uri(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


def metric_key(name: str) -> str:
    """MLflow keys allow [A-Za-z0-9_-. :/]; 'glia#3' becomes 'glia/3'."""
    return "".join(ch if ch.isalnum() or ch in "_-. :/" else "/" for ch in name)


class Tracker:
    def __init__(self, run_dir: Path, tracking_uri: str | None = None, run_name: str = "search",
                 retry_s: float = 2.0):
        self.run_dir = run_dir
        self.uri = tracking_uri or default_uri(run_dir)
        self.run_name = run_name
        self.retry_s = retry_s
        self.backlog = run_dir / "tracking_backlog"
        self.backlog.mkdir(exist_ok=True)
        self._seq = max((int(p.stem) for p in self.backlog.glob("*.json")), default=0)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._client = None
        self.parent_run_id: str | None = None
        self.errors = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="mlflow-tracker", daemon=True)
        self._thread.start()

    # --- the engine's side: cheap, never blocks on MLflow -------------------------------------
    def enqueue(self, kind: str, **payload) -> None:
        with self._lock:
            self._seq += 1
            path = self.backlog / f"{self._seq:09d}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"kind": kind, **payload}, default=str))
            os.replace(tmp, path)
        self._wake.set()

    def start_search(self, config: dict) -> None:
        self.enqueue("start", config=config)

    def candidate(self, cand: dict, parent_source: str | None) -> None:
        self.enqueue("candidate", candidate=cand, parent_source=parent_source)

    def finish_search(self, leaderboard: list[dict], candidates: list[dict], best: dict | None,
                      status: str = "FINISHED") -> None:
        self.enqueue("finish", leaderboard=leaderboard, candidates=candidates, best=best,
                     status=status)

    def pending(self) -> int:
        return len(list(self.backlog.glob("*.json")))

    def close(self, timeout_s: float = 60.0) -> None:
        """Give the backlog `timeout_s` to drain (what is left is logged on the next start)."""
        deadline = time.monotonic() + timeout_s
        while self.pending() and time.monotonic() < deadline and self._thread.is_alive():
            self._wake.set()
            time.sleep(0.05)
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=5)

    # --- the background thread --------------------------------------------------------------
    def _loop(self) -> None:
        delay = self.retry_s
        while True:
            files = sorted(self.backlog.glob("*.json"))
            if not files:
                if self._stop:
                    return
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                self._ensure_client()
                for path in files:
                    self._log(json.loads(path.read_text()))
                    path.unlink()
                delay = self.retry_s
            except Exception as exc:   # unreachable server, locked db...: retry later
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("MLflow tracking failed (%s); will retry", self.last_error)
                if self._stop:
                    return
                self._wake.wait(delay)
                self._wake.clear()
                delay = min(delay * 2, 60.0)

    def _ensure_client(self) -> None:
        if self._client is not None:
            return
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        from mlflow.tracking import MlflowClient
        client = MlflowClient(tracking_uri=self.uri)
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            location = None
            if self.uri.startswith("sqlite:"):
                location = (self.run_dir / "mlartifacts").resolve().as_uri()
            exp_id = client.create_experiment(EXPERIMENT, artifact_location=location)
        else:
            exp_id = exp.experiment_id
        self._client = client
        self._experiment_id = exp_id
        marker = self.run_dir / PARENT_RUN_FILE
        if marker.exists():
            self.parent_run_id = marker.read_text().strip()

    def _parent(self) -> str:
        if self.parent_run_id is None:
            run = self._client.create_run(self._experiment_id, run_name=self.run_name,
                                          tags={"glia.kind": "search"})
            self.parent_run_id = run.info.run_id
            (self.run_dir / PARENT_RUN_FILE).write_text(self.parent_run_id)
        return self.parent_run_id

    def _log(self, item: dict) -> None:
        kind = item["kind"]
        if kind == "start":
            self._log_start(item["config"])
        elif kind == "candidate":
            self._log_candidate(item["candidate"], item.get("parent_source"))
        elif kind == "finish":
            self._log_finish(item)

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
        client, parent = self._client, self._parent()
        # idempotent: a record replayed after a crash finds its run instead of adding one
        found = client.search_runs([self._experiment_id],
                                   filter_string=f"tags.`glia.candidate` = '{cand['id']}'",
                                   max_results=1)
        run_id = found[0].info.run_id if found else client.create_run(
            self._experiment_id, run_name=cand["id"],
            tags={"mlflow.parentRunId": parent, "glia.candidate": cand["id"],
                  "glia.kind": "candidate"}).info.run_id
        now = int(time.time() * 1000)
        parents = cand.get("parents") or []
        tags = [RunTag("glia.parent", parents[0] if parents else ""),
                RunTag("glia.parents", ",".join(parents)),
                RunTag("glia.status", cand["status"]),
                RunTag("glia.operator", cand["operator"])]
        params = [Param("island", str(cand["island"])),
                  Param("generation", str(cand["generation"])),
                  Param("operator", cand["operator"]), Param("parents", ",".join(parents)),
                  Param("model", str(cand.get("model") or "offline"))]
        if found:
            params = [p for p in params if p.key not in found[0].data.params]
        metrics = [Metric("fitness", float(cand["fitness"]), now, 0)]
        for scen, values in (cand.get("metrics") or {}).items():
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    metrics.append(Metric(metric_key(f"{scen}/{k}"), float(v), now, 0))
        client.log_batch(run_id, metrics=metrics[:900], params=params, tags=tags)
        client.log_text(run_id, cand["source"], "program.py")
        client.log_text(run_id, cand.get("reasoning") or "", "reasoning.md")
        client.log_text(run_id, cand.get("rationale") or "", "rationale.md")
        report = {k: cand.get(k) for k in ("id", "status", "fitness", "error", "metrics",
                                           "parents", "operator", "island", "generation")}
        report["diagnostics"] = (cand.get("extra") or {}).get("diagnostics")
        client.log_text(run_id, json.dumps(report, indent=2, default=str), "report.json")
        diff = "".join(difflib.unified_diff((parent_source or "").splitlines(True),
                                            cand["source"].splitlines(True),
                                            "parent/program.py", "program.py"))
        client.log_text(run_id, diff, "diff.patch")
        client.set_terminated(run_id, "FINISHED" if cand["status"] == "ok" else "FAILED")

    def _log_finish(self, item: dict) -> None:
        from mlflow.entities import Metric
        client, parent = self._client, self._parent()
        now = int(time.time() * 1000)
        best = item.get("best")
        if best:
            client.log_batch(parent, metrics=[Metric("best_fitness", float(best["fitness"]),
                                                     now, 0)])
            client.log_text(parent, best["source"], "best.py")
        client.log_text(parent, json.dumps(item["leaderboard"], indent=2), "leaderboard.json")
        client.log_text(parent, lineage_json(item["candidates"]), "lineage.json")
        client.log_text(parent, lineage_html(item["candidates"]), "lineage.html")
        client.set_terminated(parent, item.get("status", "FINISHED"))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
