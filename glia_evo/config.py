"""Run configuration: TOML with defaults for everything, validated key by key.

Unknown keys and bad values are rejected with the key's dotted name, so a typo in a config never
silently runs the default instead. The resolved configuration is written to the run folder.
"""
from __future__ import annotations

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


@dataclass
class EvaluationConfig:
    workers: int = 2
    split: str = "train"
    cascade: bool = True
    cascade_split: str = "quick"
    cascade_threshold: float = 0.8
    timeout_s: float = 300.0
    memory_mb: int = 2048


@dataclass
class LLMConfig:
    mode: str = "offline"            # offline | openai (the LLM agents come with their issue)
    model: str = ""
    base_url: str = ""


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

    def run_dir(self) -> Path:
        return Path(self.out or f"runs/{self.name}")

    def to_dict(self) -> dict:
        return asdict(self)

    def dump(self, path: Path) -> None:
        path.write_text(tomli_w.dumps(self.to_dict()))


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
    raise ConfigError(f"{name!r}: unsupported value {value!r}")


RULES = [
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
    ("evaluation.memory_mb", lambda c: c.evaluation.memory_mb >= 256, "must be >= 256"),
    ("llm.mode", lambda c: c.llm.mode in ("offline", "openai"), "must be 'offline' or 'openai'"),
    ("seed", lambda c: c.seed >= 0, "must be >= 0"),
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
