"""Sandbox for candidate policies: restricted compilation (`sandbox.compile`), contained
execution of jobs in forked, resource-limited processes (`sandbox.pool`), and the kernel layer
those processes run under (`sandbox.kernel`: no_new_privs, Landlock, seccomp).

Imports only the stdlib, RestrictedPython, multiprocess and pyseccomp (a ctypes binding of
libseccomp), never the simulator or the engine.
"""

from sandbox.compile import (
    POLICY_FILENAME,
    CompiledPolicy,
    PolicyCompileError,
    compile_policy,
    policy_traceback,
)
from sandbox.guards import ALLOWED_IMPORTS
from sandbox.kernel import KernelLayerError, KernelSupport
from sandbox.pool import JobOutcome, WorkerPool

__all__ = [
    "ALLOWED_IMPORTS",
    "POLICY_FILENAME",
    "CompiledPolicy",
    "JobOutcome",
    "KernelLayerError",
    "KernelSupport",
    "PolicyCompileError",
    "compile_policy",
    "policy_traceback",
    "WorkerPool",
]
