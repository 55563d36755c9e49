# expect: error: TypeError: attribute-less object (assign or del)
def route(queue, replicas, now, knobs):
    del queue[0].arrival_time
    return []
