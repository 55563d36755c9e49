"""The cluster: replicas behind one router, a global queue, and `simulate()` to run a workload.

The router is called at every arrival, at the end of every iteration that completed requests and
when a new replica becomes ready, whenever the global queue is not empty and at least one replica
is ready (otherwise it has nothing to decide). Requests it does not dispatch stay in the queue for
the next call.

Optional policies beside the router:
- a scheduler, `schedule(pending, active, replica, now, knobs)`, orders admissions inside each
  replica (see `Replica`); it is consulted only at iterations where some pending request could be
  admitted;
- an autoscaler, `scale(cluster, now, knobs) -> int`, called at t = 0 and every `interval_s`
  (`AutoscaleSpec`), answers the number of replicas it wants. Replicas go
  starting -> ready -> draining -> stopped: a new replica serves only after `cold_start_s`
  (those asked for at t = 0 are provisioned warm, before traffic); a removed replica takes no new
  work, finishes what it holds (pending and active), then stops. A replica costs GPU time from
  the moment it starts until it stops.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import simpy

from .metrics import SimResult, summarize
from .profiles import PS_PER_S, get_profile
from .hooks import Hook, Route, Scale, Schedule, hooks_of
from .replica import PolicyInvalid, Replica, Req
from .views import ClusterView, ReplicaView, RequestView
from .workload import RequestSpec

RouteFn = Callable[[list, list, float, dict], object]
ScheduleFn = Callable[[list, list, object, float, dict], object]
ScaleFn = Callable[[object, float, dict], object]


@dataclass(frozen=True)
class ReplicaSpec:
    """One replica: a GPU profile, Sarathi's chunk size, the batch cap, and optionally its KV
    budget (`num_blocks` blocks of the profile's block size; None: the profile's own)."""

    profile: str = "llama3-8b/a10"
    chunk_size: int = 8192
    max_batch: int = 128             # Vidur's batch_size_cap default (vLLM's max_num_seqs: 256)
    num_blocks: int | None = None

    def __post_init__(self):
        if self.num_blocks is not None and (type(self.num_blocks) is not int
                                            or self.num_blocks < 1):
            raise ValueError(f"num_blocks must be a positive int, got {self.num_blocks!r}")

    def gpu_profile(self):
        """The GPU profile with this replica's KV budget."""
        prof = get_profile(self.profile)
        if self.num_blocks is None or self.num_blocks == prof.num_blocks:
            return prof
        return replace(prof, num_blocks=self.num_blocks)


@dataclass(frozen=True)
class AutoscaleSpec:
    """Limits and timing of an autoscaled cluster (used when `simulate` gets a `scale` policy).

    `ClusterSpec.replicas` is then the fleet at t = 0; new replicas are copies of `replica`
    (default: the first of the initial fleet).
    """

    min_replicas: int = 1
    max_replicas: int = 8
    interval_s: float = 10.0         # scale() is called at t = 0, interval_s, 2 interval_s, ...
    cold_start_s: float = 60.0       # a new replica serves only this long after it starts
    window_s: float = 60.0           # the "recent" window of the cluster view
    replica: ReplicaSpec | None = None

    def __post_init__(self):
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"autoscaling needs 1 <= min_replicas <= max_replicas, got "
                             f"[{self.min_replicas}, {self.max_replicas}]")
        for name in ("interval_s", "window_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"autoscaling {name} must be > 0, got {getattr(self, name)}")
        if not self.cold_start_s >= 0:
            raise ValueError(f"autoscaling cold_start_s must be >= 0, got {self.cold_start_s}")


@dataclass(frozen=True)
class ClusterSpec:
    replicas: tuple[ReplicaSpec, ...] = field(default_factory=lambda: (ReplicaSpec(),) * 4)
    watermark: float = 0.01          # fraction of blocks kept free at admission (vLLM's default)
    slo_ttft_s: float = 2.0
    slo_tpot_s: float = 0.2
    slo_target: float = 0.95         # the fraction of requests that must meet the SLO
    starvation_s: float = 60.0       # a request waiting longer than this for admission is starved
    autoscale: AutoscaleSpec | None = None

    @classmethod
    def uniform(cls, n: int, profile: str = "llama3-8b/a10", **kw) -> "ClusterSpec":
        rkw = {k: kw.pop(k) for k in ("chunk_size", "max_batch", "num_blocks") if k in kw}
        return cls(replicas=(ReplicaSpec(profile, **rkw),) * n, **kw)

    def with_kv_blocks(self, num_blocks: int | None) -> "ClusterSpec":
        """The same cluster with every replica's KV budget set to `num_blocks` blocks (the
        autoscaler's template replica too); None leaves the spec unchanged."""
        if num_blocks is None:
            return self
        a = self.autoscale
        if a is not None and a.replica is not None:
            a = replace(a, replica=replace(a.replica, num_blocks=num_blocks))
        return replace(self, replicas=tuple(replace(r, num_blocks=num_blocks)
                                            for r in self.replicas), autoscale=a)


class Cluster:
    def __init__(self, env: simpy.Environment, spec: ClusterSpec, hooks: dict[str, Hook],
                 fast: bool = True):
        """`hooks`: the policies asked (`sim.hooks`): a Route always, Schedule and Scale
        optional."""
        if "route" not in hooks:
            raise ValueError("a cluster needs a route policy")
        route: Route = hooks["route"]
        schedule: Schedule | None = hooks.get("schedule")
        scale: Scale | None = hooks.get("scale")
        if not spec.replicas:
            raise ValueError("a cluster needs at least one replica")
        if scale is not None:
            a = spec.autoscale
            if a is None:
                raise ValueError("an autoscaler needs ClusterSpec.autoscale (its limits)")
            if not a.min_replicas <= len(spec.replicas) <= a.max_replicas:
                raise ValueError(f"the initial fleet of {len(spec.replicas)} replica(s) is outside "
                                 f"[min_replicas, max_replicas] = [{a.min_replicas}, "
                                 f"{a.max_replicas}]")
        self.env = env
        self.spec = spec
        self.router = route
        self.scheduler = schedule            # None: FCFS admissions (see Replica)
        self.fast = fast
        # every replica ever started, indexed by id (ids are never reused)
        self.replicas = [Replica(i, r.gpu_profile(), env, self, chunk_size=r.chunk_size,
                                 max_batch=r.max_batch, watermark=spec.watermark, fast=fast)
                         for i, r in enumerate(spec.replicas)]
        self.num_ready = len(self.replicas)
        self.scaler = scale
        self.autoscale = spec.autoscale if scale is not None else None
        # the replicas that are not stopped (what policies see); without an autoscaler nothing
        # ever stops, and this is the very same list
        self.visible = self.replicas if scale is None else list(self.replicas)
        self.tracking = scale is not None
        self.recent_arrivals: deque = deque()     # arrival times (ps) in the recent window
        self.recent_done: deque = deque()         # (finish ps, ttft s, e2e s, tpot s, slo ok)
        self.scale_calls = 0
        self.scale_events: list[dict] = []
        self.cold_starts = 0
        self.peak_replicas = len(self.replicas)
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
            if self.tracking:
                self.recent_arrivals.append(t)
            self.call_router()
        self.arrivals_done = True
        self.check_stall()

    def on_completions(self, replica: Replica, finished: list[Req]) -> None:
        self.completed += len(finished)
        if self.tracking:
            self._record_recent(finished)
        if self.completed == self.total and not self.all_done.triggered:
            self.all_done.succeed()
            return
        self.call_router()

    def on_idle(self, replica: Replica) -> None:
        if replica.state == "draining" and not replica.pending and not replica.active:
            self._stop(replica)
        self.check_stall()

    def check_stall(self) -> None:
        if (self.arrivals_done and self.queue and all(r.idle for r in self.visible)
                and not any(r.state == "starting" for r in self.visible)):
            raise PolicyInvalid(
                f"route left {len(self.queue)} request(s) in the queue while every replica was "
                f"idle and no more requests were coming")

    def sampler(self, every_ps: int):
        """Record queue, load and memory timelines for the diagnostics."""
        env = self.env
        while True:
            now = env.now
            sample = (now / PS_PER_S, len(self.queue),
                      tuple(len(r.pending) + len(r.active) for r in self.visible),
                      tuple(r.used_blocks_at(now) / r.profile.num_blocks for r in self.visible))
            if self.tracking:
                sample += (tuple(r.state for r in self.visible),)
            self.samples.append(sample)
            yield env.timeout(every_ps)

    # --- policies ------------------------------------------------------------------------------
    def call_router(self) -> None:
        if not self.queue or not self.num_ready:
            return
        now = self.env.now
        self.router_calls += 1
        queue_views = [r.queue_view for r in self.queue]
        replica_views = [ReplicaView(r, now) for r in self.visible]
        answer = self.router.ask(queue_views, replica_views, now / PS_PER_S)
        if (type(answer) is list or type(answer) is tuple) and not answer:
            return
        chosen = self.router.check(answer, self.queue, self.replicas)
        if not chosen:
            return
        taken = {req.id for req, _ in chosen}
        self.queue = [r for r in self.queue if r.id not in taken]
        for req, replica in chosen:
            req.dispatched = now
            replica.enqueue(req)

    def admission_order(self, replica: Replica) -> list[Req]:
        """FCFS over the replica's pending list, or the scheduler policy's order (validated)."""
        if self.scheduler is None:
            return list(replica.pending)
        now = self.env.now
        answer = self.scheduler.ask(replica.views(replica.pending, now, False),
                                    replica.views(replica.active, now, True),
                                    ReplicaView(replica, now), now / PS_PER_S)
        return self.scheduler.check(answer, replica.pending, replica.id)


    # --- the autoscaler ------------------------------------------------------------------------
    def autoscaler(self):
        every = round(self.autoscale.interval_s * PS_PER_S)
        while True:
            self.call_scaler()
            yield self.env.timeout(every)

    def call_scaler(self) -> None:
        now = self.env.now
        self.scale_calls += 1
        view = self.cluster_view(now)
        answer = self.scaler.ask(view, now / PS_PER_S)
        desired = self.scaler.check(answer, self.autoscale.min_replicas,
                                    self.autoscale.max_replicas)
        before = view.num_replicas
        self._resize(desired)
        if desired != before:
            self.scale_events.append({"t_s": now / PS_PER_S, "from": before, "to": desired})

    def _resize(self, desired: int) -> None:
        """Start or remove replicas so that starting + ready == desired.

        Removal cancels starting replicas first (newest first), then drains the ready replicas
        holding the fewest requests (ties: newest first).
        """
        serving = [r for r in self.visible if r.state in ("starting", "ready")]
        if desired > len(serving):
            for _ in range(desired - len(serving)):
                self._start_replica()
            return
        extra = len(serving) - desired
        for r in [r for r in reversed(serving) if r.state == "starting"][:extra]:
            self._stop(r)
            extra -= 1
        if extra:
            ready = sorted((r for r in serving if r.state == "ready"),
                           key=lambda r: (len(r.pending) + len(r.active), -r.id))
            for r in ready[:extra]:
                self._drain(r)

    def _start_replica(self) -> None:
        env = self.env
        rs = self.autoscale.replica or self.spec.replicas[0]
        warm = env.now == 0        # the fleet asked for at t = 0 is provisioned before traffic
        replica = Replica(len(self.replicas), rs.gpu_profile(), env, self,
                          chunk_size=rs.chunk_size, max_batch=rs.max_batch,
                          watermark=self.spec.watermark, fast=self.fast,
                          state="ready" if warm else "starting")
        self.replicas.append(replica)
        self.visible.append(replica)
        self.peak_replicas = max(self.peak_replicas, len(self.visible))
        if warm:
            self.num_ready += 1
            self.call_router()
        else:
            self.cold_starts += 1
            env.process(self._cold_start(replica))

    def _cold_start(self, replica: Replica):
        yield self.env.timeout(round(self.autoscale.cold_start_s * PS_PER_S))
        if replica.state == "starting":         # not cancelled meanwhile
            replica.state = "ready"
            replica.ready_ps = self.env.now
            self.num_ready += 1
            self.call_router()

    def _drain(self, replica: Replica) -> None:
        replica.state = "draining"
        replica.draining_ps = self.env.now
        self.num_ready -= 1
        if not replica.pending and not replica.active:
            self._stop(replica)

    def _stop(self, replica: Replica) -> None:
        replica.state = "stopped"
        replica.stopped_ps = self.env.now
        self.visible.remove(replica)

    def _record_recent(self, finished: list[Req]) -> None:
        spec = self.spec
        for r in finished:
            ttft = (r.first_token - r.arrival) / PS_PER_S
            tpot = ((r.finish - r.first_token) / PS_PER_S / (r.output - 1)) if r.output > 1 else 0.0
            ok = ttft <= spec.slo_ttft_s and tpot <= spec.slo_tpot_s
            self.recent_done.append((r.finish, ttft, (r.finish - r.arrival) / PS_PER_S, tpot, ok))

    def gpu_ps(self, now: int) -> int:
        """Replica time billed up to `now`, in picoseconds."""
        return sum((r.stopped_ps if r.stopped_ps is not None else now) - r.started_ps
                   for r in self.replicas)

    def cluster_view(self, now: int) -> ClusterView:
        a = self.autoscale
        cutoff = now - round(a.window_s * PS_PER_S)
        arrivals, done = self.recent_arrivals, self.recent_done
        while arrivals and arrivals[0] <= cutoff:
            arrivals.popleft()
        while done and done[0][0] <= cutoff:
            done.popleft()
        span = min(a.window_s, now / PS_PER_S)
        ttft = sorted(d[1] for d in done)
        e2e = sorted(d[2] for d in done)
        states = {"starting": 0, "ready": 0, "draining": 0}
        pending = active = 0
        oldest = None
        kv = []
        for r in self.visible:
            states[r.state] += 1
            pending += len(r.pending)
            active += len(r.active)
            for q in r.pending:
                if q.admitted is None and (oldest is None or q.arrival < oldest):
                    oldest = q.arrival
            if r.state == "ready":
                kv.append(r.used_blocks_at(now) / r.profile.num_blocks)
        for q in self.queue:
            if oldest is None or q.arrival < oldest:
                oldest = q.arrival
        spec = self.spec
        return ClusterView(
            num_replicas=states["starting"] + states["ready"], num_ready=states["ready"],
            num_starting=states["starting"], num_draining=states["draining"],
            min_replicas=a.min_replicas, max_replicas=a.max_replicas, interval_s=a.interval_s,
            cold_start_s=a.cold_start_s, window_s=a.window_s, queue_len=len(self.queue),
            num_pending=pending, num_active=active, num_waiting=len(self.queue) + pending,
            oldest_wait_s=(now - oldest) / PS_PER_S if oldest is not None else 0.0,
            kv_use=sum(kv) / len(kv) if kv else 0.0, max_kv_use=max(kv, default=0.0),
            arrival_rate=len(arrivals) / span if span > 0 else 0.0, arrivals=len(self.requests),
            completed=self.completed, recent_completed=len(done),
            p50_ttft_s=_pct(ttft, 50), p90_ttft_s=_pct(ttft, 90), p99_ttft_s=_pct(ttft, 99),
            p50_e2e_s=_pct(e2e, 50), p90_e2e_s=_pct(e2e, 90), p99_e2e_s=_pct(e2e, 99),
            mean_tpot_s=sum(d[3] for d in done) / len(done) if done else 0.0,
            recent_slo_attainment=sum(1 for d in done if d[4]) / len(done) if done else 1.0,
            slo_ttft_s=spec.slo_ttft_s, slo_tpot_s=spec.slo_tpot_s, slo_target=spec.slo_target,
            gpu_seconds=self.gpu_ps(now) / PS_PER_S,
            replicas=[ReplicaView(r, now) for r in self.visible])


def _pct(ordered: list, q: float) -> float:
    """Percentile of a sorted list, interpolated linearly (numpy's default); 0.0 when empty."""
    if not ordered:
        return 0.0
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def validate_workload(workload: Sequence[RequestSpec], spec: ClusterSpec) -> None:
    """Every request must fit, alone, in the KV cache of every replica, or it could never run."""
    kinds = list(spec.replicas)
    if spec.autoscale is not None and spec.autoscale.replica is not None:
        kinds.append(spec.autoscale.replica)
    for r in kinds:
        prof = r.gpu_profile()
        cap = (prof.num_blocks - max(int(prof.num_blocks * spec.watermark), 1)) * prof.block_size
        for i, req in enumerate(workload):
            if req.prompt_tokens + req.output_tokens > cap:
                raise ValueError(f"request {i} needs {req.prompt_tokens + req.output_tokens} "
                                 f"tokens of KV cache but a {prof.gpu} replica holds only {cap}")


def simulate(workload: Sequence[RequestSpec], spec: ClusterSpec, route: RouteFn | None = None,
             knobs: dict | None = None, *, schedule: ScheduleFn | None = None,
             schedule_knobs: dict | None = None, scale: ScaleFn | None = None,
             scale_knobs: dict | None = None, policies: dict | None = None, fast: bool = True,
             samples: int = 200) -> SimResult:
    """Run `workload` on a cluster to completion and return its metrics and diagnostics.

    The policies: `policies={"route": (fn, knobs), "schedule": ..., "scale": ...}` (values may
    also be `sim.hooks` objects or bare functions), or the keyword pairs `route`/`knobs`,
    `schedule`/`schedule_knobs`, `scale`/`scale_knobs`. `schedule` orders admissions inside
    replicas; `scale` (with `spec.autoscale`) resizes the cluster. Raises PolicyError when a
    policy raises and PolicyInvalid when it answers something invalid. `fast=False` is the
    step-by-step reference mode (same results, slower).
    """
    given = {k: (fn, kn) for k, fn, kn in (("route", route, knobs),
                                            ("schedule", schedule, schedule_knobs),
                                            ("scale", scale, scale_knobs)) if fn is not None}
    if policies and given.keys() & policies.keys():
        raise ValueError(f"{', '.join(given.keys() & policies.keys())} given twice")
    hooks = hooks_of({**given, **(policies or {})})
    workload = sorted(workload, key=lambda r: r.arrival_s)
    if not workload:
        raise ValueError("empty workload")
    validate_workload(workload, spec)
    env = simpy.Environment()
    cluster = Cluster(env, spec, hooks, fast=fast)
    cluster.total = len(workload)
    if cluster.scaler is not None:
        env.process(cluster.autoscaler())     # first, so its call at t = 0 precedes traffic
    env.process(cluster.arrivals(workload))
    span_ps = max(1, round(workload[-1].arrival_s * PS_PER_S))
    env.process(cluster.sampler(max(span_ps // samples, PS_PER_S // 10)))
    env.run(until=cluster.all_done)
    return summarize(cluster)
