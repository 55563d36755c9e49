"""SimPy discrete-event simulator of an LLM-serving GPU cluster (see DESIGN.md §2)."""
from .cluster import ClusterSpec, ReplicaSpec, simulate
from .metrics import SimResult
from .profiles import PROFILES, GpuProfile, get_profile
from .replica import PolicyError, PolicyInvalid
from .workload import RequestSpec, TraceError, load_trace

__all__ = ["ClusterSpec", "ReplicaSpec", "simulate", "SimResult", "PROFILES", "GpuProfile",
           "get_profile", "PolicyError", "PolicyInvalid", "RequestSpec", "TraceError",
           "load_trace"]
