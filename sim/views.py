"""Read-only views that policies receive.

Views hold plain values, computed from the simulator's state at the moment of the call. A replica's
request lists and free blocks are computed only when a policy reads them, so a policy that looks
at counts only (like `llq`) costs O(replicas) per call, not O(requests).
"""
from __future__ import annotations

PS_PER_S = 10**12


class RequestView:
    """A request as a policy may see it (never its output length)."""

    __slots__ = ("id", "arrival_time", "prompt_tokens", "processed_tokens", "generated_tokens",
                 "restarts", "replica")

    def __init__(self, rid, arrival_time, prompt_tokens, processed_tokens, generated_tokens,
                 restarts, replica):
        self.id = rid
        self.arrival_time = arrival_time
        self.prompt_tokens = prompt_tokens
        self.processed_tokens = processed_tokens
        self.generated_tokens = generated_tokens
        self.restarts = restarts
        self.replica = replica

    def __repr__(self) -> str:
        return (f"RequestView(id={self.id}, prompt={self.prompt_tokens}, "
                f"processed={self.processed_tokens}, restarts={self.restarts})")


class ReplicaView:
    """A replica at one instant: capacity, usage, and (on demand) its pending and active lists."""

    __slots__ = ("id", "gpu", "state", "num_blocks", "block_size", "chunk_size", "max_batch",
                 "num_pending", "num_active", "_replica", "_now", "_free", "_pending", "_active")

    def __init__(self, replica, now_ps: int):
        self.id = replica.id
        self.gpu = replica.profile.gpu
        self.state = replica.state
        self.num_blocks = replica.profile.num_blocks
        self.block_size = replica.profile.block_size
        self.chunk_size = replica.chunk_size
        self.max_batch = replica.max_batch
        self.num_pending = len(replica.pending)
        self.num_active = len(replica.active)
        self._replica = replica
        self._now = now_ps
        self._free = self._pending = self._active = None

    @property
    def free_blocks(self) -> int:
        if self._free is None:
            self._free = self.num_blocks - self._replica.used_blocks_at(self._now)
        return self._free

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - self.free_blocks

    @property
    def pending(self) -> list:
        if self._pending is None:
            self._pending = self._replica.views(self._replica.pending, self._now, False)
        return list(self._pending)

    @property
    def active(self) -> list:
        if self._active is None:
            self._active = self._replica.views(self._replica.active, self._now, True)
        return list(self._active)

    def __repr__(self) -> str:
        return (f"ReplicaView(id={self.id}, pending={self.num_pending}, active={self.num_active}, "
                f"free_blocks={self.free_blocks}/{self.num_blocks})")


class ClusterView:
    """The whole cluster at one instant, as the autoscaler sees it (plain values).

    Counts by replica state, load, KV use, recent traffic and latency (over the last `window_s`
    seconds: arrivals that arrived and requests that completed in it), the SLO, and the cost so
    far. `replicas` lists every replica that is not stopped, as `ReplicaView`s (with `state`).
    """

    __slots__ = ("num_replicas", "num_ready", "num_starting", "num_draining", "min_replicas",
                 "max_replicas", "interval_s", "cold_start_s", "window_s", "queue_len",
                 "num_pending", "num_active", "num_waiting", "oldest_wait_s", "kv_use",
                 "max_kv_use", "arrival_rate", "arrivals", "completed", "recent_completed",
                 "p50_ttft_s", "p90_ttft_s", "p99_ttft_s", "p50_e2e_s", "p90_e2e_s", "p99_e2e_s",
                 "mean_tpot_s", "recent_slo_attainment", "slo_ttft_s", "slo_tpot_s",
                 "slo_target", "gpu_seconds", "replicas")

    def __init__(self, **values):
        for name in self.__slots__:
            setattr(self, name, values[name])

    def __repr__(self) -> str:
        return (f"ClusterView(ready={self.num_ready}, starting={self.num_starting}, "
                f"draining={self.num_draining}, waiting={self.num_waiting}, "
                f"kv_use={self.kv_use:.2f}, arrival_rate={self.arrival_rate:.2f}/s, "
                f"p99_ttft_s={self.p99_ttft_s:.2f})")
