"""Sandbox for candidate policies: restricted compilation (`sandbox.compile`) and contained
execution of jobs in forked, resource-limited processes (`sandbox.pool`).

Imports only the stdlib, RestrictedPython and multiprocess, never the simulator or the engine.
"""

from sandbox.compile import (
    POLICY_FILENAME,
    CompiledPolicy,
    PolicyCompileError,
    compile_policy,
    policy_traceback,
)
from sandbox.guards import ALLOWED_IMPORTS
from sandbox.pool import JobOutcome, WorkerPool

__all__ = [
    "ALLOWED_IMPORTS",
    "POLICY_FILENAME",
    "CompiledPolicy",
    "JobOutcome",
    "PolicyCompileError",
    "compile_policy",
    "policy_traceback",
    "WorkerPool",
]
