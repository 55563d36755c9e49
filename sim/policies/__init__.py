"""Baseline policies, shipped as ordinary candidate programs (they double as search seeds).

`baseline_source` gives the program text, which the engine compiles in the sandbox like any
candidate. `load_trusted` imports a shipped baseline directly, without the sandbox: only for
these files (they are part of the package), to compare sandboxed and direct runs.
"""
from __future__ import annotations

import importlib.util
import random
from pathlib import Path

POLICY_DIR = Path(__file__).resolve().parent
ENTRYPOINTS = {"routing": ("route",), "scheduling": ("schedule",), "autoscaling": ("scale",)}
REFERENCE = {"routing": "llq", "scheduling": "fcfs", "autoscaling": "threshold"}


def baseline_names(problem: str) -> list[str]:
    folder = POLICY_DIR / problem
    if not folder.is_dir():
        return []
    order = {"routing": ["random", "round_robin", "lor", "llq", "least_kv", "power_of_two",
                         "hra", "expert"],
             "scheduling": ["fcfs", "shortest_prompt_first", "aging"],
             "autoscaling": ["fixed", "threshold", "target_utilisation"]}.get(problem, [])
    names = sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))
    return [n for n in order if n in names] + [n for n in names if n not in order]


def baseline_path(problem: str, name: str) -> Path:
    path = POLICY_DIR / problem / f"{name}.py"
    if name.startswith("_") or not path.is_file():
        known = ", ".join(baseline_names(problem)) or "none"
        raise KeyError(f"unknown {problem} baseline {name!r} (known: {known})")
    return path


def baseline_source(problem: str, name: str) -> str:
    return baseline_path(problem, name).read_text()


def load_trusted(problem: str, name: str, seed: int = 0):
    """Import a shipped baseline as a module; returns (entry points dict, knob values)."""
    path = baseline_path(problem, name)
    spec = importlib.util.spec_from_file_location(f"sim_baseline_{problem}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    module.rng = random.Random(seed)
    spec.loader.exec_module(module)
    knobs = {k: v[0] for k, v in getattr(module, "KNOBS", {}).items()}
    return {e: getattr(module, e) for e in ENTRYPOINTS[problem]}, knobs
