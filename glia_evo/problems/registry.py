"""Finding a problem by name: built-in, an installed plug-in, or a file of your own.

`get_problem(spec)` accepts
- a built-in name (`routing`, `scheduling`, `autoscaling`);
- the name of an installed plug-in: a Python entry point in the `glia_evo.problems` group whose
  value is a `Problem` (or a function returning one), e.g. in the plug-in's pyproject.toml:
  `[project.entry-points."glia_evo.problems"] binpack = "binpack_problem:PROBLEM"`;
- `path/to/my_problem.py:NAME` (a file, relative to the current directory) or
  `package.module:NAME` (an importable module).
The problem's own code is trusted (it is yours, like OpenEvolve's evaluator.py); only the
candidate programs it evaluates run in the sandbox. A loaded problem remembers the spec that found
it (`Problem.key`, absolute for a file), so a worker process or a resumed run finds it again.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import replace
from importlib.metadata import entry_points
from pathlib import Path

from .autoscaling import AUTOSCALING
from .base import Problem
from .routing import ROUTING
from .scheduling import SCHEDULING

ENTRY_POINT_GROUP = "glia_evo.problems"
BUILTIN: dict[str, Problem] = {"routing": ROUTING, "scheduling": SCHEDULING,
                               "autoscaling": AUTOSCALING}


class ProblemNotFound(KeyError):
    """A spec that names no problem; the message is one line saying what is available."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def plugins() -> dict:
    """Installed plug-ins: name -> entry point (not loaded until asked for)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    return list(BUILTIN) + sorted(set(plugins()) - set(BUILTIN))


_loaded: dict[str, Problem] = {}


def get_problem(spec: str) -> Problem:
    if not isinstance(spec, str) or not spec.strip():
        raise ProblemNotFound(f"a problem is a name or FILE.py:NAME, not {spec!r} "
                              f"(available: {', '.join(available())})")
    spec = spec.strip()
    if spec in _loaded:
        return _loaded[spec]
    if spec in BUILTIN:
        return BUILTIN[spec]
    if ":" in spec:
        problem = _from_reference(spec)
    else:
        found = plugins().get(spec)
        if found is None:
            raise ProblemNotFound(f"unknown problem {spec!r} (available: "
                                  f"{', '.join(available())}; or FILE.py:NAME)")
        problem = _checked(_load(found.load, f"plug-in {spec!r} ({found.value})"),
                           f"plug-in {spec!r}", origin=spec)
    _loaded[spec] = _loaded[problem.key] = problem
    return problem


def _from_reference(spec: str) -> Problem:
    where, _, attr = spec.rpartition(":")
    if not where or not attr.isidentifier():
        raise ProblemNotFound(f"problem {spec!r}: expected FILE.py:NAME or module:NAME")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise ProblemNotFound(f"problem {spec!r}: no file {where}")
        module = _load(lambda: _import_file(path), f"problem file {where}")
        origin = f"{path}:{attr}"
    else:
        module = _load(lambda: importlib.import_module(where), f"problem module {where}")
        origin = spec
    if not hasattr(module, attr):
        raise ProblemNotFound(f"problem {spec!r}: {where} defines no {attr}")
    return _checked(getattr(module, attr), f"problem {spec!r}", origin)


def _import_file(path: Path):
    """Import a problem file once per process, under a name derived from its path, with its
    folder importable (so it can import its own helpers)."""
    name = "glia_problem_" + "".join(c if c.isalnum() else "_" for c in str(path))
    if name in sys.modules:
        return sys.modules[name]
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.append(folder)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _load(load, what: str):
    try:
        return load()
    except ProblemNotFound:
        raise
    except Exception as exc:
        raise ProblemNotFound(f"{what} failed to load: {type(exc).__name__}: {exc}") from None


def _checked(obj, what: str, origin: str) -> Problem:
    if callable(obj) and not isinstance(obj, Problem):
        obj = _load(obj, what)
    if not isinstance(obj, Problem):
        raise ProblemNotFound(f"{what} is a {type(obj).__name__}, not a glia_evo Problem")
    if obj.name in BUILTIN and BUILTIN[obj.name] is not obj:
        raise ProblemNotFound(f"{what} is named {obj.name!r}, which is a built-in problem; "
                              f"give it a name of its own")
    validate(obj, what)
    return replace(obj, origin=origin)


def validate(problem: Problem, what: str = "problem") -> None:
    """The checks a problem must pass before a search uses it, as one-line errors."""
    def fail(message: str):
        raise ProblemNotFound(f"{what}: {message}")
    if not problem.entrypoints or not all(isinstance(e, str) and e.isidentifier()
                                          for e in problem.entrypoints):
        fail("entrypoints must be a non-empty tuple of function names")
    for split in ("train", "test"):
        if split not in problem.splits:
            fail(f"it has no {split!r} split (splits: {', '.join(problem.splits) or 'none'})")
    for split, pairs in problem.splits.items():
        for pair in pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2 and pair[0] in problem.scenarios):
                fail(f"split {split!r} names {pair!r}; expected (scenario, seed) pairs with "
                     f"scenarios from: {', '.join(problem.scenarios)}")
    if problem.default_scenario not in problem.scenarios:
        fail(f"default_scenario {problem.default_scenario!r} is not one of its scenarios")
    if problem.baselines is not None and not Path(problem.baselines).is_dir():
        fail(f"its baselines folder {problem.baselines} does not exist")
    names = problem.baseline_names()
    if problem.reference not in names:
        fail(f"its reference baseline {problem.reference!r} is not among its baselines "
             f"({', '.join(names) or 'none'})")
    for seed in problem.default_seeds:
        if seed not in names:
            fail(f"its default seed {seed!r} is not among its baselines ({', '.join(names)})")
    if problem.evaluate is None and any(s.cluster is None for s in problem.scenarios.values()):
        fail("a problem without its own evaluate() is simulated by glia-evo's LLM-serving "
             "simulator, so every scenario needs a cluster")
    if any(s.workload is None for s in problem.scenarios.values()):
        fail("every scenario needs a workload (seed -> the instance's input)")
