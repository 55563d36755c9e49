"""The run folder's layout: the one place that names its files (issue 14).

    config.toml        the run's configuration (resume reads it back)
    state.sqlite       population, counters, pending candidates (population.Store)
    events.jsonl       every event of the run, append-only
    best.py            the run's best program, rewritten as it changes
    optuna.journal     the tuning studies (Optuna's journal storage)
    experiments/       <child id>.md: a research turn's experiments
    report/            heldout.md, heldout.json, heldout.png, fitness_over_time.png
    tracking_backlog/  records waiting for MLflow; tracking.log its logging process's stderr
    mlflow.db, mlartifacts/   the run's own MLflow store (mlflow.db.init while it is made)

Everything that reads or writes one of these goes through `RunFolder(path)`, so a file is
renamed in one place and the layout is documented once.
"""
from __future__ import annotations

from pathlib import Path


class RunFolder:
    CONFIG = "config.toml"
    STATE = "state.sqlite"
    EVENTS = "events.jsonl"
    BEST = "best.py"
    TUNING_JOURNAL = "optuna.journal"
    EXPERIMENTS = "experiments"
    REPORT = "report"
    HELDOUT_JSON = "heldout.json"
    HELDOUT_MD = "heldout.md"
    HELDOUT_PNG = "heldout.png"
    FITNESS_PNG = "fitness_over_time.png"
    REPORT_FILES = (HELDOUT_MD, HELDOUT_JSON, HELDOUT_PNG, FITNESS_PNG)
    BACKLOG = "tracking_backlog"
    TRACKING_LOG = "tracking.log"
    MLFLOW_DB = "mlflow.db"
    MLFLOW_ARTIFACTS = "mlartifacts"

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def state(self) -> Path:
        return self.path / self.STATE

    @property
    def events(self) -> Path:
        return self.path / self.EVENTS

    @property
    def best(self) -> Path:
        return self.path / self.BEST

    @property
    def tuning_journal(self) -> Path:
        return self.path / self.TUNING_JOURNAL

    @property
    def experiments(self) -> Path:
        return self.path / self.EXPERIMENTS

    def experiment_record(self, candidate_id: str) -> Path:
        return self.experiments / f"{candidate_id}.md"

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def heldout_json(self) -> Path:
        return self.report / self.HELDOUT_JSON

    @property
    def backlog(self) -> Path:
        return self.path / self.BACKLOG

    @property
    def tracking_log(self) -> Path:
        return self.path / self.TRACKING_LOG

    @property
    def mlflow_db(self) -> Path:
        return self.path / self.MLFLOW_DB

    @property
    def mlflow_artifacts(self) -> Path:
        return self.path / self.MLFLOW_ARTIFACTS

    def holds_run(self) -> bool:
        """A run was started here: its state and its configuration exist."""
        return self.state.exists() and self.config.exists()
