"""Policy hooks: the points where the simulator asks a policy for a decision.

One small class per kind of decision -- `Route` (which queued request goes to which replica),
`Schedule` (the admission order inside a replica), `Scale` (how many replicas) -- each carrying
its call convention and the checks of its answer, so `Cluster` only applies decisions that are
already valid. A policy's own exception becomes `PolicyError(kind, exc)`; an answer the
simulator cannot apply becomes `PolicyInvalid` with a one-line reason that names the kind.

Answers are checked against the exact built-in types only: a subclass's methods (comparisons,
hashing, iteration) would otherwise run in the simulator's own code with values of the policy's
choosing. Error messages show a policy's values with `repr()` of plain data only.

`HOOKS` maps each kind to its class; `hooks_of()` builds the hooks `simulate()` runs with from
`{kind: (fn, knobs)}`.
"""
from __future__ import annotations

from typing import Callable, Mapping

from .replica import PolicyError, PolicyInvalid
from .views import RequestView


class Hook:
    """A policy function and its knob values; `ask(*args)` calls `fn(*args, knobs)`."""

    kind = ""

    def __init__(self, fn: Callable, knobs: dict | None = None):
        if not callable(fn):
            raise TypeError(f"the {self.kind} policy must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.knobs = dict(knobs or {})

    def ask(self, *args):
        try:
            return self.fn(*args, self.knobs)
        except Exception as exc:  # the policy's own error, reported with its traceback
            raise PolicyError(self.kind, exc) from exc


class Route(Hook):
    """`route(queue, replicas, now, knobs) -> [(request_id, replica_id), ...]`; requests it does
    not dispatch stay in the queue."""

    kind = "route"

    def check(self, answer, queue: list, replicas: list) -> list[tuple]:
        """The (Req, Replica) pairs of a valid answer; `queue` the waiting requests, `replicas`
        every replica by id."""
        if not _is_seq(answer):
            hint = " (a missing return statement?)" if answer is None else ""
            raise PolicyInvalid(f"route must return a list of (request_id, replica_id) pairs "
                                f"(an empty list holds every request), got "
                                f"{_type_name(answer)}{hint}")
        waiting = {r.id: r for r in queue}
        chosen: list[tuple] = []
        taken: set[int] = set()
        n = len(replicas)
        for item in answer:
            if not _is_seq(item) or len(item) != 2:
                raise PolicyInvalid(f"route must return (request_id, replica_id) pairs, got an "
                                    f"item {_short(item)}")
            rid, rep = item
            if not _is_int(rid):
                raise PolicyInvalid(f"route must return (request_id, replica_id) pairs of ints, "
                                    f"got a request id {_short(rid)}")
            req = waiting.get(rid)
            if req is None:
                why = "twice in one answer" if rid in taken else "which is not in the queue"
                raise PolicyInvalid(f"route dispatched request id {_short(rid)} {why}")
            if not _is_int(rep) or not 0 <= rep < n:
                raise PolicyInvalid(f"route sent request {rid} to unknown replica id {_short(rep)} "
                                    f"(replica ids are 0..{n - 1})")
            replica = replicas[rep]
            if replica.state != "ready":
                raise PolicyInvalid(f"route sent request {rid} to replica {rep}, which is "
                                    f"{replica.state}")
            if -(-(req.prompt + req.output) // replica.profile.block_size) > replica.max_blocks():
                raise PolicyInvalid(f"route sent request {rid} ({req.prompt + req.output} tokens) "
                                    f"to replica {rep}, whose KV cache can never hold it")
            del waiting[rid]
            taken.add(rid)
            chosen.append((req, replica))
        return chosen


class Schedule(Hook):
    """`schedule(pending, active, replica, now, knobs) -> [request_id, ...]`: the admission
    order inside one replica (an empty list admits nothing now)."""

    kind = "schedule"

    def check(self, answer, pending: list, replica_id: int) -> list:
        """The pending requests (Req) in the answer's order."""
        if not _is_seq(answer):
            hint = " (a missing return statement?)" if answer is None else ""
            raise PolicyInvalid(f"schedule must return a list of request ids (an empty list "
                                f"admits nothing), got {_type_name(answer)}{hint}")
        by_id = {r.id: r for r in pending}
        try:
            # the common, valid case in C: distinct ints, all pending here
            if (set(map(type, answer)) <= {int} and len(set(answer)) == len(answer)
                    and by_id.keys() >= set(answer)):
                return [by_id[rid] for rid in answer]
        except TypeError:       # unhashable items: explained below
            pass
        seen = set()
        for rid in answer:
            if not _is_int(rid):
                hint = (" (return req.id, not the request)" if isinstance(rid, RequestView)
                        else "")
                raise PolicyInvalid(f"schedule must return request ids (ints), got an item "
                                    f"{_short(rid)}{hint}")
            if rid not in by_id or rid in seen:
                why = ("twice in one answer" if rid in seen
                       else f"which is not pending on replica {replica_id}")
                raise PolicyInvalid(f"schedule returned request id {rid} {why}")
            seen.add(rid)
        raise AssertionError("unreachable")     # pragma: no cover


class Scale(Hook):
    """`scale(cluster, now, knobs) -> int`: the number of replicas wanted, within the
    autoscaler's [min_replicas, max_replicas]."""

    kind = "scale"

    def check(self, answer, min_replicas: int, max_replicas: int) -> int:
        bounds = f"[min_replicas, max_replicas] = [{min_replicas}, {max_replicas}]"
        if type(answer) is float and answer.is_integer():
            raise PolicyInvalid(f"scale must return an int number of replicas, got the float "
                                f"{answer!r} (convert it, e.g. int(x) or math.ceil(x))")
        if not _is_int(answer):
            hint = " (a missing return statement?)" if answer is None else ""
            shown = (f"{type(answer).__name__} {_short(answer)}" if type(answer) in _PLAIN
                     else _type_name(answer))
            raise PolicyInvalid(f"scale must return an int number of replicas in {bounds}, got "
                                f"{shown}{hint}")
        if not min_replicas <= answer <= max_replicas:
            raise PolicyInvalid(f"scale asked for {answer} replica(s), outside {bounds}")
        return answer


HOOKS: dict[str, type[Hook]] = {h.kind: h for h in (Route, Schedule, Scale)}


def hooks_of(policies: Mapping[str, object]) -> dict[str, Hook]:
    """`{kind: Hook | fn | (fn, knobs)}` -> `{kind: Hook}`; an unknown kind is a ValueError."""
    out = {}
    for kind, policy in policies.items():
        if kind not in HOOKS:
            raise ValueError(f"unknown policy hook {kind!r}; the simulator asks "
                             f"{', '.join(HOOKS)}")
        if isinstance(policy, Hook):
            if policy.kind != kind:
                raise ValueError(f"a {policy.kind} hook given as {kind!r}")
            out[kind] = policy
        elif isinstance(policy, tuple):
            fn, knobs = policy
            out[kind] = HOOKS[kind](fn, knobs)
        else:
            out[kind] = HOOKS[kind](policy)
    return out


def _is_int(x) -> bool:
    """Exactly int: not bool, and no subclass (whose comparisons could lie to the checks)."""
    return type(x) is int


def _is_seq(x) -> bool:
    """Exactly a list or a tuple, no subclass (whose iteration or length could lie)."""
    return type(x) is list or type(x) is tuple


_PLAIN = (int, float, bool, str, type(None))


def _type_name(x) -> str:
    """The type of a policy's answer; a subclass of a built-in type is named as such."""
    t = type(x)
    if t in _PLAIN or t in (list, tuple, dict, set):
        return t.__name__
    for base in (bool, int, float, str, list, tuple, dict, set, frozenset):
        if isinstance(x, base):
            return f"{t.__name__} (a subclass of {base.__name__})"
    return t.__name__


def _short(x) -> str:
    """A policy's value for an error message: repr() of plain data only (never a call into the
    policy's own objects), at most 60 characters."""
    t = type(x)
    if t in _PLAIN or (t in (list, tuple) and len(x) <= 8 and all(type(v) in _PLAIN for v in x)):
        text = repr(x)
    else:
        text = f"of type {_type_name(x)}"
    return text if len(text) <= 60 else text[:57] + "..."
