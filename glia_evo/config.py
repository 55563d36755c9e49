"""Run configuration: TOML with defaults for everything, validated key by key.

Unknown keys and bad values are rejected with the key's dotted name, so a typo in a config never
silently runs the default instead. The resolved configuration is written to the run folder.
"""
from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import tomli_w

from .evaluation import executors


class ConfigError(ValueError):
    """A configuration that cannot be run; the message names the key (also in `key`)."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


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
    # parent selection: "lexicase" (epsilon-lexicase over the training instances) | "tournament"
    selection: str = "lexicase"
    # the run's best is chosen on `validation_split` among the `validate_top` fittest distinct
    # programs on the training split (0: the best on the training split, as before)
    validate_top: int = 6
    validation_split: str = "validation"


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
    experiments: int = 0             # tool calls a Researcher may make before it proposes; 0 = none
    experiment_requests: int = 50000  # simulated requests per proposal (all its experiments)
    experiment_tokens: int = 0       # prompt + completion tokens per research turn; 0 = no limit
    # the model's context in tokens: a Researcher prompt that would not fit (with room for the
    # answer) drops inspirations, then shortens notes and summaries; 0 = what a llama.cpp-style
    # server says (GET /props), else no limit
    context_tokens: int = 0

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
                              f"{', '.join(prefix + k for k in known)})"
                              f"{_close_to(key, known)}", name)
        current = getattr(obj, key)
        if hasattr(current, "__dataclass_fields__"):
            if not isinstance(value, dict):
                raise ConfigError(f"{name!r} must be a table ([{name}])")
            _check(current, f"{name}.", value)
            continue
        try:
            setattr(obj, key, _coerce(name, current, value))
        except ConfigError as exc:
            exc.key = exc.key or name
            raise


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


# --- value checks ---------------------------------------------------------------------------------
# Every number has a range: a value outside it (or inf / NaN, or an integer so large that the
# run would hang building it) is refused when the config is read, before anything is written.
@dataclass(frozen=True)
class Range:
    low: float
    high: float
    low_open: bool = False          # True: value > low (else value >= low)
    note: str = ""                  # e.g. "0 = no limit"

    def ok(self, value) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return (value > self.low if self.low_open else value >= self.low) and value <= self.high

    def text(self, integer: bool) -> str:
        kind = "an integer" if integer else "a number"
        low = _num(self.low)
        high = _num(self.high)
        what = (f"{kind} > {low} and <= {high}" if self.low_open
                else f"{kind} from {low} to {high}")
        return what + (f" ({self.note})" if self.note else "")


def _num(x) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        x = int(x)
    if isinstance(x, int) and x >= 10**6 and str(x).endswith("0" * 5):
        return f"{x:.0e}".replace("e+0", "e").replace("e+", "e")
    return f"{x:g}" if isinstance(x, float) else str(x)


DAY_S = 86_400.0


def local_workers_max() -> int:
    """The most evaluation processes this machine runs at once: 4 per core, at least 8."""
    return max(8, 4 * (os.cpu_count() or 1))
MAX_ISLANDS = 256                 # islands x seeds candidates are created at the start
MAX_SEEDS = 64
MAX_WORKERS = 1024
MAX_EVALUATIONS = 10**7
MAX_MINUTES = 525_600.0            # a year

RANGES: dict[str, Range] = {
    "seed": Range(0, 2**32 - 1),
    "search.islands": Range(1, MAX_ISLANDS),
    "search.island_capacity": Range(2, 10_000),
    "search.tournament": Range(1, 1000),
    "search.migration_interval": Range(1, MAX_EVALUATIONS),
    "search.migration_k": Range(0, 1000),
    "search.inspirations": Range(0, 100),
    "search.max_attempts": Range(1, 10_000),
    "search.validate_top": Range(0, 1000, note="0 = the best on the training split"),
    "budget.minutes": Range(0, MAX_MINUTES, low_open=True),
    "budget.max_evaluations": Range(1, MAX_EVALUATIONS),
    "budget.max_tokens": Range(0, 10**12, note="0 = no limit"),
    "budget.max_cost_usd": Range(0, 1e6, note="0 = no limit"),
    "evaluation.workers": Range(1, MAX_WORKERS),
    "evaluation.cascade_threshold": Range(0, 10),
    "evaluation.cascade_timeout_s": Range(0, DAY_S, note="seconds; 0 = only timeout_s"),
    "evaluation.timeout_s": Range(0.1, DAY_S, note="seconds"),
    "evaluation.memory_mb": Range(256, 2**20, note="MiB"),
    "llm.timeout_s": Range(0.1, 3600, note="seconds"),
    "llm.max_retries": Range(0, 100),
    "llm.backoff_base_s": Range(0, 3600, note="seconds"),
    "llm.backoff_max_s": Range(0, 3600, note="seconds"),
    "llm.temperature": Range(-1, 10, note="< 0: not sent"),
    "llm.max_output_tokens": Range(0, 10**7, note="0: not sent"),
    "llm.context_tokens": Range(0, 10**8, note="0 = what the server says, else no limit"),
    "llm.concurrency": Range(0, MAX_WORKERS, note="0 = automatic"),
    "llm.offline_fraction": Range(0, 1),
    "llm.supervisor_interval": Range(0, MAX_EVALUATIONS, note="0 = no reviews"),
    "llm.experiments": Range(0, 64, note="0 = no experiments"),
    "llm.experiment_requests": Range(0, 10**8),
    "llm.experiment_tokens": Range(0, 10**9, note="0 = no limit"),
    "tuning.trials": Range(2, 10_000),
    "tuning.top_fraction": Range(0, 1, low_open=True),
}


def _get(cfg, dotted: str):
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _shown(value, limit: int = 80) -> str:
    from .hygiene import clean
    return clean(repr(value), limit)


def _check_ranges(cfg) -> None:
    for key, rng in RANGES.items():
        value = _get(cfg, key)
        if not rng.ok(value):
            raise ConfigError(f"{key!r} must be {rng.text(isinstance(value, int))}, got "
                              f"{_shown(value)}", key)


def _finite(v) -> bool:
    return isinstance(v, float) and math.isfinite(v)


def _models_ok(c) -> bool:
    return all(_finite(w) and 0 < w <= 1e6 for w in c.llm.models.values())


def _prices_ok(c) -> bool:
    return all(isinstance(p, list) and len(p) == 2 and all(_finite(x) and 0 <= x <= 1e6
                                                          for x in p)
               for p in c.llm.prices.values())


def _prices_cover_models(c) -> bool:
    if c.budget.max_cost_usd <= 0 or c.llm.mode == "offline":
        return True
    used = set(c.llm.models) | {c.llm.analyst_model, c.llm.supervisor_model}
    return all(m in c.llm.prices for m in used if m)


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,99}")
_URL = re.compile(r"https?://[^\s/?#]+[^\s]*")
_SCHEDULER = re.compile(r"([a-z][a-z0-9+.-]*://)?[^\s/:]+(:\d{1,5})?/?")


TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql",
                    "databricks", "databricks-uc", "uc")


def _tracking_uri_ok(uri: str) -> bool:
    if not uri:
        return True
    if not _printable(uri) or any(ch.isspace() for ch in uri):
        return False
    scheme, sep, rest = uri.partition(":")
    if not sep or "/" in scheme or len(scheme) == 1:     # a path (C: counts as one too)
        return True
    base = scheme.split("+")[0].lower()
    return base in TRACKING_SCHEMES and (bool(rest) or base.startswith("databricks"))


def _printable(text: str, limit: int = 4096) -> bool:
    return len(text) <= limit and text.isprintable()


RULES = [
    ("name", lambda c: _NAME.fullmatch(c.name) is not None,
     "must be 1 to 100 letters, digits or . _ + - (it names the folder runs/<name>)"),
    ("out", lambda c: _printable(c.out) and "\x00" not in c.out,
     "must be a folder path (printable, at most 4096 characters)"),
    ("search.seeds", lambda c: len(c.search.seeds) <= MAX_SEEDS,
     f"holds at most {MAX_SEEDS} seed programs"),
    ("search.seeds", lambda c: len(set(c.search.seeds)) == len(c.search.seeds),
     "lists a seed twice"),
    ("search.migration_k", lambda c: c.search.migration_k <= c.search.island_capacity,
     "must be <= search.island_capacity"),
    ("evaluation.cascade_timeout_s", lambda c: c.evaluation.cascade_timeout_s == 0
     or c.evaluation.cascade_timeout_s >= 0.1, "must be 0 (only timeout_s) or at least 0.1 s"),
    ("evaluation.workers", lambda c: c.evaluation.executor not in executors.kinds()
     or not executors.get(c.evaluation.executor).local
     or c.evaluation.workers <= local_workers_max(),
     f"must be at most {local_workers_max()} for executor 'local' or 'dask-local' (4 per core "
     f"on this machine: each worker is a process); a Dask cluster (executor 'dask') may have "
     f"more"),
    ("search.selection", lambda c: c.search.selection in ("lexicase", "tournament"),
     "must be 'lexicase' or 'tournament'"),
    ("evaluation.executor", lambda c: c.evaluation.executor in executors.kinds(),
     "must be one of " + ", ".join(repr(k) for k in executors.EXECUTORS)),
    ("evaluation.scheduler", lambda c: c.evaluation.executor not in executors.kinds()
     or not executors.get(c.evaluation.executor).needs_scheduler or bool(c.evaluation.scheduler),
     "is needed with executor 'dask' (e.g. --scheduler tcp://HOST:8786)"),
    ("evaluation.scheduler", lambda c: not c.evaluation.scheduler or
     _SCHEDULER.fullmatch(c.evaluation.scheduler) is not None,
     "must be a Dask scheduler address such as tcp://HOST:8786"),
    ("llm.mode", lambda c: c.llm.mode in ("offline", "openai"), "must be 'offline' or 'openai'"),
    ("llm.models", lambda c: c.llm.mode == "offline" or len(c.llm.models) >= 1,
     "needs at least one model when llm.mode is 'openai' (e.g. --model NAME)"),
    ("llm.models", _models_ok, "weights must be numbers > 0 and <= 1e6 (model name = weight)"),
    ("llm.models", lambda c: len(c.llm.models) <= 100 and all(
        k.strip() and _printable(k, 200) for k in c.llm.models), "model names must be "
     "1 to 200 printable characters, at most 100 models"),
    ("llm.base_url", lambda c: not c.llm.base_url or _URL.fullmatch(c.llm.base_url) is not None,
     "must be an http:// or https:// URL (e.g. http://localhost:8000/v1), or empty"),
    ("llm.api_key_env", lambda c: re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", c.llm.api_key_env) is not None,
     "must be the name of an environment variable (e.g. OPENAI_API_KEY), not the key itself"),
    ("llm.backoff_max_s", lambda c: c.llm.backoff_max_s >= c.llm.backoff_base_s,
     "must be >= llm.backoff_base_s"),
    ("llm.prices", _prices_ok, "each model needs [input, output] USD per million tokens, "
     "from 0 to 1e6"),
    ("llm.prices", _prices_cover_models,
     "needs a price for every model used when budget.max_cost_usd is set"),
    ("llm.prompts_dir", lambda c: not c.llm.prompts_dir or Path(c.llm.prompts_dir).is_dir(),
     "must be an existing folder of prompt templates, or empty"),
    ("tracking.uri", lambda c: _tracking_uri_ok(c.tracking.uri),
     "must be empty (sqlite in the run folder), an MLflow tracking URI (sqlite:///PATH, "
     "file:///PATH, http(s)://HOST[:PORT], postgresql://..., mysql://..., databricks) or a "
     "folder path, without spaces"),
]


def _close_to(value: str, known) -> str:
    import difflib
    near = difflib.get_close_matches(value, list(known), n=1)
    return f"; did you mean {near[0]!r}?" if near else ""


def problem_of(cfg):
    """The Problem `cfg.problem` names, from `glia_evo.problems.get_problem` (whatever it
    accepts: a built-in name, a registered plug-in...); its refusal is a ConfigError."""
    from .problems import get_problem
    try:
        return get_problem(cfg.problem)
    except (KeyError, ValueError, LookupError, ImportError, OSError, SyntaxError,
            SystemExit) as exc:
        why = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        if isinstance(exc, SystemExit):
            why = f"loading it called sys.exit({exc.code!r})"
        from .hygiene import clean
        raise ConfigError(f"'problem' = {_shown(cfg.problem)}: {clean(why, 300)}",
                          "problem") from None


def baselines_of(problem) -> list[str]:
    """The baselines a problem can be seeded with by name."""
    own = getattr(problem, "baseline_names", None)
    if callable(own):
        return list(own())
    from sim.policies import baseline_names
    return baseline_names(problem.name)


def default_seeds(problem) -> list[str] | None:
    """The seed programs a problem brings for a config that names none (None: it has none)."""
    own = getattr(problem, "seeds", None)
    return list(own()) if callable(own) else None


def is_seed_file(seed: str) -> bool:
    return seed.endswith(".py")


def _check_seed(problem, name: str, files: bool) -> None:
    if is_seed_file(name):
        if not files:
            return
        reader = getattr(problem, "seed_source", None)
        if reader is None:
            raise ConfigError(f"'search.seeds': {_shown(name)}: seed files need a problem that "
                              f"reads them; name a baseline instead", "search.seeds")
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"'search.seeds': seed file {_shown(name)} not found",
                              "search.seeds")
        try:
            reader(name)
        except (KeyError, ValueError, OSError) as exc:
            why = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            from .hygiene import clean
            raise ConfigError(f"'search.seeds': {clean(why, 300)}", "search.seeds") from None
        return
    known = baselines_of(problem)
    if name not in known:
        raise ConfigError(f"'search.seeds': {_shown(name)} is not a {problem.name} "
                          f"baseline (known: {', '.join(known) or 'none'}; or a FILE.py)"
                          f"{_close_to(name, known)}", "search.seeds")


def _check_problem(cfg, files: bool = True) -> None:
    """Names that must exist in the problem: splits and seed programs. `files`: read seed
    files too (a new run; a resumed run was seeded when it started)."""
    problem = problem_of(cfg)
    splits = list(problem.splits)
    checks = [("evaluation.split", cfg.evaluation.split)]
    if cfg.evaluation.cascade:
        checks.append(("evaluation.cascade_split", cfg.evaluation.cascade_split))
    if cfg.tuning.split:
        checks.append(("tuning.split", cfg.tuning.split))
    checks.append(("report.split", cfg.report.split))
    for key, value in checks:
        if value not in problem.splits:
            raise ConfigError(f"{key!r} must be one of the {problem.name} problem's splits "
                              f"({', '.join(splits)}), got {_shown(value)}"
                              f"{_close_to(value, splits)}", key)
    if not cfg.search.seeds:
        raise ConfigError(f"'search.seeds' needs at least one seed program (the {problem.name} "
                          f"baselines: {', '.join(baselines_of(problem))})", "search.seeds")
    for name in cfg.search.seeds:
        _check_seed(problem, name, files)


def validate(cfg: RunConfig, files: bool = True) -> RunConfig:
    _check_ranges(cfg)
    for key, ok, why in RULES:
        if not ok(cfg):
            raise ConfigError(f"{key!r} {why}", key)
    _check_problem(cfg, files)
    return cfg


# --- environment overrides ------------------------------------------------------------------------
# name -> (unit, low (exclusive), high): read by glia_evo.evaluation.parallel and .dask
ENVIRONMENT = {
    "GLIA_EVO_EVAL_TIMEOUT_S": ("seconds", 0.0, DAY_S),   # at least MIN_SECONDS
    "GLIA_EVO_EVAL_CPU_S": ("seconds", 0.0, DAY_S),
    "GLIA_EVO_EVAL_MEMORY_MB": ("MiB", 0.0, float(2**20)),
    "GLIA_EVO_DASK_CONNECT_TIMEOUT_S": ("seconds", 0.0, DAY_S),
    "GLIA_EVO_DASK_WORKER_WAIT_S": ("seconds", 0.0, DAY_S),
    "GLIA_EVO_DASK_IDLE_POOL_S": ("seconds", 0.0, DAY_S),
}


MIN_SECONDS = 0.1


def check_environment(environ=None) -> None:
    """The GLIA_EVO_* variables that set limits: a positive, finite number in range, or unset
    (or empty). Checked when the command line starts, before anything runs."""
    environ = os.environ if environ is None else environ
    for name, (unit, low, high) in ENVIRONMENT.items():
        text = environ.get(name)
        if text is None or not text.strip():
            continue
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        shown = _shown(text, 60)
        if not value > low:
            raise ConfigError(f"{name} must be a positive number of {unit}, got {shown}", name)
        if not value <= high:
            raise ConfigError(f"{name} must be a positive number of {unit} up to {_num(high)}, "
                              f"got {shown}", name)
        if unit == "seconds" and value < MIN_SECONDS:
            raise ConfigError(f"{name} must be at least {MIN_SECONDS:g} seconds, got {shown}",
                              name)


def from_dict(data: dict, files: bool = True) -> RunConfig:
    """A validated RunConfig from TOML data. A config that names no seeds gets its problem's
    default seed programs. `files=True` (a new run) reads seed files, and makes their paths
    absolute so the run folder's config.toml finds them from anywhere."""
    cfg = RunConfig()
    _check(cfg, "", data)
    search = data.get("search")
    if not (isinstance(search, dict) and "seeds" in search):
        seeds = default_seeds(problem_of(cfg))
        if seeds:
            cfg.search.seeds = seeds
    validate(cfg, files)
    if files:
        cfg.search.seeds = [str(Path(s).expanduser().resolve()) if is_seed_file(s) else s
                            for s in cfg.search.seeds]
    return cfg


MAX_CONFIG_BYTES = 1_000_000


def load(path: str | Path | None, overrides: dict | None = None,
         files: bool = True) -> RunConfig:
    """Read a TOML file (or defaults when None) and apply dotted-key overrides from the CLI."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"{path} is a folder; give a run configuration file (TOML)")
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            with path.open("rb") as fh:
                raw = fh.read(MAX_CONFIG_BYTES + 1)
            if len(raw) > MAX_CONFIG_BYTES:
                raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1000} kB; a run "
                                  f"configuration is a short TOML file")
            data = tomllib.loads(raw.decode("utf-8-sig"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except (OSError, RecursionError) as exc:
            raise ConfigError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") \
                from None
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                name = ".".join(parents[:i + 1])
                raise ConfigError(f"{name!r} must be a table ([{name}])", name)
        node[leaf] = value
    return from_dict(data, files)
