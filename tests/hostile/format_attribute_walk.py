# expect: error: Using the format*() methods of `str` is not safe
def route(queue, replicas, now, knobs):
    leak = "{0.__class__.__init__.__globals__}".format(replicas[0])
    return [(q.id, 0) for q in queue] if leak else []
