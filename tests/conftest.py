"""Shared fixtures for the simulator tests: tiny GPU profiles, baseline loading, a bare cluster."""
from __future__ import annotations

import simpy
import pytest

from sim import profiles as sim_profiles
from sim.cluster import Cluster
from sim.hooks import hooks_of
from sim.policies import load_trusted
from sim.profiles import GpuProfile


@pytest.fixture
def tiny_profile(monkeypatch):
    """Register a small-KV GPU profile for the test only; returns its name.

    `tiny_profile(num_blocks)` -> "test/tiny<num_blocks>". Timing coefficients are A10-like so
    iterations take tens of milliseconds, but the KV cache holds only `num_blocks` x 16 tokens.
    """
    def make(num_blocks: int, block_size: int = 16) -> str:
        name = f"test/tiny{num_blocks}x{block_size}"
        monkeypatch.setitem(sim_profiles.PROFILES, name, GpuProfile(
            "test", f"tiny{num_blocks}", a_ps=30_000_000_000, b_ps=180_000_000,
            c_ps=68_000_000, d_ps=218, num_blocks=num_blocks, block_size=block_size))
        return name
    return make


@pytest.fixture
def baseline():
    """`baseline(name, seed=0)` -> (route callable, knob values) of a shipped routing baseline.

    Each call imports a fresh module, so a seeded baseline starts from its seed every time.
    """
    def load(name: str, seed: int = 0):
        fns, knobs = load_trusted("routing", name, seed)
        return fns["route"], knobs
    return load


@pytest.fixture
def bare_cluster():
    """`bare_cluster(workload, spec, route, fast=False)` -> (env, cluster), arrivals scheduled.

    For looking at replica state between events; the caller drives `env`.
    """
    def make(workload, spec, route, knobs=None, fast=False):
        env = simpy.Environment()
        cluster = Cluster(env, spec, hooks_of({"route": (route, knobs)}), fast=fast)
        cluster.total = len(workload)
        env.process(cluster.arrivals(sorted(workload, key=lambda r: r.arrival_s)))
        return env, cluster
    return make


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "soak: the fault-injection soak test (tests/faults/test_soak.py); short by "
                   "default, long with GLIA_EVO_SOAK_EVALUATIONS=500")


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("glia-cache")


@pytest.fixture(autouse=True)
def _baseline_cache_in_tmp(_session_cache, monkeypatch):
    """The suite's own cache (glia_evo.evaluation.baseline_cache: shipped baselines' results,
    the empty MLflow store template), shared by its tests as a user's runs share theirs, never
    the user's ~/.cache/glia-evo; CLI runs a test starts inherit it through the environment.
    A test of the cache itself sets a folder of its own."""
    monkeypatch.setenv("GLIA_EVO_CACHE_DIR", str(_session_cache))
    # tests that read MLflow after a run expect its backlog drained (the product bounds it)
    monkeypatch.setenv("GLIA_EVO_TRACKING_DRAIN_S", "120")
