# expect: error: name 'type' is not defined
def route(queue, replicas, now, knobs):
    View = type(replicas[0])
    View.free_blocks = 10 ** 9
    return [(q.id, 0) for q in queue]
