"""`glia-evo run / resume / status`: run folders, signals, progress display.

Ctrl-C (or SIGTERM) once: stop proposing, finish the evaluations in flight, checkpoint, exit 0.
Twice: abort now; the evaluations in flight stay `pending` and run first on `resume`.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from population import Islands, Store, StoreError

from . import config as config_mod
from .config import RunConfig
from .engine import Budget, Engine, run_status

CONFIG_FILE = "config.toml"
STATE_FILE = "state.sqlite"


class RunError(Exception):
    """A run folder or configuration problem, reported as one line."""


def start(cfg: RunConfig, progress: bool = True) -> int:
    run_dir = cfg.run_dir()
    if (run_dir / STATE_FILE).exists():
        raise RunError(f"{run_dir} already holds a run: continue it with `glia-evo resume "
                       f"{run_dir}` or choose another folder with --out")
    check_llm(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.out = str(run_dir)
    cfg.dump(run_dir / CONFIG_FILE)
    return _run(cfg, run_dir, progress)


def check_llm(cfg: RunConfig) -> None:
    """Before an LLM run starts: the openai package is there and the key question is settled.
    The key itself is never printed, stored or passed on: only the variable's name is."""
    if cfg.llm.mode == "offline":
        return
    try:
        import openai  # noqa: F401
    except ImportError:
        raise RunError("--llm openai needs the openai package: python3 -m pip install openai") \
            from None
    from .llm import api_key_from_env
    name = cfg.llm.api_key_env
    if api_key_from_env(name) is None:
        if not cfg.llm.base_url:
            raise RunError(f"--llm openai without --base-url calls the OpenAI API, which needs a "
                           f"key: set the environment variable {name} (llm.api_key_env), or "
                           f"point --base-url at your own server")
        print(f"glia-evo: note: ${name} is not set; calling {cfg.llm.base_url} without an API "
              f"key (fine for local servers such as vLLM or Ollama)", file=sys.stderr)


def resume(run_dir: Path, overrides: dict, progress: bool = True) -> int:
    cfg = load_run_config(run_dir, overrides)
    check_llm(cfg)
    if overrides:
        cfg.dump(run_dir / CONFIG_FILE)
    return _run(cfg, run_dir, progress)


def load_run_config(run_dir: Path, overrides: dict | None = None) -> RunConfig:
    if not (run_dir / STATE_FILE).exists() or not (run_dir / CONFIG_FILE).exists():
        raise RunError(f"{run_dir} is not a glia-evo run folder (no {STATE_FILE} / {CONFIG_FILE})")
    cfg = config_mod.load(run_dir / CONFIG_FILE, overrides)
    cfg.out = str(run_dir)
    return cfg


def _run(cfg: RunConfig, run_dir: Path, progress: bool) -> int:
    from .executors import make_executor

    display = Display(cfg, enabled=progress)
    pool = make_executor(cfg.evaluation)
    try:
        engine = Engine(cfg, run_dir, pool, progress=display.update)
    except StoreError as exc:
        pool.shutdown()
        raise RunError(str(exc)) from None
    presses = {"n": 0}

    def on_signal(signum, frame):
        presses["n"] += 1
        if presses["n"] == 1:
            engine.request_stop("interrupted" if signum == signal.SIGINT else "terminated")
            display.note(f"stopping: finishing {len(engine.inflight)} evaluation(s) in flight "
                         f"(press Ctrl-C again to abort now)")
        else:
            raise KeyboardInterrupt

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        why = engine.run()
    except KeyboardInterrupt:
        display.close()
        print(f"glia-evo: aborted; in-flight evaluations will run again on `glia-evo resume "
              f"{run_dir}`", file=sys.stderr)
        return 130
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        pool.shutdown()
        status = engine.status()
        engine.close()
        display.close()
    best = status["best"]
    trials = status.get("tuning_trials", 0)
    print(f"stopped: {why}. {status['evaluations']} evaluations"
          + (f" and {trials} tuning trials" if trials else "") + f" in {status['elapsed_s']:.0f} s.")
    if "llm" in status:
        print(llm_line(status["llm"]))
    if best:
        print(f"best: {best['id']} fitness {best['fitness']:.4f} (operator {best['operator']}, "
              f"island {best['island']}) -> {run_dir / 'best.py'}")
    print(f"next: glia-evo status {run_dir}   |   glia-evo simulate --problem {cfg.problem} "
          f"--policy {run_dir / 'best.py'} --split test   |   glia-evo export {run_dir} --out "
          f"policy.py   |   glia-evo ui {run_dir}   |   glia-evo resume {run_dir} --minutes 30")
    if engine.fatal:
        print(f"glia-evo: error: {engine.fatal}", file=sys.stderr)
        return 1
    return 0


def llm_line(u: dict) -> str:
    return (f"LLM: {u['calls']} calls, {u['tokens']} tokens ({u['prompt_tokens']} in, "
            f"{u['completion_tokens']} out), ${u['cost_usd']:.4f}; {u['children']} children from "
            f"{u['proposals']} Researcher proposals ({u['repaired']} repaired, {u['discarded']} "
            f"discarded, {u['duplicates']} duplicates, {u['unavailable']} unavailable, "
            f"{u['fallbacks']} offline fallbacks); {u['summaries']} Analyst summaries, "
            f"{u['reviews']} Supervisor reviews; {u['retries']} retries")


def status(run_dir: Path) -> dict:
    cfg = load_run_config(run_dir)
    try:
        store = Store(run_dir / STATE_FILE, create=False)
    except StoreError as exc:
        raise RunError(str(exc)) from None
    try:
        islands = Islands.from_store(store)   # read-only: never rewrites a live run's state
        elapsed = float(store.get_meta("elapsed_s", 0.0))
        out = run_status(store, islands, Budget.of(cfg), elapsed)
        out["run"] = str(run_dir)
        out["problem"] = cfg.problem
        out["leaderboard"] = [{"id": c.id, "fitness": c.fitness, "operator": c.operator,
                               "island": c.island, "generation": c.generation}
                              for c in islands.leaderboard(5)]
        return out
    finally:
        store.close()


def print_status(info: dict) -> None:
    best = info["best"]
    left = info["budget_left"]
    trials = info.get("tuning_trials", 0)
    print(f"run {info['run']} ({info['problem']}): {info['evaluations']} evaluations, "
          + (f"{trials} tuning trials, " if trials else "") +
          f"{info['candidates']} candidates, {info['elapsed_s']:.0f} s searched, "
          f"{info['rate_per_min']} evaluations/min")
    extra = "".join([f", {left['tokens']} tokens" if "tokens" in left else "",
                     f", ${left['cost_usd']:.4f}" if "cost_usd" in left else ""])
    print(f"budget left: {left['evaluations']} evaluations, {left['minutes']:.1f} min{extra}")
    if "llm" in info:
        print(llm_line(info["llm"]))
    if best:
        print(f"best: {best['id']} fitness {best['fitness']:.4f} ({best['operator']}, "
              f"island {best['island']})")
    for isl in info["islands"]:
        fit = f"{isl['best_fitness']:.4f}" if isl["best_fitness"] is not None else "-"
        print(f"  island {isl['island']}: {isl['members']} members, best {fit} "
              f"({isl['best_id'] or '-'})")
    print("statuses: " + ", ".join(f"{k} {v}" for k, v in info["statuses"].items() if v))
    print("leaderboard: " + ", ".join(f"{c['id']} {c['fitness']:.4f}" for c in info["leaderboard"]))


class Display:
    """Live progress on a terminal (rich), plain log lines otherwise."""

    def __init__(self, cfg: RunConfig, enabled: bool = True):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.total = cfg.budget.max_evaluations
        self.live = None
        self.last_line = 0.0
        if enabled and self.tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
            self.live = Progress(TextColumn("[bold]search"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total} evals"),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 transient=False)
            self.task = self.live.add_task("search", total=self.total, info="")
            self.live.start()

    def update(self, status: dict) -> None:
        if not self.enabled:
            return
        best = status["best"]
        info = (f"best {best['fitness']:.4f} ({best['id']})" if best else "best -") + \
            f" | {status['rate_per_min']:.1f}/min | left {status['budget_left']['minutes']:.1f} min"
        if "llm" in status:
            info += f" | {status['llm']['tokens']} tok ${status['llm']['cost_usd']:.3f}"
        if self.live:
            self.live.update(self.task, completed=status["evaluations"], info=info)
        else:
            print(f"[{status['evaluations']}/{self.total}] {info}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if self.live:
            self.live.console.print(text)
        elif self.enabled:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.live:
            self.live.stop()
            self.live = None
