"""The plain-data adapter an exported module carries (see glia_evo.export).

An exported policy's entry point reads the simulator's views (`replica.num_pending`,
`req.prompt_tokens`, ...). The adapter appended to the module lets a service call it on plain
data instead: dicts, dataclasses or any objects with those fields, and knobs defaulting to the
module's KNOBS. It is standard-library Python, and `glia-evo simulate --policy FILE.py` cuts it
off at MARKER (the sandbox compiles only the policy), so the fitness still reproduces exactly.

Input format (the fields a policy may read; those marked * are needed only if the policy reads
them, and a missing one is an AttributeError naming it):

- a request: `id`, `arrival_time` (s), `prompt_tokens`; `processed_tokens` = 0,
  `generated_tokens` = 0, `restarts` = 0, `replica` = None.
- a replica: `id`; `state` = "ready" (or "starting", "draining"), `num_blocks`*, `block_size`*
  (KV-cache tokens per block: whatever your servers use), `free_blocks` = num_blocks -
  used_blocks, `used_blocks` = num_blocks - free_blocks (0 if neither is given), `pending` = [],
  `active` = [] (lists of requests), `num_pending` = len(pending), `num_active` = len(active),
  `gpu`*, `chunk_size`*, `max_batch`*.
- a cluster (autoscaling): the fields of sim.views.ClusterView (`num_ready`, `num_waiting`,
  `kv_use`, `p90_ttft_s`, ...)*, with `replicas` a list of replicas.

Answers: routing `decide(queue, replicas, now, knobs=None)` -> [(request id, replica id)], and
[] when no replica is ready (the requests wait, as they do in the simulator); scheduling
`decide(pending, active, replica, now, knobs=None)` -> request ids in admission order ([] when
nothing is pending); autoscaling `decide(cluster, now, knobs=None)` -> the policy's answer
(the number of replicas wanted). Another problem's module gets `decide(*args, knobs=None)`,
which calls its first entry point with `args` and the knobs.
"""
from __future__ import annotations

MARKER = "# --- glia-evo adapter: plain data in, the policy's answer out (not part of the policy) ---"

COMMON = '''
import random as _random

if "rng" not in globals():          # the sandbox seeds one per evaluation; here: a fixed seed
    rng = _random.Random(0)


class PlainView:
    \"\"\"Read-only attribute access to a dict or any object (a dataclass...). A field the data
    lacks comes from `defaults` (a value, or a function of the view), else it is an
    AttributeError naming it; `wrap` turns a field's value into views (lists of requests).\"\"\"

    __slots__ = ("_data", "_defaults", "_wrap", "_what")

    def __init__(self, data, defaults, what, wrap=None):
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_defaults", defaults)
        object.__setattr__(self, "_wrap", wrap or {})
        object.__setattr__(self, "_what", what)

    def _has(self, name):
        data = object.__getattribute__(self, "_data")
        if isinstance(data, dict):
            return name in data, data.get(name)
        if hasattr(data, name):
            return True, getattr(data, name)
        return False, None

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        found, value = self._has(name)
        if not found:
            defaults = object.__getattribute__(self, "_defaults")
            if name not in defaults:
                what = object.__getattribute__(self, "_what")
                raise AttributeError(f"{what} has no {name!r}: add it to the data you pass "
                                     f"(see this module's docstring)")
            value = defaults[name]
            value = value(self) if callable(value) else value
        wrap = object.__getattribute__(self, "_wrap").get(name)
        return wrap(value) if wrap else value

    def __setattr__(self, name, value):
        raise AttributeError("views are read-only")

    def __repr__(self):
        return f"PlainView({object.__getattribute__(self, '_what')})"


def knobs_for(knobs=None):
    \"\"\"KNOBS' default values, with `knobs` (name -> value) over them.\"\"\"
    defaults = {k: v[0] for k, v in globals().get("KNOBS", {}).items()}
    unknown = set(knobs or {}) - set(defaults)
    if unknown:
        raise KeyError(f"unknown knob(s) {sorted(unknown)}; this policy's knobs: "
                       f"{sorted(defaults)}")
    return {**defaults, **(knobs or {})}


def _ident(data):
    return data.get("id") if isinstance(data, dict) else getattr(data, "id", None)


def request_view(data):
    if isinstance(data, PlainView):
        return data
    return PlainView(data, {"processed_tokens": 0, "generated_tokens": 0, "restarts": 0,
                            "replica": None}, f"request {_ident(data)!r}")


def _requests(items):
    return [request_view(r) for r in (items or [])]


def _free_blocks(view):
    found, used = view._has("used_blocks")
    return view.num_blocks - (used if found else 0)


def _used_blocks(view):
    found, free = view._has("free_blocks")
    return view.num_blocks - free if found else 0


def replica_view(data):
    if isinstance(data, PlainView):
        return data
    return PlainView(data, {"state": "ready", "pending": [], "active": [],
                            "free_blocks": _free_blocks, "used_blocks": _used_blocks,
                            "num_pending": lambda v: len(v.pending),
                            "num_active": lambda v: len(v.active)},
                     f"replica {_ident(data)!r}", wrap={"pending": _requests,
                                                        "active": _requests})
'''

DECIDE = {
    "route": '''

def decide(queue, replicas, now, knobs=None):
    \"\"\"[(request id, replica id)] for the requests in `queue` (plain data, see the module
    docstring); [] when no replica is ready (the requests wait, as in the simulator).\"\"\"
    views = [replica_view(r) for r in replicas]
    if not queue or not any(v.state == "ready" for v in views):
        return []
    return [tuple(pair) for pair in route([request_view(q) for q in queue], views, now,
                                          knobs_for(knobs))]
''',
    "schedule": '''

def decide(pending, active, replica, now, knobs=None):
    \"\"\"Request ids of `pending` in the order to admit them (plain data, see the module
    docstring); [] when nothing is pending.\"\"\"
    if not pending:
        return []
    return list(schedule(_requests(pending), _requests(active), replica_view(replica), now,
                         knobs_for(knobs)))
''',
    "scale": '''

def decide(cluster, now, knobs=None):
    \"\"\"The autoscaler's answer (replicas wanted) for `cluster` (plain data: ClusterView's
    fields, `replicas` a list of replicas; see the module docstring).\"\"\"
    view = PlainView(cluster, {"replicas": []}, "cluster",
                     wrap={"replicas": lambda items: [replica_view(r) for r in items or []]})
    return scale(view, now, knobs_for(knobs))
''',
}


def adapter_source(entrypoints: tuple[str, ...]) -> str:
    first = entrypoints[0] if entrypoints else None
    decide = DECIDE.get(first) or f'''

def decide(*args, knobs=None):
    """{first}(*args, knobs) with KNOBS' defaults under `knobs`."""
    return {first}(*args, knobs_for(knobs))
'''
    return "\n\n" + MARKER + "\n" + COMMON + decide


def strip_adapter(text: str) -> str:
    """The policy part of an exported module: everything before MARKER."""
    at = text.find("\n" + MARKER)
    return text if at < 0 else text[:at + 1]
