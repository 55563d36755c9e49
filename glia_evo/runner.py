"""`glia-evo run / resume / status`: run folders, signals, progress display.

Ctrl-C (or SIGTERM) once: stop proposing, finish the evaluations in flight, checkpoint, exit 0.
Twice: abort now; the evaluations in flight stay `pending` and run first on `resume`.

A run that stops normally (a budget, Ctrl-C / SIGTERM, nothing left to propose) then writes the
held-out report (`[report]`: at_end, split, baselines) to `<run>/report/`, as `glia-evo report`
does; a failed or interrupted report is one line on stderr and leaves the run as it was.

A full disk (ENOSPC / EDQUOT from any write, or SQLite's "database or disk is full") stops the
run: the evaluations in flight are killed, the failed transaction is rolled back (everything
committed before stays), and one line says so and how to resume; exit status 1. `run` and
`resume` refuse to start with less than MIN_FREE_MB free on the run folder's disk.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from population import Islands, Store, StoreError

from . import config as config_mod, validation
from .config import RunConfig
from .disk import (check_free_space, disk_full, disk_full_reason,
                   trim_partial_line)
from .engine import Budget, Engine, EngineError, run_status
from .run_folder import RunFolder



class RunError(Exception):
    """A run folder or configuration problem, reported as one line."""


def start(cfg: RunConfig, progress: bool = True, report: bool = True) -> int:
    """A new run in cfg.run_dir(). The configuration was validated when it was read; a run that
    then fails to set up (an executor that cannot start, a store that cannot be created) leaves
    no run folder behind, so the same command runs once the cause is fixed."""
    run_dir = cfg.run_dir()
    if RunFolder(run_dir).state.exists():
        raise RunError(f"{run_dir} already holds a run: continue it with `glia-evo resume "
                       f"{run_dir}` or choose another folder with --out")
    check_llm(cfg)
    check_sandbox(cfg)
    check_run_folder(run_dir)
    check_free_space(run_dir, "start")
    created = _Created(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.out = str(run_dir)
        cfg.dump(RunFolder(run_dir).config)
    except OSError as exc:
        created.undo()
        if disk_full_reason(exc):
            return disk_full(run_dir, disk_full_reason(exc))
        raise RunError(f"cannot write the run folder {run_dir}: {exc.strerror or exc}") \
            from None
    if not report:
        cfg.report.at_end = False       # this session only: config.toml keeps its [report]
    return _run(cfg, run_dir, progress, created=created)


class _Created:
    """What a new run adds to its folder, to be taken back when it fails to set up."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.existed = run_dir.is_dir()
        self.before = set(os.listdir(run_dir)) if self.existed else set()

    def undo(self) -> None:
        import shutil
        try:
            if not self.existed:
                shutil.rmtree(self.run_dir, ignore_errors=True)
                return
            for name in set(os.listdir(self.run_dir)) - self.before:
                path = self.run_dir / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        except OSError:
            pass


def check_run_folder(run_dir: Path) -> None:
    """The run folder can be made and written: not a file, not under one, not on a virtual file
    system such as /proc or /sys (whose "free space" is 0), not read-only. Nothing is created."""
    probe = run_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    where = "" if probe == run_dir else f" (under {probe})"
    if probe.exists() and not probe.is_dir():
        raise RunError(f"cannot make the run folder {run_dir}: {probe} is a file, not a folder")
    try:
        st = os.statvfs(probe)
    except OSError as exc:
        raise RunError(f"cannot use the run folder {run_dir}: {exc.strerror or exc}") from None
    if st.f_blocks == 0:
        raise RunError(f"cannot make the run folder {run_dir}{where}: {probe} is on a virtual "
                       f"file system (like /proc or /sys) that cannot hold files; choose "
                       f"another folder with --out")
    if st.f_flag & os.ST_RDONLY:
        raise RunError(f"cannot make the run folder {run_dir}{where}: {probe} is on a "
                       f"read-only file system; choose another folder with --out")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunError(f"cannot make the run folder {run_dir}{where}: no permission to write "
                       f"in {probe}; choose another folder with --out")


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


def sandbox_warning() -> str | None:
    """One line when this kernel refuses a layer of the sandbox (see sandbox.kernel), else None."""
    from sandbox.kernel import probe
    support = probe()
    if support.ok:
        return None
    return (f"the sandbox's kernel layer is incomplete on this machine (missing: "
            f"{', '.join(support.missing)}: {support.reason}); candidate programs run with the "
            f"language layer and resource limits only")


def check_sandbox(cfg: RunConfig) -> None:
    """Say once, before the run starts, if the kernel refuses a sandbox layer; then an LLM run
    (whose programs nobody has read) needs evaluation.allow_weak_sandbox (--allow-weak-sandbox).
    With a Dask executor this checks the machine glia-evo runs on, not the workers."""
    warning = sandbox_warning()
    if warning is None:
        return
    if cfg.llm.mode != "offline" and not cfg.evaluation.allow_weak_sandbox:
        raise RunError(f"{warning}; refusing to run LLM-written programs: pass "
                       f"--allow-weak-sandbox (evaluation.allow_weak_sandbox = true) to accept")
    print(f"glia-evo: warning: {warning}", file=sys.stderr)


def resume(run_dir: Path, overrides: dict, progress: bool = True, report: bool = True) -> int:
    """Continue a run. The budget rule: `--max-evaluations N` larger than the run's evaluation
    budget, without `--minutes`, lifts the old time budget (the run then stops at N
    evaluations, or on Ctrl-C); `--minutes M` sets the whole run's time budget to M."""
    before = load_run_config(run_dir)
    overrides = dict(overrides)
    lifted = ("budget.max_evaluations" in overrides and "budget.minutes" not in overrides
              and overrides["budget.max_evaluations"] > before.budget.max_evaluations
              and before.budget.minutes < config_mod.MAX_MINUTES)
    if lifted:
        overrides["budget.minutes"] = config_mod.MAX_MINUTES
    cfg = load_run_config(run_dir, overrides)
    check_llm(cfg)
    check_sandbox(cfg)
    check_free_space(run_dir, "resume")
    if overrides:
        try:
            cfg.dump(RunFolder(run_dir).config)
        except OSError as exc:
            if disk_full_reason(exc):
                return disk_full(run_dir, disk_full_reason(exc))
            raise
    print(resume_line(run_dir, cfg, before, lifted), flush=True)
    if not report:
        cfg.report.at_end = False       # this session only: config.toml keeps its [report]
    return _run(cfg, run_dir, progress)


def load_run_config(run_dir: Path, overrides: dict | None = None) -> RunConfig:
    folder = RunFolder(run_dir)
    if not folder.holds_run():
        raise RunError(f"{run_dir} is not a glia-evo run folder (no {folder.STATE} / "
                       f"{folder.CONFIG})")
    cfg = config_mod.load(folder.config, overrides, files=False)
    cfg.out = str(run_dir)
    return cfg


def budget_text(b) -> str:
    parts = [f"{b.max_evaluations} evaluations"]
    parts.append("no time limit" if b.minutes >= config_mod.MAX_MINUTES
                 else f"{b.minutes:g} min")
    if b.max_tokens:
        parts.append(f"{b.max_tokens} tokens")
    if b.max_cost_usd:
        parts.append(f"${b.max_cost_usd:g}")
    return ", ".join(parts)


def resume_line(run_dir: Path, cfg: RunConfig, before: RunConfig, lifted: bool) -> str:
    """The line that starts a resume: where the run stands and the budget that now applies."""
    done = used_min = None
    try:
        store = Store(RunFolder(run_dir).state, create=False)
        try:
            done = int(store.get_meta("evaluations", 0)) + int(store.get_meta("trials", 0))
            used_min = float(store.get_meta("elapsed_s", 0.0)) / 60
        finally:
            store.close()
    except (StoreError, OSError, ValueError, TypeError):
        pass
    line = f"resume: {run_dir}"
    if done is not None:
        line += (f" at {done} evaluations (tuning trials included), {duration(used_min * 60)} "
                 f"searched")
    line += f"; budget for the whole run: {budget_text(cfg.budget)}"
    if lifted:
        line += (f" (the old {before.budget.minutes:g}-min time budget is lifted by the larger "
                 f"--max-evaluations; pass --minutes to keep one)")
    elif used_min is not None and cfg.budget.minutes * 60 <= used_min * 60 + 1:
        line += (f" -- the time budget is already used up: pass --minutes (more than "
                 f"{used_min:.1f}) to go on")
    return line


def _run(cfg: RunConfig, run_dir: Path, progress: bool, created: "_Created | None" = None
         ) -> int:
    """`created`: a new run's folder, removed again if the run fails before its first
    evaluation for a reason other than a full disk (so the corrected command can run)."""
    from .evaluation.executors import make_executor

    clock = {"began": time.monotonic()}
    try:
        trim_partial_line(RunFolder(run_dir).tuning_journal)
    except OSError as exc:
        raise RunError(f"cannot repair {run_dir / 'optuna.journal'}: {exc}") from None
    display = Display(cfg, enabled=progress)
    try:
        from .problems import get_problem
        pool = make_executor(cfg.evaluation, get_problem(cfg.problem).read_paths())
    except BaseException:
        display.close()
        if created is not None:
            created.undo()
        raise
    try:
        # no status per result when nothing shows it (--quiet)
        engine = Engine(cfg, run_dir, pool, progress=display.update if display.enabled else None)
    except Exception as exc:
        pool.shutdown()
        display.close()
        if disk_full_reason(exc):
            return disk_full(run_dir, disk_full_reason(exc))
        if created is not None:
            created.undo()
        if isinstance(exc, StoreError):
            raise RunError(str(exc)) from None
        raise
    before = engine.evaluations
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
    why = failure = None
    aborted = False
    try:
        why = engine.run()
    except KeyboardInterrupt:
        aborted = True
    except Exception as exc:   # noqa: BLE001 - sorted below: a full disk, or re-raised
        failure = exc
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        pool.shutdown()        # kills the evaluations still running (after an error or abort)
    clock["search"] = time.monotonic()
    if aborted:
        display.close()
        print(f"glia-evo: aborted; in-flight evaluations will run again on `glia-evo resume "
              f"{run_dir}`", file=sys.stderr)
        _close(engine)
        return 130
    if failure is not None:
        display.close()
        reason = disk_full_reason(failure)
        if reason is None:
            nothing_done = created is not None and _evaluations(engine) == 0
            _close(engine)
            if nothing_done:
                created.undo()
            if isinstance(failure, EngineError):
                raise RunError(str(failure)) from None
            raise failure
        return _stop_disk_full(engine, run_dir, reason)
    status = engine.status()
    display.update(status, final=True)      # tuning trials that finished after the last line
    display.close()
    best = status["best"]
    trials = status.get("tuning_trials", 0)
    print(f"stopped: {why}. {status['evaluations']} evaluations"
          + (f" and {trials} tuning trials" if trials else "") + f" in {status['elapsed_s']:.0f} s.")
    if "llm" in status:
        print(llm_line(status["llm"]))
    if status.get("experiments"):
        print(experiments_line(status["experiments"], status.get("insights", 0)))
    if status.get("tuning"):
        print(tuning_line(status["tuning"]))
    choice = choose_on_validation(cfg, run_dir, engine) if best and not engine.fatal else None
    clock["validation"] = time.monotonic()
    if best:
        print(f"best: {best['id']} fitness {best['fitness']:.4f} on the "
              f"'{cfg.evaluation.split}' split (operator {best['operator']}, island "
              f"{best['island']})" + ("" if choice else f" -> {run_dir / 'best.py'}"))
    if choice:
        print(validation.line(choice, cfg.evaluation.split) + f" -> {run_dir / 'best.py'}")
    rc = 1 if engine.fatal else 0
    if engine.fatal:
        print(f"glia-evo: error: {engine.fatal}", file=sys.stderr)
    elif cfg.report.at_end and best:
        if report_at_end(cfg, run_dir, engine.tracker, progress,
                         fresh=status["evaluations"] != before) == 130:
            rc = 130
    elif best:
        print(f"held-out: not evaluated (the report is off): the '{cfg.evaluation.split}' "
              f"fitness chose the best and flatters it; `glia-evo report {run_dir}` compares "
              f"it with the shipped baselines on the test split")
    clock["report"] = time.monotonic()
    error = _close(engine)
    if error is not None:
        reason = disk_full_reason(error)
        if reason is None:
            raise error
        return disk_full(run_dir, reason)
    print(took_line(clock, time.monotonic()))
    print(f"next: glia-evo status {run_dir}   |   glia-evo simulate --problem {cfg.problem} "
          f"--policy {run_dir / 'best.py'} --split test   |   glia-evo export {run_dir} --out "
          f"policy.py   |   glia-evo ui {run_dir}   |   glia-evo resume {run_dir} "
          + (f"--max-evaluations {2 * cfg.budget.max_evaluations}" if why and "evaluation budget"
             in why else "--minutes 30"))
    return rc


def took_line(clock: dict, end: float) -> str:
    """How long this session took, and where: `clock` holds the monotonic time each phase
    ended (`began` is the start); a phase that took under half a second is not named, nor the
    only one."""
    marks = [("search", "search"), ("validation", "choosing on validation"),
             ("report", "report"), ("end", "closing")]
    last, parts = clock["began"], []
    for key, label in marks:
        at = end if key == "end" else clock.get(key, last)
        if at - last >= 0.5:
            parts.append(f"{label} {_duration(at - last)}")
        last = at
    return f"took {_duration(end - clock['began'])}" + (f" ({', '.join(parts)})"
                                                         if len(parts) > 1 else "")


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60:02d} s"


def choose_on_validation(cfg: RunConfig, run_dir: Path, engine: Engine) -> dict | None:
    """The run's best chosen on the validation split (`glia_evo.validation`), `best.py`
    rewritten with it; None when it is off, impossible or interrupted (Ctrl-C: the best stays
    the training split's, and says so)."""
    k, split = cfg.search.validate_top, cfg.search.validation_split
    problem = engine.problem
    if k <= 0 or split not in problem.splits or split == cfg.evaluation.split:
        return None
    choice = validation.current(engine.store)
    if choice is None:
        print(f"validation: choosing the best among the {k} fittest distinct programs on the "
              f"'{split}' split ({len(problem.split(split))} instances)...", flush=True)
        try:
            choice = validation.choose(engine.store, problem, k, split,
                                       workers=cfg.evaluation.workers)
        except Exception as exc:   # noqa: BLE001 - a full disk: the run is saved as it is
            if not disk_full_reason(exc):
                raise
            print(f"validation: not chosen ({disk_full_reason(exc)}); the best stays the one "
                  f"chosen on '{cfg.evaluation.split}'", file=sys.stderr, flush=True)
            return None
        except KeyboardInterrupt:
            print("validation: interrupted; the best stays the one chosen on "
                  f"'{cfg.evaluation.split}' (`glia-evo resume {run_dir}` chooses again)",
                  file=sys.stderr, flush=True)
            return None
    if choice is None:
        return None
    cand = engine.store.get(choice["best"])
    validation.write_best(RunFolder(run_dir).best, cand, choice, cfg.evaluation.split)
    engine.bus.emit("validation", split=split, best=choice["best"],
                    train_best=choice["train_best"],
                    scores={i: round(v["fitness"], 6) for i, v in choice["scores"].items()
                            if i in choice["contenders"]})
    return choice


def _evaluations(engine: Engine) -> int | None:
    try:
        return engine.evaluations + engine.tuning.trials
    except Exception:   # noqa: BLE001
        return None


def _close(engine: Engine, tracking_timeout_s: float = 120.0) -> Exception | None:
    """engine.close(), returning its error instead of raising it."""
    try:
        engine.close(tracking_timeout_s=tracking_timeout_s)
    except Exception as exc:   # noqa: BLE001
        return exc
    return None


def _stop_disk_full(engine: Engine, run_dir: Path, reason: str) -> int:
    """The disk is full: the pool is already shut down (in-flight evaluations killed; they stay
    pending and run again first on resume) and the failed transaction was rolled back. Close
    the rest without waiting long for tracking (its backlog is logged on the next start)."""
    try:
        done = engine.evaluations
    except Exception:   # noqa: BLE001
        done = None
    _close(engine, tracking_timeout_s=10.0)
    if done is not None:
        print(f"stopped: the disk is full. {done} evaluations saved in {RunFolder(run_dir).state}.")
    sys.stdout.flush()
    return disk_full(run_dir, reason)


def report_at_end(cfg: RunConfig, run_dir: Path, tracker, progress: bool,
                  fresh: bool = True) -> int:
    """The held-out report after a run that stopped normally. Never raises: a failure or an
    interruption (Ctrl-C, SIGTERM) is one line on stderr, and the run stays as it is. Returns
    130 when interrupted, else 0. `fresh=False` (nothing evaluated in this session) keeps a
    report already written for the same split."""
    from .heldout import FILES, ReportError, heldout, summary
    out = RunFolder(run_dir).report
    r = cfg.report
    if not fresh:
        try:
            previous = json.loads((out / RunFolder.HELDOUT_JSON).read_text())
            if previous.get("split") == r.split and previous.get("baselines") == r.baselines:
                print(f"report: up to date: {out / 'heldout.md'}", flush=True)
                print_verdict(previous, cfg.evaluation.split)
                return 0
        except (OSError, ValueError):
            pass
    which = "the best candidate and every baseline" if r.baselines else \
        "the best candidate and the reference baseline"
    print(f"report: evaluating {which} on the '{r.split}' split ([report] at_end = false to "
          f"skip; `glia-evo report {run_dir}` any time)...", flush=True)
    tty = progress and sys.stderr.isatty()
    show = report_progress(tty) if progress else None

    def on_term(signum, frame):
        raise KeyboardInterrupt
    old_term = signal.signal(signal.SIGTERM, on_term)
    t0 = time.monotonic()
    try:
        report = heldout(run_dir, cfg.problem, r.split,
                         workers=max(1, min(cfg.evaluation.workers, os.cpu_count() or 1)),
                         include_baselines=r.baselines, progress=show)
        if tracker is not None:
            tracker.files([out / name for name in FILES if (out / name).exists()], "report")
    except KeyboardInterrupt:
        if tty:
            print(file=sys.stderr)
        print(f"glia-evo: report interrupted; the run is saved: write the report later with "
              f"`glia-evo report {run_dir} --split {r.split}`", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:   # noqa: BLE001 - the run is done and saved whatever happens here
        again = f"`glia-evo report {run_dir} --split {r.split}`"
        reason = disk_full_reason(exc)
        if reason:
            why = (f"the disk holding {run_dir} is full ({reason}); free some space and run "
                   f"{again}")
        elif isinstance(exc, ReportError):
            why = f"{exc}; the run is saved: try again with {again}"
        else:
            why = f"{type(exc).__name__}: {exc}; the run is saved: try again with {again}"
        print(f"glia-evo: no held-out report: {why}", file=sys.stderr, flush=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, old_term)
    print(f"report: {summary(report)}")
    print_verdict(report, cfg.evaluation.split)
    print(f"report: written in {time.monotonic() - t0:.0f} s to {out}/ ({', '.join(FILES)})"
          + (", and logged to the MLflow parent run" if tracker is not None else ""),
          flush=True)
    return 0


def experiments_line(x: dict, insights: int = 0) -> str:
    """Research turns (issue 18) in one line of `glia-evo status`."""
    return (f"experiments: {x['turns']} research turns, {x['calls']} tool calls ({x['answered']} "
            f"answered, {x['malformed']} malformed, {x['over_budget']} over a budget), "
            f"{x['simulations']} simulations of {x['requests']} requests = "
            f"{x['evaluations']:.2f} evaluations charged to the budget"
            + (f"; {insights} Supervisor insights" if insights else ""))


def print_verdict(report: dict, train_split: str) -> None:
    """The held-out verdict: the best's train and held-out fitness beside the best shipped
    baseline's and the reference's, and a plain warning when the search did not beat them."""
    from .verdict import verdict
    try:
        lines = verdict(report, train_split)["lines"]
    except (KeyError, TypeError, ValueError):
        return
    for line in lines:
        print(line, flush=True)


def report_progress(tty: bool, every_s: float = 10.0):
    """progress(done, total) for the held-out report: a line rewritten in place on a terminal;
    in a log (stderr not a terminal), a line at the start, every `every_s` seconds and at the
    end, so a long report never looks stuck."""
    state = {"last": None}

    def show(done: int, total: int) -> None:
        if tty:
            end = "\n" if done == total else ""
            print(f"\rreport: simulated {done}/{total}", end=end, file=sys.stderr, flush=True)
            return
        now = time.monotonic()
        if state["last"] is None or done == total or now - state["last"] >= every_s:
            state["last"] = now
            print(f"report: simulated {done}/{total}", file=sys.stderr, flush=True)
    return show


def tuning_line(t: dict) -> str:
    """What tuning cost and gained, in one line."""
    gained = (f"{t['improved']} improved their program (best +{100 * t['best_gain']:.2f}%, "
              f"mean +{100 * t['mean_gain']:.2f}%)" if t["improved"] else "none improved")
    probes = t.get("probes", 0)
    skipped = [f"{n} program{'s' if n > 1 else ''} {why}" for n, why in (
        (t.get("not_tuned_insensitive", 0), "whose knobs did not move the quick stage"),
        (t["not_tuned_unused_knobs"], "whose code never reads its knobs")) if n]
    return (f"tuning: {t['studies']} studies, {gained}, {t['stopped_early']} stopped early; "
            f"{t['trials']} trials ({t['cut_by_cascade']} cut by the cascade, {t['reused']} "
            f"reused), {t.get('tuning_seconds', t['trial_seconds']):.0f} worker-s = "
            f"{100 * t['share_of_worker_time']:.0f}% of the evaluation time"
            + (f" ({probes} probe jobs, {t.get('probe_seconds', 0.0):.0f} worker-s)"
               if probes else "")
            + (f"; not tuned: {', '.join(skipped)}" if skipped else ""))


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
        store = Store(RunFolder(run_dir).state, create=False)
    except StoreError as exc:
        raise RunError(str(exc)) from None
    try:
        islands = Islands.from_store(store)   # read-only: never rewrites a live run's state
        elapsed = float(store.get_meta("elapsed_s", 0.0))
        out = run_status(store, islands, Budget.of(cfg), elapsed)
        out["run"] = str(run_dir)
        out["problem"] = cfg.problem
        out["budget_minutes"] = cfg.budget.minutes
        out["leaderboard"] = [{"id": c.id, "fitness": c.fitness, "operator": c.operator,
                               "island": c.island, "generation": c.generation}
                              for c in islands.leaderboard(5)]
        out["split"] = cfg.evaluation.split
        chosen = validation.current(store)
        if chosen is not None:
            out["validation"] = {"split": chosen["split"], "best": chosen["best"],
                                 "train_best": chosen["train_best"],
                                 "fitness": chosen["scores"][chosen["best"]]["fitness"],
                                 "line": validation.line(chosen, cfg.evaluation.split)}
            cand = store.get(chosen["best"])
            out["best"] = {"id": cand.id, "fitness": cand.fitness, "operator": cand.operator,
                           "island": cand.island, "chosen_on": chosen["split"]}
        from .verdict import for_candidate
        judged = for_candidate(run_dir, out["best"]["id"], cfg.evaluation.split) \
            if out["best"] else None
        if judged is not None:
            out["heldout"] = judged
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
    minutes = ("no time limit" if info.get("budget_minutes", 0) >= config_mod.MAX_MINUTES
               else f"{left['minutes']:.1f} min")
    print(f"budget left: {left['evaluations']} evaluations (tuning trials count too), "
          f"{minutes}{extra}")
    if "llm" in info:
        print(llm_line(info["llm"]))
    if info.get("experiments"):
        print(experiments_line(info["experiments"], info.get("insights", 0)))
    if info.get("tuning"):
        print(tuning_line(info["tuning"]))
    if best:
        print(f"best: {best['id']} fitness {best['fitness']:.4f} on the "
              f"'{info.get('split', 'train')}' split ({best['operator']}, island "
              f"{best['island']})")
        if info.get("validation"):
            print(info["validation"]["line"])
        if info.get("heldout"):
            for line in info["heldout"]["lines"]:
                print(line)
        else:
            print(f"held-out: not evaluated for {best['id']} yet: `glia-evo report "
                  f"{info['run']}`")
    for isl in info["islands"]:
        fit = f"{isl['best_fitness']:.4f}" if isl["best_fitness"] is not None else "-"
        print(f"  island {isl['island']}: {isl['members']} members, best {fit} "
              f"({isl['best_id'] or '-'})")
    print("statuses: " + ", ".join(f"{k} {v}" for k, v in info["statuses"].items() if v))
    print("leaderboard: " + ", ".join(f"{c['id']} {c['fitness']:.4f}" for c in info["leaderboard"]))


def eta(status: dict, budget) -> tuple[float | None, str]:
    """Seconds until the run stops, from the measured rate (evaluations and tuning trials per
    second over the run so far), and which budget ends it: "evaluations" or "time"."""
    done = status["evaluations"] + status.get("tuning_trials", 0)
    elapsed = float(status.get("elapsed_s") or 0.0)
    time_left = (max(0.0, budget.minutes * 60 - elapsed)
                 if budget.minutes < config_mod.MAX_MINUTES else None)
    rate = done / elapsed if elapsed > 1 and done else None
    evals_left = (max(0, budget.max_evaluations - done) / rate) if rate else None
    if evals_left is None:
        return time_left, "time"
    if time_left is not None and time_left < evals_left:
        return time_left, "time"
    return evals_left, "evaluations"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Display:
    """Live progress on a terminal (rich), plain log lines otherwise. The count is evaluations
    plus tuning trials, as the evaluation budget counts them; `eta` is the time until the run
    stops at the rate measured so far (or the time budget, when that ends it first)."""

    def __init__(self, cfg: RunConfig, enabled: bool = True):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.budget = cfg.budget
        self.total = cfg.budget.max_evaluations
        self.live = None
        self.last_line = 0.0
        self.shown = None
        if enabled and self.tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
            self.live = Progress(TextColumn("[bold]search"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total} evals+trials"),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 transient=False)
            self.task = self.live.add_task("search", total=self.total, info="")
            self.live.start()

    def info(self, status: dict) -> str:
        best = status["best"]
        left, which = eta(status, self.budget)
        trials = status.get("tuning_trials", 0)
        info = (f"best {best['fitness']:.4f} ({best['id']})" if best else "best -")
        if trials:
            info += f" | {trials} trials"
        done = status["evaluations"] + trials
        elapsed = float(status.get("elapsed_s") or 0.0)
        rate = done / (elapsed / 60) if elapsed > 1 else 0.0
        info += f" | {rate:.1f}/min | eta {duration(left)}" + \
            (" (time budget)" if which == "time" else "")
        if "llm" in status:
            info += f" | {status['llm']['tokens']} tok ${status['llm']['cost_usd']:.3f}"
        return info

    def update(self, status: dict, final: bool = False) -> None:
        if not self.enabled:
            return
        done = status["evaluations"] + status.get("tuning_trials", 0)
        if final and done == self.shown:
            return
        self.shown = done
        info = self.info(status)
        if self.live:
            self.live.update(self.task, completed=min(done, self.total), info=info)
        else:
            print(f"[{done}/{self.total}] {info}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if self.live:
            self.live.console.print(text)
        elif self.enabled:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.live:
            self.live.stop()
            self.live = None
