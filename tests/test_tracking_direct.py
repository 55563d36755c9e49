"""The logging process's direct writes into the run folder's MLflow store (issue 13) leave the
same runs, as MLflow's client reads them, that logging through the client leaves."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from glia_evo.run_folder import RunFolder
from glia_evo.tracking import STOP_FILE, drain
from population import Store

SOURCE = "def route(ctx):\n    return 0\n"


def candidate(i: int, status: str = "ok") -> dict:
    return {"id": f"c{i:03d}", "status": status, "fitness": 1.5 + i if status == "ok" else 0.0,
            "parents": [f"c{i - 1:03d}"] if i else [], "operator": "llm", "island": i % 2,
            "generation": i, "model": "m", "source": SOURCE + f"# {i}\n",
            "reasoning": "why", "rationale": "because", "error": None if status == "ok" else "x",
            "metrics": {"glia#0": {"mean_e2e_s": 2.0 + i, "p99_ttft_s": float("nan"),
                                   "restarts": 3, "label": "text"},
                        "azure#1": {"mean_e2e_s": float("inf")}},
            "extra": {}}


def logged(run_dir: Path, monkeypatch, direct: bool) -> dict:
    """Log three candidates through the backlog as `glia-evo track` does; returns what
    MLflow's client reads back, per candidate."""
    monkeypatch.setenv("GLIA_EVO_TRACKING_DIRECT", "1" if direct else "0")
    import glia_evo.tracking as tracking
    added = []
    original = tracking.DirectRuns.add_run
    monkeypatch.setattr(tracking.DirectRuns, "add_run",
                        lambda self, *a: added.append(a[0]) or original(self, *a))
    monkeypatch.setenv("GLIA_EVO_CACHE_DIR", str(run_dir.parent / "cache"))
    backlog = RunFolder(run_dir).backlog
    backlog.mkdir(parents=True)
    Store(RunFolder(run_dir).state).close()
    records = [{"kind": "start", "config": {"name": "t"}}] + [
        {"kind": "candidate", "candidate": candidate(i, "ok" if i != 1 else "error"),
         "parent_source": SOURCE} for i in range(3)]
    for n, rec in enumerate(records, 1):
        (backlog / f"{n:09d}.json").write_text(json.dumps(rec))
    assert drain(run_dir, attempts=1) == 0
    assert added == (["c000", "c001", "c002"] if direct else [])   # the path under test
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{RunFolder(run_dir).mlflow_db.resolve()}")
    [exp] = [e for e in client.search_experiments() if e.name == "glia-evo"]
    out = {}
    for run in client.search_runs([exp.experiment_id], "tags.`glia.kind` = 'candidate'"):
        info, data = run.info, run.data
        tags = {k: v for k, v in data.tags.items() if k != "mlflow.parentRunId"}
        parent = client.get_run(data.tags["mlflow.parentRunId"])
        history = client.get_metric_history(info.run_id, "glia/0/mean_e2e_s")
        out[data.tags["glia.candidate"]] = {
            "status": info.status, "name": info.run_name, "stage": info.lifecycle_stage,
            "ended": info.end_time is not None and info.end_time >= info.start_time,
            "artifacts_under_run": info.artifact_uri.endswith(f"/{info.run_id}/artifacts"),
            "tags": tags, "params": data.params,
            "metrics": {k: ("nan" if math.isnan(v) else v) for k, v in data.metrics.items()},
            "history": [(m.value, m.step) for m in history],
            "parent_kind": parent.data.tags.get("glia.kind"),
            "files": sorted(a.path for a in client.list_artifacts(info.run_id)),
            "program": Path(client.download_artifacts(info.run_id, "program.py",
                                                      str(run_dir / f"dl-{info.run_id}"))
                            ).read_text()}
    return out


def test_direct_writes_read_back_as_the_clients_runs(tmp_path, monkeypatch):
    direct = logged(tmp_path / "direct" / "run", monkeypatch, True)
    client = logged(tmp_path / "client" / "run", monkeypatch, False)
    assert sorted(direct) == ["c000", "c001", "c002"]
    assert direct == client
    assert direct["c001"]["status"] == "FAILED" and direct["c002"]["status"] == "FINISHED"
    assert direct["c002"]["metrics"]["fitness"] == 3.5
    assert direct["c002"]["metrics"]["glia/0/p99_ttft_s"] == "nan"
    assert direct["c002"]["metrics"]["azure/1/mean_e2e_s"] == sys.float_info.max
    assert direct["c002"]["files"] == ["diff.txt", "program.py", "rationale.md",
                                       "reasoning.md", "report.json"]
    assert direct["c002"]["program"] == SOURCE + "# 2\n"


def test_a_replayed_record_finds_its_directly_written_run(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    first = logged(run_dir, monkeypatch, True)
    backlog = RunFolder(run_dir).backlog
    (backlog / "000000100.json").write_text(json.dumps(
        {"kind": "candidate", "candidate": candidate(2), "parent_source": SOURCE}))
    assert drain(run_dir, attempts=1) == 0
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{RunFolder(run_dir).mlflow_db.resolve()}")
    [exp] = [e for e in client.search_experiments() if e.name == "glia-evo"]
    runs = client.search_runs([exp.experiment_id], "tags.`glia.candidate` = 'c002'")
    assert len(runs) == 1 and len(first) == 3
