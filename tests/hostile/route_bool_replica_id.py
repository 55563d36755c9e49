# expect: invalid: unknown replica id False
def route(queue, replicas, now, knobs):
    return [(q.id, False) for q in queue]
