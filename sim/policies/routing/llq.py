"""Least loaded queue: send each request to the replica with the fewest pending + active requests.

The reference baseline of the routing problem (fitness 1.0).
"""


def route(queue, replicas, now, knobs):
    load = {r.id: r.num_pending + r.num_active for r in replicas if r.state == "ready"}
    out = []
    for req in queue:
        best = min(load, key=lambda i: (load[i], i))
        out.append((req.id, best))
        load[best] = load[best] + 1
    return out
