"""The Python API: what the command line does, for a notebook or a script.

    import glia_evo
    run = glia_evo.search("runs/routing.toml", out="/tmp/r", max_evaluations=20)
    run.best["fitness"], run.best_source()
    run.report()                                  # held-out report (dict), as `glia-evo report`
    glia_evo.evaluate("my_router.py", problem="routing", split="validation").fitness

`search` and `resume` run the same code as `glia-evo run` / `resume` (the CLI calls them too);
errors are exceptions (`ConfigError`, `RunError`, `ProblemNotFound`) whose message is the one line
the CLI prints.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig
from .run_folder import RunFolder

# keyword -> the dotted config key it overrides (the CLI's flags, by the same names)
OVERRIDES = {"problem": "problem", "out": "out", "minutes": "budget.minutes",
             "max_evaluations": "budget.max_evaluations", "max_tokens": "budget.max_tokens",
             "max_cost_usd": "budget.max_cost_usd", "llm": "llm.mode", "seed": "seed",
             "workers": "evaluation.workers", "executor": "evaluation.executor",
             "tracking": "tracking.enabled", "tuning": "tuning.enabled"}


class SearchStopped(RuntimeError):
    """A search ended with a non-zero status (interrupted, a full disk...); `.run` is the run."""

    def __init__(self, message: str, run: "Run"):
        super().__init__(message)
        self.run = run


@dataclass(frozen=True)
class Run:
    """A run folder: what `glia-evo status`, `report` and `export` read."""
    path: Path

    def status(self) -> dict:
        from .runner import status
        return status(self.path)

    @property
    def best(self) -> dict | None:
        """The best candidate so far: id, fitness, operator, island (None before any)."""
        return self.status().get("best")

    def best_source(self) -> str | None:
        best = RunFolder(self.path).best
        return best.read_text() if best.is_file() else None

    def config(self) -> RunConfig:
        from .runner import load_run_config
        return load_run_config(self.path)

    def report(self, split: str = "test", baselines: bool = True,
               workers: int | None = None) -> dict:
        """The held-out report (also written to <run>/report/), as `glia-evo report --json`."""
        from .heldout import heldout
        cfg = self.config()
        return heldout(self.path, cfg.problem, split, workers, include_baselines=baselines)

    def export(self, out: str | Path, candidate: str | None = None) -> Path:
        """A standalone module of the best (or `candidate`), as `glia-evo export`."""
        from .export import export
        cfg = self.config()
        export(self.path, Path(out), candidate, cfg.problem, cfg.evaluation.split)
        return Path(out)


def load_config(config: str | Path | dict | RunConfig | None = None, **overrides) -> RunConfig:
    """A validated run configuration from a TOML path, a dict shaped like the TOML, a RunConfig
    or nothing (the defaults), with keyword overrides (see `OVERRIDES`)."""
    from . import config as config_mod
    unknown = set(overrides) - set(OVERRIDES)
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))}; "
                        f"known: {', '.join(OVERRIDES)}")
    dotted = {OVERRIDES[k]: v for k, v in overrides.items() if v is not None}
    if isinstance(config, RunConfig):
        config = config.to_dict()
    if isinstance(config, dict):
        data = copy.deepcopy(config)
        for key, value in dotted.items():
            node = data
            *parents, leaf = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        return config_mod.from_dict(data)
    return config_mod.load(config, dotted)


def search(config: str | Path | dict | RunConfig | None = None, *, progress: bool = False,
           report: bool = True, **overrides) -> Run:
    """Start a search (as `glia-evo run`) and return its run when it stops."""
    cfg = load_config(config, **overrides)
    code = start(cfg, progress=progress, report=report)
    run = Run(cfg.run_dir())
    if code != 0:
        raise SearchStopped(f"the search in {run.path} stopped with status {code}", run)
    return run


def start(cfg: RunConfig, progress: bool = False, report: bool = True) -> int:
    """Start the run `cfg` describes; its exit status (what `glia-evo run` does with a config)."""
    from . import runner
    from .problems import get_problem
    cfg.problem = get_problem(cfg.problem).key     # a FILE.py:NAME problem, from any folder
    return runner.start(cfg, progress=progress, report=report)


def resume(path: str | Path, *, progress: bool = False, report: bool = True,
           minutes: float | None = None, max_evaluations: int | None = None,
           workers: int | None = None) -> Run:
    """Continue a run (as `glia-evo resume`), with the same budget rule."""
    from . import runner
    overrides = {k: v for k, v in (("budget.minutes", minutes),
                                   ("budget.max_evaluations", max_evaluations),
                                   ("evaluation.workers", workers)) if v is not None}
    code = runner.resume(Path(path), overrides, progress=progress, report=report)
    run = Run(Path(path))
    if code != 0:
        raise SearchStopped(f"the search in {run.path} stopped with status {code}", run)
    return run


def evaluate(program: str | Path, problem: str = "routing", *, split: str | None = None,
             scenario: str | None = None, knobs: dict | None = None,
             workers: int | None = None):
    """Evaluate one program (a FILE.py, program text, or a baseline's name) as `glia-evo
    simulate` does: in the sandbox, vs the problem's reference; returns the EvalResult."""
    from .evaluation.parallel import evaluate_many
    from .problems import get_problem
    p = get_problem(problem)
    text = str(program)
    if isinstance(program, Path) or (text.endswith(".py") and "\n" not in text):
        source = p.seed_source(text)
    elif "\n" in text or "def " in text:
        source = text
    else:
        source = p.baseline_source(text)
    if split is not None:
        instances = p.split(split)
    else:
        instances = p.scenario(scenario or p.default_scenario).instances()
    [result] = evaluate_many([source], p, instances, knobs=knobs, workers=workers)
    return result
