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


def _at(*parts: str) -> property:
    """A path in the run folder, as a read-only attribute."""
    return property(lambda self: self.path.joinpath(*parts))


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

    config = _at(CONFIG)
    state = _at(STATE)
    events = _at(EVENTS)
    best = _at(BEST)
    tuning_journal = _at(TUNING_JOURNAL)
    experiments = _at(EXPERIMENTS)
    report = _at(REPORT)
    heldout_json = _at(REPORT, HELDOUT_JSON)
    backlog = _at(BACKLOG)
    tracking_log = _at(TRACKING_LOG)
    mlflow_db = _at(MLFLOW_DB)
    mlflow_artifacts = _at(MLFLOW_ARTIFACTS)

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def experiment_record(self, candidate_id: str) -> Path:
        return self.experiments / f"{candidate_id}.md"

    def holds_run(self) -> bool:
        """A run was started here: its state and its configuration exist."""
        return self.state.exists() and self.config.exists()
