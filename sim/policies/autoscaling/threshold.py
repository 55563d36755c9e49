"""Threshold: add replicas while the cluster looks overloaded, remove one after a calm spell.

The reference baseline of the autoscaling problem (fitness 1.0). Hot (overloaded): requests
waiting for admission per ready replica above `up_waiting`, or one of them waiting longer than
`up_wait_s`, or mean KV-cache use above `up_kv`, or the recent p90 time to first token above
`up_ttft` x the SLO. While hot and no replica is starting, it adds `up_step` x the current count
(at least one). Calm: at most `down_waiting` waiting per replica, KV use below `down_kv` and p90
TTFT below `down_ttft` x the SLO, for `calm_s` seconds in a row; then it removes one replica and
the calm spell starts again. The gap between the up and down thresholds plus the calm spell is
the hysteresis that keeps it from flapping.
"""
import math

KNOBS = {
    "up_waiting": (4.0, 0.0, 64.0),
    "up_wait_s": (1.0, 0.0, 30.0),
    "up_kv": (0.8, 0.3, 1.0),
    "up_ttft": (0.75, 0.1, 2.0),
    "up_step": (1.0, 0.0, 2.0),
    "down_waiting": (1.0, 0.0, 16.0),
    "down_kv": (0.4, 0.0, 1.0),
    "down_ttft": (0.5, 0.0, 2.0),
    "calm_s": (300.0, 0.0, 900.0),
}

STATE = {"calm_since": None}


def scale(cluster, now, knobs):
    n = cluster.num_replicas
    waiting = cluster.num_waiting / max(1, cluster.num_ready)
    hot = (waiting > knobs["up_waiting"] or cluster.oldest_wait_s > knobs["up_wait_s"]
           or cluster.kv_use > knobs["up_kv"]
           or cluster.p90_ttft_s > knobs["up_ttft"] * cluster.slo_ttft_s)
    if hot:
        STATE["calm_since"] = None
        if cluster.num_starting == 0:
            return min(cluster.max_replicas, n + max(1, math.ceil(knobs["up_step"] * n)))
        return n
    calm = (waiting <= knobs["down_waiting"] and cluster.kv_use < knobs["down_kv"]
            and cluster.p90_ttft_s < knobs["down_ttft"] * cluster.slo_ttft_s)
    if not calm:
        STATE["calm_since"] = None
        return n
    if STATE["calm_since"] is None:
        STATE["calm_since"] = now
    if now - STATE["calm_since"] >= knobs["calm_s"] and n > cluster.min_replicas:
        STATE["calm_since"] = now
        return n - 1
    return n
