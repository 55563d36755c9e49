# expect: ok
# a UTF-8 byte order mark, as some editors write it
def route(queue, replicas, now, knobs):
    return [(q.id, 0) for q in queue]
