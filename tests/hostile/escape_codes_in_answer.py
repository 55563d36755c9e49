# expect: invalid: route must return (request_id, replica_id) pairs of ints
def route(queue, replicas, now, knobs):
    return [("\x1b[2J\x07\u202e", 0) for q in queue]
