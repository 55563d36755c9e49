# expect: invalid: route must return a list
def route(queue, replicas, now, knobs):
    for q in queue:
        yield (q.id, 0)
