"""The `glia-evo` command line (DESIGN §7).

User mistakes end with one line on stderr and a non-zero exit (2 for bad input, 1 for a policy
that fails), never a traceback. Set GLIA_EVO_DEBUG=1 to see tracebacks of internal errors.
"""
from __future__ import annotations

import argparse
import re
import json
import math
import os
import sys
from functools import partial
from pathlib import Path

from sim import TraceError, load_trace

from .evaluation import executors
from .evaluation.result import EvalResult
from .hygiene import clean
from .evaluation.parallel import evaluate_many
from .problems import Instance, Problem, Scenario, get_problem
from .report import family_means, print_baselines, print_simulation
from .run_folder import RunFolder


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {clean(text, 60)!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {clean(text, 60)}")
    return value


def _integer(text: str) -> int:
    try:
        if len(text) > 30:
            raise ValueError
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {clean(text, 60)!r}") from None


def _float_in(low: float, high: float, low_open: bool = True):
    """An argparse type: a finite number in (low, high] (or [low, high])."""
    def parse(text: str) -> float:
        value = _number(text)
        if not ((value > low if low_open else value >= low) and value <= high):
            side = ">" if low_open else ">="
            raise argparse.ArgumentTypeError(f"must be {side} {low:g} and <= {high:g}, got {text}")
        return value
    return parse


def _int_in(low: int, high: int):
    def parse(text: str) -> int:
        value = _integer(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high}, "
                                             f"got {text}")
        return value
    return parse


# the bounds of command-line numbers (the config's are in glia_evo.config.RANGES)
MAX_RATE_SCALE = 1000.0
MIN_RATE_SCALE = 0.001
MAX_REPLICAS = 1024
_positive_float = _float_in(0, 1e6)
_positive_int = _int_in(1, 10**7)
_workers = _int_in(1, 1024)
_seed = _int_in(0, 2**32 - 1)
_minutes = _float_in(0, 525_600)
_port = _int_in(1, 65535)


def _rate_scale(text: str) -> float:
    value = _number(text)
    if not MIN_RATE_SCALE <= value <= MAX_RATE_SCALE:
        raise argparse.ArgumentTypeError(f"must be from {MIN_RATE_SCALE:g} to "
                                         f"{MAX_RATE_SCALE:g} (a factor on the arrival rate), "
                                         f"got {text}")
    return value


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("glia-evo")
    except (ImportError, PackageNotFoundError):
        from . import __version__
        return __version__


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and --help still shows everything)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="glia-evo", description="Evolutionary search for LLM-serving cluster policies.")
    parser.add_argument("--version", action="version", version=f"glia-evo {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    sim = sub.add_parser("simulate", help="simulate one policy (a baseline or a FILE.py)")
    sim.add_argument("--problem",
                     help=f"{PROBLEM_HELP} (default: the problem whose entry "
                          "point the policy file defines, or whose baseline it names; else "
                          "routing)")
    sim.add_argument("--policy", required=True, help="a baseline name or a candidate FILE.py")
    _scenario_args(sim)
    sim.add_argument("--trace", type=Path, help="replay this CSV trace on the scenario's cluster")
    sim.add_argument("--replicas", type=_int_in(1, MAX_REPLICAS),
                     help="number of replicas (autoscaling: the most the autoscaler may use)")
    sim.add_argument("--rate-scale", type=_rate_scale, default=1.0,
                     help=f"multiply the arrival rate by X ({MIN_RATE_SCALE:g} to "
                          f"{MAX_RATE_SCALE:g})")
    sim.add_argument("--seed", type=_seed, help="run only this seed of the scenario")
    sim.add_argument("--kv-blocks", type=_positive_int, metavar="N",
                     help="KV-cache blocks per replica (default: the scenario's; see "
                          "docs/fidelity.md)")
    sim.add_argument("--split", help="run a whole split of the problem instead of a scenario "
                                     "(train, validation, test, quick)")

    base = sub.add_parser("baselines", help="compare all baselines of a problem")
    base.add_argument("--problem", default="routing",
                      help=f"{PROBLEM_HELP} (default: routing)")
    _scenario_args(base)

    run = sub.add_parser("run", help="start a search (offline by default)")
    run.add_argument("config", nargs="?", type=Path, help="a run configuration (TOML)")
    run.add_argument("--problem", help=PROBLEM_HELP)
    run.add_argument("--out", help="run folder (default runs/<name>)")
    _budget_args(run)
    run.add_argument("--llm", choices=["offline", "openai"], help="who proposes programs")
    run.add_argument("--model", type=_models, metavar="NAME[=W][,NAME=W...]",
                     help="LLM model(s), with sampling weights for an ensemble")
    run.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. "
                                        "http://localhost:8000/v1 (default: OpenAI)")
    _executor_args(run)
    run.add_argument("--seed", type=_seed, help="random seed of the search")
    run.add_argument("--quiet", action="store_true", help="no progress display")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite in the run "
                                            "folder)")
    run.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    run.add_argument("--no-tuning", action="store_true", help="no Optuna knob tuning")
    run.add_argument("--no-report", action="store_true",
                     help="skip the held-out report when the search stops ([report] at_end)")

    res = sub.add_parser("resume", help="continue a stopped or killed search")
    res.add_argument("dir", type=Path)
    _budget_args(res)
    _executor_args(res)
    res.add_argument("--quiet", action="store_true", help="no progress display")
    res.add_argument("--no-report", action="store_true",
                     help="skip the held-out report when the search stops")

    exp = sub.add_parser("export", help="write a candidate as a standalone Python module")
    exp.add_argument("dir", type=Path)
    exp.add_argument("--candidate", help="candidate id (default: the best)")
    exp.add_argument("--out", type=Path, required=True, help="FILE.py to write")

    rep = sub.add_parser("report", help="the best candidate and the baselines on held-out "
                                        "scenarios (table + plots in DIR/report/)")
    rep.add_argument("dir", type=Path)
    rep.add_argument("--split", default="test", help="default: test (never used for selection)")
    rep.add_argument("--no-baselines", action="store_true", help="only the reference baseline")
    rep.add_argument("--workers", type=_workers, help="processes (default: all cores)")
    rep.add_argument("--json", action="store_true", help="print one JSON object")

    ui = sub.add_parser("ui", help="the MLflow UI for a run, on 127.0.0.1")
    ui.add_argument("dir", type=Path)
    ui.add_argument("--port", type=_port, default=None,
                    help="1 to 65535 (default: 5000, or the next free port after it)")

    tr = sub.add_parser("track", help="log a run's tracking backlog to MLflow now")
    tr.add_argument("dir", type=Path)

    st = sub.add_parser("status", help="where a search stands")
    st.add_argument("dir", type=Path)
    st.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=_minutes, help="wall-time budget (whole run); on resume "
                   "without --minutes, a larger --max-evaluations lifts the old time budget")
    p.add_argument("--max-evaluations", type=_positive_int, help="evaluation budget (whole run)")
    p.add_argument("--max-tokens", type=_int_in(1, 10**12), help="LLM token budget (whole run)")
    p.add_argument("--max-cost", type=_positive_float, metavar="USD",
                   help="LLM cost budget in USD (whole run; needs llm.prices)")


def _models(text: str) -> dict:
    """"gpt-4.1=0.7,gpt-4.1-mini=0.3" -> {name: weight}; a bare name weighs 1."""
    out = {}
    for part in text.split(","):
        name, _, weight = part.strip().partition("=")
        if not name:
            raise argparse.ArgumentTypeError(f"empty model name in {text!r}")
        try:
            out[name] = float(weight) if weight else 1.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a weight: {weight!r} (NAME=WEIGHT)") from None
        if not out[name] > 0:
            raise argparse.ArgumentTypeError(f"the weight of {name} must be > 0")
    return out


def _scenario_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", help="scenario name (default: the problem's main scenario)")
    p.add_argument("--workers", type=_workers, help="processes (default: all cores)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


PROBLEM_HELP = ("a built-in problem (routing, scheduling, autoscaling), an installed plug-in's "
                "name, or FILE.py:NAME")


def _problem(name: str) -> Problem:
    try:
        return get_problem(name)
    except KeyError as exc:
        raise UserError(exc.args[0]) from None


def _instances(problem: Problem, args) -> list[Instance]:
    split = getattr(args, "split", None)
    if split:
        if args.scenario or getattr(args, "trace", None) or getattr(args, "seed", None) is not None:
            raise UserError("--split cannot be combined with --scenario, --trace or --seed")
        try:
            return [Instance(i.scenario, i.seed, rate_scale=args.rate_scale,
                             replicas=args.replicas,
                             kv_blocks=getattr(args, "kv_blocks", None))
                    for i in problem.split(split)]
        except KeyError as exc:
            raise UserError(exc.args[0]) from None
    try:
        scenario = problem.scenario(args.scenario or problem.default_scenario)
    except KeyError as exc:
        raise UserError(exc.args[0]) from None
    trace = getattr(args, "trace", None)
    if trace is not None and not problem.simulated:
        raise UserError(f"--trace replays requests on a simulated cluster; the {problem.name} "
                        f"problem has its own evaluate()")
    if trace is not None:
        check_trace(trace, getattr(args, "rate_scale", 1.0))
        scenario = Scenario(f"trace:{trace.name}", f"replay of {trace}", scenario.cluster,
                            partial(_replay, str(trace.resolve())), seeds=(0,))
    seed = getattr(args, "seed", None)
    seeds = scenario.seeds if seed is None or trace is not None else (seed,)
    return [Instance(scenario, s, rate_scale=getattr(args, "rate_scale", 1.0),
                     replicas=getattr(args, "replicas", None),
                     kv_blocks=getattr(args, "kv_blocks", None)) for s in seeds]


MAX_TRACE_REQUESTS = 1_000_000      # rows of a --trace file (about 45 s per policy to simulate)
MAX_TRACE_SPAN_S = 30 * 86_400.0    # the replay's simulated time, after --rate-scale
MAX_TRACE_TOKENS = 10_000_000       # prompt or output tokens of one request


def check_trace(trace: Path, rate_scale: float = 1.0) -> None:
    """A --trace file bounded before it is parsed (rows counted in 1 MiB chunks, stopping past
    the limit), then read (TraceError names a bad row) and checked for values the simulator
    cannot handle: arrivals beyond MAX_TRACE_SPAN_S, token counts beyond MAX_TRACE_TOKENS."""
    if trace.exists() and not trace.is_file():
        raise UserError(f"--trace {clean(str(trace), 300)} is not a regular file (a CSV trace)")
    if not trace.is_file():
        raise UserError(f"trace file not found: {clean(str(trace), 300)}")
    rows = 0
    try:
        with trace.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                rows += chunk.count(b"\n")
                if rows > MAX_TRACE_REQUESTS + 1:
                    raise UserError(f"{clean(str(trace), 300)} has more than "
                                    f"{MAX_TRACE_REQUESTS:,} requests, the most a --trace replays; "
                                    f"replay a slice of it (e.g. head -n {MAX_TRACE_REQUESTS + 1})")
    except OSError as exc:
        raise UserError(f"cannot read {clean(str(trace), 300)}: {exc.strerror or exc}") from None
    requests = load_trace(trace)     # TraceError is a user error, reported by main()
    if not requests:
        raise UserError(f"{clean(str(trace), 300)} holds no request")
    span = max(r.arrival_s for r in requests) / rate_scale
    if not math.isfinite(span) or span > MAX_TRACE_SPAN_S:
        raise UserError(f"{clean(str(trace), 300)}: its arrivals span {span:.3g} s (after "
                        f"--rate-scale {rate_scale:g}); a replay covers at most "
                        f"{MAX_TRACE_SPAN_S:.0f} s (30 days)")
    big = max(max(r.prompt_tokens, r.output_tokens) for r in requests)
    if big > MAX_TRACE_TOKENS:
        raise UserError(f"{clean(str(trace), 300)}: a request has {big:.3g} tokens; at most "
                        f"{MAX_TRACE_TOKENS:,} prompt or output tokens per request")


def _replay(path: str, seed: int):
    return load_trace(path)


_TOP_LEVEL_DEF = re.compile(r"^def[ \t]+([A-Za-z_]\w*)[ \t]*\(", re.M)
POLICY_FILE_LIMIT = 100_000      # bytes; the sandbox compiler's own limit (max_source_bytes)


def read_policy_file(policy: str) -> str:
    """A candidate file's text, read as the search reads candidates: at most POLICY_FILE_LIMIT
    bytes (a larger file is one line, not minutes of parsing), UTF-8 with or without a BOM."""
    path = Path(policy)
    if not path.is_file():
        raise UserError(f"policy file not found: {clean(policy, 300)}")
    try:
        with path.open("rb") as fh:
            data = fh.read(POLICY_FILE_LIMIT + 1)
        if len(data) > POLICY_FILE_LIMIT:
            raise UserError(f"policy file {clean(policy, 300)} is larger than "
                            f"{POLICY_FILE_LIMIT} bytes, the limit for candidate programs")
        from .adapter import strip_adapter
        return strip_adapter(data.decode("utf-8-sig"))   # an exported module's adapter
    except (UnicodeDecodeError, OSError) as exc:
        raise UserError(f"cannot read policy file {clean(policy, 300)}: "
                        f"{clean(exc, 300)}") from None


def _policy_source(problem: Problem, policy: str) -> tuple[str, str]:
    """(display name, source) for a baseline name or a FILE.py path."""
    if policy.endswith(".py") or os.sep in policy:
        return Path(policy).name, read_policy_file(policy)
    try:
        return policy, problem.baseline_source(policy)
    except KeyError as exc:
        raise UserError(exc.args[0]) from None


def _progress(args):
    if args.json or not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        end = "\n" if done == total else ""
        print(f"\rsimulated {done}/{total} scenario instances", end=end, file=sys.stderr,
              flush=True)
    return show


def result_json(problem: Problem, policy: str, result: EvalResult) -> dict:
    return {"problem": problem.name, "policy": policy, "fitness": result.fitness,
            "status": result.status, "error": result.error, "scenarios": result.scenarios,
            "summary": family_means(result.scenarios),
            "reference": {"policy": problem.reference, problem.metric: result.reference}}


def infer_problem(policy: str) -> str:
    """The problem a policy belongs to, when that is unambiguous: a FILE.py defining exactly one
    problem's entry point (read, not run), or a baseline name only one problem has."""
    from .problems import PROBLEMS
    if policy.endswith(".py") or os.sep in policy:
        try:       # bounded and never parsed here: the sandbox's compiler does that
            text = read_policy_file(policy)
        except UserError:
            return "routing"      # reading it again reports the problem properly
        defined = set(_TOP_LEVEL_DEF.findall(text))
        matches = [n for n, p in PROBLEMS.items() if set(p.entrypoints) <= defined]
    else:
        matches = [n for n, p in PROBLEMS.items() if policy in p.baseline_names()]
    return matches[0] if len(matches) == 1 else "routing"


def cmd_simulate(args) -> int:
    from .runner import sandbox_warning
    problem = _problem(args.problem or infer_problem(args.policy))
    warning = sandbox_warning()
    if warning:
        print(f"glia-evo: warning: {warning}", file=sys.stderr)
    name, source = _policy_source(problem, args.policy)
    instances = _instances(problem, args)
    [result] = evaluate_many([source], problem, instances, workers=args.workers,
                             progress=_progress(args))
    if args.json:
        print(json.dumps(result_json(problem, name, result), indent=2))
    elif result.status == "ok":
        print_simulation(problem, name, result)
    if result.status != "ok":
        print(f"glia-evo: policy {name} failed ({result.status}): {result.error}",
              file=sys.stderr)
        return 1
    return 0


def cmd_baselines(args) -> int:
    problem = _problem(args.problem)
    names = problem.baseline_names()
    instances = _instances(problem, args)
    sources = [problem.baseline_source(n) for n in names]
    results = evaluate_many(sources, problem, instances, workers=args.workers,
                            progress=_progress(args))
    if args.json:
        print(json.dumps({"problem": problem.name, "scenario": instances[0].scenario.name,
                          "reference": problem.reference,
                          "baselines": [result_json(problem, n, r)
                                        for n, r in zip(names, results)]}, indent=2))
    else:
        print_baselines(problem, instances[0].scenario, names, results)
    failed = [n for n, r in zip(names, results) if r.status != "ok"]
    for n, r in zip(names, results):
        if r.status != "ok":
            print(f"glia-evo: baseline {n} failed ({r.status}): {r.error}", file=sys.stderr)
    return 1 if failed else 0


def _executor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=_workers,
                   help="parallel evaluations (dask-local: worker processes)")
    p.add_argument("--executor", choices=list(executors.EXECUTORS),
                   help="where evaluations run: " + "; ".join(
                       f"{k.name}: {k.help}" for k in executors.kinds().values()))
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="the Dask scheduler's address (implies --executor dask)")
    p.add_argument("--allow-weak-sandbox", action="store_true",
                   help="run LLM-written programs even where the kernel refuses a sandbox layer "
                        "(seccomp, Landlock); otherwise such a run stops at start")


def _executor_overrides(args) -> dict:
    executor = args.executor or ("dask" if args.scheduler else None)
    if args.scheduler and executor != "dask":
        raise UserError(f"--scheduler needs --executor dask, not {executor}")
    return {"evaluation.workers": args.workers, "evaluation.executor": executor,
            "evaluation.scheduler": args.scheduler,
            "evaluation.allow_weak_sandbox": True if args.allow_weak_sandbox else None}


def cmd_run(args) -> int:
    from . import api
    overrides = {"problem": args.problem, "out": args.out, "budget.minutes": args.minutes,
                 "budget.max_evaluations": args.max_evaluations,
                 "budget.max_tokens": args.max_tokens, "budget.max_cost_usd": args.max_cost,
                 "llm.mode": args.llm, "llm.models": args.model, "llm.base_url": args.base_url,
                 **_executor_overrides(args), "seed": args.seed,
                 "tracking.uri": args.tracking_uri,
                 "tracking.enabled": False if args.no_tracking else None,
                 "tuning.enabled": False if args.no_tuning else None}
    cfg = load_config(args.config, overrides)
    _problem(cfg.problem)
    return api.start(cfg, progress=not args.quiet, report=not args.no_report)


def cmd_resume(args) -> int:
    from . import runner
    overrides = {"budget.minutes": args.minutes, "budget.max_evaluations": args.max_evaluations,
                 "budget.max_tokens": args.max_tokens, "budget.max_cost_usd": args.max_cost,
                 **_executor_overrides(args)}
    return runner.resume(args.dir, {k: v for k, v in overrides.items() if v is not None},
                         progress=not args.quiet, report=not args.no_report)


def cmd_export(args) -> int:
    from .export import ExportError, export
    from .runner import load_run_config
    cfg = load_run_config(args.dir)
    try:
        cand = export(args.dir, args.out, args.candidate, cfg.problem, cfg.evaluation.split)
    except ExportError as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {args.out}: {cand.id}, fitness {cand.fitness:.4f} on the "
          f"'{cfg.evaluation.split}' split")
    print(f"check: glia-evo simulate --problem {cfg.problem} --policy {args.out} "
          f"--split {cfg.evaluation.split}")
    from .verdict import for_candidate
    judged = for_candidate(args.dir, cand.id, cfg.evaluation.split)
    for line in judged["lines"] if judged else [
            f"held-out: not evaluated for {cand.id}: `glia-evo report {args.dir}` compares it "
            f"with the shipped baselines on the test split"]:
        print(line)
    return 0


def cmd_report(args) -> int:
    from .heldout import ReportError, heldout, markdown
    from .runner import load_run_config
    cfg = load_run_config(args.dir)
    try:
        from .runner import report_progress
        report = heldout(args.dir, cfg.problem, args.split, args.workers,
                         include_baselines=not args.no_baselines,
                         progress=None if args.json else report_progress(sys.stderr.isatty()))
    except ReportError as exc:
        raise UserError(str(exc)) from None
    out = RunFolder(args.dir).report
    if cfg.tracking.enabled:
        from .tracking import Tracker
        tracker = Tracker(args.dir, cfg.tracking.uri or None, run_name=cfg.name)
        tracker.files(sorted(out.iterdir()), "report")
        tracker.close(timeout_s=60)
    from .verdict import verdict
    judged = verdict(report, cfg.evaluation.split)
    if args.json:
        print(json.dumps({**report, "verdict": judged}, indent=2))
    else:
        print(markdown(report))
        for line in judged["lines"]:
            print(line)
        print(f"written: {out / 'heldout.md'}, {out / 'heldout.json'}, "
              f"{out / 'heldout.png'}, {out / 'fitness_over_time.png'}")
    return 0


def cmd_ui(args) -> int:
    from .ui import UIError, serve
    try:
        from .runner import load_run_config
        uri = load_run_config(args.dir).tracking.uri
    except Exception:   # noqa: BLE001 - a folder with only an MLflow store is fine too
        uri = ""
    own = f"sqlite:///{(args.dir / 'mlflow.db').resolve()}"
    if uri and uri != own:
        raise UserError(f"{args.dir} logs to {clean(uri, 200)} (tracking.uri), not to a store "
                        f"in the run folder: open that server's UI (or `mlflow ui "
                        f"--backend-store-uri URI`); `glia-evo ui` serves a run folder's own "
                        f"store")
    try:
        return serve(args.dir, args.port)
    except (FileNotFoundError, UIError) as exc:
        raise UserError(str(exc)) from None


def cmd_track(args) -> int:
    from .runner import load_run_config
    from .tracking import drain
    cfg = load_run_config(args.dir)
    left = drain(args.dir, cfg.tracking.uri or None, run_name=cfg.name)
    print(f"tracking: {'all records logged' if not left else f'{left} record(s) left'} "
          f"({args.dir / 'tracking_backlog'})")
    return 1 if left else 0


def cmd_status(args) -> int:
    from . import runner
    info = runner.status(args.dir)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        runner.print_status(info)
    return 0


def load_config(path, overrides):
    from .config import ConfigError, load
    try:
        return load(path, overrides)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


COMMANDS = {"simulate": cmd_simulate, "baselines": cmd_baselines, "run": cmd_run,
            "resume": cmd_resume, "status": cmd_status, "export": cmd_export,
            "ui": cmd_ui, "report": cmd_report, "track": cmd_track}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .config import ConfigError, check_environment
    from .evaluation.dask import ExecutorError
    from .disk import DiskError
    from .runner import RunError
    try:
        check_environment()       # GLIA_EVO_EVAL_TIMEOUT_S=inf is refused before anything runs
        return COMMANDS[args.command](args)
    except (UserError, TraceError, ConfigError, RunError, ExecutorError, DiskError) as exc:
        print(f"glia-evo: error: {exc}", file=sys.stderr)
        return 2
    except OverflowError as exc:    # a number too large for the simulator's arithmetic
        if os.environ.get("GLIA_EVO_DEBUG"):
            raise
        print(f"glia-evo: error: a number in the input is too large to simulate ({exc}); "
              f"check the trace's values and --rate-scale", file=sys.stderr)
        return 2
    except ValueError as exc:   # e.g. a workload that cannot run on the chosen cluster
        if os.environ.get("GLIA_EVO_DEBUG"):
            raise
        print(f"glia-evo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("glia-evo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
