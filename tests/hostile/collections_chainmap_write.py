# expect: error: collections.ChainMap is not available to policies
import collections


def route(queue, replicas, now, knobs):
    collections.ChainMap(knobs)["headroom"] = 1e9       # a plain __setitem__, no write guard
    return [(q.id, 0) for q in queue]
