"""glia-evo: evolutionary search for computer-systems policies (the engine).

The Python API (see `glia_evo.api`): `search`, `resume`, `evaluate`, `Run`, `load_config`,
`get_problem`, and `Problem` / `Scenario` for a problem of your own (docs/problems.md).
"""
__version__ = "0.1.0"

_API = {"search", "resume", "evaluate", "Run", "load_config", "SearchStopped"}
_PROBLEMS = {"get_problem", "Problem", "Scenario", "InvalidAnswer"}


def __getattr__(name):
    """The API is imported on first use, so `import glia_evo` (and the CLI's start) stays fast."""
    if name in _API:
        from . import api
        return getattr(api, name)
    if name in _PROBLEMS:
        from . import problems
        return getattr(problems, name)
    raise AttributeError(f"module 'glia_evo' has no attribute {name!r}")


__all__ = sorted(_API | _PROBLEMS)
