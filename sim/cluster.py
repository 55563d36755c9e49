"""The cluster: replicas behind one router, a global queue, and `simulate()` to run a workload.

The router is called at every arrival and at the end of every iteration that completed requests,
whenever the global queue is not empty (with an empty queue it has nothing to decide). Requests it
does not dispatch stay in the queue for the next call.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import simpy

from .metrics import SimResult, summarize
from .profiles import PS_PER_S, get_profile
from .replica import PolicyError, PolicyInvalid, Replica, Req
from .views import ReplicaView, RequestView
from .workload import RequestSpec

RouteFn = Callable[[list, list, float, dict], object]
ScheduleFn = Callable[[list, list, object, float, dict], object]


@dataclass(frozen=True)
class ReplicaSpec:
    profile: str = "llama3-8b/a10"
    chunk_size: int = 8192
    max_batch: int = 256


@dataclass(frozen=True)
class ClusterSpec:
    replicas: tuple[ReplicaSpec, ...] = field(default_factory=lambda: (ReplicaSpec(),) * 4)
    watermark: float = 0.01          # fraction of blocks kept free at admission (vLLM's default)
    slo_ttft_s: float = 2.0
    slo_tpot_s: float = 0.2

    @classmethod
    def uniform(cls, n: int, profile: str = "llama3-8b/a10", **kw) -> "ClusterSpec":
        chunk = kw.pop("chunk_size", 8192)
        return cls(replicas=(ReplicaSpec(profile, chunk),) * n, **kw)


class Cluster:
    def __init__(self, env: simpy.Environment, spec: ClusterSpec, route: RouteFn,
                 knobs: dict | None = None, schedule: ScheduleFn | None = None,
                 schedule_knobs: dict | None = None, fast: bool = True):
        if not spec.replicas:
            raise ValueError("a cluster needs at least one replica")
        self.env = env
        self.spec = spec
        self.route = route
        self.knobs = dict(knobs or {})
        self.scheduler = schedule
        self.schedule_knobs = dict(schedule_knobs or {})
        self.replicas = [Replica(i, get_profile(r.profile), env, self, chunk_size=r.chunk_size,
                                 max_batch=r.max_batch, watermark=spec.watermark, fast=fast)
                         for i, r in enumerate(spec.replicas)]
        self.queue: list[Req] = []
        self.requests: list[Req] = []
        self.completed = 0
        self.total = 0
        self.arrivals_done = False
        self.all_done = env.event()
        self.router_calls = 0
        self.samples: list[tuple] = []

    # --- events ------------------------------------------------------------------------------
    def arrivals(self, workload: Sequence[RequestSpec]):
        env = self.env
        for i, spec in enumerate(workload):
            t = round(spec.arrival_s * PS_PER_S)
            if t > env.now:
                yield env.timeout(t - env.now)
            req = Req(i, t, spec.prompt_tokens, spec.output_tokens)
            req.queue_view = RequestView(i, t / PS_PER_S, req.prompt, 0, 0, 0, None)
            self.requests.append(req)
            self.queue.append(req)
            self.call_router()
        self.arrivals_done = True
        self.check_stall()

    def on_completions(self, replica: Replica, finished: list[Req]) -> None:
        self.completed += len(finished)
        if self.completed == self.total and not self.all_done.triggered:
            self.all_done.succeed()
            return
        self.call_router()

    def on_idle(self, replica: Replica) -> None:
        self.check_stall()

    def check_stall(self) -> None:
        if self.arrivals_done and self.queue and all(r.idle for r in self.replicas):
            raise PolicyInvalid(
                f"route left {len(self.queue)} request(s) in the queue while every replica was "
                f"idle and no more requests were coming")

    def sampler(self, every_ps: int):
        """Record queue, load and memory timelines for the diagnostics."""
        env = self.env
        while True:
            now = env.now
            self.samples.append((now / PS_PER_S, len(self.queue),
                                 tuple(len(r.pending) + len(r.active) for r in self.replicas),
                                 tuple(r.used_blocks_at(now) / r.profile.num_blocks
                                       for r in self.replicas)))
            yield env.timeout(every_ps)

    # --- policies ------------------------------------------------------------------------------
    def call_router(self) -> None:
        if not self.queue:
            return
        now = self.env.now
        self.router_calls += 1
        queue_views = [r.queue_view for r in self.queue]
        replica_views = [ReplicaView(r, now) for r in self.replicas]
        try:
            answer = self.route(queue_views, replica_views, now / PS_PER_S, self.knobs)
        except Exception as exc:  # the policy's own error, reported with its traceback
            raise PolicyError("route", exc) from exc
        if isinstance(answer, (list, tuple)) and not answer:
            return
        self._dispatch(answer)

    def _dispatch(self, answer) -> None:
        if not isinstance(answer, (list, tuple)):
            hint = " (a missing return statement?)" if answer is None else ""
            raise PolicyInvalid(f"route must return a list of (request_id, replica_id) pairs "
                                f"(an empty list holds every request), got "
                                f"{type(answer).__name__}{hint}")
        waiting = {r.id: r for r in self.queue}
        chosen: list[tuple[Req, Replica]] = []
        taken: set[int] = set()
        n = len(self.replicas)
        for item in answer:
            try:
                rid, rep = item
            except (TypeError, ValueError):
                raise PolicyInvalid(f"route must return (request_id, replica_id) pairs, got an "
                                    f"item {_short(item)}") from None
            req = waiting.get(rid) if _is_int(rid) else None
            if req is None:
                why = "twice in one answer" if rid in taken else "which is not in the queue"
                raise PolicyInvalid(f"route dispatched request id {_short(rid)} {why}")
            if not _is_int(rep) or not 0 <= rep < n:
                raise PolicyInvalid(f"route sent request {rid} to unknown replica id {_short(rep)} "
                                    f"(replica ids are 0..{n - 1})")
            replica = self.replicas[rep]
            if replica.state != "ready":
                raise PolicyInvalid(f"route sent request {rid} to replica {rep}, which is "
                                    f"{replica.state}")
            if -(-(req.prompt + req.output) // replica.profile.block_size) > replica.max_blocks():
                raise PolicyInvalid(f"route sent request {rid} ({req.prompt + req.output} tokens) "
                                    f"to replica {rep}, whose KV cache can never hold it")
            del waiting[rid]
            taken.add(rid)
            chosen.append((req, replica))
        if not chosen:
            return
        now = self.env.now
        self.queue = [r for r in self.queue if r.id not in taken]
        for req, replica in chosen:
            req.dispatched = now
            replica.enqueue(req)

    def admission_order(self, replica: Replica) -> list[Req]:
        """FCFS over the replica's pending list, or the scheduler policy's order (validated)."""
        if self.scheduler is None:
            return list(replica.pending)
        now = self.env.now
        pending_views = replica.views(replica.pending, now, False)
        active_views = replica.views(replica.active, now, True)
        try:
            answer = self.scheduler(pending_views, active_views, ReplicaView(replica, now),
                                    now / PS_PER_S, self.schedule_knobs)
        except Exception as exc:
            raise PolicyError("schedule", exc) from exc
        if not isinstance(answer, (list, tuple)):
            raise PolicyInvalid(f"schedule must return a list of request ids, got "
                                f"{type(answer).__name__}")
        by_id = {r.id: r for r in replica.pending}
        order, seen = [], set()
        for rid in answer:
            if not _is_int(rid) or rid not in by_id:
                why = "twice" if rid in seen else "which is not pending on this replica"
                raise PolicyInvalid(f"schedule returned request id {_short(rid)} {why}")
            seen.add(rid)
            order.append(by_id.pop(rid))
        return order


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _short(x) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_workload(workload: Sequence[RequestSpec], spec: ClusterSpec) -> None:
    """Every request must fit, alone, in the KV cache of every replica, or it could never run."""
    for r in spec.replicas:
        prof = get_profile(r.profile)
        cap = (prof.num_blocks - int(prof.num_blocks * spec.watermark)) * prof.block_size
        for i, req in enumerate(workload):
            if req.prompt_tokens + req.output_tokens > cap:
                raise ValueError(f"request {i} needs {req.prompt_tokens + req.output_tokens} "
                                 f"tokens of KV cache but a {prof.gpu} replica holds only {cap}")


def simulate(workload: Sequence[RequestSpec], spec: ClusterSpec, route: RouteFn,
             knobs: dict | None = None, *, schedule: ScheduleFn | None = None,
             schedule_knobs: dict | None = None, fast: bool = True,
             samples: int = 200) -> SimResult:
    """Run `workload` on a cluster to completion and return its metrics and diagnostics.

    Raises PolicyError when a policy raises and PolicyInvalid when it answers something invalid.
    `fast=False` is the step-by-step reference mode (same results, slower).
    """
    workload = sorted(workload, key=lambda r: r.arrival_s)
    if not workload:
        raise ValueError("empty workload")
    validate_workload(workload, spec)
    env = simpy.Environment()
    cluster = Cluster(env, spec, route, knobs, schedule, schedule_knobs, fast=fast)
    cluster.total = len(workload)
    env.process(cluster.arrivals(workload))
    span_ps = max(1, round(workload[-1].arrival_s * PS_PER_S))
    env.process(cluster.sampler(max(span_ps // samples, PS_PER_S // 10)))
    env.run(until=cluster.all_done)
    return summarize(cluster)
