# expect: ok
def route(queue, replicas, now, knobs):
    print("flood " * 20_000)
    best = min(replicas, key=lambda r: r.num_pending + r.num_active)
    return [(q.id, best.id) for q in queue]
