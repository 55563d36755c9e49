"""What a problem is: entry points, scenarios split into train / validation / test, a fitness.

A scenario is a cluster plus a workload family; each seed of a scenario is one *instance*
(named `scenario#seed`), and every candidate is compared with the reference baseline on the same
instances (common random numbers).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from sim import ClusterSpec, RequestSpec
from sim.workload import scale_rate



@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    cluster: ClusterSpec
    workload: Callable[[int], list[RequestSpec]] = field(repr=False)
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
        if self.replicas is None:
            return spec
        a = spec.autoscale
        if a is None:
            return replace(spec, replicas=(spec.replicas[0],) * self.replicas)
        initial = min(len(spec.replicas), self.replicas)
        return replace(spec, replicas=spec.replicas[:initial],
                       autoscale=replace(a, min_replicas=min(a.min_replicas, self.replicas),
                                         max_replicas=self.replicas))

    def workload(self) -> list[RequestSpec]:
        requests = self.scenario.workload(self.seed)
        return scale_rate(requests, self.rate_scale) if self.rate_scale != 1.0 else requests


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
