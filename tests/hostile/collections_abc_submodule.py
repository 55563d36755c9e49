# expect: error: forbidden import 'collections.abc'
import collections.abc


def route(queue, replicas, now, knobs):
    return [(q.id, 0) for q in queue]
