"""Round robin: request i (in arrival order) goes to replica i mod n."""


def route(queue, replicas, now, knobs):
    ready = [r.id for r in replicas if r.state == "ready"]
    return [(req.id, ready[req.id % len(ready)]) for req in queue]
