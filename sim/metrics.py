"""Metrics and diagnostics of a finished simulation.

Metric names are a contract (DESIGN §7): mean_e2e_s, p50_e2e_s, p99_e2e_s, mean_ttft_s,
p99_ttft_s, mean_tpot_s, throughput_rps, restarts, completed, gpu_seconds, slo_attainment
(plus a few extra percentiles). Extra metrics:
- waiting for admission (arrival -> first admission into a batch; global queue included):
  mean_wait_s, p99_wait_s, max_wait_s (the oldest wait: starvation shows here) and starved (how
  many requests waited longer than the cluster's `starvation_s`);
- with an autoscaler: mean_replicas (GPU-seconds / makespan), peak_replicas, cold_starts,
  scale_calls. GPU-seconds are then the replicas' billed time (start -> stop, cold start and
  draining included); without one, the fixed fleet's makespan x size, as before.
Diagnostics are what the Analyst reads to explain a result.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .profiles import PS_PER_S


@dataclass
class SimResult:
    metrics: dict
    diagnostics: dict
    requests: list          # per-request records: dicts with times in seconds


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else 0.0


def summarize(cluster) -> SimResult:
    reqs = cluster.requests
    arrival = np.array([r.arrival for r in reqs], dtype=np.int64)
    first = np.array([r.first_token for r in reqs], dtype=np.int64)
    finish = np.array([r.finish for r in reqs], dtype=np.int64)
    outputs = np.array([r.output for r in reqs], dtype=np.int64)
    e2e = (finish - arrival) / PS_PER_S
    ttft = (first - arrival) / PS_PER_S
    multi = outputs > 1
    tpot = (finish[multi] - first[multi]) / PS_PER_S / (outputs[multi] - 1)
    end_s = float(finish.max()) / PS_PER_S
    span = max(end_s - float(arrival.min()) / PS_PER_S, 1e-12)
    spec = cluster.spec
    tpot_all = np.zeros(len(reqs))
    tpot_all[multi] = tpot
    slo_ok = (ttft <= spec.slo_ttft_s) & (tpot_all <= spec.slo_tpot_s)
    metrics = {
        "mean_e2e_s": float(e2e.mean()),
        "p50_e2e_s": _pct(e2e, 50),
        "p90_e2e_s": _pct(e2e, 90),
        "p99_e2e_s": _pct(e2e, 99),
        "mean_ttft_s": float(ttft.mean()),
        "p50_ttft_s": _pct(ttft, 50),
        "p90_ttft_s": _pct(ttft, 90),
        "p99_ttft_s": _pct(ttft, 99),
        "mean_tpot_s": float(tpot.mean()) if len(tpot) else 0.0,
        "p99_tpot_s": _pct(tpot, 99),
        "throughput_rps": len(reqs) / span,
        "restarts": int(sum(r.restarts for r in reqs)),
        "completed": len(reqs),
        "gpu_seconds": end_s * len(cluster.replicas),
        "slo_attainment": float(slo_ok.mean()),
    }
    admitted = np.array([r.admitted for r in reqs], dtype=np.int64)
    wait = (admitted - arrival) / PS_PER_S
    metrics.update({
        "mean_wait_s": float(wait.mean()),
        "p99_wait_s": _pct(wait, 99),
        "max_wait_s": float(wait.max()),
        "starved": int((wait > spec.starvation_s).sum()),
    })
    if cluster.autoscale is not None:
        gpu_s = cluster.gpu_ps(int(finish.max())) / PS_PER_S
        metrics.update({
            "gpu_seconds": gpu_s,
            "mean_replicas": gpu_s / max(end_s, 1e-12),
            "peak_replicas": cluster.peak_replicas,
            "cold_starts": cluster.cold_starts,
            "scale_calls": cluster.scale_calls,
        })
    records = [{"id": r.id, "arrival_s": r.arrival / PS_PER_S, "prompt_tokens": r.prompt,
                "output_tokens": r.output, "replica": r.replica,
                "dispatched_s": r.dispatched / PS_PER_S, "admitted_s": r.admitted / PS_PER_S,
                "first_token_s": r.first_token / PS_PER_S, "finish_s": r.finish / PS_PER_S,
                "restarts": r.restarts} for r in reqs]
    return SimResult(metrics, diagnostics(cluster, records, e2e), records)


def _imbalance(samples: list[tuple], autoscaled: bool) -> np.ndarray:
    """Coefficient of variation of the load across replicas, per sample with any load.

    With an autoscaler only the ready replicas of each sample count (the fleet changes size).
    """
    if not autoscaled:
        loads = np.array([s[2] for s in samples], dtype=float) if samples else np.zeros((0, 1))
        mean_load = loads.mean(axis=1) if len(loads) else np.zeros(0)
        busy = mean_load > 0
        return (loads.std(axis=1)[busy] / mean_load[busy]) if busy.any() else np.zeros(0)
    out = []
    for s in samples:
        row = np.array([x for x, state in zip(s[2], s[4]) if state == "ready"], dtype=float)
        if len(row) and row.mean() > 0:
            out.append(row.std() / row.mean())
    return np.array(out)


def diagnostics(cluster, records: list[dict], e2e: np.ndarray) -> dict:
    """What a person (or the Analyst) needs to explain the result, kept small."""
    samples = cluster.samples
    autoscaled = cluster.autoscale is not None
    imbalance = _imbalance(samples, autoscaled)
    step = max(1, len(samples) // 50)
    slowest = []
    for i in np.argsort(-e2e, kind="stable")[:5]:
        rec = records[int(i)]
        parts = {"queued_s": rec["dispatched_s"] - rec["arrival_s"],
                 "waited_at_replica_s": rec["admitted_s"] - rec["dispatched_s"],
                 "running_s": rec["finish_s"] - rec["admitted_s"]}
        cause = max(parts, key=parts.get)
        why = {"queued_s": "held in the global queue by the router",
               "waited_at_replica_s": "waited for admission behind other requests (starved)",
               "running_s": "long running time"}[cause]
        if rec["restarts"]:
            why += f"; restarted {rec['restarts']}x after eviction"
        slowest.append({**{k: rec[k] for k in ("id", "replica", "prompt_tokens", "output_tokens",
                                                "restarts")},
                        "e2e_s": float(e2e[int(i)]), **{k: round(v, 3) for k, v in parts.items()},
                        "why": why})
    per_replica = [{"id": r.id, "gpu": r.profile.gpu, "iterations": r.iterations,
                    "evictions": r.evictions,
                    "requests": sum(1 for rec in records if rec["replica"] == r.id)}
                   for r in cluster.replicas]
    end_s = max(rec["finish_s"] for rec in records)
    if autoscaled:
        for info, r in zip(per_replica, cluster.replicas):
            for key, ps in (("started_s", r.started_ps), ("ready_s", r.ready_ps),
                            ("draining_s", r.draining_ps), ("stopped_s", r.stopped_ps)):
                info[key] = ps / PS_PER_S if ps is not None else None
            info["billed_s"] = ((r.stopped_ps / PS_PER_S if r.stopped_ps is not None else end_s)
                                - r.started_ps / PS_PER_S)
    timeline = []
    for s in samples[::step]:
        point = {"t_s": round(s[0], 3), "queue": s[1], "load": list(s[2]),
                 "kv_use": [round(u, 3) for u in s[3]]}
        if autoscaled:
            point["replicas"] = {k: s[4].count(k) for k in ("starting", "ready", "draining")}
        timeline.append(point)
    out = {
        "router_calls": cluster.router_calls,
        "load_imbalance_cv_mean": float(imbalance.mean()) if len(imbalance) else 0.0,
        "load_imbalance_cv_max": float(imbalance.max()) if len(imbalance) else 0.0,
        "max_queue_len": int(max((s[1] for s in samples), default=0)),
        "per_replica": per_replica,
        "timeline": timeline,
        "slowest_requests": slowest,
    }
    wait = np.array([rec["admitted_s"] - rec["arrival_s"] for rec in records])
    oldest = int(np.argmax(wait))
    rec = records[oldest]
    out["starvation"] = {"threshold_s": cluster.spec.starvation_s,
                         "starved": int((wait > cluster.spec.starvation_s).sum()),
                         "oldest_wait": {**{k: rec[k] for k in ("id", "replica", "prompt_tokens",
                                                                "output_tokens")},
                                         "wait_s": round(float(wait[oldest]), 3)}}
    if autoscaled:
        out["scale_events"] = cluster.scale_events[:100]
        out["scale_calls"] = cluster.scale_calls
    return out
