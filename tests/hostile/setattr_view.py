# expect: error: TypeError: attribute-less object (assign or del)
def route(queue, replicas, now, knobs):
    setattr(replicas[0], "num_blocks", 10 ** 9)
    return [(q.id, replicas[0].id) for q in queue]
