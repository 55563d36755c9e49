"""Baseline results cached across runs, so a report or a resume never simulates a shipped
baseline it has already simulated (issue 13: the held-out report re-simulated every baseline,
46 % of the main job's wall time under load).

One JSON file per (problem, split, baseline, simulator version) under the user's cache folder:
`$GLIA_EVO_CACHE_DIR`, else `$XDG_CACHE_HOME/glia-evo`, else `~/.cache/glia-evo`, in
`baselines/<problem>/<key>.json`. GLIA_EVO_CACHE_DIR=off turns the cache off.

The key (a SHA-256) covers everything a baseline's result depends on:
- the problem's key and the split's name, and every instance of the split as it is defined
  now (`repr(Instance)`: its scenario's name, description and cluster, the seed, rate and size
  overrides);
- the baseline's name and the SHA-256 of its source;
- the code version (`code_version()`): a hash of every file of the `sim` package (its Python
  sources, profiles and packaged traces), of `glia_evo/problems/` (scenario definitions and
  workload generators) and of the evaluation function (`glia_evo/evaluation/run.py` and
  `result.py`). Recalibrating the simulator, editing a scenario or a trace changes it, and every
  entry made before is simply never found again.

Entries are read back as JSON only (never a pickle), size-limited, and validated like a job's
result (`wire.result_from_wire`: shape, finite numbers, the simulator's invariants, the
instances it must cover, the fitness recomputed from the reference baseline's cached metrics); an
entry that fails is ignored (and simulated again). Writes are atomic (a temporary file renamed),
so concurrent runs at worst both simulate and write the same entry.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

from .result import EvalResult

CACHE_ENV = "GLIA_EVO_CACHE_DIR"
FORMAT = 1
MAX_ENTRY_BYTES = 32 << 20
_PACKAGE = Path(__file__).resolve().parent      # glia_evo/evaluation
_ROOT = _PACKAGE.parent.parent


def cache_dir() -> Path | None:
    """The cache folder (None: the cache is off)."""
    text = os.environ.get(CACHE_ENV)
    if text is not None:
        text = text.strip()
        if text.lower() in ("off", "0", "none", "false"):
            return None
        if text:
            return Path(text).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "glia-evo"


def _code_files() -> list[Path]:
    import sim
    sim_root = Path(sim.__file__).resolve().parent
    files = [p for p in sim_root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
             and p.suffix not in (".pyc", ".pyo")]
    files += [p for p in (_PACKAGE.parent / "problems").rglob("*.py")
              if "__pycache__" not in p.parts]
    files += [_PACKAGE / "run.py", _PACKAGE / "result.py"]     # the evaluation function
    return sorted(set(files))


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the simulator's files, the scenario definitions and the evaluation function."""
    h = hashlib.sha256()
    for path in _code_files():
        try:
            rel = path.relative_to(_ROOT)
        except ValueError:
            rel = path
        h.update(str(rel).encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def _problem_key(problem) -> str:
    return str(getattr(problem, "key", None) or problem.name)


def entry_key(problem, split: str, instances, baseline: str, source: str) -> str:
    blob = json.dumps({
        "format": FORMAT, "problem": _problem_key(problem), "metric": problem.metric,
        "reference": problem.reference, "split": split,
        "instances": [repr(inst) for inst in instances], "baseline": baseline,
        "source": hashlib.sha256(source.encode()).hexdigest(), "code": code_version(),
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:80] or "_"


class BaselineCache:
    """get/put of a baseline's EvalResult on a split (see the module docstring)."""

    def __init__(self, directory: Path | str | None = None, *, enabled: bool = True):
        base = Path(directory) if directory is not None else cache_dir()
        self.directory = base / "baselines" if (base is not None and enabled) else None
        self.hits = self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def _path(self, problem, key: str) -> Path:
        return self.directory / _safe(_problem_key(problem)) / f"{key}.json"

    def _load(self, problem, split, instances, baseline, source) -> dict | None:
        if self.directory is None:
            return None
        key = entry_key(problem, split, instances, baseline, source)
        path = self._path(problem, key)
        try:
            if path.stat().st_size > MAX_ENTRY_BYTES:
                return None
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError, RecursionError):
            return None
        if (type(entry) is not dict or entry.get("format") != FORMAT or entry.get("key") != key
                or type(entry.get("result")) is not dict):
            return None
        return entry["result"]

    def get(self, problem, split: str, instances, baseline: str, source: str,
            reference: dict | None = None) -> EvalResult | None:
        """The cached, checked result, or None. `reference`: instance -> the reference
        baseline's metric, to recompute the fitness from (default: this entry's own metrics,
        which is right for the reference baseline itself)."""
        from .wire import WireError, result_from_wire
        value = self._load(problem, split, instances, baseline, source)
        names = [inst.name for inst in instances]
        result = None
        if value is not None and value.get("status") == "ok":
            try:
                own = result_from_wire(value)
                if reference is None:
                    reference = {n: m.get(problem.metric) for n, m in own.scenarios.items()}
                if all(type(reference.get(n)) in (int, float) and reference[n] > 0
                       for n in names):
                    result = result_from_wire(value, metric=problem.metric,
                                              reference=reference, expected={"ok": names})
            except WireError:
                result = None
        if result is None:
            self.misses += 1
        else:
            self.hits += 1
        return result

    def put(self, problem, split: str, instances, baseline: str, source: str,
            result: EvalResult) -> None:
        """Remember an ok result (its metrics, not its diagnostics); errors are not cached.
        Never raises: a cache that cannot be written only costs the next run its time."""
        if self.directory is None or result.status != "ok":
            return
        key = entry_key(problem, split, instances, baseline, source)
        path = self._path(problem, key)
        value = {"status": result.status, "fitness": result.fitness,
                 "scenarios": result.scenarios, "diagnostics": {}, "reference": {},
                 "error": None, "line": None, "duration_s": result.duration_s}
        entry = {"format": FORMAT, "key": key, "problem": _problem_key(problem),
                 "split": split, "baseline": baseline,
                 "instances": [inst.name for inst in instances], "code": code_version(),
                 "result": value}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(entry, allow_nan=False), encoding="utf-8")
            os.replace(tmp, path)
        except (OSError, ValueError):
            try:
                tmp.unlink(missing_ok=True)
            except (OSError, UnboundLocalError):
                pass
