# expect: error: collections.namedtuple is not available to policies
import collections

Pair = collections.namedtuple("Pair", "rid rep")


def route(queue, replicas, now, knobs):
    return [Pair(q.id, 0) for q in queue]
