"""Target utilisation, in the style of Kubernetes' horizontal pod autoscaler.

Two utilisation metrics per ready replica: KV-cache use, and requests in flight (waiting +
running) over `capacity` requests. Like the HPA with several metrics, the fleet is sized for the
busier one: desired = ceil(ready replicas x utilisation / `target`). Scaling up follows at once;
scaling down takes the largest desired count of the last `down_window_s` seconds (the HPA's
stabilisation window), so a dip does not remove replicas that a rebound needs. Before any
request has arrived there is nothing to measure, and it keeps the fleet it has. Proportional and
quick on smooth swings; it only sees load that has already arrived, so a burst is met a cold
start late.
"""
import math

KNOBS = {"target": (0.6, 0.1, 1.0), "capacity": (48.0, 4.0, 256.0),
         "down_window_s": (300.0, 0.0, 900.0)}

HISTORY = []     # (time, desired) of recent calls


def scale(cluster, now, knobs):
    if cluster.arrivals == 0:
        return cluster.num_replicas
    ready = max(1, cluster.num_ready)
    in_flight = (cluster.num_waiting + cluster.num_active) / ready
    utilisation = max(cluster.kv_use, in_flight / knobs["capacity"])
    desired = math.ceil(ready * utilisation / knobs["target"])
    desired = min(cluster.max_replicas, max(cluster.min_replicas, desired))
    HISTORY.append((now, desired))
    while HISTORY and HISTORY[0][0] < now - knobs["down_window_s"]:
        HISTORY.pop(0)
    return max(d for _, d in HISTORY)
