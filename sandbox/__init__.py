"""Sandbox for candidate policies: restricted compilation (this package's `compile`
module) and, later, contained evaluation in worker processes.

Imports only the stdlib and RestrictedPython, never the simulator or the engine.
"""

from sandbox.compile import (
    POLICY_FILENAME,
    CompiledPolicy,
    PolicyCompileError,
    compile_policy,
    policy_traceback,
)
from sandbox.guards import ALLOWED_IMPORTS

__all__ = [
    "ALLOWED_IMPORTS",
    "POLICY_FILENAME",
    "CompiledPolicy",
    "PolicyCompileError",
    "compile_policy",
    "policy_traceback",
]
