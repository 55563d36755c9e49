"""Random: each queued request goes to a replica drawn uniformly at random."""


def route(queue, replicas, now, knobs):
    ready = [r.id for r in replicas if r.state == "ready"]
    return [(req.id, rng.choice(ready)) for req in queue]
