"""Least outstanding requests: send each request to the replica with the fewest waiting ones.

Only requests waiting for admission (pending) count; running ones do not.
"""


def route(queue, replicas, now, knobs):
    waiting = {r.id: r.num_pending for r in replicas if r.state == "ready"}
    out = []
    for req in queue:
        best = min(waiting, key=lambda i: (waiting[i], i))
        out.append((req.id, best))
        waiting[best] = waiting[best] + 1
    return out
