"""Power of two choices: draw two replicas at random, send to the one with fewer requests."""


def route(queue, replicas, now, knobs):
    load = {r.id: r.num_pending + r.num_active for r in replicas if r.state == "ready"}
    ids = sorted(load)
    out = []
    for req in queue:
        pair = rng.sample(ids, 2) if len(ids) > 1 else ids
        best = min(pair, key=lambda i: (load[i], i))
        out.append((req.id, best))
        load[best] = load[best] + 1
    return out
