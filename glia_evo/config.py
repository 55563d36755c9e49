"""Run configuration: TOML with defaults for everything, validated key by key.

Unknown keys and bad values are rejected with the key's dotted name, so a typo in a config never
silently runs the default instead. The resolved configuration is written to the run folder.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import tomli_w


class ConfigError(ValueError):
    """A configuration that cannot be run; the message names the key."""


@dataclass
class SearchConfig:
    islands: int = 4
    island_capacity: int = 12
    tournament: int = 3
    migration_interval: int = 25     # evaluations between migrations
    migration_k: int = 1
    seeds: list = field(default_factory=lambda: ["llq", "round_robin", "least_kv"])
    inspirations: int = 2
    max_attempts: int = 20           # proposals tried per slot before giving up on a parent


@dataclass
class BudgetConfig:
    minutes: float = 10.0
    max_evaluations: int = 200
    max_tokens: int = 0              # LLM tokens (prompt + completion), all agents; 0 = no limit
    max_cost_usd: float = 0.0        # from llm.prices; 0 = no limit


@dataclass
class EvaluationConfig:
    workers: int = 2
    split: str = "train"
    cascade: bool = True
    cascade_split: str = "quick"
    cascade_threshold: float = 0.8
    cascade_timeout_s: float = 20.0  # the quick first stage's wall-clock limit; 0 = timeout_s only
    timeout_s: float = 300.0
    memory_mb: int = 2048
    executor: str = "local"          # local | dask-local (a LocalCluster) | dask (a scheduler)
    scheduler: str = ""              # the Dask scheduler's address when executor = "dask"
    # run LLM-written programs even where the kernel refuses a sandbox layer (seccomp, Landlock)
    allow_weak_sandbox: bool = False


@dataclass
class LLMConfig:
    mode: str = "offline"            # offline | openai (any OpenAI-compatible endpoint)
    base_url: str = ""               # e.g. http://localhost:8000/v1; "" = the openai default
    models: dict = field(default_factory=dict)     # model name -> sampling weight (an ensemble)
    api_key_env: str = "OPENAI_API_KEY"            # the *name* of the variable holding the key
    timeout_s: float = 120.0         # per call (one HTTP request)
    max_retries: int = 5             # on 429 / 5xx / timeouts / connection errors
    backoff_base_s: float = 1.0      # first back-off; doubles per retry, with jitter
    backoff_max_s: float = 60.0      # cap on one wait (also on a server's Retry-After)
    temperature: float = 0.8         # < 0: not sent (for models that reject it)
    max_output_tokens: int = 4096    # sent as max_tokens; 0: not sent
    concurrency: int = 0             # Researcher calls in flight; 0 = 1 for a local base_url
                                     # (127.0.0.1 / localhost / ::1), else 2 x workers
    offline_fraction: float = 0.0    # share of proposals made by the offline mutator
    fallback_offline: bool = True    # endpoint unreachable after retries: offline proposal
    analyst: bool = True             # LLM Analyst after failures and non-improvements
    analyst_model: str = ""          # "" = the first of `models`
    supervisor_interval: int = 20    # evaluations between Supervisor reviews; 0 = none
    supervisor_model: str = ""       # "" = the first of `models`
    prices: dict = field(default_factory=dict)     # model -> [input, output] USD per 1M tokens
    prompts_dir: str = ""            # a folder of template files overriding the packaged ones

    def weights(self) -> dict[str, float]:
        return {str(k): float(v) for k, v in self.models.items()}

    def first_model(self) -> str:
        return next(iter(self.models), "")


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str = ""                    # default: sqlite:///<run>/mlflow.db, artifacts in the run


@dataclass
class TuningConfig:
    enabled: bool = True
    trials: int = 8                  # per study (trial 0 is the program's own knobs)
    top_fraction: float = 0.25       # programs with KNOBS in their island's top fraction
    split: str = ""                  # default: evaluation.split


@dataclass
class ReportConfig:
    at_end: bool = True              # the held-out report when a run stops normally
    split: str = "test"              # a split never used for selection
    baselines: bool = True           # false: only the reference baseline (faster)


@dataclass
class RunConfig:
    name: str = "routing"
    problem: str = "routing"
    seed: int = 0
    out: str = ""                    # run folder; default runs/<name>
    search: SearchConfig = field(default_factory=SearchConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def run_dir(self) -> Path:
        return Path(self.out or f"runs/{self.name}")

    def to_dict(self) -> dict:
        return asdict(self)

    def dump(self, path: Path) -> None:
        """Written to a temporary file and renamed: a failed write (a full disk) never leaves a
        run folder with a truncated config.toml."""
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(tomli_w.dumps(self.to_dict()))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _check(obj, prefix: str, data: dict) -> None:
    known = {f.name: f for f in fields(obj)}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(f"unknown key {name!r} (known: "
                              f"{', '.join(prefix + k for k in known)})")
        current = getattr(obj, key)
        if hasattr(current, "__dataclass_fields__"):
            if not isinstance(value, dict):
                raise ConfigError(f"{name!r} must be a table ([{name}])")
            _check(current, f"{name}.", value)
            continue
        setattr(obj, key, _coerce(name, current, value))


def _coerce(name: str, current, value):
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name!r} must be true or false, got {value!r}")
        return value
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name!r} must be an integer, got {value!r}")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name!r} must be a number, got {value!r}")
        return float(value)
    if isinstance(current, str):
        if not isinstance(value, str):
            raise ConfigError(f"{name!r} must be a string, got {value!r}")
        return value
    if isinstance(current, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name!r} must be a list of strings, got {value!r}")
        return value
    if isinstance(current, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{name!r} must be a table ([{name}]), got {value!r}")
        return {str(k): _table_value(f"{name}.{k}", v) for k, v in value.items()}
    raise ConfigError(f"{name!r}: unsupported value {value!r}")


def _table_value(name: str, value):
    """Values of the free-form tables (llm.models, llm.prices): a number or a list of numbers."""
    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if number(value):
        return float(value)
    if isinstance(value, list) and all(number(v) for v in value):
        return [float(v) for v in value]
    raise ConfigError(f"{name!r} must be a number or a list of numbers, got {value!r}")


def _report_split_ok(c) -> bool:
    from .problems import get_problem
    try:
        return c.report.split in get_problem(c.problem).splits
    except KeyError:
        return True           # an unknown problem is reported as such, by the command line


def _models_ok(c) -> bool:
    return all(isinstance(w, float) and w > 0 for w in c.llm.models.values())


def _prices_ok(c) -> bool:
    return all(isinstance(p, list) and len(p) == 2 and min(p) >= 0 for p in c.llm.prices.values())


def _prices_cover_models(c) -> bool:
    if c.budget.max_cost_usd <= 0 or c.llm.mode == "offline":
        return True
    used = set(c.llm.models) | {c.llm.analyst_model, c.llm.supervisor_model}
    return all(m in c.llm.prices for m in used if m)


RULES = [
    ("tuning.trials", lambda c: c.tuning.trials >= 2, "must be >= 2"),
    ("tuning.top_fraction", lambda c: 0 < c.tuning.top_fraction <= 1, "must be in (0, 1]"),
    ("search.islands", lambda c: c.search.islands >= 1, "must be >= 1"),
    ("search.island_capacity", lambda c: c.search.island_capacity >= 2, "must be >= 2"),
    ("search.tournament", lambda c: c.search.tournament >= 1, "must be >= 1"),
    ("search.migration_interval", lambda c: c.search.migration_interval >= 1, "must be >= 1"),
    ("search.migration_k", lambda c: c.search.migration_k >= 0, "must be >= 0"),
    ("search.seeds", lambda c: len(c.search.seeds) >= 1, "needs at least one seed program"),
    ("search.inspirations", lambda c: c.search.inspirations >= 0, "must be >= 0"),
    ("search.max_attempts", lambda c: c.search.max_attempts >= 1, "must be >= 1"),
    ("budget.minutes", lambda c: c.budget.minutes > 0, "must be > 0"),
    ("budget.max_evaluations", lambda c: c.budget.max_evaluations >= 1, "must be >= 1"),
    ("evaluation.workers", lambda c: c.evaluation.workers >= 1, "must be >= 1"),
    ("evaluation.cascade_threshold", lambda c: 0 <= c.evaluation.cascade_threshold <= 10,
     "must be between 0 and 10"),
    ("evaluation.timeout_s", lambda c: c.evaluation.timeout_s > 0, "must be > 0"),
    ("evaluation.cascade_timeout_s", lambda c: c.evaluation.cascade_timeout_s >= 0,
     "must be >= 0 (0 = only timeout_s)"),
    ("evaluation.memory_mb", lambda c: c.evaluation.memory_mb >= 256, "must be >= 256"),
    ("evaluation.executor", lambda c: c.evaluation.executor in ("local", "dask-local", "dask"),
     "must be 'local', 'dask-local' or 'dask'"),
    ("evaluation.scheduler", lambda c: c.evaluation.executor != "dask" or bool(c.evaluation.scheduler),
     "is needed with executor 'dask' (e.g. --scheduler tcp://HOST:8786)"),
    ("budget.max_tokens", lambda c: c.budget.max_tokens >= 0, "must be >= 0 (0 = no limit)"),
    ("budget.max_cost_usd", lambda c: c.budget.max_cost_usd >= 0, "must be >= 0 (0 = no limit)"),
    ("llm.mode", lambda c: c.llm.mode in ("offline", "openai"), "must be 'offline' or 'openai'"),
    ("llm.models", lambda c: c.llm.mode == "offline" or len(c.llm.models) >= 1,
     "needs at least one model when llm.mode is 'openai' (e.g. --model NAME)"),
    ("llm.models", _models_ok, "weights must be numbers > 0 (model name = weight)"),
    ("llm.api_key_env", lambda c: re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", c.llm.api_key_env) is not None,
     "must be the name of an environment variable (e.g. OPENAI_API_KEY), not the key itself"),
    ("llm.timeout_s", lambda c: c.llm.timeout_s > 0, "must be > 0"),
    ("llm.max_retries", lambda c: c.llm.max_retries >= 0, "must be >= 0"),
    ("llm.backoff_base_s", lambda c: c.llm.backoff_base_s >= 0, "must be >= 0"),
    ("llm.backoff_max_s", lambda c: c.llm.backoff_max_s >= c.llm.backoff_base_s,
     "must be >= llm.backoff_base_s"),
    ("llm.max_output_tokens", lambda c: c.llm.max_output_tokens >= 0, "must be >= 0"),
    ("llm.concurrency", lambda c: c.llm.concurrency >= 0, "must be >= 0"),
    ("llm.offline_fraction", lambda c: 0 <= c.llm.offline_fraction <= 1,
     "must be between 0 and 1"),
    ("llm.supervisor_interval", lambda c: c.llm.supervisor_interval >= 0, "must be >= 0"),
    ("llm.prices", _prices_ok, "each model needs [input, output] USD per million tokens, >= 0"),
    ("llm.prices", _prices_cover_models,
     "needs a price for every model used when budget.max_cost_usd is set"),
    ("seed", lambda c: c.seed >= 0, "must be >= 0"),
    ("report.split", _report_split_ok,
     "must be one of the problem's splits (test, validation, train, quick)"),
]


def validate(cfg: RunConfig) -> RunConfig:
    for key, ok, why in RULES:
        if not ok(cfg):
            raise ConfigError(f"{key!r} {why}")
    return cfg


def from_dict(data: dict) -> RunConfig:
    cfg = RunConfig()
    _check(cfg, "", data)
    return validate(cfg)


def load(path: str | Path | None, overrides: dict | None = None) -> RunConfig:
    """Read a TOML file (or defaults when None) and apply dotted-key overrides from the CLI."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return from_dict(data)
