"""What a problem is: entry points, scenarios split into train / validation / test, a fitness.

A scenario is a cluster plus a workload family (or, for a problem of your own that is not an
LLM-serving policy, any input-data family); each seed of a scenario is one *instance* (named
`scenario#seed`), and every candidate is compared with the reference baseline on the same
instances (common random numbers). Everything glia-evo knows about a problem lives on its
`Problem`: see docs/problems.md for writing one.
"""
from __future__ import annotations

import importlib.util
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from sim import ClusterSpec, RequestSpec
from sim.workload import scale_rate

MAX_SEED_BYTES = 100_000       # a seed program file (as `glia-evo simulate --policy` reads)

# what the report and the LLM prompts show for an LLM-serving problem, unless it says otherwise
SERVING_COLUMNS = (("mean_e2e_s", "mean e2e s", "{:.2f}"), ("p50_e2e_s", "p50 e2e s", "{:.2f}"),
                   ("p99_e2e_s", "p99 e2e s", "{:.1f}"), ("mean_ttft_s", "mean TTFT s", "{:.2f}"),
                   ("mean_tpot_s", "TPOT s", "{:.3f}"), ("throughput_rps", "req/s", "{:.2f}"),
                   ("restarts", "restarts", "{:.0f}"), ("slo_attainment", "SLO", "{:.1%}"))
SERVING_METRICS = (("mean_e2e_s", "mean e2e {:.3g} s"), ("p99_e2e_s", "p99 e2e {:.3g} s"),
                   ("mean_ttft_s", "mean TTFT {:.3g} s"), ("restarts", "restarts {:g}"),
                   ("completed", "completed {:g}"))


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    cluster: ClusterSpec | None = None      # None: not an LLM-serving scenario
    # seed -> the instance's input: the request list of an LLM-serving scenario, or whatever
    # a problem's own `evaluate` reads
    workload: Callable[[int], Any] = field(default=None, repr=False)
    seeds: tuple[int, ...] = (0,)

    def instances(self, seeds=None) -> list["Instance"]:
        return [Instance(self, s) for s in (self.seeds if seeds is None else seeds)]


@dataclass(frozen=True)
class Instance:
    """One simulation: a scenario at one seed, optionally with its rate or size changed."""

    scenario: Scenario
    seed: int
    rate_scale: float = 1.0
    replicas: int | None = None
    kv_blocks: int | None = None      # KV budget per replica (blocks); None: the scenario's

    @property
    def name(self) -> str:
        return f"{self.scenario.name}#{self.seed}"

    def cluster(self) -> ClusterSpec:
        """The scenario's cluster; `replicas` overrides its size (for an autoscaled cluster: the
        most replicas the autoscaler may use, the initial fleet and minimum shrinking to fit)."""
        spec = self.scenario.cluster
        if spec is not None and self.kv_blocks is not None:
            spec = spec.with_kv_blocks(self.kv_blocks)
        if self.replicas is None or spec is None:
            return spec
        a = spec.autoscale
        if a is None:
            return replace(spec, replicas=(spec.replicas[0],) * self.replicas)
        initial = min(len(spec.replicas), self.replicas)
        return replace(spec, replicas=spec.replicas[:initial],
                       autoscale=replace(a, min_replicas=min(a.min_replicas, self.replicas),
                                         max_replicas=self.replicas))

    def workload(self) -> list[RequestSpec] | Any:
        requests = self.scenario.workload(self.seed)
        if self.rate_scale == 1.0 or self.scenario.cluster is None:
            return requests
        return scale_rate(requests, self.rate_scale)


@dataclass(frozen=True)
class Problem:
    name: str
    entrypoints: tuple[str, ...]
    reference: str                    # the baseline whose fitness is 1.0
    metric: str                       # lower is better; fitness = reference / candidate
    scenarios: dict[str, Scenario]
    splits: dict[str, tuple[tuple[str, int], ...]]   # split -> (scenario, seed) pairs
    default_scenario: str
    description: str
    # entry points the candidate does not define, fixed to a shipped baseline:
    # (entry point, problem, baseline name) triples, e.g. (("route", "routing", "llq"),)
    fixed: tuple[tuple[str, str, str], ...] = ()
    # extra metrics computed from a run's metrics and cluster (e.g. a penalised cost); the
    # problem's `metric` may be one of them
    derive: Callable[[dict, ClusterSpec], dict] | None = None
    # for the rule-based Analyst: what a valid answer is (advice on an `invalid` candidate), and
    # evidence sentences from (per-scenario metrics, diagnostics, the parent's metrics or None)
    valid_answer: str = ""
    advice: Callable[[dict, dict, dict | None], list[str]] | None = None
    # the baseline programs: a folder of FILE.py candidates (the stem is the baseline's name),
    # listed in `baseline_order` first; None = the shipped folder sim/policies/<name>/
    baselines: Path | str | None = None
    baseline_order: tuple[str, ...] = ()
    default_seeds: tuple[str, ...] = ()     # seed programs when a config names none
    # report columns (metric key, header, format), and metrics an LLM prompt shows besides the
    # LLM-serving ones ((key, format) pairs); see `report_columns`, `prompt_metrics`
    columns: tuple[tuple[str, str, str], ...] = ()
    metric_keys: tuple[tuple[str, str], ...] = ()
    # () -> (operators, weights): problem-specific offline mutation operators, loaded lazily
    blocks: Callable[[], tuple[dict, dict]] | None = None
    # a problem that is not simulated by `sim`: evaluate(policy, instance, knobs) -> metrics
    # dict (or (metrics, diagnostics)), where `policy` maps each entry point to the candidate's
    # sandboxed function; raise `InvalidAnswer` for an answer the problem cannot use
    evaluate: Callable[..., Any] | None = field(default=None, repr=False)
    # files or folders the scenarios read while a job evaluates (e.g. your trace): the sandbox's
    # kernel layer leaves only these (and a problem file's own folder) readable to a job
    data: tuple[Path | str, ...] = ()
    origin: str = ""    # set by the registry: the spec that finds this problem again

    @property
    def key(self) -> str:
        """What `get_problem` resolves to this problem in any process (a worker, a resume)."""
        return self.origin or self.name

    def read_paths(self) -> tuple[str, ...]:
        """What a job evaluating this problem must be able to read besides glia-evo itself."""
        paths = [str(Path(p).expanduser().resolve()) for p in self.data]
        where = self.origin.rpartition(":")[0]
        if where.endswith(".py"):
            paths.append(str(Path(where).parent))
        return tuple(paths)

    @property
    def simulated(self) -> bool:
        """True for an LLM-serving problem run by `sim`; False for one with its own evaluate."""
        return self.evaluate is None

    def report_columns(self) -> tuple[tuple[str, str, str], ...]:
        if self.columns:
            return self.columns
        return SERVING_COLUMNS if self.simulated else ((self.metric, self.metric, "{:.4g}"),)

    def prompt_metrics(self) -> tuple[tuple[str, str], ...]:
        """(metric, format) pairs an LLM prompt shows, when a candidate's metrics have them."""
        own = self.metric_keys or (() if self.simulated else ((self.metric, self.metric + " {:.4g}"),))
        return own + (SERVING_METRICS if self.simulated else ())

    # --- baselines ---------------------------------------------------------------------------
    def baseline_names(self) -> list[str]:
        if self.baselines is None:
            from sim.policies import baseline_names
            return baseline_names(self.name)
        folder = Path(self.baselines)
        names = sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))
        return [n for n in self.baseline_order if n in names] + \
            [n for n in names if n not in self.baseline_order]

    def baseline_path(self, name: str) -> Path:
        if self.baselines is None:
            from sim.policies import baseline_path
            return baseline_path(self.name, name)
        path = Path(self.baselines) / f"{name}.py"
        if name.startswith("_") or "/" in name or not path.is_file():
            known = ", ".join(self.baseline_names()) or "none"
            raise KeyError(f"unknown {self.name} baseline {name!r} (known: {known})")
        return path

    def baseline_source(self, name: str) -> str:
        return self.baseline_path(name).read_text()

    def load_trusted(self, name: str, seed: int = 0):
        """Import a baseline directly, without the sandbox (baselines ship with the problem,
        they are trusted code): (entry point -> function, knob values)."""
        path = self.baseline_path(name)
        spec = importlib.util.spec_from_file_location(f"glia_baseline_{self.name}_{name}", path)
        module = importlib.util.module_from_spec(spec)
        module.rng = random.Random(seed)
        spec.loader.exec_module(module)
        knobs = {k: v[0] for k, v in getattr(module, "KNOBS", {}).items()}
        return {e: getattr(module, e) for e in self.entrypoints}, knobs

    def seed_source(self, seed: str) -> str:
        """A seed program's text: a baseline by name, or a FILE.py of your own (a seed is a
        candidate like any other: it is compiled in the sandbox, never imported)."""
        if seed.endswith(".py"):
            path = Path(seed).expanduser()
            try:
                if path.stat().st_size > MAX_SEED_BYTES:
                    raise ValueError(f"seed {seed}: larger than {MAX_SEED_BYTES // 1000} kB")
                return path.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"seed {seed}: cannot read it ({exc.__class__.__name__})") \
                    from None
        return self.baseline_source(seed)

    def seeds(self) -> list[str]:
        """The default seed programs: `default_seeds`, else the reference baseline."""
        return list(self.default_seeds or (self.reference,))

    def scenario(self, name: str) -> Scenario:
        try:
            return self.scenarios[name]
        except KeyError:
            raise KeyError(f"unknown {self.name} scenario {name!r} "
                           f"(known: {', '.join(self.scenarios)})") from None

    def split(self, name: str) -> list[Instance]:
        try:
            pairs = self.splits[name]
        except KeyError:
            raise KeyError(f"unknown split {name!r} (known: {', '.join(self.splits)})") from None
        return [Instance(self.scenarios[s], seed) for s, seed in pairs]
